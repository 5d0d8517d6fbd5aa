"""A small training loop for flow-map objectives against an analytic teacher."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..reference_models import GaussianMixtureTeacher
from .models import FlowMapModel
from .objectives import LossOutput

__all__ = ["TrainingResult", "sample_times", "train"]

Objective = Callable[[FlowMapModel, Tensor, Tensor, Tensor, Tensor], LossOutput]
"""``objective(model, x0, x1, t, s) -> LossOutput``."""


def sample_times(
    n: int,
    *,
    generator: torch.Generator | None = None,
    equal_fraction: float = 0.25,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Draw ``(t, s)`` with ``0 <= s <= t <= 1``: two uniforms sorted, and ``s = t`` for a
    fraction ``equal_fraction`` of the batch (the flow-matching diagonal)."""
    if not 0.0 <= equal_fraction <= 1.0:
        raise ValueError(f"equal_fraction must lie in [0, 1], got {equal_fraction}")
    u = torch.rand(n, 2, generator=generator, dtype=dtype)
    t, s = u.max(dim=1).values, u.min(dim=1).values
    diag = torch.rand(n, generator=generator, dtype=dtype) < equal_fraction
    return t, torch.where(diag, t, s)


@dataclass
class TrainingResult:
    """Losses per step and wall-clock time of :func:`train`."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
    """Train ``model`` with Adam on ``objective``, drawing ``x0`` from the teacher's data.

    Arguments:
        model: the flow-map model to train (updated in place).
        objective: ``objective(model, x0, x1, t, s) -> LossOutput``.
        teacher: supplies data samples (and, inside the objective, possibly its velocity).
        steps, batch_size, lr: optimisation settings; the learning rate decays by cosine.
        seed: seeds the data, noise and time draws.
        equal_fraction: share of the batch with ``s = t``.

    Returns:
        :class:`TrainingResult`.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    result = TrainingResult()
    start = time.perf_counter()
    for _ in range(steps):
        x0 = teacher.mixture.sample(batch_size, generator=gen).to(dtype)
        x1 = torch.randn(x0.shape, generator=gen, dtype=dtype)
        t, s = sample_times(batch_size, generator=gen, equal_fraction=equal_fraction, dtype=dtype)
        out = objective(model, x0, x1, t, s)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"loss became {float(out.loss)} at step {len(result.losses)}")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        result.losses.append(float(out.loss.detach()))
    result.seconds = time.perf_counter() - start
    return result
