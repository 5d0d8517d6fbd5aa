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


def test_a_bad_spec_is_a_clear_error(user_repo):
    result = user_repo.runpytest_inprocess(*PLUGIN, "--impl=mymeanflow:nope")
    assert result.ret != 0
    assert "has no attribute 'nope'" in result.stdout.str() + result.stderr.str()
