"""Teacher ODE solvers ``solver(x, t, s) -> x_s`` used by consistency distillation and CTM.

A teacher solver moves points ``x`` at times ``t`` to times ``s`` (per sample, shape ``(N,)``)
along the teacher's probability-flow ODE ``dx/dt = v(x, t)``:

* :class:`ExactSolver`: the exact flow map ``Phi_{t->s}`` (closed form or certified ODE);
* :class:`EulerSolver`: ``n_steps`` explicit Euler steps, local error ``O(h^2)``;
* :class:`HeunSolver`: ``n_steps`` Heun (explicit trapezoidal) steps, the EDM/CTM teacher
  solver, local error ``O(h^3)``.

Every solver returns a detached result: the teacher's trajectory is data for the student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import Velocity, col

__all__ = ["EulerSolver", "ExactSolver", "HeunSolver", "TeacherSolver"]

TeacherSolver = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``solver(x, t, s) -> x_s`` with ``x`` of shape ``(N, d)`` and ``t``, ``s`` of shape ``(N,)``."""


@dataclass(frozen=True, eq=False)
class ExactSolver:
    """The exact teacher flow map as a solver (``flow_map(x, t, s) = Phi_{t->s}(x)``)."""

    flow_map: Callable[[Tensor, Tensor, Tensor], Tensor]

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        with torch.no_grad():
            return self.flow_map(x.detach(), t.detach(), s.detach()).detach()


@dataclass(frozen=True, eq=False)
class _FixedStepSolver:
    """``n_steps`` equal steps ``h = (s - t) / n_steps`` of a one-step method :meth:`step`."""

    velocity: Velocity
    n_steps: int = 1

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {self.n_steps}")

    def step(self, x: Tensor, tau: Tensor, h: Tensor) -> Tensor:
        """One step from ``(x, tau)`` to time ``tau + h`` (``h`` of shape ``(N,)``)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        with torch.no_grad():
            h = (s - t) / self.n_steps
            x, tau = x.detach(), t.detach()
            for _ in range(self.n_steps):
                x = self.step(x, tau, h)
                tau = tau + h
            return x


@dataclass(frozen=True, eq=False)
class EulerSolver(_FixedStepSolver):
    """``n_steps`` Euler steps ``x <- x + h v(x, tau)`` with ``h = (s - t) / n_steps``."""

    def step(self, x: Tensor, tau: Tensor, h: Tensor) -> Tensor:
        return x + col(h) * self.velocity(x, tau)


@dataclass(frozen=True, eq=False)
class HeunSolver(_FixedStepSolver):
    """``n_steps`` Heun steps: ``k1 = v(x, tau)``, ``k2 = v(x + h k1, tau + h)``,
    ``x <- x + h (k1 + k2) / 2``."""

    def step(self, x: Tensor, tau: Tensor, h: Tensor) -> Tensor:
        k1 = self.velocity(x, tau)
        k2 = self.velocity(x + col(h) * k1, tau + h)
        return x + col(h) * 0.5 * (k1 + k2)
