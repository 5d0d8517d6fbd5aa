"""Warnings: the oracle's machinery is immune to ``-W error`` / ``filterwarnings = error``; the
implementation's own code keeps the session's filters.

The plugin test runs pytest in a subprocess, in a separate project folder whose ini turns every
warning into an error: in this process torch has already loaded what it loads lazily on first use
(its forward-mode decompositions call the deprecated ``torch.jit.script``), which a fresh process
has not.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from flowmap_oracle.oracle import Implementation, run_check
from flowmap_oracle.oracle.context import oracle_warnings, user_warnings

FACTORY = """
import warnings

import torch
from flowmap_oracle.oracle import Implementation


def good_target(net, x, t, s, v):
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v - (t - s)[:, None] * dF).detach()


def warning_target(net, x, t, s, v):
    warnings.warn("my own code warns", UserWarning, stacklevel=1)
    return good_target(net, x, t, s, v)


def good():
    return Implementation("good", targets={"meanflow": good_target})


def warns():
    return Implementation("warns", targets={"meanflow": warning_target})
"""

PLUGIN = ("-p", "flowmap_oracle.oracle.plugin", "-p", "no:randomly", "-p", "no:cacheprovider")


@pytest.fixture
def strict_repo(pytester):
    """A user's project whose pytest configuration turns every warning into an error."""
    pytester.makepyfile(strict_impl=FACTORY)
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    return pytester


def test_plugin_passes_a_correct_implementation_under_filterwarnings_error(strict_repo):
    result = strict_repo.runpytest_subprocess(*PLUGIN, "--impl=strict_impl:good", timeout=300)
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes["passed"] == 4 and "failed" not in outcomes  # the MeanFlow target checks
    assert "internal error" not in result.stdout.str()


def test_the_users_own_warning_still_fails_under_error(strict_repo):
    result = strict_repo.runpytest_subprocess(
        *PLUGIN, "--impl=strict_impl:warns", "-k", "random_network", timeout=300
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*the implementation's meanflow target raised UserWarning: my own code warns*"]
    )


def _good_target(net, x, t, s, v):
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v - (t - s)[:, None] * dF).detach()


def test_a_warning_in_the_oracles_machinery_is_not_the_users_failure(monkeypatch):
    from flowmap_oracle.oracle import networks

    original = networks.RandomNetwork.__call__

    def noisy(self, *args):  # our own network warns, like a third-party library would
        warnings.warn("third-party noise", DeprecationWarning, stacklevel=1)
        warnings.warn("third-party note", UserWarning, stacklevel=1)
        return original(self, *args)

    monkeypatch.setattr(networks.RandomNetwork, "__call__", noisy)
    impl = Implementation("good", targets={"meanflow": _good_target})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("error")
        result = run_check("meanflow.target.random_network", impl)
    assert result.status == "pass", result.message
    # deprecations inside the oracle are ignored; other warnings are shown, not raised
    assert {str(w.message) for w in seen} == {"third-party note"}


def test_the_users_filters_apply_to_the_users_code_only():
    def warns(net, x, t, s, v):
        warnings.warn("user warning", UserWarning, stacklevel=1)
        return _good_target(net, x, t, s, v)

    impl = Implementation("warns", targets={"meanflow": warns})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        failed = run_check("meanflow.target.random_network", impl)
    assert failed.status == "fail"
    assert failed.message.startswith("the implementation's meanflow target raised UserWarning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_check("meanflow.target.random_network", impl).status == "pass"


def test_oracle_and_user_filters_nest():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("error")
        with oracle_warnings():
            warnings.warn("ignored", DeprecationWarning, stacklevel=1)
            warnings.warn("shown, not raised", UserWarning, stacklevel=1)
            with user_warnings(), pytest.raises(UserWarning):
                warnings.warn("the user's: raised", UserWarning, stacklevel=1)
        with pytest.raises(DeprecationWarning):  # outside, the filters are as they were
            warnings.warn("raised again", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["shown, not raised"]
