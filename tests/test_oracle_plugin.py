"""The opt-in pytest plugin from another repository, and the environment variable."""

from __future__ import annotations

import pytest

FACTORY = """
import torch
from flowmap_oracle.oracle import Implementation


def good_target(net, x, t, s, v):
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v - (t - s)[:, None] * dF).detach()


def bad_target(net, x, t, s, v):
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v + (t - s)[:, None] * dF).detach()


def good():
    return Implementation("good", targets={"meanflow": good_target})


def bad():
    return Implementation("bad", targets={"meanflow": bad_target})
"""

PLUGIN = ("-p", "flowmap_oracle.oracle.plugin", "-p", "no:randomly", "-p", "no:cacheprovider")


@pytest.fixture
def user_repo(pytester):
    pytester.makepyfile(mymeanflow=FACTORY)
    pytester.makepyfile(test_theirs="def test_their_own():\n    assert True\n")
    pytester.syspathinsert()
    return pytester


def test_plugin_adds_one_item_per_check_and_passes_a_correct_target(user_repo):
    result = user_repo.runpytest_inprocess(
        *PLUGIN, "--impl=mymeanflow:good", "-m", "flowmap_oracle"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0
    assert outcomes["passed"] >= 4  # the MeanFlow target checks
    assert outcomes["skipped"] >= 20  # everything the implementation does not provide
    assert outcomes["deselected"] == 1  # the user's own test, deselected by -m


def test_plugin_failure_says_what_differs_and_how_to_reproduce(user_repo):
    result = user_repo.runpytest_inprocess(
        *PLUGIN, "--impl=mymeanflow:bad", "-k", "meanflow and target", "-rf"
    )
    assert result.ret == 1
    text = result.stdout.str()
    assert "differs from the reference" in text
    assert "largest error" in text
    assert "reproduce('meanflow.target.random_network', 'mymeanflow:bad'" in text


def test_environment_variable_names_the_implementation(user_repo, monkeypatch):
    monkeypatch.setenv("FLOWMAP_ORACLE_IMPL", "mymeanflow:bad")
    result = user_repo.runpytest_inprocess(*PLUGIN, "-k", "random_network or their_own")
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes["passed"] == 1  # the check, the user's own test
    assert "meanflow.target.random_network" in result.stdout.str()


def test_without_an_implementation_the_plugin_adds_nothing(user_repo):
    result = user_repo.runpytest_inprocess(*PLUGIN)
    result.assert_outcomes(passed=1)


# -- nothing checked is a failure --------------------------------------------------------------


NOTHING = """
from flowmap_oracle.oracle import Implementation


def nothing():
    return Implementation("provides nothing")
"""


def test_an_implementation_that_provides_nothing_fails(user_repo):
    user_repo.makepyfile(emptyimpl=NOTHING)
    result = user_repo.runpytest_inprocess(
        *PLUGIN, "--impl=emptyimpl:nothing", "-m", "flowmap_oracle"
    )
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and "passed" not in outcomes
    result.stdout.fnmatch_lines(
        ["*oracle.nothing_checked [[]fail[]]: nothing was checked: all * checks were skipped*"]
    )


def test_a_session_whose_oracle_checks_were_all_skipped_fails(user_repo):
    # the implementation provides a MeanFlow target; only flow-matching checks are selected
    result = user_repo.runpytest_inprocess(
        *PLUGIN, "--impl=mymeanflow:good", "-k", "flow_matching or their_own"
    )
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes["skipped"] >= 1 and outcomes["passed"] == 1  # the user's own test passes
    result.stdout.fnmatch_lines(["*flowmap-oracle: nothing was checked*"])


# -- usage errors: one line, exit status 4, no INTERNALERROR -------------------------------------

BAD_SPECS = {
    "missing module": ("nosuchmodule_xyz:good", "cannot import 'nosuchmodule_xyz'"),
    "import-time exception": (
        "raisesonimport:implementation",
        "importing 'raisesonimport' failed: ZeroDivisionError: division by zero (",
    ),
    "factory raises": ("badfactories:raises", "factory 'badfactories:raises' raised KeyError"),
    "wrong type": ("badfactories:wrong_type", "returned dict, expected an Implementation"),
    "missing attribute": ("mymeanflow:nope", "has no attribute 'nope'"),
}

BAD_FACTORIES = """
def raises():
    raise KeyError("config")


def wrong_type():
    return {"targets": {}}
"""


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_bad_spec_is_a_usage_error(user_repo, case):
    user_repo.makepyfile(raisesonimport="x = 1\ny = 1 / 0\n", badfactories=BAD_FACTORIES)
    spec, message = BAD_SPECS[case]
    result = user_repo.runpytest_inprocess(*PLUGIN, f"--impl={spec}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "ERROR: flowmap-oracle: " in err and message in err
    assert "INTERNALERROR" not in err + result.stdout.str()
    assert "Traceback" not in err + result.stdout.str()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1


JAX64 = """
from flowmap_oracle.oracle import Implementation


def implementation():
    return Implementation("jax64", conventions={"framework": "jax", "dtype": "float64"})
"""


@pytest.fixture
def jax_first():
    """JAX, imported before pytester's fixture snapshots ``sys.modules``: a first import inside
    the test would be dropped at teardown, and importing jaxlib a second time aborts."""
    return pytest.importorskip("jax")


def test_a_convention_that_cannot_run_is_a_usage_error(jax_first, user_repo):
    jax = jax_first
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is enabled in this process")
    user_repo.makepyfile(jax64impl=JAX64)
    result = user_repo.runpytest_inprocess(*PLUGIN, "--impl=jax64impl:implementation")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "jax_enable_x64" in result.stderr.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
