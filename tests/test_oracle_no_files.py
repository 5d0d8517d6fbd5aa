"""Nothing is written into the user's working directory: ``flowmap-oracle check`` (hypothesis
runs derandomised with no example database) and the pytest plugin leave it as they found it,
except for the outputs the user asked for."""

from __future__ import annotations

import os

from flowmap_oracle.cli import main

GOOD = "examples.jax_meanflow:implementation"
BAD = "flowmap_oracle.oracle.mutants.meanflow:sign_of_t_minus_s"


def test_check_leaves_the_working_directory_untouched(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["check", GOOD, "--quiet", "--only", "meanflow"]) == 0
    # A failing run is when a hypothesis database would save its failing examples (in
    # ``.hypothesis/`` of the working directory by default).
    assert main(["check", BAD, "--quiet", "--only", "meanflow"]) == 1
    assert sorted(os.listdir(work)) == []
    assert main(["check", GOOD, "--quiet", "--only", "flow_matching", "--json", "out.json"]) == 0
    assert sorted(os.listdir(work)) == ["out.json"]  # only what was asked for


FACTORY = """
import torch
from flowmap_oracle import Implementation


def target(net, x, t, s, v):
    _, dudt = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v - (t - s)[:, None] * dudt).detach()


def good():
    return Implementation("theirs", targets={"meanflow": target})
"""


def test_the_plugin_leaves_the_project_untouched(pytester):
    pytester.makepyfile(theirs=FACTORY)
    pytester.syspathinsert()
    before = set(os.listdir(pytester.path))
    result = pytester.runpytest_inprocess(
        "-p", "flowmap_oracle.oracle.plugin", "-p", "no:cacheprovider", "--impl", "theirs:good"
    )
    assert result.ret == 0, result.stdout.str()
    # Python's own bytecode cache of the user's module is the only newcomer.
    assert set(os.listdir(pytester.path)) - {"__pycache__"} == before
