"""Discrete-time consistency models (Song et al. 2023): distillation and training.

Loss type (b), backward. A consistency model is the flow map to the data end,
``f_{t->0}(x) = c_skip(t, 0) x + c_out(t, 0) F(x, t, 0)`` (``x - t F`` in the MeanFlow/AYF and
FACM parameterisations). Adjacent times on one trajectory must give the same output::

    x_t     = alpha(t) x0 + beta(t) x1             ((1 - t) x0 + t x1 on the linear path)
    x~      = Solver_{t -> t - Dt}(x_t)            (consistency distillation, teacher ODE step)
            = x_{t - Dt} of the same pair          (consistency training, no teacher;
                                                    x_t - Dt (x1 - x0) on the linear path)
    L       = E [ w(t) d( f_theta(x_t, t, 0), sg(f_theta-(x~, t - Dt, 0)) ) ]

with ``d`` the squared L2 distance or the pseudo-Huber distance ``sqrt(||r||^2 + c^2) - c``
(improved consistency training; ``c = 0.00054 sqrt(d)`` there).

At the exact map: with the exact teacher step the residual is zero pointwise for every ``Dt``;
with an Euler step it is ``O(Dt^2)``; with the training point ``x_t - Dt (x1 - x0)`` it is
``O(Dt)`` pointwise and ``O(Dt^2)`` in conditional mean, so consistency training is unbiased only
as ``Dt -> 0`` (MATH.md 4.5). For ``d = ||.||^2``, ``grad L / Dt`` tends to twice the continuous
(sCM) gradient as ``Dt -> 0`` (MATH.md 1e).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR, interpolant
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    check_points,
    check_times,
    flow_of,
)
from .distances import consistency_distance
from .teacher_solvers import TeacherSolver

__all__ = ["consistency_loss"]


def consistency_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    delta_t: float | Tensor,
    solver: TeacherSolver | None,
    distance: Literal["l2", "pseudo_huber"] = "l2",
    huber_c: float | None = None,
    weight: Tensor | None = None,
) -> LossOutput:
    """The discrete consistency loss between ``x_t`` and its neighbour at ``t - Dt``.

    Arguments:
        model: a flow-map model (its ``flow`` gives ``f_{t->0}``) or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t: times in ``[Dt, 1]``, shape ``(N,)``.
        delta_t: the step ``Dt > 0``, a float or a ``(N,)`` tensor.
        solver: the teacher solver ``solver(x, t, s)`` (consistency distillation), or ``None``
            for consistency training with ``x_{t - Dt}`` the same pair on the path
            (``x_t - Dt (x1 - x0)`` on the linear path).
        distance: ``"l2"`` (``||r||^2``) or ``"pseudo_huber"``.
        huber_c: the pseudo-Huber constant (default ``0.00054 sqrt(d)``).
        weight: optional per-sample weight ``w(t)``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``f(x_t, t, 0) - f_{theta-}(x~, t - Dt, 0)`` and the
        detached target.
    """
    n, _, dtype = check_points(x0=x0, x1=x1)
    dt = torch.as_tensor(delta_t, dtype=dtype, device=x0.device)
    if dt.ndim == 0:
        dt = dt.expand(n)
    check_times(n, dtype, t=t, delta_t=dt)
    if (dt <= 0).any():
        raise ValueError("delta_t must be positive")
    if (t - dt < 0).any():
        raise ValueError("t - delta_t must be >= 0 for every sample")
    flow = flow_of(model)
    x_t = interpolant(path, x0, x1, t)
    t_prev = t - dt
    if solver is None:  # consistency training: the same pair one step earlier on the path
        x_prev = interpolant(path, x0, x1, t_prev)
    else:
        x_prev = solver(x_t, t, t_prev).detach()
    zeros = torch.zeros_like(t)
    both = flow(torch.cat([x_t, x_prev]), torch.cat([t, t_prev]), torch.cat([zeros, zeros]))
    out, target = both[:n], both[n:].detach()
    residual = out - target
    per_sample = consistency_distance(residual, distance=distance, huber_c=huber_c)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=target)
