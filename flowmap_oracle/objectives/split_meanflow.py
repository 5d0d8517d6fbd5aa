"""SplitMeanFlow (Guo et al. 2025): the interval-splitting consistency of the average velocity.

Loss type (c), self-consistency; JVP-free. For ``s <= r <= t`` the average velocity is additive
over intervals, ``(t - s) F_{t->s} = (t - r) F_{t->r} + (r - s) F_{r->s}``, where ``F_{r->s}`` is
evaluated at the model's own intermediate point (MATH.md 1c; the seed writes the rule without
arguments)::

    x_t    = (1 - t) x0 + t x1
    x_r    = x_t - (t - r) F_{theta-}(x_t, t, r)
    F_tgt  = [(t - r) F_{theta-}(x_t, t, r) + (r - s) F_{theta-}(x_r, r, s)] / (t - s)
    L      = E [ w || F_theta(x_t, t, s) - sg(F_tgt) ||^2 ]                  (samples with s < t)
           + E [ w || F_theta(x_t, t, t) - v ||^2 ]                          (samples with s = t)

The paper draws ``r = (1 - lambda) t + lambda s`` with ``lambda ~ U(0, 1)`` and trains a share of
the batch on the boundary ``s = t`` (flow matching against the teacher's velocity, or ``x1 - x0``).

What it pins down: the split residual ``S(t, r, s) = (t - s)(F - F_tgt)`` equals
``Phi_{r->s}(Phi_{t->r}(x)) - Phi_{t->s}(x)`` for an exact flow, so split <=> semigroup. It
vanishes for *every* exact flow of *any* field (for instance the Cholesky family with the
teacher's marginals) and for any constant ``F``; only the boundary term ties the solution to the
teacher. As ``r -> t`` the split residual divided by ``t - r`` tends to the MeanFlow residual with
``v := F(x, t, t)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    check_order,
    col,
    path_point,
    refuse_model_velocity,
    resolve_velocity,
)
from .distances import squared_l2

__all__ = ["split_meanflow_loss", "split_residual", "split_target"]

AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


def split_target(
    model: AverageVelocity, x_t: Tensor, t: Tensor, r: Tensor, s: Tensor
) -> tuple[Tensor, Tensor]:
    """Evaluate ``F_theta(x_t, t, s)`` (with its graph) and the detached split target.

    The target's two model evaluations use ``sg`` (detached), and ``F_{r->s}`` is evaluated at
    ``x_r = x_t - (t - r) F(x_t, t, r)``. Where ``t = s`` the target is set to ``F(x_t, t, t)``
    itself (the split rule is empty there).

    Returns:
        ``(F(x_t, t, s), F_tgt)``.
    """
    n = x_t.shape[0]
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([s, r]))
    out, f_tr = both[:n], both[n:].detach()
    x_r = x_t - col(t - r) * f_tr
    f_rs = model(x_r, r, s).detach()
    gap = t - s
    safe = torch.where(gap == 0, torch.ones_like(gap), gap)
    target = (col(t - r) * f_tr + col(r - s) * f_rs) / col(safe)
    target = torch.where(col(gap == 0), out.detach(), target)
    return out, target.detach()


def split_residual(model: AverageVelocity, x_t: Tensor, t: Tensor, r: Tensor, s: Tensor) -> Tensor:
    """``S(t, r, s) = (t - s) F_{t->s}(x_t) - (t - r) F_{t->r}(x_t) - (r - s) F_{r->s}(x_r)``.

    Detached, shape ``(N, d)``; for an exact flow ``S = Phi_{r->s}(Phi_{t->r}(x)) - Phi_{t->s}(x)``.
    """
    out, target = split_target(model, x_t, t, r, s)
    return (col(t - s) * (out - target)).detach()


def split_meanflow_loss(
    model: AverageVelocity,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    r: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    weight: Tensor | None = None,
) -> LossOutput:
    """The SplitMeanFlow loss: the split rule for ``s < t`` and flow matching where ``s = t``.

    Arguments:
        model: ``F(x, t, s)``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, r, s: times in ``[0, 1]`` with ``s <= r <= t``, shape ``(N,)``.
        velocity: the boundary velocity: a teacher's ``v(x, t)`` or ``None``/``"conditional"``
            for ``x1 - x0``.
        weight: optional per-sample weight, shape ``(N,)``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``F(x_t, t, s) - F_tgt`` (``F(x_t, t, t) - v`` on the
        boundary) and the target.
    """
    x_t = path_point(path, x0, x1, t, r=r, s=s)
    check_order("t >= r >= s", t, r, s)
    refuse_model_velocity(velocity, term="the boundary term")
    out, target = split_target(model, x_t, t, r, s)
    boundary = t == s
    if boundary.any():
        v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
        target = torch.where(col(boundary), v, target)
    residual = out - target
    per_sample = squared_l2(residual)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=target)
