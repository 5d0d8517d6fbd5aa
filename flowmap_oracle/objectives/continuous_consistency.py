"""Continuous-time consistency models (sCM; Song et al. 2023, Lu and Song 2024).

Loss type (b), backward. The ``Dt -> 0`` limit of the discrete L2 consistency loss is defined
by its gradient: with ``f_{t->0}(x) = c_skip x + c_out F(x, t, 0)`` and the tangent of the
stop-gradient model along the ODE,

    x_t    = (1 - t) x0 + t x1
    g      = d f_{theta-}(x_t, t, 0) / dt = J_x f_{theta-} v + d_t f_{theta-}
    grad L = E [ w(t) (d_theta f_theta(x_t, t, 0))^T g ]

realised as ``L = E[w 1/2 || f_theta - sg(f_theta - g) ||^2]`` (value ``1/2 ||g||^2``). sCM's
tangent normalisation replaces ``g`` by ``g / (||g|| + c)``. (sCM's tangent warm-up is a schedule
over training steps that scales part of ``g``; it is not part of the converged objective and is
not applied here.)

For ``f = x - t F`` (MeanFlow/FACM parameterisation at ``s = 0``) ``g = F_tgt - F``, the negative
MeanFlow residual at ``s = 0``; so the sCM gradient is ``t`` times the MeanFlow gradient
``grad 1/2 ||F - sg(F_tgt)||^2`` at ``s = 0``, and equals the AYF-EMD gradient at ``s = 0``
(MATH.md 1d). With the teacher's marginal velocity the exact map gives ``g = 0`` pointwise; with
``x1 - x0`` the tangent is ``D Phi_{t->0}(v_c - v_m)``, zero only in conditional mean (and the
tangent normalisation, being nonlinear, makes that biased on a multi-modal teacher).
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
    flow_of,
    normalise_tangent,
    path_point,
    resolve_velocity,
    surrogate_loss,
)
from .derivatives import Derivative, total_derivative

__all__ = ["consistency_tangent", "scm_loss"]


def consistency_tangent(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x_t: Tensor,
    t: Tensor,
    v: Tensor,
    *,
    derivative: Derivative = "jvp",
) -> tuple[Tensor, Tensor]:
    """``f_theta(x_t, t, 0)`` (with its graph) and its detached tangent ``d f / dt`` along ``v``."""
    flow = flow_of(model)
    f, g = total_derivative(flow, x_t, t, torch.zeros_like(t), v, derivative=derivative)
    return f, g.detach()


def scm_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    tangent_normalisation: float | None = None,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """The continuous-time consistency (sCM) loss.

    Arguments:
        model: a flow-map model (its ``flow`` gives ``f_{t->0}``) or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t: times in ``[0, 1]``, shape ``(N,)``.
        velocity: a teacher velocity ``v(x, t)`` (consistency distillation), ``None`` /
            ``"conditional"`` for ``x1 - x0`` (consistency training), or ``"model"`` for
            ``sg(F(x_t, t, t))``.
        tangent_normalisation: the constant ``c`` of ``g / (||g|| + c)`` (sCM uses 0.1), or
            ``None`` for the plain tangent.
        weight: optional per-sample weight ``w(t)``.
        derivative: ``"jvp"`` or a finite-difference route for the tangent.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``g`` (the tangent, before normalisation) and target
        ``sg(f - g)``.
    """
    x_t = path_point(path, x0, x1, t)
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1, model=model)
    f, g = consistency_tangent(model, x_t, t, v, derivative=derivative)
    direction = normalise_tangent(g, tangent_normalisation)
    loss, per_sample = surrogate_loss(f, direction, weight)
    return LossOutput(loss=loss, residual=g, target=(f - direction).detach(), per_sample=per_sample)
