"""The flowmap-oracle pytest plugin: run the oracle's checks against an implementation.

Opt in from any repository with ``pytest -p flowmap_oracle.oracle.plugin --impl=pkg.mod:factory``
(or set ``FLOWMAP_ORACLE_IMPL=pkg.mod:factory``): one test item per oracle check, named
``flowmap-oracle::<check>`` and marked ``flowmap_oracle``, joins the session (select them alone
with ``-m flowmap_oracle``). Each passes, skips with the reason (the implementation does not
provide what the check needs) or fails with what differs, where, and a reproduction snippet.

In this repository ``tests/oracle/test_oracle_checks.py`` runs the same checks as one parametrised
test using the fixture ``oracle_check``; it runs against the reference implementation unless
``--impl`` (or the environment variable) names another, and the plugin then adds no items of its
own.

Usage errors follow pytest's conventions: a spec that cannot be loaded (no such module, an
exception while importing it, a factory that raises or returns something else, declared
conventions that cannot run) stops the session with ``ERROR: flowmap-oracle: ...`` on one line
and exit status 4, before anything runs.

Nothing checked is a failure: an implementation that provides nothing a check applies to gets one
failing item, ``flowmap-oracle::oracle.nothing_checked``; and a session in which every oracle item
that ran was skipped ends with exit status 1 and a line that says so.

Warnings: the oracle's own machinery is immune to ``-W error`` and ``filterwarnings = error``;
the implementation's code keeps the session's filters (see :mod:`.context`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import (
    ENV_VAR,
    ImplementationError,
    OracleSettings,
    checks_for,
    load_implementation,
    run_check,
)
from .context import PROFILES
from .runner import NOTHING_CHECKED, nothing_checked

__all__ = ["OracleItem", "oracle_check", "oracle_implementation", "oracle_settings"]


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
    if not hasattr(config, "workerinput"):  # not an xdist worker
        config.pluginmanager.register(_NothingCheckedGuard(), "flowmap-oracle-nothing-checked")


def _spec(config: pytest.Config) -> str | None:
    return config.getoption("--impl") or os.environ.get(ENV_VAR) or None


_STATE = pytest.StashKey[dict]()


def _state(config: pytest.Config) -> dict:
    """The implementation and settings, loaded once per session."""
    state = config.stash.get(_STATE, None)
    if state is None:
        state = {
            "impl": load_implementation(_spec(config)),
            "settings": OracleSettings(profile=config.getoption("--oracle-profile")),
        }
        config.stash[_STATE] = state
    return state


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Load a named implementation once, up front: a bad spec is a usage error (one line, exit
    status 4), not 28 failures or an internal error."""
    if _spec(session.config):
        try:
            _state(session.config)
        except ImplementationError as err:
            raise pytest.UsageError(f"flowmap-oracle: {_one_line(str(err))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class OracleFailure(Exception):
    """A failing oracle check (its report is the whole failure text)."""


class OracleItem(pytest.Item):
    """One oracle check as a test item."""

    def __init__(self, *, check, **kwargs) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.add_marker("flowmap_oracle")

    def runtest(self) -> None:
        state = _state(self.config)
        result = run_check(self.check, state["impl"], state["settings"])
        if result.status == "skip":
            pytest.skip(result.message)
        if result.status == "fail":
            raise OracleFailure(result.report())

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, OracleFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"flowmap-oracle check {self.check.name}"


class NetworkItem(OracleItem):
    """One check of the user's own network (:mod:`.user_network`) as a test item."""

    def runtest(self) -> None:
        from .user_network import run_network_checks

        result = run_network_checks(_state(self.config)["impl"], only=self.check)[0]
        if result.status == "skip":
            pytest.skip(result.message)
        if result.status == "fail":
            raise OracleFailure(result.report())

    def reportinfo(self):
        return self.path, None, f"flowmap-oracle check {self.check}"


class NothingCheckedItem(pytest.Item):
    """Fails: the implementation provides nothing that any oracle check applies to."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_marker("flowmap_oracle")

    def runtest(self) -> None:
        state = _state(self.config)
        skipped = [run_check(chk, state["impl"], state["settings"]) for chk in checks_for()]
        raise OracleFailure(nothing_checked(state["impl"], skipped).report())

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, OracleFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, "flowmap-oracle: nothing checked"


class OracleCollector(pytest.Collector):
    """The parent of the oracle's items (they are created at the end of collection)."""

    def collect(self):
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """Add one item per check when an implementation is named and the session does not already
    hold the oracle's test module (this repository's ``tests/oracle``)."""
    if not _spec(config):
        return
    if any(item.get_closest_marker("flowmap_oracle") for item in items):
        return
    parent = OracleCollector.from_parent(session, name="flowmap-oracle", path=Path(__file__))
    new: list[pytest.Item | pytest.Collector] = [
        OracleItem.from_parent(parent, name=chk.name, check=chk) for chk in checks_for()
    ]
    if _state(config)["impl"].network is not None:
        from .user_network import NETWORK_CHECKS

        new += [NetworkItem.from_parent(parent, name=n, check=n) for n in NETWORK_CHECKS]
    if not _state(config)["impl"].provided():
        new.append(NothingCheckedItem.from_parent(parent, name=NOTHING_CHECKED))
    items.extend(new)
    # Report them as collected, so the terminal's counts include them.
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(parent.nodeid, "passed", None, new)
    )


# -- a session in which every oracle item was skipped checked nothing ---------------------------


class _NothingCheckedGuard:
    """Fails a session in which oracle items ran and every one of them was skipped.

    Registered on the controlling process only (under xdist the controller sees every worker's
    reports)."""

    def __init__(self) -> None:
        self.ran = 0
        self.checked = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "flowmap_oracle" not in report.keywords:
            return
        if report.when == "setup":
            self.ran += 1
        if report.failed or (report.when == "call" and report.passed):
            self.checked += 1

    @property
    def nothing_checked(self) -> bool:
        return self.ran > 0 and self.checked == 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.nothing_checked and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.nothing_checked:
            return
        terminalreporter.write_sep("=", "flowmap-oracle: nothing was checked", red=True)
        terminalreporter.write_line(
            f"all {self.ran} flowmap-oracle checks that ran were skipped: the implementation "
            "provides nothing they apply to, so the session fails (exit status 1)"
        )


@pytest.fixture(scope="session")
def oracle_implementation(request: pytest.FixtureRequest):
    """The implementation under test (``--impl`` / ``$FLOWMAP_ORACLE_IMPL`` / the reference)."""
    return _state(request.config)["impl"]


@pytest.fixture(scope="session")
def oracle_settings(request: pytest.FixtureRequest) -> OracleSettings:
    return _state(request.config)["settings"]


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
