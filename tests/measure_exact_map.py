"""Measure the errors the oracle's exact-map checks see on correct implementations.

Every check that compares against the exact teacher map under the ``EXACT_MAP`` tolerance
(``<method>.target.exact_map_fixed_point``, ``scm.target.exact_map_zero``) is run on its
explicit cases (the cases the oracle runs) with a zero tolerance, through a
:class:`~flowmap_oracle.oracle.context.CheckContext` subclass whose ``tol`` returns zero for that
table only, and the largest absolute error of each comparison is recorded. The implementations
are correct ones: the reference implementation on each path, and MeanFlow/FACM/sCM targets
written in every user time convention with every JVP API (from
``tests/test_oracle_conventions_fixes.py``); the teachers are the oracle's presets.

Run (the committed numbers): ``python tests/measure_exact_map.py > benchmarks/exact_map_errors.json``
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from test_oracle_conventions_fixes import TIMES, _target_implementation

from flowmap_oracle.oracle import Implementation, OracleSettings
from flowmap_oracle.oracle.context import CheckContext
from flowmap_oracle.oracle.reference import reference_implementation
from flowmap_oracle.oracle.registry import CHECKS
from flowmap_oracle.oracle.results import CheckFailure
from flowmap_oracle.oracle.tolerances import EXACT_MAP, Tolerance

TEACHERS = ("ring8", "checkerboard", "anisotropic_gaussian", "anisotropic10", "full64")


class _Measuring(CheckContext):
    """A context whose ``EXACT_MAP`` tolerance is zero: every comparison under it raises with
    the mismatch, whose ``max_error`` is the error the check saw."""

    def tol(self, table: dict[str, Tolerance]) -> Tolerance:
        if table is EXACT_MAP:
            return Tolerance(0.0, 0.0, "measurement")
        return super().tol(table)


def exact_map_checks() -> list[str]:
    import flowmap_oracle.oracle.checks  # noqa: F401  (registers the checks)

    return sorted(n for n in CHECKS if n.endswith((".exact_map_fixed_point", ".exact_map_zero")))


def measure(name: str, impl: Implementation, settings: OracleSettings) -> float | None:
    """The largest absolute error of ``name``'s exact-map comparison over its explicit cases;
    ``None`` when the implementation does not provide the check's function."""
    chk = CHECKS[name]
    if not impl.provides(chk.objective, chk.role):
        return None
    ctx = _Measuring(impl, settings)
    space = ctx.space(chk.space)
    space = space if chk.prepare is None else chk.prepare(ctx, space)
    worst = 0.0
    for case in space.explicit():
        try:
            chk.body(ctx, case, space)
        except CheckFailure as failure:
            if failure.mismatch is None:
                raise
            worst = max(worst, failure.mismatch.max_error)
    return worst


EXAMPLES = ("examples.torch_edm_consistency", "examples.torch_shortcut", "examples.jax_meanflow")
"""The example implementations that hand over targets (``examples.jax_meanflow`` is float32)."""


def implementations() -> list[Implementation]:
    impls = [reference_implementation(p) for p in ("linear", "trig", "lipman")]
    impls += [_target_implementation(t, api) for t in TIMES for api in ("func", "autograd")]
    impls += [importlib.import_module(m).implementation() for m in EXAMPLES]
    jax_mf = importlib.import_module("examples.jax_meanflow")
    impls.append(
        Implementation(
            name="example: JAX MeanFlow (examples.jax_meanflow's target) in float64",
            conventions={
                "time": "noise_at_0",
                "signature": "x_t_dt",
                "framework": "jax",
                "dtype": "float64",
            },
            targets={"meanflow": jax_mf.meanflow_target},
        )
    )
    return impls


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)  # for the float64 JAX implementation
    torch.set_num_threads(1)
    rows = []
    start = time.perf_counter()
    for teacher in TEACHERS:
        settings = OracleSettings(teacher=teacher)
        for impl in implementations():
            dtype = str(CheckContext(impl, settings).conventions.dtype)
            for name in exact_map_checks():
                err = measure(name, impl, settings)
                if err is not None:
                    rows.append(
                        {
                            "teacher": teacher,
                            "implementation": impl.name,
                            "dtype": dtype,
                            "check": name,
                            "max_error": err,
                        }
                    )
    worst = {
        d: max((r for r in rows if r["dtype"] == d), key=lambda r: r["max_error"])
        for d in sorted({r["dtype"] for r in rows})
    }
    out = {
        "command": "python tests/measure_exact_map.py > benchmarks/exact_map_errors.json",
        "what": "largest |got - expected| of each exact-map comparison over the check's explicit "
        "cases, on correct implementations, by declared dtype",
        "tolerance_at_measurement": {
            d: {"atol": tol.atol, "rtol": tol.rtol} for d, tol in EXACT_MAP.items()
        },
        "worst": worst,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
