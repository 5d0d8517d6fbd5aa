"""The step-cost measurement of the benchmark of objectives (a small, fast configuration)."""

from __future__ import annotations

import time

import pytest
import torch

from flowmap_oracle.experiments.models import MLPFlowMap
from flowmap_oracle.experiments.objectives_throughput import (
    StepCost,
    _ratios,
    _timed_in_turn,
    _without_fused_jvp,
    measure_jvp_routes,
    measure_step_costs,
)
from flowmap_oracle.objectives.derivatives import FusedJvp


def test_variants_are_timed_in_turn_within_every_repeat():
    calls: list[str] = []
    timings = _timed_in_turn(
        [lambda: calls.append("a"), lambda: calls.append("b")], warmup=2, repeats=3
    )
    assert calls == ["a", "b"] * 5
    assert len(timings) == 2 and all(tm.wall >= 0 and tm.cpu >= 0 for tm in timings)


def test_cpu_time_leaves_out_waiting():
    """A step that sleeps takes wall-clock time but (almost) no CPU time."""
    (tm,) = _timed_in_turn([lambda: time.sleep(0.02)], warmup=0, repeats=3)
    assert tm.wall >= 0.02 and tm.cpu < 0.01


def test_the_torch_func_variant_hides_the_fused_pass():
    model = MLPFlowMap(2, hidden=8, depth=1)
    assert isinstance(model, FusedJvp)
    assert not isinstance(_without_fused_jvp(model), FusedJvp)


def test_ratios_divide_each_objective_by_flow_matching_of_the_same_velocity_and_mode():
    costs = [
        StepCost("flow_matching", "eager", "teacher", 2.0, cpu_seconds=1.0),
        StepCost("meanflow", "eager", "teacher", 3.0, cpu_seconds=1.25),
        StepCost("flow_matching", "eager", "conditional", 4.0, cpu_seconds=2.0),
        StepCost("meanflow", "eager", "conditional", 5.0, cpu_seconds=3.0),
        StepCost("meanflow", "compiled", "teacher", 7.0, cpu_seconds=7.0),  # no partner
        StepCost("flow_matching", "compiled", "conditional", None, error="boom"),
    ]
    assert _ratios(costs, "meanflow") == {"teacher, eager": 1.25, "conditional, eager": 1.5}
    assert _ratios(costs, "meanflow", clock="wall") == {
        "teacher, eager": 1.5,
        "conditional, eager": 1.25,
    }
    with pytest.raises(ValueError, match="clock must be"):
        _ratios(costs, "meanflow", clock="gpu")


def test_a_small_measurement_covers_every_objective_and_route():
    torch.set_num_threads(1)
    costs = measure_step_costs(
        batch=16,
        hidden=8,
        depth=1,
        warmup=1,
        repeats=2,
        velocities=("teacher",),
        compile_modes=(False,),
    )
    assert [(c.what, c.mode, c.velocity) for c in costs] == [
        (name, "eager", "teacher")
        for name in (
            "flow_matching",
            "meanflow",
            "meanflow_torch_func_jvp",
            "ayf_emd",
            "ayf_emd_torch_func_jvp",
        )
    ]
    assert all(c.error is None and c.seconds and c.cpu_seconds for c in costs)
    routes = measure_jvp_routes(batch=16, hidden=8, depth=1, warmup=1, repeats=2)
    assert [r.what for r in routes] == [
        "network forward + backward",
        "MLPFlowMap.fused_jvp + backward",
        "torch.func.jvp + backward",
        "forward_ad dual tensors + backward",
    ]
