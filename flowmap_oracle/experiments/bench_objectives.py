"""The benchmark of objectives: every objective trained to a stated budget and measured against
the teacher's exact flow map (issue 12).

A *grid* is objectives x teachers x paths x seeds, each trained once at a budget of
``train_steps`` Adam steps of ``batch`` samples, then sampled with 1, 2, 4, 8 ... steps. A
*cell* is one (objective, teacher, path, sampling steps, seed); the store holds one JSON object
per cell (:class:`ResultStore`, JSON lines). The unit of work, a :class:`Task`, is one
(objective, teacher, path) with the seeds still missing, trained together as one stacked model
(:class:`~flowmap_oracle.experiments.seed_stack.StackedMLPFlowMap`), which the objectives see
through :class:`SeedBatches` (every row reaches the member it was drawn for, also in the
objectives that evaluate the model on several batches concatenated in one call).

Per cell, against the exact map (the reference solve of
:class:`~flowmap_oracle.reference_models.ExactFlowMap`, float64, rtol = atol = 1e-12):

* ``rmse_exact``: RMSE of the k-step sampler's images of fixed noise points against their exact
  images ``Phi_{1->0}(x1)`` (:func:`~flowmap_oracle.experiments.metrics.rmse`);
* ``ts_grid``: RMSE of ``f_{t->s}(x_t)`` against ``Phi_{t->s}(x_t)`` over a grid of ``(t, s)``
  (``x_t`` drawn from the path's marginal), for the pairs the objective trains;
* ``w2``: Wasserstein-2 between the samples and a fixed sample of the teacher's data law (POT:
  exact ``ot.emd2`` up to :data:`EXACT_W2_MAX` points, Sinkhorn beyond), with ``w2_floor``, the
  same distance for the exact images (the finite-sample floor);
* ``mmd``: the unbiased ``MMD^2`` (Gaussian kernel, bandwidth :data:`MMD_BANDWIDTH` times
  ``sqrt(d)``) between the same two samples;
* ``baselines``: the teacher's own solvers on the same noise (Euler and Heun with k steps, and
  an adaptive dopri5 solve at rtol = atol = 1e-3).

Training curves (loss and ``rmse_exact`` at :attr:`BenchConfig.checkpoints` points) are stored
with each cell, with a plateau verdict: the relative change of the RMSE over the last quarter of
the budget, ``(r(3/4) - r(end)) / r(end)``, below :data:`PLATEAU_THRESHOLD`.

Each ``ok`` record also holds ``objective``, ``teacher``, ``path``, ``steps`` (sampling steps),
``seed``, ``sampler``, ``train_steps``, ``batch``, ``lr``, ``model``, ``train_compute`` (samples
seen per seed, steps x batch), ``seconds`` (training wall-clock of the task, all its seeds
together), ``step_seconds`` (``seconds / train_steps``), ``seeds_together``, ``stack``,
``curve``, ``plateau``, ``baselines``, ``device``, ``versions``, ``torch_threads`` and the load
average; an ``error`` record holds the key fields, ``error`` and the last frames of the
traceback.

Samplers per objective (:data:`SAMPLERS`): flow maps trained on every pair ``(t, s)`` compose
``k`` steps (:func:`~.samplers.multi_step`); maps trained towards data only (consistency, sCM,
FACM) take DDIM's traversal with the conditional re-noising (:func:`~.samplers.ddim_sampler`,
linear path only for ``k > 1``); velocity models (flow matching, ReFlow) take ``k`` Euler steps.
ReFlow trains on straight segments between its coupled pairs on every teacher path (the
rectified flow, whose one Euler step is the teacher's map ``Phi_{1->0}``); its pairs come from
the teacher's exact map on the teacher's own path.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..conventions import LINEAR, PATH_NAMES, interpolant, path_named
from ..objectives import (
    EulerSolver,
    HeunSolver,
    LossOutput,
    ayf_emd_loss,
    ayf_lmd_loss,
    consistency_loss,
    ctm_loss,
    facm_loss,
    flow_matching_loss,
    imm_loss,
    meanflow_loss,
    mmd2_unbiased,
    reflow_couplings,
    reflow_loss,
    scm_loss,
    shortcut_loss,
    split_meanflow_loss,
)
from ..objectives.time_sampling import (
    consistency_times,
    ctm_times,
    imm_times,
    pair_times,
    shortcut_times,
    split_times,
)
from ..reference_models import PRESETS, ExactFlowMap, GaussianMixtureTeacher, preset
from .metrics import rmse
from .models import FlowMapModel, Parameterisation
from .records import environment
from .samplers import ddim_sampler, euler_sampler, multi_step
from .seed_stack import FusedFlow, StackedMLPFlowMap, StackMode, routed_fused_jvp
from .training import fit

__all__ = [
    "EXACT_W2_MAX",
    "MMD_BANDWIDTH",
    "OBJECTIVES",
    "PLATEAU_THRESHOLD",
    "SAMPLERS",
    "BenchConfig",
    "CellSummary",
    "ObjectivesBenchmark",
    "ResultStore",
    "SeedBatches",
    "Task",
    "auto_config",
    "baselines_for",
    "bench_environment",
    "cpu_config",
    "evaluate_member",
    "format_summary",
    "gpu_config",
    "load_objectives_benchmark",
    "plan_tasks",
    "plateau",
    "reference_for",
    "run_grid",
    "run_task",
    "summarise",
    "w2_distance",
]

OBJECTIVES: tuple[str, ...] = (
    "flow_matching",
    "meanflow",
    "split_meanflow",
    "consistency",
    "scm",
    "facm",
    "ayf_emd",
    "ayf_lmd",
    "shortcut",
    "reflow",
    "imm",
    "ctm",
)
"""Every objective the benchmark trains (the names of :class:`flowmap_oracle.Method`)."""

SamplerKind = Literal["multi_step", "ddim", "euler"]

SAMPLERS: dict[str, SamplerKind] = {
    "flow_matching": "euler",
    "reflow": "euler",
    "consistency": "ddim",
    "scm": "ddim",
    "facm": "ddim",
    **{
        name: "multi_step"
        for name in ("meanflow", "split_meanflow", "ayf_emd", "ayf_lmd", "shortcut", "imm", "ctm")
    },
}
"""The k-step sampler of each objective (see the module docstring)."""

PLATEAU_THRESHOLD = 0.05
"""A run has reached its plateau when its RMSE fell by less than 5 % over the last quarter."""

EXACT_W2_MAX = 3000
"""Up to this many points per sample W2 is exact (``ot.emd2``); Sinkhorn beyond."""

MMD_BANDWIDTH = 1.0
"""Gaussian-kernel bandwidth of the MMD, in units of ``sqrt(d)``."""

SCHEMA = 1
"""Version of the store's record layout."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines a grid and its budget.

    Attributes:
        name: ``"cpu"``, ``"cpu-quick"`` or ``"gpu"`` (stored with every cell).
        device: torch device of training and evaluation.
        teachers: preset names; paths: path names (:data:`~flowmap_oracle.conventions.PATH_NAMES`).
        objectives: names of :data:`OBJECTIVES`.
        steps: sampling steps evaluated per trained model.
        seeds: number of seeds (0 .. seeds - 1).
        train_steps, batch, lr: the training budget (Adam, cosine decay).
        hidden, depth: the MLP.
        checkpoints: evaluations along training (the curves).
        n_eval: fixed noise points of ``rmse_exact``, W2 and MMD; n_data: data samples of W2
            and MMD; n_grid: points per ``(t, s)`` pair; n_curve: noise points of the curves.
        stack: how the seeds are trained together (``"bmm"`` or ``"vmap"``).
        threads: torch CPU threads per task (``None``: leave torch's choice).
    """

    name: str = "cpu"
    device: str = "cpu"
    teachers: tuple[str, ...] = ("ring8", "checkerboard")
    paths: tuple[str, ...] = ("linear", "trig")
    objectives: tuple[str, ...] = OBJECTIVES
    steps: tuple[int, ...] = (1, 2, 4, 8)
    seeds: int = 3
    train_steps: int = 2000
    batch: int = 256
    lr: float = 2e-3
    hidden: int = 64
    depth: int = 3
    checkpoints: int = 10
    n_eval: int = 1024
    n_data: int = 1024
    n_grid: int = 256
    n_curve: int = 256
    stack: StackMode = "bmm"
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in self.teachers:
            if name not in PRESETS:
                raise ValueError(f"unknown teacher {name!r}; known presets: {', '.join(PRESETS)}")
        for name in self.paths:
            if name not in PATH_NAMES:
                raise ValueError(f"unknown path {name!r}; known paths: {', '.join(PATH_NAMES)}")
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        if not self.steps or any(int(k) < 1 for k in self.steps):
            raise ValueError(f"steps must be positive integers, got {self.steps}")
        for name in ("seeds", "train_steps", "batch", "checkpoints", "n_eval", "n_data"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch % 32:
            raise ValueError(f"batch must be a multiple of 32 (IMM's groups), got {self.batch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def budget(self) -> str:
        """The training budget in words."""
        return f"{self.train_steps} steps x batch {self.batch}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cpu_config(*, quick: bool = False) -> BenchConfig:
    """The CPU configuration: a small MLP on the 2-D teachers (ring8, checkerboard) on the
    linear and trig paths, 3 seeds, 2000 steps of 256. ``quick``: ring8 on the linear path,
    2 seeds, 1000 steps (every objective within about 10 minutes on 2 cores)."""
    if quick:
        return BenchConfig(
            name="cpu-quick",
            teachers=("ring8",),
            paths=("linear",),
            seeds=2,
            train_steps=1000,
            checkpoints=8,
            n_eval=512,
            n_data=512,
            n_grid=128,
            n_curve=256,
        )
    return BenchConfig()


def gpu_config(*, device: str = "cuda") -> BenchConfig:
    """The GPU configuration: a larger MLP, every teacher of the issue (ring8, checkerboard,
    anisotropic10, full64) on the linear and trig paths, 5 seeds, 20000 steps of 1024,
    float64 throughout (the exact maps are float64)."""
    return BenchConfig(
        name="gpu",
        device=device,
        teachers=("ring8", "checkerboard", "anisotropic10", "full64"),
        paths=("linear", "trig"),
        seeds=5,
        train_steps=20_000,
        batch=1024,
        lr=1e-3,
        hidden=256,
        depth=4,
        checkpoints=20,
        n_eval=4096,
        n_data=4096,
        n_grid=1024,
        n_curve=1024,
        threads=None,
    )


def auto_config(*, quick: bool = False) -> BenchConfig:
    """:func:`gpu_config` when CUDA is available (and not ``quick``), else :func:`cpu_config`."""
    if torch.cuda.is_available() and not quick:
        return gpu_config()
    return cpu_config(quick=quick)


# ----------------------------------------------------------------------------- objectives

Step = Callable[[torch.nn.Module, Tensor, Tensor, torch.Generator], LossOutput]


def _uniform(n: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    return 0.02 + 0.98 * torch.rand(n, generator=gen, dtype=dtype)


def _on(x0: Tensor, *times: Tensor) -> Any:
    """``times`` (drawn on the CPU generator) moved to ``x0``'s device; one tensor or a tuple."""
    moved = tuple(t.to(x0.device) for t in times)
    return moved[0] if len(moved) == 1 else moved


def _objective_step(name: str, teacher: GaussianMixtureTeacher) -> Step:
    """Times are drawn on the CPU generator and moved to the points' device.

    ``step(model, x0, x1, generator) -> LossOutput`` of objective ``name`` on the teacher's
    path, with the settings of the smoke training (each objective's own time sampler, the
    teacher's marginal velocity, Heun teacher solvers where the method distils)."""
    v, path = teacher.velocity, teacher.path
    heun, heun4 = HeunSolver(v, n_steps=1), HeunSolver(v, n_steps=4)

    def fm(m, x0, x1, g):
        return flow_matching_loss(
            m, x0, x1, _on(x0, _uniform(len(x0), g, x0.dtype)), velocity=v, path=path
        )

    def meanflow(m, x0, x1, g):
        t, s = _on(
            x0,
            *pair_times(
                len(x0), equal_fraction=0.25, distribution="uniform", generator=g, dtype=x0.dtype
            ),
        )
        return meanflow_loss(m, x0, x1, t, s, velocity=v, path=path)

    def split(m, x0, x1, g):
        t, r, s = _on(x0, *split_times(len(x0), generator=g, dtype=x0.dtype))
        return split_meanflow_loss(m, x0, x1, t, r, s, velocity=v, path=path)

    def cd(m, x0, x1, g):
        t, dt = _on(x0, *consistency_times(len(x0), n_steps=20, generator=g, dtype=x0.dtype))
        return consistency_loss(m, x0, x1, t, delta_t=dt, solver=heun, path=path)

    def scm(m, x0, x1, g):
        t = _on(x0, _uniform(len(x0), g, x0.dtype))
        return scm_loss(m, x0, x1, t, velocity=v, weight=1 / t, path=path)

    def facm(m, x0, x1, g):
        t = _on(x0, _uniform(len(x0), g, x0.dtype))
        return facm_loss(m, x0, x1, t, velocity=v, time_encoding="diagonal", path=path)

    def emd(m, x0, x1, g):
        t, s = _on(
            x0,
            *pair_times(
                len(x0), equal_fraction=0.0, distribution="uniform", generator=g, dtype=x0.dtype
            ),
        )
        return ayf_emd_loss(m, x0, x1, t, s, velocity=v, path=path)

    def lmd(m, x0, x1, g):
        t, s = _on(
            x0,
            *pair_times(
                len(x0), equal_fraction=0.0, distribution="uniform", generator=g, dtype=x0.dtype
            ),
        )
        return ayf_lmd_loss(m, x0, x1, t, s, velocity=v, path=path)

    def shortcut(m, x0, x1, g):
        t, s = _on(x0, *shortcut_times(len(x0), max_log2_steps=4, generator=g, dtype=x0.dtype))
        return shortcut_loss(m, x0, x1, t, s, velocity=v, path=path)

    def imm(m, x0, x1, g):
        group = 32
        t, r, s = _on(x0, *imm_times(len(x0) // group, group, gap=0.5, generator=g, dtype=x0.dtype))
        return imm_loss(m, x0, x1, t, r, s, group_size=group, bandwidth=0.5, path=path)

    def ctm(m, x0, x1, g):
        t, r, s = _on(x0, *ctm_times(len(x0), generator=g, dtype=x0.dtype))
        return ctm_loss(m, x0, x1, t, r, s, solver=heun4, dsm_weight=1.0, velocity=v, path=path)

    table: dict[str, Step] = {
        "flow_matching": fm,
        "meanflow": meanflow,
        "split_meanflow": split,
        "consistency": cd,
        "scm": scm,
        "facm": facm,
        "ayf_emd": emd,
        "ayf_lmd": lmd,
        "shortcut": shortcut,
        "imm": imm,
        "ctm": ctm,
    }
    return table[name]


# ----------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """What every cell of one (teacher, path) is measured against (computed once per process).

    Attributes:
        teacher, exact: the teacher and its exact flow map.
        noise, images: fixed noise points and their exact images ``Phi_{1->0}``.
        data: a fixed sample of the teacher's data law (W2, MMD).
        curve_noise, curve_images: the (smaller) fixed set of the training curves.
        grid: per ``(t, s)``: the points ``x_t`` and their exact images ``Phi_{t->s}(x_t)``.
        w2_floor, mmd_floor: W2 and MMD of the exact images against ``data``.
    """

    teacher: GaussianMixtureTeacher
    exact: ExactFlowMap
    noise: Tensor
    images: Tensor
    data: Tensor
    curve_noise: Tensor
    curve_images: Tensor
    grid: dict[tuple[float, float], tuple[Tensor, Tensor]]
    w2_floor: float
    mmd_floor: float


GRID_TIMES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
"""The ``(t, s)`` grid: every pair ``s < t`` from these times and 0."""


def _grid_pairs() -> list[tuple[float, float]]:
    times = (0.0, *GRID_TIMES)
    return [(t, s) for t in GRID_TIMES for s in times if s < t]


@cache
def _reference(
    teacher_name: str, path_name: str, n_eval: int, n_data: int, n_grid: int, n_curve: int
) -> Reference:
    teacher = preset(teacher_name, path=path_named(path_name))
    exact = ExactFlowMap(teacher)
    d = teacher.dim
    gen = torch.Generator().manual_seed(1234)
    noise = torch.randn(n_eval, d, generator=gen, dtype=torch.float64)
    data = teacher.mixture.sample(n_data, generator=gen).to(torch.float64)
    curve_noise = torch.randn(n_curve, d, generator=gen, dtype=torch.float64)
    images = exact(noise, 1.0, 0.0)
    grid = {}
    for t, s in _grid_pairs():
        x0 = teacher.mixture.sample(n_grid, generator=gen).to(torch.float64)
        x1 = torch.randn(n_grid, d, generator=gen, dtype=torch.float64)
        x_t = interpolant(teacher.path, x0, x1, torch.full((n_grid,), t, dtype=torch.float64))
        grid[(t, s)] = (x_t, exact(x_t, t, s))
    return Reference(
        teacher=teacher,
        exact=exact,
        noise=noise,
        images=images,
        data=data,
        curve_noise=curve_noise,
        curve_images=exact(curve_noise, 1.0, 0.0),
        grid=grid,
        w2_floor=w2_distance(images, data).value,
        mmd_floor=mmd(images, data),
    )


def reference_for(config: BenchConfig, teacher: str, path: str) -> Reference:
    """The :class:`Reference` of ``(teacher, path)`` at ``config``'s sample sizes (cached)."""
    return _reference(teacher, path, config.n_eval, config.n_data, config.n_grid, config.n_curve)


@dataclass(frozen=True)
class W2:
    """A Wasserstein-2 distance and how it was computed (``"emd"`` exact, or ``"sinkhorn"``)."""

    value: float
    method: str


def w2_distance(a: Tensor, b: Tensor, *, exact_max: int = EXACT_W2_MAX) -> W2:
    """Wasserstein-2 between the empirical laws of point sets ``a`` and ``b`` (uniform weights).

    Exact (POT's ``ot.emd2``, network simplex) when both have at most ``exact_max`` points;
    entropic (``ot.sinkhorn2``, regularisation 1 % of the mean squared cost) beyond.

    Raises:
        ValueError: for sets of different dimension or an empty set.
    """
    ot = importlib.import_module("ot")  # POT, the ``ot`` extra (it ships no type information)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"need two non-empty (n, d) sets of one d, got {a.shape} and {b.shape}")
    xa, xb = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    cost = ot.dist(xa, xb)  # squared Euclidean
    wa, wb = ot.unif(len(xa)), ot.unif(len(xb))
    if max(len(xa), len(xb)) <= exact_max:
        return W2(math.sqrt(max(float(ot.emd2(wa, wb, cost, numItermax=10_000_000)), 0.0)), "emd")
    reg = 0.01 * float(cost.mean())
    value = float(ot.sinkhorn2(wa, wb, cost, reg, numItermax=2000))
    return W2(math.sqrt(max(value, 0.0)), "sinkhorn")


def mmd(a: Tensor, b: Tensor) -> float:
    """The unbiased ``MMD^2`` of two equal-size samples with a Gaussian kernel of bandwidth
    :data:`MMD_BANDWIDTH` ``* sqrt(d)`` (IMM's estimator, :func:`mmd2_unbiased`, one group)."""
    n = min(len(a), len(b))
    bw = MMD_BANDWIDTH * math.sqrt(a.shape[1])
    value = mmd2_unbiased(
        a[None, :n].double().cpu(), b[None, :n].double().cpu(), kernel="gaussian", bandwidth=bw
    )
    return float(value[0])


def _times(k: int) -> list[float]:
    return [1.0 - i / k for i in range(k)] + [0.0]


def sample(
    model: torch.nn.Module, kind: SamplerKind, x1: Tensor, k: int, *, linear: bool
) -> Tensor | None:
    """``k`` steps of sampler ``kind`` from ``x1`` (``None`` where the sampler does not apply:
    DDIM's conditional re-noising off the linear path)."""
    if kind == "euler":
        return euler_sampler(model, x1, k)
    if kind == "multi_step":
        return multi_step(model, x1, _times(k))
    if k > 1 and not linear:
        return None
    return ddim_sampler(model, x1, _times(k), renoise="conditional")


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_member(
    model: FlowMapModel, objective: str, ref: Reference, steps: Sequence[int], *, linear: bool
) -> dict[int, dict[str, Any]]:
    """Measure one trained model against the exact map: per sampling step count ``k``, the
    ``rmse_exact``, ``w2`` (with ``w2_method``), ``mmd`` and the ``ts_grid`` errors."""
    kind = SAMPLERS[objective]
    device, dtype = _placement(model)
    x1 = ref.noise.to(device=device, dtype=dtype)
    grid = _ts_grid(model, kind, ref)
    out: dict[int, dict[str, Any]] = {}
    for k in steps:
        pred = sample(model, kind, x1, k, linear=linear)
        if pred is None:
            out[k] = {"rmse_exact": None, "w2": None, "w2_method": None, "mmd": None}
        else:
            pred = pred.to(torch.float64).cpu()
            w2 = w2_distance(pred, ref.data)
            out[k] = {
                "rmse_exact": rmse(pred, ref.images),
                "w2": w2.value,
                "w2_method": w2.method,
                "mmd": mmd(pred, ref.data),
            }
        out[k]["ts_grid"] = grid
    return out


def _placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``model``'s parameters (CPU float64 for a model without any,
    such as the exact teacher map)."""
    p = next(model.parameters(), None)
    return (torch.device("cpu"), torch.float64) if p is None else (p.device, p.dtype)


def _ts_grid(model: FlowMapModel, kind: SamplerKind, ref: Reference) -> list[dict[str, float]]:
    """RMSE of ``f_{t->s}`` over the grid: every pair for flow maps, ``s = 0`` for maps towards
    data, none for velocity models."""
    if kind == "euler":
        return []
    device, dtype = _placement(model)
    rows = []
    for (t, s), (x_t, images) in ref.grid.items():
        if kind == "ddim" and s != 0.0:
            continue
        n = len(x_t)
        tt = torch.full((n,), t, dtype=dtype, device=device)
        ss = torch.full((n,), s, dtype=dtype, device=device)
        pred = model.flow(x_t.to(device=device, dtype=dtype), tt, ss)
        rows.append({"t": t, "s": s, "rmse": rmse(pred.cpu(), images)})
    return rows


@cache
def _baselines(
    teacher_name: str,
    path_name: str,
    n_eval: int,
    n_data: int,
    n_grid: int,
    n_curve: int,
    steps: tuple[int, ...],
) -> dict[str, Any]:
    ref = _reference(teacher_name, path_name, n_eval, n_data, n_grid, n_curve)
    v = ref.teacher.velocity
    n = len(ref.noise)
    ones = torch.ones(n, dtype=torch.float64)
    zeros = torch.zeros(n, dtype=torch.float64)

    def measure(pred: Tensor) -> dict[str, Any]:
        w2 = w2_distance(pred, ref.data)
        return {"rmse_exact": rmse(pred, ref.images), "w2": w2.value, "mmd": mmd(pred, ref.data)}

    out: dict[str, Any] = {"euler": {}, "heun": {}}
    for k in steps:
        out["euler"][str(k)] = measure(EulerSolver(v, n_steps=k)(ref.noise, ones, zeros))
        out["heun"][str(k)] = measure(HeunSolver(v, n_steps=k)(ref.noise, ones, zeros))
    adaptive = ExactFlowMap(ref.teacher, method="dopri5", rtol=1e-3, atol=1e-3)
    out["adaptive"] = {
        "solver": "dopri5, rtol = atol = 1e-3",
        **measure(adaptive(ref.noise, 1.0, 0.0)),
    }
    out["w2_floor"] = ref.w2_floor
    out["mmd_floor"] = ref.mmd_floor
    return out


def baselines_for(config: BenchConfig, teacher: str, path: str) -> dict[str, Any]:
    """The teacher-solver baselines of ``(teacher, path)`` at every sampling step count of
    ``config`` (Euler and Heun per step count, the adaptive solve, the W2 and MMD floors)."""
    return _baselines(
        teacher,
        path,
        config.n_eval,
        config.n_data,
        config.n_grid,
        config.n_curve,
        tuple(config.steps),
    )


def plateau(steps: Sequence[int], errors: Sequence[float | None]) -> dict[str, Any]:
    """The plateau verdict of one curve: the relative change ``(r(3/4) - r(end)) / r(end)`` of
    the error between the checkpoint nearest to 3/4 of the budget and the last one; reached
    when below :data:`PLATEAU_THRESHOLD`.

    Returns:
        ``{"criterion", "relative_change", "reached"}`` (``None`` values without two finite
        checkpoints).
    """
    criterion = f"(r(3/4) - r(end)) / r(end) < {PLATEAU_THRESHOLD}"
    pts = [(s, e) for s, e in zip(steps, errors, strict=True) if e is not None and math.isfinite(e)]
    if len(pts) < 2 or pts[-1][1] <= 0:
        return {"criterion": criterion, "relative_change": None, "reached": None}
    end_step, end = pts[-1]
    target = 0.75 * end_step
    _, mid = min(pts[:-1], key=lambda p: abs(p[0] - target))
    change = (mid - end) / end
    return {
        "criterion": criterion,
        "relative_change": change,
        "reached": change < PLATEAU_THRESHOLD,
    }


# ----------------------------------------------------------------------------- tasks


class SeedBatches(FlowMapModel):
    """The stacked seeds as the objectives see them: a batch of ``S`` consecutive chunks of
    ``batch`` rows (chunk ``i`` drawn for member ``i``), *and any whole number of copies of such a
    batch concatenated*, each row sent through the member it was drawn for.

    Objectives evaluate the model on ``torch.cat`` of two or three batches in one call
    (SplitMeanFlow's ``F(x_t, t, s)`` and ``F(x_t, t, r)``, Shortcut, IMM, CTM, discrete
    consistency); :class:`~flowmap_oracle.experiments.seed_stack.StackedMLPFlowMap` alone would
    cut such a ``k S B``-row input into ``S`` chunks of ``k B`` rows and send most rows through
    another seed's member (a member's prediction trained against another member's target). Here
    the rows of every copy are regrouped by member before the stacked call and put back after it.

    Arguments:
        stacked: the stacked members (its parameters are this module's parameters).
        batch: rows per member in one copy of the batch (``B``).

    Raises:
        ValueError: (from ``forward``) when the rows are not a whole number of copies of the
            ``S * B``-row batch.
    """

    def __init__(self, stacked: StackedMLPFlowMap, *, batch: int) -> None:
        super().__init__()
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.members_model = stacked
        self.batch = batch
        self.parameterisation: Parameterisation = stacked.parameterisation

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        n, m, b = x.shape[0], self.members_model.n_members, self.batch
        if n % (m * b):
            raise ValueError(
                f"{n} rows are not whole copies of the stacked batch ({m} members x {b} rows)"
            )
        k = n // (m * b)

        def by_member(a: Tensor) -> Tensor:
            return a.reshape(k, m, b, *a.shape[1:]).transpose(0, 1).reshape(a.shape)

        out = self.members_model(by_member(x), by_member(t), by_member(s))
        return out.reshape(m, k, b, -1).transpose(0, 1).reshape(n, -1)

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """``forward`` and its directional derivative in one pass, the rows and tangents routed
        per member as in ``forward`` (:func:`~.seed_stack.routed_fused_jvp`)."""
        plain = type(self).forward is SeedBatches.forward
        return routed_fused_jvp(
            self, primals, tangents, stacked=self.members_model, batch=self.batch, plain=plain
        )

    @property
    def flow(self) -> FusedFlow:
        """The flow map ``c_skip x + c_out F`` with its fused pass (:class:`~.seed_stack.FusedFlow`)."""
        return FusedFlow(self)


@dataclass(frozen=True)
class Task:
    """One training run: ``objective`` on ``teacher`` and ``path``, the listed seeds stacked."""

    objective: str
    teacher: str
    path: str
    seeds: tuple[int, ...]
    config: BenchConfig

    @property
    def label(self) -> str:
        return f"{self.objective} / {self.teacher} / {self.path}"

    def uses_gpu(self) -> bool:
        return torch.device(self.config.device).type == "cuda"


def cell_key(record: dict[str, Any]) -> tuple:
    """What identifies a cell in the store (the same key finds it again on a rerun)."""
    return (
        record["config"],
        record["objective"],
        record["teacher"],
        record["path"],
        int(record["steps"]),
        int(record["seed"]),
        int(record["train_steps"]),
        int(record["batch"]),
    )


def _key(config: BenchConfig, objective: str, teacher: str, path: str, k: int, seed: int) -> tuple:
    return (config.name, objective, teacher, path, k, seed, config.train_steps, config.batch)


def plan_tasks(config: BenchConfig, finished: set[tuple]) -> list[Task]:
    """The tasks of ``config``'s grid whose cells are not all in ``finished`` (keys of
    :func:`cell_key`); each task carries only the seeds with a missing cell."""
    tasks = []
    for path in config.paths:
        for teacher in config.teachers:
            for objective in config.objectives:
                seeds = tuple(
                    seed
                    for seed in range(config.seeds)
                    if any(
                        _key(config, objective, teacher, path, k, seed) not in finished
                        for k in config.steps
                    )
                )
                if seeds:
                    tasks.append(Task(objective, teacher, path, seeds, config))
    return tasks


def _reflow_pool(ref: Reference, n: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(4321)
    x1 = torch.randn(n, ref.teacher.dim, generator=gen, dtype=torch.float64)
    coupling = reflow_couplings(ExactFlowMap(ref.teacher, rtol=1e-9, atol=1e-9), x1)
    return coupling, x1


def run_task(task: Task, *, on_step: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Train ``task``'s seeds together and measure every cell; returns one record per
    (sampling steps, seed). Raises what training or evaluation raises (the caller records it).
    """
    config = task.config
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run_task(task, on_step)
    finally:
        torch.set_num_threads(threads)


def _run_task(task: Task, on_step: Callable[[], None] | None) -> list[dict[str, Any]]:
    config = task.config
    device = torch.device(config.device)
    started = time.time()
    ref = reference_for(config, task.teacher, task.path)
    baselines = baselines_for(config, task.teacher, task.path)
    linear = task.path == "linear"
    dim = ref.teacher.dim
    model = StackedMLPFlowMap(
        dim, seeds=task.seeds, hidden=config.hidden, depth=config.depth, mode=config.stack
    ).to(device)
    n_members, batch = model.n_members, config.batch
    seed_batches = SeedBatches(model, batch=batch)
    teacher = ref.teacher if device.type == "cpu" else _teacher_on(ref.teacher, device)
    pool = _reflow_pool(ref, 4 * batch) if task.objective == "reflow" else None
    step = None if pool is not None else _objective_step(task.objective, teacher)
    kind = SAMPLERS[task.objective]
    checkpoints = sorted(
        {round(i * config.train_steps / config.checkpoints) for i in range(config.checkpoints + 1)}
    )
    curve: dict[str, Any] = {"step": [], "loss": [], "rmse": {k: [] for k in config.steps}}
    counter = [0]
    losses: list[float] = []

    def record_curve(at: int) -> None:
        members = model.members()
        curve["step"].append(at)
        recent = losses[-max(1, config.train_steps // (4 * config.checkpoints)) :]
        curve["loss"].append(sum(recent) / len(recent) if recent else None)
        for k in config.steps:
            row = []
            for m in members:
                pred = sample(m, kind, ref.curve_noise.to(device), k, linear=linear)
                row.append(None if pred is None else rmse(pred.cpu(), ref.curve_images))
            curve["rmse"][k].append(row)

    def batch_loss(gen: torch.Generator) -> LossOutput:
        if counter[0] in checkpoints:
            record_curve(counter[0])
        counter[0] += 1
        if on_step is not None:
            on_step()
        n = n_members * batch
        if pool is not None:
            idx = torch.randint(0, len(pool[0]), (n,), generator=gen)
            t = _uniform(n, gen, torch.float64)
            # straight segments between the coupled pairs whatever the teacher's path: the
            # rectified flow, whose one Euler step is the teacher's map (module reflow)
            out = reflow_loss(
                seed_batches,
                pool[0][idx].to(device),
                pool[1][idx].to(device),
                t.to(device),
                path=LINEAR,
            )
        else:
            assert step is not None
            x0 = ref.teacher.mixture.sample(n, generator=gen).to(torch.float64)
            x1 = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            out = step(seed_batches, x0.to(device), x1.to(device), gen)
        losses.append(float(out.loss.detach()))
        # the sum of the members' batch means: each member gets its own mean's gradient
        return replace(out, loss=out.loss * n_members)

    trained = fit(model, batch_loss, steps=config.train_steps, lr=config.lr, seed=min(task.seeds))
    record_curve(config.train_steps)
    members = model.members()
    env = bench_environment(config.device)
    records = []
    for i, (seed, member) in enumerate(zip(task.seeds, members, strict=True)):
        metrics = evaluate_member(member, task.objective, ref, config.steps, linear=linear)
        for k in config.steps:
            errors = [row[i] for row in curve["rmse"][k]]
            records.append(
                {
                    "schema": SCHEMA,
                    "status": "ok",
                    "config": config.name,
                    "objective": task.objective,
                    "teacher": task.teacher,
                    "path": task.path,
                    "steps": k,
                    "seed": seed,
                    "sampler": kind,
                    **metrics[k],
                    "train_steps": config.train_steps,
                    "batch": config.batch,
                    "lr": config.lr,
                    "model": f"MLPFlowMap(d={dim}, hidden={config.hidden}, depth={config.depth})",
                    "train_compute": config.train_steps * config.batch,
                    "seconds": trained.seconds,
                    "step_seconds": trained.seconds / config.train_steps,
                    "seeds_together": list(task.seeds),
                    "stack": config.stack,
                    "curve": {
                        "step": curve["step"],
                        "loss": curve["loss"],
                        "rmse_exact": errors,
                    },
                    "plateau": plateau(curve["step"], errors),
                    "baselines": {
                        "euler": baselines["euler"][str(k)],
                        "heun": baselines["heun"][str(k)],
                        "adaptive": baselines["adaptive"],
                        "w2_floor": baselines["w2_floor"],
                        "mmd_floor": baselines["mmd_floor"],
                    },
                    "started": started,
                    "finished": time.time(),
                    "device": env["device"],
                    "versions": env["versions"],
                    "torch_threads": torch.get_num_threads(),
                    "cpu_count": env["cpu_count"],
                    "load_average_1min": env["load_average_1min"],
                }
            )
    return records


def bench_environment(device: str) -> dict[str, Any]:
    """:func:`~flowmap_oracle.experiments.records.environment` with the versions of the
    benchmark's own optional libraries (POT, Ray) where installed."""
    from importlib import metadata

    env = environment(device)
    for name in ("POT", "ray", "matplotlib"):
        try:
            env["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return env


def _teacher_on(teacher: GaussianMixtureTeacher, device: torch.device) -> GaussianMixtureTeacher:
    return GaussianMixtureTeacher(teacher.mixture.to(device=device), teacher.path)


def error_records(task: Task, err: BaseException) -> list[dict[str, Any]]:
    """One ``status: "error"`` record per cell of a failed task, naming the error."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    tail = "".join(traceback.format_tb(err.__traceback__)[-3:])
    return [
        {
            "schema": SCHEMA,
            "status": "error",
            "config": task.config.name,
            "objective": task.objective,
            "teacher": task.teacher,
            "path": task.path,
            "steps": k,
            "seed": seed,
            "train_steps": task.config.train_steps,
            "batch": task.config.batch,
            "error": text,
            "traceback": tail,
            "finished": time.time(),
        }
        for seed in task.seeds
        for k in task.config.steps
    ]


# ----------------------------------------------------------------------------- the store


class ResultStore:
    """The results store: JSON lines, one object per cell, appended as cells finish.

    Each append is flushed and synced, so an interrupted run loses nothing finished; a last line
    cut short by a crash is ignored when reading. A cell counts as finished when a record with
    ``status: "ok"`` has its key (:func:`cell_key`); failed cells stay in the store with their
    error and are run again on the next run.

    Arguments:
        path: the ``.jsonl`` file (created with its folder on the first append).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file, in order (a missing file: none)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted write
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def finished(self) -> set[tuple]:
        """Keys of the cells with an ``ok`` record."""
        return {cell_key(r) for r in self.records() if r.get("status") == "ok"}

    def latest(self) -> list[dict[str, Any]]:
        """One record per cell: its ``ok`` record when it has one, else its latest error."""
        best: dict[tuple, dict[str, Any]] = {}
        for r in self.records():
            key = cell_key(r)
            if r.get("status") == "ok" or best.get(key, {}).get("status") != "ok":
                best[key] = r
        return list(best.values())

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append ``records`` (one line each), flushed and synced; returns how many."""
        from .records import jsonable

        lines = [json.dumps(jsonable(r), allow_nan=False) + "\n" for r in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            if fh.tell() > 0 and not _ends_with_newline(self.path):
                fh.write("\n")  # end a line an interrupted write cut short
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return len(lines)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


# ----------------------------------------------------------------------------- running a grid


@dataclass
class GridRun:
    """What :func:`run_grid` did: the tasks planned, the records written, the failures."""

    tasks: list[Task] = field(default_factory=list)
    written: int = 0
    failed: list[tuple[Task, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_grid(
    config: BenchConfig,
    store: ResultStore,
    *,
    on_task: Callable[[Task], None] | None = None,
    on_done: Callable[[Task, list[dict[str, Any]]], None] | None = None,
    on_step: Callable[[], None] | None = None,
    tasks: Sequence[Task] | None = None,
) -> GridRun:
    """Run every unfinished task of ``config`` in this process, appending each task's records to
    ``store`` as soon as it finishes; a failing task is recorded with its error and the grid
    goes on. Ctrl-C stops at once (what finished is already in the store).

    Arguments:
        config: the grid.
        store: where records go (and which cells are already finished).
        on_task: called with each task as it starts; on_done: with its records when done.
        on_step: called once per training step (progress displays).
        tasks: the tasks to run (default :func:`plan_tasks` of the store's finished cells).
    """
    start = time.perf_counter()
    run = GridRun(tasks=list(plan_tasks(config, store.finished()) if tasks is None else tasks))
    for task in run.tasks:
        if on_task is not None:
            on_task(task)
        try:
            records = run_task(task, on_step=on_step)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            records = error_records(task, err)
            run.failed.append((task, records[0]["error"]))
        run.written += store.append(records)
        if on_done is not None:
            on_done(task, records)
    run.seconds = time.perf_counter() - start
    return run


def task_step_count(tasks: Sequence[Task]) -> int:
    """Training steps of ``tasks`` (for progress bars)."""
    return sum(t.config.train_steps for t in tasks)


# ----------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class CellSummary:
    """Mean and 95 % confidence interval (Student t over seeds) of one grid point.

    Attributes:
        objective, teacher, path, steps: the grid point; n_seeds: seeds with a result.
        rmse_exact, w2, mmd: ``(mean, low, high)`` (``low = high = mean`` with one seed).
        plateau_reached: seeds whose curve reached the plateau.
        baselines: the teacher solvers' ``rmse_exact`` at ``steps`` (Euler, Heun, adaptive).
        train_compute: training samples (steps x batch); seconds: mean training wall-clock.
    """

    objective: str
    teacher: str
    path: str
    steps: int
    n_seeds: int
    rmse_exact: tuple[float, float, float] | None
    w2: tuple[float, float, float] | None
    mmd: tuple[float, float, float] | None
    plateau_reached: int
    baselines: dict[str, float]
    train_compute: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mean_ci(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t confidence interval at ``level`` over ``values``
    (``low = high = mean`` for a single value)."""
    from scipy import stats

    if not values:
        raise ValueError("mean_ci needs at least one value")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return (mean, mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def summarise(records: Iterable[dict[str, Any]]) -> list[CellSummary]:
    """Group ``ok`` records by (objective, teacher, path, steps) over seeds (the newest record of
    a cell counts once) and return mean and confidence intervals, sorted."""
    groups: dict[tuple, dict[int, dict[str, Any]]] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        key = (r["objective"], r["teacher"], r["path"], int(r["steps"]))
        groups.setdefault(key, {})[int(r["seed"])] = r
    out = []
    for (objective, teacher, path, steps), by_seed in sorted(groups.items()):
        rs = list(by_seed.values())

        def stat(name: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float, float] | None:
            vals = [float(r[name]) for r in rs if r.get(name) is not None]
            return mean_ci(vals) if vals else None

        base = rs[0]["baselines"]
        out.append(
            CellSummary(
                objective=objective,
                teacher=teacher,
                path=path,
                steps=steps,
                n_seeds=len(rs),
                rmse_exact=stat("rmse_exact"),
                w2=stat("w2"),
                mmd=stat("mmd"),
                plateau_reached=sum(bool(r.get("plateau", {}).get("reached")) for r in rs),
                baselines={
                    "euler": base["euler"]["rmse_exact"],
                    "heun": base["heun"]["rmse_exact"],
                    "adaptive": base["adaptive"]["rmse_exact"],
                },
                train_compute=int(rs[0]["train_compute"]),
                seconds=sum(float(r["seconds"]) for r in rs) / len(rs),
            )
        )
    return out


def iter_cells(store: ResultStore) -> Iterator[dict[str, Any]]:
    """The store's latest record per cell (see :meth:`ResultStore.latest`)."""
    yield from store.latest()


def _fmt(stat: tuple[float, float, float] | None) -> str:
    if stat is None:
        return "-"
    mean, low, high = stat
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if high > low else f"{mean:.3f}"


def format_summary(rows: Sequence[CellSummary]) -> str:
    """A plain-text table of :func:`summarise`'s rows (mean and 95 % interval over seeds), with
    the teacher's Euler and Heun errors at the same steps."""
    head = (
        f"{'objective':15s} {'teacher':13s} {'path':7s} {'k':>2s} {'seeds':>5s}  "
        f"{'rmse_exact [95% CI]':26s} {'w2':>7s} {'euler':>7s} {'heun':>7s} {'plateau':>7s}"
    )
    lines = [head]
    for r in rows:
        w2 = "-" if r.w2 is None else f"{r.w2[0]:.3f}"
        lines.append(
            f"{r.objective:15s} {r.teacher:13s} {r.path:7s} {r.steps:2d} {r.n_seeds:5d}  "
            f"{_fmt(r.rmse_exact):26s} {w2:>7s} {r.baselines['euler']:7.3f} "
            f"{r.baselines['heun']:7.3f} {r.plateau_reached:>3d}/{r.n_seeds:<3d}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ObjectivesBenchmark:
    """Committed results of ``bench objectives`` as the report and the README lay them out.

    Attributes:
        cells: the ``ok`` cell records; failures: one error record per failed task.
        summaries: :func:`summarise` of ``cells``.
        command, device, versions_text, config: how the results were made.
        plateau_threshold: :data:`PLATEAU_THRESHOLD`.
    """

    cells: tuple[dict[str, Any], ...]
    failures: tuple[dict[str, Any], ...]
    summaries: tuple[CellSummary, ...]
    command: str
    device: str
    versions_text: str
    config: dict[str, Any]
    plateau_threshold: float = PLATEAU_THRESHOLD


def load_objectives_benchmark(path: str | os.PathLike) -> ObjectivesBenchmark:
    """Read a ``bench objectives --json`` document (e.g. ``benchmarks/objectives_cpu.json``).

    Raises:
        ValueError: when the file is not such a document.
    """
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or "results" not in doc or "config" not in doc:
        raise ValueError(f"{os.fspath(path)!r} is not a bench objectives JSON document")
    results = doc["results"]
    cells = tuple(r for r in results if r.get("status") == "ok")
    seen, failures = set(), []
    for r in results:
        if r.get("status") == "error" and (r["objective"], r["teacher"], r["path"]) not in seen:
            seen.add((r["objective"], r["teacher"], r["path"]))
            failures.append(r)
    env = doc.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    return ObjectivesBenchmark(
        cells=cells,
        failures=tuple(failures),
        summaries=tuple(summarise(cells)),
        command=str(doc.get("command", "")),
        device=f"{env.get('device', '?')} ({env.get('processor', '?')}, "
        f"{env.get('cpu_count', '?')} CPUs, {doc['config'].get('threads')} thread per task)",
        versions_text=versions,
        config=doc["config"],
    )
