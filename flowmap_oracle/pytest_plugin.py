"""The flowmap-oracle pytest plugin: run the oracle's checks against an implementation.

Opt in from any repository with ``pytest -p flowmap_oracle.pytest_plugin --impl=pkg.mod:factory``
(or set ``FLOWMAP_ORACLE_IMPL=pkg.mod:factory``). Without ``--impl`` the checks run against the
reference implementation. The fixture ``oracle_check`` runs one check and turns its result into a
pass, a skip (with the reason) or a failure (with what differs, where, and a reproduction
snippet).
"""

from __future__ import annotations

import os

import pytest

from .numerics.oracle import ENV_VAR, OracleSettings, load_implementation, run_check
from .numerics.oracle.context import PROFILES

__all__ = ["oracle_check", "oracle_implementation", "oracle_settings"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowmap-oracle", "flowmap-oracle correctness checks")
    group.addoption(
        "--impl",
        action="store",
        default=None,
        metavar="PACKAGE.MODULE:FACTORY",
        help=f"implementation to check (default: ${ENV_VAR}, else the reference)",
    )
    group.addoption(
        "--oracle-profile",
        action="store",
        default="ci",
        choices=sorted(PROFILES),
        help="how many hypothesis draws per check (ci: deterministic and short)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flowmap_oracle: a flowmap-oracle conformance check")


def _spec(config: pytest.Config) -> str | None:
    return config.getoption("--impl") or os.environ.get(ENV_VAR) or None


@pytest.fixture(scope="session")
def oracle_implementation(request: pytest.FixtureRequest):
    """The implementation under test (``--impl`` / ``$FLOWMAP_ORACLE_IMPL`` / the reference)."""
    return load_implementation(_spec(request.config))


@pytest.fixture(scope="session")
def oracle_settings(request: pytest.FixtureRequest) -> OracleSettings:
    return OracleSettings(profile=request.config.getoption("--oracle-profile"))


@pytest.fixture
def oracle_check(oracle_implementation, oracle_settings):
    """``oracle_check(check)`` runs one check and passes, skips or fails the test with it."""

    def run(chk) -> None:
        result = run_check(chk, oracle_implementation, oracle_settings)
        if result.status == "skip":
            pytest.skip(result.message)
        if result.status == "fail":
            pytest.fail(result.report(), pytrace=False)

    return run
