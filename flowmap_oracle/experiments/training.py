"""The training loop of the project: Adam with cosine decay on a loss drawn per batch.

:func:`fit` is the loop itself (every training run uses it: :func:`train`, the experiments and
the smoke training of every objective); :func:`train` draws ``(x0, x1, t, s)`` from an analytic
teacher for objectives of the form ``objective(model, x0, x1, t, s)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..objectives import LossOutput
from ..objectives.time_sampling import pair_times
from ..reference_models import GaussianMixtureTeacher
from .models import FlowMapModel

__all__ = ["BatchLoss", "TrainingResult", "fit", "train"]

Objective = Callable[[FlowMapModel, Tensor, Tensor, Tensor, Tensor], LossOutput]
"""``objective(model, x0, x1, t, s) -> LossOutput``."""

BatchLoss = Callable[[torch.Generator], LossOutput]
"""``batch_loss(generator) -> LossOutput``: draws one batch with ``generator`` and returns its loss."""


@dataclass
class TrainingResult:
    """Losses per step and wall-clock time of :func:`fit` (and :func:`train`)."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit(
    model: torch.nn.Module, batch_loss: BatchLoss, *, steps: int, lr: float, seed: int = 0
) -> TrainingResult:
    """Train ``model`` with Adam (learning rate ``lr``, cosine decay over ``steps``) on
    ``batch_loss``, called once per step with one generator seeded by ``seed``.

    Raises:
        FloatingPointError: when a loss is not finite (naming the step).

    Returns:
        :class:`TrainingResult` (``model`` is updated in place).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    result = TrainingResult()
    start = time.perf_counter()
    for _ in range(steps):
        out = batch_loss(gen)
        if not torch.isfinite(out.loss):
            loss = float(out.loss.detach())
            raise FloatingPointError(f"loss became {loss} at step {len(result.losses)}")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        result.losses.append(float(out.loss.detach()))
    result.seconds = time.perf_counter() - start
    return result


def train(
    model: FlowMapModel,
    objective: Objective,
    teacher: GaussianMixtureTeacher,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    equal_fraction: float = 0.25,
) -> TrainingResult:
    """Train ``model`` with :func:`fit` on ``objective``, drawing ``x0`` from the teacher's data.

    Arguments:
        model: the flow-map model to train (updated in place).
        objective: ``objective(model, x0, x1, t, s) -> LossOutput``; build it on the teacher's
            path (``meanflow_loss(..., path=teacher.path)``).
        teacher: supplies data samples (and, inside the objective, possibly its velocity).
        steps, batch_size, lr: optimisation settings; the learning rate decays by cosine.
        seed: seeds the data, noise and time draws.
        equal_fraction: share of the batch with ``s = t``; times come from
            :func:`~flowmap_oracle.objectives.time_sampling.pair_times` (uniform).

    Returns:
        :class:`TrainingResult`.
    """
    dtype = next(model.parameters()).dtype

    def batch_loss(gen: torch.Generator) -> LossOutput:
        x0 = teacher.mixture.sample(batch_size, generator=gen).to(dtype)
        x1 = torch.randn(x0.shape, generator=gen, dtype=dtype)
        t, s = pair_times(
            batch_size,
            equal_fraction=equal_fraction,
            distribution="uniform",
            generator=gen,
            dtype=dtype,
        )
        return objective(model, x0, x1, t, s)

    return fit(model, batch_loss, steps=steps, lr=lr, seed=seed)
