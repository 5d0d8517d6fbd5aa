"""Proof by mutants: every wrong implementation in the catalogue is killed, the kill table says
by which check, and the catalogue covers the objectives."""

from __future__ import annotations

import json

import pytest

from flowmap_oracle.cli import main
from flowmap_oracle.oracle import CHECKS, checks_for
from flowmap_oracle.oracle import mutants as mutants_module
from flowmap_oracle.oracle.mutants import MUTANTS, run_mutants

SHIPPED_OBJECTIVES = ("meanflow", "flow_matching", "split_meanflow", "shortcut", "sampler")


@pytest.fixture(scope="module")
def kill_table():
    return run_mutants()


def test_catalogue_has_at_least_60_mutants_over_the_objectives(kill_table):
    assert len(kill_table) >= 60
    objectives = {m.objective for m in kill_table}
    assert len(objectives) >= 10, objectives
    assert all(m.description for m in MUTANTS.values())


def test_every_mutant_is_killed_by_a_real_mismatch(kill_table):
    survivors = [m.mutant for m in kill_table if not m.killed]
    assert not survivors, f"mutants survived: {survivors}"
    for m in kill_table:
        # a registered check, or an as-shipped or network check (not in CHECKS)
        assert m.by is not None and m.by_objective is not None, m
        assert m.by in CHECKS or m.by_objective in (*SHIPPED_OBJECTIVES, "network"), m
        # killed by a finding about the implementation, never by a crash of the oracle
        assert not m.message.startswith("internal error"), (m.mutant, m.message)


def test_mutants_are_killed_by_their_own_objectives_checks(kill_table):
    # a conventions mutant is a MeanFlow implementation in another convention; a shipped loss is
    # killed by its method's as-shipped checks, a sampler by a sampler's, a network by network.*
    for m in kill_table:
        assert m.by_objective == m.objective, (m.mutant, m.by)
        if m.by in CHECKS:
            assert CHECKS[m.by].objective == m.objective, (m.mutant, m.by)


def test_every_check_family_kills_something_or_is_a_fixed_point_check(kill_table):
    objectives_with_killers = {m.by_objective for m in kill_table if m.by in CHECKS}
    assert objectives_with_killers == {c.objective for c in checks_for()}
    # and the checks outside the registry: as-shipped losses, samplers, the user's network
    killers = {m.by for m in kill_table}
    assert {"network.jvp", "network.times", "meanflow.shipped.times"} <= killers
    assert {"meanflow.shipped.alignment", "shortcut.shipped.stationarity"} <= killers
    assert any(k.startswith("sampler.") for k in killers)


def _serve(monkeypatch, table):
    """The CLI runs the mutants one at a time (run_mutant): serve them from ``table``."""
    rows = {m.mutant: m for m in table}
    monkeypatch.setattr(mutants_module, "mutant_names", lambda: list(rows))
    monkeypatch.setattr(mutants_module, "run_mutant", lambda name, *a, **k: rows[name])


def test_mutants_cli_json_lists_mutant_objective_killed_by(kill_table, monkeypatch, capsys):
    _serve(monkeypatch, kill_table)
    assert main(["mutants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == len(kill_table)
    for row in rows:
        assert {"mutant", "objective", "killed", "by"} <= set(row)
        assert row["killed"] is True and row["by"]
    assert main(["mutants"]) == 0
    out = capsys.readouterr().out
    assert f"{len(kill_table)}/{len(kill_table)} mutants killed (100 %)" in out


def test_mutants_cli_fails_when_a_mutant_survives(kill_table, monkeypatch, capsys):
    from dataclasses import replace

    survived = [replace(kill_table[0], killed=False, by=None), *kill_table[1:]]
    _serve(monkeypatch, survived)
    assert main(["mutants"]) == 1
    assert "SURVIVED" in capsys.readouterr().out


def test_mutants_that_are_losses_are_killed_as_black_box_losses_too():
    """Flow matching, MeanFlow, SplitMeanFlow, Shortcut, FACM, sCM and AYF mutants composed into
    losses written as training code writes them: killed by the as-shipped checks, except those
    listed in NOT_EXPRESSIBLE (each with its reason); the reference composed the same way
    passes."""
    import torch

    from flowmap_oracle.oracle.mutants._registry import _load
    from flowmap_oracle.oracle.mutants.as_shipped import (
        METHODS,
        NOT_EXPRESSIBLE,
        run_mutant_as_shipped,
    )
    from flowmap_oracle.oracle.reference import implementation

    _load()
    for method in METHODS:
        torch.manual_seed(0)
        ref = run_mutant_as_shipped(implementation(), name="reference", method=method)
        assert not ref.killed, (method, ref.message)
    candidates = sorted(n for n, m in MUTANTS.items() if m.objective in METHODS and m.replaces)
    assert len(candidates) >= 28
    survivors, killers = [], set()
    for name in candidates:
        m = MUTANTS[name]
        prefer = "losses" if "losses" in m.replaces else "targets"
        torch.manual_seed(0)  # the composed losses draw from the global generator
        res = run_mutant_as_shipped(
            m.implementation(), name=name, method=m.objective, prefer=prefer
        )
        if res.killed:
            killers.add(res.by)
        else:
            survivors.append(name)
    assert set(survivors) == set(NOT_EXPRESSIBLE), survivors
    assert all(reason for reason in NOT_EXPRESSIBLE.values())
    # every composed method's mutants die by that method's own checks
    assert {k.split(".")[0] for k in killers} == set(METHODS)


def test_the_correct_versions_of_the_shipped_and_network_mutants_pass():
    """Each shipped or network mutant is one switch of a correct loss, sampler or network: the
    correct one passes every check it runs (so the kill is the bug's, not the harness's)."""
    import torch

    from flowmap_oracle.oracle import Implementation
    from flowmap_oracle.oracle.mutants.network import Net
    from flowmap_oracle.oracle.mutants.shipped import correct_implementations
    from flowmap_oracle.oracle.runner import run_shipped
    from flowmap_oracle.oracle.shipped_value import VALUE_METHODS
    from flowmap_oracle.oracle.user_network import UserNetwork, run_network_checks

    net = UserNetwork(
        Net(),
        jvp_apis=("torch.func.jvp", "torch.autograd.functional.jvp"),
        time_shapes=("vector", "column"),
    )
    results = run_network_checks(Implementation("correct network", network=net))
    for impl in correct_implementations().values():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            results += run_shipped(impl, repeats=8)
    assert len(results) >= 14
    # the value check rebuilds only VALUE_METHODS (for the others it says so and skips) and only
    # declared losses (the SplitMeanFlow and Shortcut versions declare nothing: it says so)
    outside = [
        r
        for r in results
        if r.check.endswith(".shipped.value")
        and (r.check.split(".")[0] not in VALUE_METHODS or "nothing declared" in r.message)
    ]
    assert all(
        r.status == "skip" and ("not yet" in r.message or "nothing declared" in r.message)
        for r in outside
    )
    judged = [r for r in results if r not in outside]
    assert any(r.check == "meanflow.shipped.value" for r in judged)
    assert all(r.status == "pass" for r in judged), [
        (r.check, r.message) for r in judged if r.status != "pass"
    ]
