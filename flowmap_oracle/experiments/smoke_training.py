"""Short CPU training runs of every objective on the 2-D ring teacher (smoke tests).

Each run trains a fresh :class:`~flowmap_oracle.experiments.models.MLPFlowMap` with one objective
of :mod:`flowmap_oracle.objectives` (its own time sampler, the teacher's marginal
velocity or a Heun teacher solver where the method distils) and measures the sampling error
against the exact flow map before and after: the RMSE over fixed noise points ``x1`` of

* ``one-step``: ``f_{1->0}(x1)`` against ``Phi_{1->0}(x1)`` (flow-map methods), or
* ``4-step Euler``: four Euler steps of ``F(x, t, t)`` (flow matching: a velocity model), or
* ``1-step Euler``: one Euler step of ``F(x, t, t)`` (ReFlow: straight paths make one step
  enough).

These are smoke tests -- a few hundred Adam steps -- that show each loss trains the model
towards the exact map; they are not benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from ..objectives import (
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
from ..reference_models import ExactFlowMap, GaussianMixtureTeacher, preset
from .models import MLPFlowMap
from .records import environment, write_json
from .samplers import euler_sampler, one_step
from .training import fit

__all__ = [
    "SMOKE_OBJECTIVES",
    "SMOKE_STEPS",
    "SMOKE_THREADS",
    "SmokeResult",
    "smoke_steps",
    "smoke_train",
    "smoke_train_all",
    "write_smoke_json",
]

Step = Callable[[MLPFlowMap, Tensor, Tensor, torch.Generator], LossOutput]


@dataclass(frozen=True)
class SmokeResult:
    """One smoke-training run.

    Attributes:
        name: objective name (as in the inventory).
        metric: ``"one-step"``, ``"4-step Euler"`` or ``"1-step Euler"``.
        steps, batch_size, lr: training settings.
        error_before, error_after: RMSE against the exact map before and after training.
        seconds: training wall-clock time.
        losses: the training loss per step.
    """

    name: str
    metric: str
    steps: int
    batch_size: int
    lr: float
    error_before: float
    error_after: float
    seconds: float
    losses: list[float] = field(repr=False)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out.pop("losses")
        return out


@dataclass(frozen=True)
class _Setup:
    teacher: GaussianMixtureTeacher
    exact: ExactFlowMap


def _uniform(n, gen):
    return 0.02 + 0.98 * torch.rand(n, generator=gen, dtype=torch.float64)


def _objectives(setup: _Setup) -> dict[str, tuple[str, Step | None]]:
    v, path = setup.teacher.velocity, setup.teacher.path
    heun = HeunSolver(v, n_steps=1)
    heun4 = HeunSolver(v, n_steps=4)

    def fm(m, x0, x1, g):
        return flow_matching_loss(m, x0, x1, _uniform(len(x0), g), velocity=v)

    def meanflow(m, x0, x1, g):
        t, s = pair_times(len(x0), equal_fraction=0.25, distribution="uniform", generator=g)
        return meanflow_loss(m, x0, x1, t, s, velocity=v, path=path)

    def split(m, x0, x1, g):
        t, r, s = split_times(len(x0), generator=g)
        return split_meanflow_loss(m, x0, x1, t, r, s, velocity=v, path=path)

    def cd(m, x0, x1, g):
        t, dt = consistency_times(len(x0), n_steps=20, generator=g)
        return consistency_loss(m, x0, x1, t, delta_t=dt, solver=heun, path=path)

    def scm(m, x0, x1, g):
        # The sCM gradient carries a factor t (MATH.md 1d); the weight 1/t removes it (then
        # the gradient is half MeanFlow's at s = 0). Measured: 0.68 without it, 0.29 with it
        # after 600 steps; tangent normalisation (c = 0.1) trained slower still (0.85).
        t = _uniform(len(x0), g)
        return scm_loss(m, x0, x1, t, velocity=v, weight=1 / t, path=path)

    def facm(m, x0, x1, g):
        t = _uniform(len(x0), g)
        return facm_loss(m, x0, x1, t, velocity=v, time_encoding="diagonal", path=path)

    def emd(m, x0, x1, g):
        t, s = pair_times(len(x0), equal_fraction=0.0, distribution="uniform", generator=g)
        return ayf_emd_loss(m, x0, x1, t, s, velocity=v, path=path)

    def lmd(m, x0, x1, g):
        t, s = pair_times(len(x0), equal_fraction=0.0, distribution="uniform", generator=g)
        return ayf_lmd_loss(m, x0, x1, t, s, velocity=v, path=path)

    def shortcut(m, x0, x1, g):
        t, s = shortcut_times(len(x0), max_log2_steps=4, generator=g)
        return shortcut_loss(m, x0, x1, t, s, velocity=v, path=path)

    def imm(m, x0, x1, g):
        group = 32
        t, r, s = imm_times(len(x0) // group, group, gap=0.5, generator=g)
        return imm_loss(m, x0, x1, t, r, s, group_size=group, bandwidth=0.5, path=path)

    def ctm(m, x0, x1, g):
        t, r, s = ctm_times(len(x0), generator=g)
        return ctm_loss(m, x0, x1, t, r, s, solver=heun4, dsm_weight=1.0, velocity=v, path=path)

    return {
        "flow_matching": ("4-step Euler", fm),
        "meanflow": ("one-step", meanflow),
        "split_meanflow": ("one-step", split),
        "consistency": ("one-step", cd),
        "scm": ("one-step", scm),
        "facm": ("one-step", facm),
        "ayf_emd": ("one-step", emd),
        "ayf_lmd": ("one-step", lmd),
        "shortcut": ("one-step", shortcut),
        "reflow": ("1-step Euler", None),  # needs the coupling pool, see smoke_train
        "imm": ("one-step", imm),
        "ctm": ("one-step", ctm),
    }


SMOKE_STEPS: dict[str, int] = {
    "consistency": 600,  # cheap steps; bootstraps from t = 0 slowly
    "ayf_emd": 400,
    "shortcut": 400,
    "imm": 600,  # a teacher-free distribution match: the slowest to move
}
"""Default steps where they differ from 300 (chosen so that the error falls clearly)."""

SMOKE_THREADS = 1
"""Torch CPU threads of the smoke training (see :func:`smoke_train`)."""

SMOKE_OBJECTIVES: tuple[str, ...] = (
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


@cache
def _setup() -> _Setup:
    teacher = preset("ring8")
    return _Setup(teacher, ExactFlowMap(teacher))


@cache
def _eval_points(n: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x1, _setup().exact(x1, 1.0, 0.0)


@cache
def _reflow_pool(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """ReFlow's coupling: ``n`` noise points and their exact images (a 1e-9 solve suffices for
    training data and is several times cheaper than the 1e-12 reference)."""
    gen = torch.Generator().manual_seed(seed + 101)
    x1 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    teacher = _setup().teacher
    return reflow_couplings(ExactFlowMap(teacher, rtol=1e-9, atol=1e-9), x1), x1


def _error(model: MLPFlowMap, metric: str, n_eval: int) -> float:
    x1, exact = _eval_points(n_eval, 1234)
    if metric == "one-step":
        pred = one_step(model, x1)
    elif metric == "4-step Euler":
        pred = euler_sampler(model, x1, 4)
    else:
        pred = euler_sampler(model, x1, 1)
    return float((pred - exact).pow(2).sum(1).mean().sqrt())


def smoke_train(
    name: str,
    *,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    n_eval: int = 512,
    hidden: int = 64,
    depth: int = 3,
    reflow_pool: int = 1024,
    on_step: Callable[[], None] | None = None,
) -> SmokeResult:
    """Train one objective briefly on ring8 and measure its sampling error (see module doc).

    Arguments:
        name: an objective of :data:`SMOKE_OBJECTIVES`.
        steps: training steps (default :data:`SMOKE_STEPS` or 300).
        batch_size, lr: Adam with cosine learning-rate decay.
        seed: seeds the network initialisation and every draw.
        n_eval: noise points of the error measurement (fixed across runs).
        hidden, depth: the MLP's width and number of hidden layers.
        reflow_pool: ReFlow's coupling size (noise points mapped once by the exact teacher).
        on_step: called once per training step (progress displays).
    """
    setup = _setup()
    table = _objectives(setup)
    if name not in table:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(table)}")
    metric, step = table[name]
    steps = smoke_steps(name) if steps is None else steps
    torch.manual_seed(seed)
    model = MLPFlowMap(2, hidden=hidden, depth=depth)
    before = _error(model, metric, n_eval)
    pool = _reflow_pool(reflow_pool, seed) if name == "reflow" else None

    def batch_loss(gen: torch.Generator) -> LossOutput:
        if on_step is not None:
            on_step()
        if pool is not None:
            idx = torch.randint(0, len(pool[0]), (batch_size,), generator=gen)
            return reflow_loss(
                model,
                pool[0][idx],
                pool[1][idx],
                _uniform(batch_size, gen),
                path=setup.teacher.path,
            )
        assert step is not None  # only ReFlow has no step, and it always has a pool
        x0 = setup.teacher.mixture.sample(batch_size, generator=gen)
        x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        return step(model, x0, x1, gen)

    threads = torch.get_num_threads()
    # These networks are far too small to gain from intra-op threads, and on a shared 2-core
    # machine the threads contend (measured 6x slower with 2 threads under load).
    torch.set_num_threads(SMOKE_THREADS)
    try:
        trained = fit(model, batch_loss, steps=steps, lr=lr, seed=seed)
    except FloatingPointError as err:
        raise FloatingPointError(f"{name}: {err}") from None
    finally:
        torch.set_num_threads(threads)
    after = _error(model, metric, n_eval)
    return SmokeResult(
        name, metric, steps, batch_size, lr, before, after, trained.seconds, trained.losses
    )


def smoke_steps(name: str) -> int:
    """The default training steps of objective ``name`` (:data:`SMOKE_STEPS`, else 300)."""
    return SMOKE_STEPS.get(name, 300)


def smoke_train_all(*, steps: int | None = None, seed: int = 0) -> list[SmokeResult]:
    """:func:`smoke_train` for every objective (``steps=None``: each objective's default)."""
    return [smoke_train(name, steps=steps, seed=seed) for name in SMOKE_OBJECTIVES]


def write_smoke_json(
    results: Sequence[SmokeResult],
    path: str | os.PathLike,
    *,
    command: str,
    complete: bool = True,
) -> Path:
    """Write the runs with the device, versions and command as JSON, atomically
    (:func:`~flowmap_oracle.experiments.records.write_json`); returns the path.

    ``complete=False`` marks a run interrupted before every objective had trained (``runs``
    then holds the finished ones)."""
    record = {
        "command": command,
        "complete": complete,
        **environment("cpu"),
        "torch_threads": SMOKE_THREADS,  # the threads smoke_train trains with
        "teacher": "ring8 (linear path, float64)",
        "model": "MLPFlowMap(2, hidden=64, depth=3), Adam with cosine decay, seed 0",
        "runs": [r.to_json() for r in results],
    }
    return write_json(path, record)
