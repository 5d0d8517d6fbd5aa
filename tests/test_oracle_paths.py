"""The oracle on a declared probability path: the teacher, the batch and the reference follow it."""

from __future__ import annotations

import pytest

from flowmap_oracle.oracle import run_checks
from flowmap_oracle.oracle.adapters import ConventionError, Conventions
from flowmap_oracle.oracle.mutants import run_mutant
from flowmap_oracle.oracle.reference import reference_implementation

# The methods whose losses build x_t and the conditional velocity from (data, noise) themselves:
# these are the ones a path changes (targets take x_t as given).
INTERPOLATING = ["flow_matching", "meanflow", "consistency", "split_meanflow", "ayf_emd", "imm"]


def test_the_reference_on_the_trig_path_passes_against_a_trig_teacher():
    results = run_checks(reference_implementation("trig"), objectives=INTERPOLATING)
    failed = [r.report() for r in results if r.status == "fail"]
    assert not failed, "\n".join(failed)
    assert sum(r.status == "pass" for r in results) >= len(INTERPOLATING)


def test_the_linear_reference_declared_on_trig_is_caught():
    # The reference's linear losses under a declaration of the trig path: the linear x_t on a VP
    # teacher, the old bug, in every interpolating loss at once.
    from dataclasses import replace

    wrong = replace(reference_implementation("linear"), conventions={"path": "trig"})
    results = run_checks(wrong, objectives=["flow_matching", "meanflow"])
    assert {r.check for r in results if r.status == "fail"} >= {
        "flow_matching.loss.value_and_gradient",
        "meanflow.loss.value_and_gradient",
    }


@pytest.mark.parametrize(
    "name",
    ["conventions.linear_interpolant_on_trig_path", "conventions.linear_velocity_on_trig_path"],
)
def test_path_mutants_are_killed_by_the_flow_matching_loss_check(name):
    result = run_mutant(name)
    assert result.killed and result.by == "flow_matching.loss.value_and_gradient"


def test_linear_only_conventions_refuse_another_path():
    assert Conventions(path="trig", time="noise_at_0").path == "trig"
    with pytest.raises(ConventionError, match="defined on the linear path"):
        Conventions(path="trig", time="edm_sigma")
    with pytest.raises(ConventionError, match="defined on the linear path"):
        Conventions(path="trig", prediction="x0")
    with pytest.raises(ConventionError, match="unknown path 'vp'"):
        Conventions(path="vp")
