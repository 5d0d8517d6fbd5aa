"""Probability paths ``x_t = alpha(t) x0 + beta(t) x1`` (data at t=0, noise at t=1).

Each path gives its schedules and their time derivatives as torch functions. They accept any
real ``t`` (adaptive ODE solvers probe slightly outside ``[0, 1]``) and broadcast elementwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LinearPath", "ProbabilityPath"]


@dataclass(frozen=True)
class ProbabilityPath:
    """Base class of a path ``x_t = alpha(t) x0 + beta(t) x1``.

    Subclasses implement :meth:`alpha`, :meth:`beta` and their derivatives. ``name`` is used in
    reports and JSON output.
    """

    name: str = "path"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_dot(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta_dot(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Return ``x_t = alpha(t) x0 + beta(t) x1``; ``t`` has shape ``(N,)`` or is a scalar."""
        t = _as_column(t, x0)
        return self.alpha(t) * x0 + self.beta(t) * x1

    def conditional_velocity(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Return ``alpha'(t) x0 + beta'(t) x1`` (``x1 - x0`` on the linear path)."""
        t = _as_column(t, x0)
        return self.alpha_dot(t) * x0 + self.beta_dot(t) * x1


@dataclass(frozen=True)
class LinearPath(ProbabilityPath):
    """The rectified-flow / OT path ``x_t = (1 - t) x0 + t x1``."""

    name: str = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def beta(self, t: Tensor) -> Tensor:
        return t

    def alpha_dot(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def beta_dot(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


def _as_column(t: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(N,)`` time against ``like`` of shape ``(N, d)``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and like.ndim == 2 and t.shape[0] == like.shape[0]:
        return t[:, None]
    if t.shape == (*like.shape[:-1], 1):
        return t
    raise ValueError(
        f"time has shape {tuple(t.shape)}; expected a scalar or shape ({like.shape[0]},) "
        f"for points of shape {tuple(like.shape)}"
    )
