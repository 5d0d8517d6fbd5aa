"""The float64 ``EXACT_MAP`` tolerance against what it was measured on.

``benchmarks/exact_map_errors.json`` holds the errors the exact-map checks see on correct
implementations (``python tests/measure_exact_map.py``). The tolerance must keep a factor of at
least 100 over the largest of them; a fresh measurement on the reference must agree with the
committed one; and a target whose tangent is computed in float32 inside a float64 implementation
(largest error 1.4e-7 at the check's inputs, the size of the former 1e-7 bound) now fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from measure_exact_map import measure

from flowmap_oracle.oracle import Implementation, OracleSettings, run_check
from flowmap_oracle.oracle.reference import reference_implementation
from flowmap_oracle.oracle.tolerances import EXACT_MAP

MEASURED = Path(__file__).resolve().parent.parent / "benchmarks" / "exact_map_errors.json"
MARGIN = 100


def test_the_tolerance_keeps_its_margin_over_the_committed_measurement():
    data = json.loads(MEASURED.read_text())
    worst = data["worst"]["float64"]["max_error"]
    assert worst > 0
    assert MARGIN * worst <= EXACT_MAP["float64"].atol, (worst, EXACT_MAP["float64"])
    rows = [r for r in data["rows"] if r["dtype"] == "float64"]
    assert {r["teacher"] for r in rows} >= {"ring8", "checkerboard", "full64"}


def test_a_fresh_measurement_on_the_reference_agrees():
    data = json.loads(MEASURED.read_text())
    committed = {
        r["check"]: r["max_error"]
        for r in data["rows"]
        if r["teacher"] == "ring8" and r["implementation"] == "flowmap-oracle reference"
    }
    impl = reference_implementation()
    settings = OracleSettings(teacher="ring8")
    for name in ("meanflow.target.exact_map_fixed_point", "scm.target.exact_map_zero"):
        err = measure(name, impl, settings)
        assert err is not None and err <= 10 * committed[name] + 1e-15, (name, err)
        assert MARGIN * err <= EXACT_MAP["float64"].atol


def _meanflow_target(tangent_dtype: torch.dtype):
    """MeanFlow's target ``v - (t - s) dF/dt`` with the JVP evaluated in ``tangent_dtype``."""

    def target(net, x, t, s, v):
        def u(x_, t_):
            return net(x_.double(), t_.double(), s).to(tangent_dtype)

        args = (x.to(tangent_dtype), t.to(tangent_dtype))
        tangents = (v.to(tangent_dtype), torch.ones_like(args[1]))
        _, du = torch.func.jvp(u, args, tangents)
        return (v - (t - s)[:, None] * du.double()).detach()

    return target


def test_a_float32_tangent_in_a_float64_implementation_fails():
    settings = OracleSettings(max_examples=2)
    ok = Implementation("float64 JVP", targets={"meanflow": _meanflow_target(torch.float64)})
    bad = Implementation("float32 JVP", targets={"meanflow": _meanflow_target(torch.float32)})
    name = "meanflow.target.exact_map_fixed_point"
    assert run_check(name, ok, settings).status == "pass"
    err = measure(name, bad, settings)
    assert err is not None and EXACT_MAP["float64"].atol < err < 1e-5, err
    assert run_check(name, bad, settings).status == "fail"
