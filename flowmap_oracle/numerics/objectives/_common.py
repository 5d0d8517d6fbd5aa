"""Shared pieces of the objectives: the loss output record and time/velocity helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["LossOutput", "Velocity"]

Velocity = Callable[[Tensor, Tensor], Tensor]
"""A velocity field ``v(x, t)`` with ``x`` of shape ``(N, d)`` and ``t`` of shape ``(N,)``."""


@dataclass(frozen=True)
class LossOutput:
    """What every objective returns.

    Attributes:
        loss: the scalar training loss (differentiable in the model parameters).
        residual: the per-sample residual whose weighted square is the loss, detached,
            shape ``(N, d)``.
        target: the stop-gradient target where the objective has one (else ``None``).
    """

    loss: Tensor
    residual: Tensor
    target: Tensor | None = None
