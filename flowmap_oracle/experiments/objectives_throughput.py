"""Step costs of the benchmark of objectives: one MeanFlow step (a JVP) against one
flow-matching step on the same network, eager and ``torch.compile``-d, and the seeds of a cell
trained together (stacked by batched matrix products or by ``torch.func.vmap``) against one
model at a time.

A *step* is what :func:`~flowmap_oracle.experiments.training.fit` does once: draw the times,
evaluate the loss, backpropagate and take an Adam step. Each cost is the median over
``repeats`` timed steps after ``warmup`` untimed ones (``time.perf_counter``).

Run ``python -m flowmap_oracle.experiments.objectives_throughput --json PATH`` to write the
measurement with its command, device and versions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..objectives import flow_matching_loss, meanflow_loss
from ..objectives.time_sampling import pair_times
from ..reference_models import preset
from .models import MLPFlowMap
from .records import environment, write_json
from .seed_stack import StackedMLPFlowMap

__all__ = ["StepCost", "main", "measure_jvp_routes", "measure_stacking", "measure_step_costs"]


@dataclass(frozen=True)
class StepCost:
    """The median seconds of one training step.

    Attributes:
        what: the objective (``"meanflow"`` or ``"flow_matching"``) or the stacking variant.
        mode: ``"eager"`` or ``"compiled"``; velocity: ``"teacher"`` or ``"conditional"``.
        seconds: median seconds per step (``None`` when the variant failed: see ``error``).
        per_seed: seconds per step and seed (stacking measurements).
    """

    what: str
    mode: str
    velocity: str
    seconds: float | None
    per_seed: float | None = None
    error: str | None = None


def _timed(step: Callable[[], None], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _make_step(
    model: torch.nn.Module,
    objective: str,
    *,
    batch: int,
    velocity: str,
    compiled: bool,
) -> Callable[[], None]:
    teacher = preset("ring8")
    v = teacher.velocity if velocity == "teacher" else None
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    net: Any = torch.compile(model) if compiled else model

    def loss() -> torch.Tensor:
        x0 = teacher.mixture.sample(batch, generator=gen)
        x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        if objective == "meanflow":
            t, s = pair_times(batch, equal_fraction=0.25, distribution="uniform", generator=gen)
            return meanflow_loss(net, x0, x1, t, s, velocity=v).loss
        t = 0.02 + 0.98 * torch.rand(batch, generator=gen, dtype=x0.dtype)
        return flow_matching_loss(net, x0, x1, t, velocity=v).loss

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step


def measure_step_costs(
    *,
    batch: int = 256,
    hidden: int = 64,
    depth: int = 3,
    warmup: int = 20,
    repeats: int = 200,
    velocities: Sequence[str] = ("conditional", "teacher"),
    compile_modes: Sequence[bool] = (False, True),
) -> list[StepCost]:
    """One MeanFlow step and one flow-matching step on the same :class:`MLPFlowMap` (ring8, 2-D,
    float64), eager and compiled, with the conditional and the teacher's velocity.

    Returns:
        One :class:`StepCost` per (objective, mode, velocity); a variant that raises is kept
        with its error.
    """
    out = []
    for velocity in velocities:
        for compiled in compile_modes:
            for objective in ("flow_matching", "meanflow"):
                torch.manual_seed(0)
                model = MLPFlowMap(2, hidden=hidden, depth=depth)
                mode = "compiled" if compiled else "eager"
                try:
                    step = _make_step(
                        model, objective, batch=batch, velocity=velocity, compiled=compiled
                    )
                    seconds = _timed(step, warmup=warmup, repeats=repeats)
                    out.append(StepCost(objective, mode, velocity, seconds))
                except Exception as err:
                    text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    out.append(StepCost(objective, mode, velocity, None, error=text))
    return out


def measure_stacking(
    *,
    seeds: int = 3,
    batch: int = 256,
    hidden: int = 64,
    depth: int = 3,
    warmup: int = 10,
    repeats: int = 100,
) -> list[StepCost]:
    """The seeds of a cell trained together (``bmm`` and ``vmap`` stacking, one step for all)
    against one model at a time (``sequential``: one step of each), for MeanFlow and flow
    matching with the teacher's velocity (as the benchmark trains)."""
    out = []
    for objective in ("flow_matching", "meanflow"):
        for mode in ("bmm", "vmap"):
            model = StackedMLPFlowMap(2, seeds=range(seeds), hidden=hidden, depth=depth, mode=mode)
            step = _make_step(
                model, objective, batch=seeds * batch, velocity="teacher", compiled=False
            )
            sec = _timed(step, warmup=warmup, repeats=repeats)
            out.append(
                StepCost(
                    f"{objective}, {seeds} seeds stacked ({mode})",
                    "eager",
                    "teacher",
                    sec,
                    sec / seeds,
                )
            )
        steps = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            steps.append(
                _make_step(
                    MLPFlowMap(2, hidden=hidden, depth=depth),
                    objective,
                    batch=batch,
                    velocity="teacher",
                    compiled=False,
                )
            )

        def all_steps(steps: list[Callable[[], None]] = steps) -> None:
            for s in steps:
                s()

        sec = _timed(all_steps, warmup=warmup, repeats=repeats)
        out.append(
            StepCost(
                f"{objective}, {seeds} seeds one at a time", "eager", "teacher", sec, sec / seeds
            )
        )
    return out


