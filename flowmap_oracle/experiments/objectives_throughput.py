"""Step costs of the benchmark of objectives: one MeanFlow step (a JVP) against one
flow-matching step on the same network, eager and ``torch.compile``-d, and the seeds of a cell
trained together (stacked by batched matrix products or by ``torch.func.vmap``) against one
model at a time.

A *step* is what :func:`~flowmap_oracle.experiments.training.fit` does once: draw the times,
evaluate the loss, backpropagate and take an Adam step. Each cost is the median over
``repeats`` timed steps after ``warmup`` untimed ones (``time.perf_counter``). The variants
compared with each other are timed in turn within every repeat, so that a shared machine's load
weighs on each of them alike and their ratios hold even where the absolute times drift.

MeanFlow's JVP takes the network's own forward-mode pass (:meth:`MLPFlowMap.fused_jvp
<flowmap_oracle.experiments.models.MLPFlowMap.fused_jvp>`, used by
:func:`~flowmap_oracle.objectives.derivatives.directional_derivative` whenever a network offers
one); the same step with ``torch.func.jvp`` (the network behind a plain function, which offers
none) is measured beside it. Under ``torch.compile`` the module's attributes are the original
module's, so the fused pass runs eagerly there too. The stacked seeds take the stack's own
pass (:meth:`StackedMLPFlowMap.fused_jvp
<flowmap_oracle.experiments.seed_stack.StackedMLPFlowMap.fused_jvp>`, in the ``bmm`` stack behind
the benchmark's ``SeedBatches``), also measured beside ``torch.func.jvp``.

Run ``python -m flowmap_oracle.experiments.objectives_throughput --json PATH`` to write the
measurement with its command, device and versions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..objectives import ayf_emd_loss, flow_matching_loss, meanflow_loss
from ..objectives.time_sampling import pair_times
from ..reference_models import preset
from .bench_objectives import SeedBatches
from .models import MLPFlowMap
from .records import environment, write_json
from .seed_stack import StackedMLPFlowMap

__all__ = [
    "STACKED_OBJECTIVES",
    "StepCost",
    "main",
    "measure_jvp_routes",
    "measure_stacking",
    "measure_step_costs",
]


@dataclass(frozen=True)
class StepCost:
    """The median cost of one training step.

    Attributes:
        what: the objective (``"flow_matching"``, ``"meanflow"``, ``"ayf_emd"`` -- a JVP of
            the flow map -- and the last two with ``torch.func.jvp``:
            ``"meanflow_torch_func_jvp"``, ``"ayf_emd_torch_func_jvp"``) or the stacking variant.
        mode: ``"eager"`` or ``"compiled"``; velocity: ``"teacher"`` or ``"conditional"``.
        seconds: median wall-clock seconds per step (``None`` when the variant failed: see
            ``error``).
        per_seed: wall-clock seconds per step and seed (stacking measurements).
        error: why the variant failed, or ``None``.
        cpu_seconds: median CPU seconds of the measuring thread per step (with one torch
            thread, all of a step's work runs on it); unlike wall-clock time it leaves out the
            time the process waits for a core on a shared machine.
    """

    what: str
    mode: str
    velocity: str
    seconds: float | None
    per_seed: float | None = None
    error: str | None = None
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class _Timing:
    wall: float
    cpu: float


def _timed_in_turn(
    steps: Sequence[Callable[[], None]], *, warmup: int, repeats: int
) -> list[_Timing]:
    """The median wall-clock and thread-CPU seconds of each step, the steps timed one after
    another within every repeat."""
    for _ in range(warmup):
        for step in steps:
            step()
    wall: list[list[float]] = [[] for _ in steps]
    cpu: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for k, step in enumerate(steps):
            start, start_cpu = time.perf_counter(), time.thread_time()
            step()
            cpu[k].append(time.thread_time() - start_cpu)
            wall[k].append(time.perf_counter() - start)
    return [
        _Timing(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu, strict=True)
    ]


def _without_fused_jvp(net: Any) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]:
    """The network behind a plain function: no ``fused_jvp``, so the JVP is ``torch.func.jvp``."""
    return lambda x, t, s: net(x, t, s)


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
    base = objective.removesuffix("_torch_func_jvp")
    if base != objective:
        net = _without_fused_jvp(net)

    def loss() -> torch.Tensor:
        x0 = teacher.mixture.sample(batch, generator=gen)
        x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        if base in ("meanflow", "ayf_emd"):
            t, s = pair_times(batch, equal_fraction=0.25, distribution="uniform", generator=gen)
            if base == "ayf_emd":
                return ayf_emd_loss(net, x0, x1, t, s, velocity=v).loss
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
    """One flow-matching step, one MeanFlow step and one AYF-EMD step (a JVP of the flow map),
    the last two by the network's fused JVP and by ``torch.func.jvp``, on the same
    :class:`MLPFlowMap` (ring8, 2-D, float64), eager and compiled, with the conditional and the
    teacher's velocity.

    The five variants of one (velocity, mode) are timed in turn within every repeat.

    Arguments:
        batch, hidden, depth: the batch size and the MLP's width and number of hidden layers.
        warmup, repeats: untimed and timed steps of each variant.
        velocities: ``"conditional"`` and/or ``"teacher"``.
        compile_modes: ``False`` (eager) and/or ``True`` (``torch.compile`` of the module).

    Returns:
        One :class:`StepCost` per (objective, mode, velocity); a variant that raises is kept
        with its error.
    """
    out = []
    objectives = (
        "flow_matching",
        "meanflow",
        "meanflow_torch_func_jvp",
        "ayf_emd",
        "ayf_emd_torch_func_jvp",
    )
    for velocity in velocities:
        for compiled in compile_modes:
            mode = "compiled" if compiled else "eager"
            steps, names = [], []
            for objective in objectives:
                torch.manual_seed(0)
                model = MLPFlowMap(2, hidden=hidden, depth=depth)
                try:
                    step = _make_step(
                        model, objective, batch=batch, velocity=velocity, compiled=compiled
                    )
                    step()  # a variant that fails (e.g. to compile) fails here, alone
                except Exception as err:
                    text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    out.append(StepCost(objective, mode, velocity, None, error=text))
                    continue
                steps.append(step)
                names.append(objective)
            timings = _timed_in_turn(steps, warmup=warmup, repeats=repeats)
            out += [
                StepCost(name, mode, velocity, tm.wall, cpu_seconds=tm.cpu)
                for name, tm in zip(names, timings, strict=True)
            ]
    return out


STACKED_OBJECTIVES: tuple[str, ...] = ("flow_matching", "meanflow", "ayf_emd")
"""The objectives whose stacked steps :func:`measure_stacking` times."""


def measure_stacking(
    *,
    seeds: int = 3,
    batch: int = 256,
    hidden: int = 64,
    depth: int = 3,
    warmup: int = 10,
    repeats: int = 100,
    objectives: Sequence[str] = STACKED_OBJECTIVES,
) -> list[StepCost]:
    """The seeds of a cell trained together (one step for all) against one model at a time (one
    step of each), with the teacher's velocity (as the benchmark trains); the variants of an
    objective timed in turn.

    The ``bmm`` stack is trained behind the benchmark's
    :class:`~flowmap_oracle.experiments.bench_objectives.SeedBatches`, as the benchmark trains
    it: MeanFlow's and AYF-EMD's JVP take its fused pass
    (:meth:`StackedMLPFlowMap.fused_jvp
    <flowmap_oracle.experiments.seed_stack.StackedMLPFlowMap.fused_jvp>`, through the wrapper's
    ``fused_jvp`` and ``flow``); for those two the same stacked step with ``torch.func.jvp``
    (``"<objective>_torch_func_jvp, ..."``) is timed beside it. The ``vmap`` stack has no fused
    pass (``torch.func.jvp``); the single models take theirs.

    Arguments:
        seeds: members stacked; batch: rows per member; hidden, depth: the MLP.
        warmup, repeats: untimed and timed steps of each variant.
        objectives: names of :data:`STACKED_OBJECTIVES`.

    Returns:
        One :class:`StepCost` per variant, ``per_seed`` the wall-clock seconds over ``seeds``.
    """
    unknown = [o for o in objectives if o not in STACKED_OBJECTIVES]
    if unknown:
        raise ValueError(f"objectives must be among {STACKED_OBJECTIVES}, got {unknown}")
    out = []
    for objective in objectives:
        names = [objective]
        if objective != "flow_matching":
            names.append(f"{objective}_torch_func_jvp")
        variants: list[tuple[str, Callable[[], None]]] = []
        for name in names:
            model = StackedMLPFlowMap(2, seeds=range(seeds), hidden=hidden, depth=depth)
            step = _make_step(
                SeedBatches(model, batch=batch),
                name,
                batch=seeds * batch,
                velocity="teacher",
                compiled=False,
            )
            variants.append((f"{name}, {seeds} seeds stacked (bmm)", step))
        model = StackedMLPFlowMap(2, seeds=range(seeds), hidden=hidden, depth=depth, mode="vmap")
        step = _make_step(model, objective, batch=seeds * batch, velocity="teacher", compiled=False)
        variants.append((f"{objective}, {seeds} seeds stacked (vmap)", step))
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

        variants.append((f"{objective}, {seeds} seeds one at a time", all_steps))
        timings = _timed_in_turn([fn for _, fn in variants], warmup=warmup, repeats=repeats)
        out += [
            StepCost(name, "eager", "teacher", tm.wall, tm.wall / seeds, cpu_seconds=tm.cpu)
            for (name, _), tm in zip(variants, timings, strict=True)
        ]
    return out


def _stacking_ratios(stacking: Sequence[StepCost], *, seeds: int) -> dict[str, float]:
    """Median CPU-time ratios of the stacked steps: each objective stacked (``bmm``, fused) over
    flow matching stacked, over the same objective one seed at a time, and over its stacked
    ``torch.func.jvp`` step."""
    cpu = {c.what: c.cpu_seconds for c in stacking if c.cpu_seconds}
    bmm, vmap = f"{seeds} seeds stacked (bmm)", f"{seeds} seeds stacked (vmap)"
    single = f"{seeds} seeds one at a time"
    out = {}
    for objective in STACKED_OBJECTIVES:
        stacked = cpu.get(f"{objective}, {bmm}")
        if not stacked:
            continue
        pairs = {
            f"{objective} stacked (bmm) / flow_matching stacked (bmm)": f"flow_matching, {bmm}",
            f"{objective} stacked (bmm) / one at a time": f"{objective}, {single}",
            f"{objective} stacked (bmm) / stacked (vmap)": f"{objective}, {vmap}",
            f"{objective} stacked (bmm) / stacked (bmm) by torch.func.jvp": (
                f"{objective}_torch_func_jvp, {bmm}"
            ),
        }
        for label, other in pairs.items():
            below = cpu.get(other)
            if below and other != f"{objective}, {bmm}":
                out[label] = stacked / below
    return out


def measure_jvp_routes(
    *, batch: int = 256, hidden: int = 64, depth: int = 3, warmup: int = 5, repeats: int = 50
) -> list[StepCost]:
    """Where a MeanFlow step's time goes: the network's forward and backward alone, and with
    the tangent ``(v, 1, 0)`` pushed forward by the network's own pass (``fused_jvp``), by
    ``torch.func.jvp`` and by ``torch.autograd.forward_ad`` dual tensors (each followed by one
    backward pass of the output); the four timed in turn."""
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

    def fused_jvp() -> None:
        result = model.fused_jvp((x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        result[0].sum().backward()

    def func_jvp() -> None:
        result = torch.func.jvp(model, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        result[0].sum().backward()

    def dual() -> None:
        with fwad.dual_level():
            out = model(fwad.make_dual(x, v), fwad.make_dual(t, torch.ones_like(t)), s)
            primal = fwad.unpack_dual(out).primal
        primal.sum().backward()  # reverse mode outside the dual level (silu has no dual backward)

    routes = (
        ("network forward + backward", forward),
        ("MLPFlowMap.fused_jvp + backward", fused_jvp),
        ("torch.func.jvp + backward", func_jvp),
        ("forward_ad dual tensors + backward", dual),
    )
    timings = _timed_in_turn([fn for _, fn in routes], warmup=warmup, repeats=repeats)
    return [
        StepCost(name, "eager", "-", tm.wall, cpu_seconds=tm.cpu)
        for (name, _), tm in zip(routes, timings, strict=True)
    ]


def _ratios(costs: Sequence[StepCost], objective: str, *, clock: str = "cpu") -> dict[str, float]:
    """``objective``'s step cost over flow matching's, per ``"velocity, mode"``, by thread CPU
    time (``clock="cpu"``) or wall-clock time (``"wall"``)."""
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
    seconds = {
        (c.what, c.mode, c.velocity): c.cpu_seconds if clock == "cpu" else c.seconds for c in costs
    }
    out = {}
    for velocity in ("conditional", "teacher"):
        for mode in ("eager", "compiled"):
            fm = seconds.get(("flow_matching", mode, velocity))
            mf = seconds.get((objective, mode, velocity))
            if fm and mf:
                out[f"{velocity}, {mode}"] = mf / fm
    return out


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
    load_before = os.getloadavg()[0]
    costs = measure_step_costs(repeats=args.repeats)
    stacking = measure_stacking(repeats=max(10, args.repeats // 2))
    stacked_ratios = _stacking_ratios(stacking, seeds=3)
    routes = measure_jvp_routes(repeats=max(10, args.repeats // 2))
    ratios = _ratios(costs, "meanflow")
    ratios_func = _ratios(costs, "meanflow_torch_func_jvp")
    ratios_ayf = _ratios(costs, "ayf_emd")
    ratios_ayf_func = _ratios(costs, "ayf_emd_torch_func_jvp")
    ratios_wall = _ratios(costs, "meanflow", clock="wall")
    best_mf = min(
        (c.cpu_seconds for c in costs if c.what == "meanflow" and c.cpu_seconds), default=None
    )
    best_fm = min(
        (c.cpu_seconds for c in costs if c.what == "flow_matching" and c.cpu_seconds),
        default=None,
    )
    for c in [*costs, *stacking, *routes]:
        shown = (
            "failed: " + str(c.error)
            if c.seconds is None or c.cpu_seconds is None
            else f"{1e3 * c.cpu_seconds:.2f} ms CPU, {1e3 * c.seconds:.2f} ms wall"
        )
        print(f"{c.what:50s} {c.mode:9s} v={c.velocity:12s} {shown}")
    for label, table in (
        ("MeanFlow / flow matching, CPU time", ratios),
        ("MeanFlow / flow matching, wall clock", ratios_wall),
        ("MeanFlow by torch.func.jvp / flow matching, CPU time", ratios_func),
        ("AYF-EMD / flow matching, CPU time", ratios_ayf),
        ("AYF-EMD by torch.func.jvp / flow matching, CPU time", ratios_ayf_func),
    ):
        for name, ratio in table.items():
            print(f"{label} ({name}): {ratio:.2f}x")
    for name, ratio in stacked_ratios.items():
        print(f"{name}, CPU time: {ratio:.2f}x")
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
            "ratios_meanflow_over_flow_matching_wall_clock": ratios_wall,
            "ratios_meanflow_torch_func_jvp_over_flow_matching": ratios_func,
            "ratios_ayf_emd_over_flow_matching": ratios_ayf,
            "ratios_ayf_emd_torch_func_jvp_over_flow_matching": ratios_ayf_func,
            "note": (
                "meanflow and ayf_emd take MLPFlowMap.fused_jvp (ayf_emd: of its flow map) (the default: directional_derivative uses a "
                "network's own forward-mode pass when it offers one; under torch.compile it runs "
                "eagerly); the *_torch_func_jvp variants are the same steps with torch.func.jvp. The "
                "variants of one (velocity, mode) are timed in turn in every repeat. Ratios are "
                "of median thread CPU time per step (one torch thread: a step's work runs on the "
                "measuring thread), which leaves out the time spent waiting for a core on a "
                "shared machine; the wall-clock ratios are given beside them. "
                "load_average_1min (like load_average_1min_after) is read at the end, "
                "load_average_1min_before at the start. Stacking: 3 seeds of batch 256 as one "
                "StackedMLPFlowMap behind the benchmark's SeedBatches (bmm: MeanFlow and AYF-EMD "
                "take StackedMLPFlowMap.fused_jvp; *_torch_func_jvp the same step by "
                "torch.func.jvp; vmap: torch.func.jvp) against 3 MLPFlowMap steps one after "
                "another (fused); ratios_stacked_seeds are of median thread CPU time."
            ),
            "ratios_stacked_seeds": stacked_ratios,
            "ratio_best_over_best": (best_mf / best_fm) if best_mf and best_fm else None,
            "step_costs": [asdict(c) for c in costs],
            "stacking": [asdict(c) for c in stacking],
            "jvp_routes": [asdict(c) for c in routes],
            "load_average_1min_before": load_before,
            "load_average_1min_after": os.getloadavg()[0],
        }
        print(f"wrote {write_json(args.json, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