def measure_jvp_routes(
    *, batch: int = 256, hidden: int = 64, depth: int = 3, warmup: int = 5, repeats: int = 50
) -> list[StepCost]:
    """Where a MeanFlow step's time goes: the network's forward and backward alone, and with
    the tangent ``(v, 1, 0)`` pushed forward by ``torch.func.jvp`` and by
    ``torch.autograd.forward_ad`` dual tensors (each followed by one backward pass)."""
    import torch.autograd.forward_ad as fwad

    torch.manual_seed(0)
    model = MLPFlowMap(2, hidden=hidden, depth=depth)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(batch, generator=gen, dtype=torch.float64)
    s = t * torch.rand(batch, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, 2, generator=gen, dtype=torch.float64)

    def forward() -> None:
        model(x, t, s).sum().backward()

    def func_jvp() -> None:
        result = torch.func.jvp(model, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        result[0].sum().backward()

    def dual() -> None:
        with fwad.dual_level():
            out = model(fwad.make_dual(x, v), fwad.make_dual(t, torch.ones_like(t)), s)
            primal = fwad.unpack_dual(out).primal
        primal.sum().backward()  # reverse mode outside the dual level (silu has no dual backward)

    return [
        StepCost(name, "eager", "-", _timed(fn, warmup=warmup, repeats=repeats))
        for name, fn in (
            ("network forward + backward", forward),
            ("torch.func.jvp + backward", func_jvp),
            ("forward_ad dual tensors + backward", dual),
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the step costs; ``--json PATH`` writes them with the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m flowmap_oracle.experiments.objectives_throughput"
    )
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=200, help="timed steps per variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    costs = measure_step_costs(repeats=args.repeats)
    stacking = measure_stacking(repeats=max(10, args.repeats // 2))
    routes = measure_jvp_routes(repeats=max(10, args.repeats // 2))
    ratios = {}
    for velocity in ("conditional", "teacher"):
        for mode in ("eager", "compiled"):
            fm = next(
                c
                for c in costs
                if (c.what, c.mode, c.velocity) == ("flow_matching", mode, velocity)
            )
            mf = next(
                c for c in costs if (c.what, c.mode, c.velocity) == ("meanflow", mode, velocity)
            )
            if fm.seconds and mf.seconds:
                ratios[f"{velocity}, {mode}"] = mf.seconds / fm.seconds
    best_mf = min((c.seconds for c in costs if c.what == "meanflow" and c.seconds), default=None)
    best_fm = min(
        (c.seconds for c in costs if c.what == "flow_matching" and c.seconds), default=None
    )
    for c in [*costs, *stacking, *routes]:
        shown = "failed: " + str(c.error) if c.seconds is None else f"{1e3 * c.seconds:.2f} ms"
        print(f"{c.what:45s} {c.mode:9s} v={c.velocity:12s} {shown}")
    for name, ratio in ratios.items():
        print(f"MeanFlow / flow matching ({name}): {ratio:.2f}x")
    if args.json:
        record = {
            "command": " ".join(
                [
                    "python -m flowmap_oracle.experiments.objectives_throughput",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
            **environment("cpu"),
            "torch_threads": args.threads,
            "network": "MLPFlowMap(2, hidden=64, depth=3), float64, batch 256, Adam",
            "goal": "MeanFlow step at most 1.5x a flow-matching step on CPU (issue 12)",
            "ratios_meanflow_over_flow_matching": ratios,
            "ratio_best_over_best": (best_mf / best_fm) if best_mf and best_fm else None,
            "step_costs": [asdict(c) for c in costs],
            "stacking": [asdict(c) for c in stacking],
            "jvp_routes": [asdict(c) for c in routes],
        }
        print(f"wrote {write_json(args.json, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
