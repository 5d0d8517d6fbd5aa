"""Align Your Flow (Sabour et al. 2025): Eulerian and Lagrangian map distillation.

Flow map ``f_{t->s}(x) = x + (s - t) F(x, t, s)`` (``c_skip = 1``, ``c_out = s - t``). Both
objectives are defined by their gradients and realised as ``w 1/2 ||f_theta - sg(f_theta - g)||^2``
whose gradient is ``w (d_theta f_theta)^T g`` (value ``1/2 ||g||^2``).

**AYF-EMD** (Eulerian map distillation), loss type (b), backward::

    g_EMD  = sign(t - s) d f_{theta-}(x_t, t, s) / dt,      d/dt = J_x(.) v + d_t(.)  (s fixed)
    grad L = E [ w(t, s) (d_theta f_theta(x_t, t, s))^T g_EMD ]

Since ``d f_{theta-}/dt = F_tgt - F`` exactly (MeanFlow's target, any ``v``), the EMD gradient is
``|t - s|`` times the MeanFlow gradient ``grad 1/2 ||F - sg(F_tgt)||^2``; at ``s = 0`` it is the
continuous consistency (sCM) gradient; as ``s -> t`` it is ``|t - s|`` times the flow-matching
gradient (MATH.md 1d).

**AYF-LMD** (Lagrangian map distillation), loss type (a), forward; distillation only::

    x_s    = f_{theta-}(x_t, t, s)
    R_L    = d_s f_{theta-}(x_t, t, s) - v(x_s, s)
    grad L = E [ w(t, s) sign(s - t) (d_theta f_theta(x_t, t, s))^T R_L ]

the teacher velocity being queried at the *predicted* point and the endpoint time. The gradient
is ``|t - s| grad 1/2 ||F - sg(v(x_s, s) + (t - s) d_s F)||^2`` (MATH.md 1f). The conditional
velocity ``x1 - x0`` has no value at ``x_s``; LMD therefore needs a velocity field (the teacher's,
or the model's own ``F(x_s, s, s)``, which leaves it unanchored).
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
    col,
    flow_of,
    normalise_tangent,
    path_point,
    resolve_velocity,
    surrogate_loss,
)
from .derivatives import Derivative, s_derivative, total_derivative

__all__ = ["ayf_emd_loss", "ayf_lmd_loss"]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def ayf_emd_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    tangent_normalisation: float | None = None,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """The AYF-EMD loss.

    Arguments:
        model: a flow-map model (its ``flow`` gives ``f_{t->s}``) or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times in ``[0, 1]``, shape ``(N,)`` (either order).
        velocity: a teacher velocity ``v(x, t)``, ``None``/``"conditional"`` for ``x1 - x0``, or
            ``"model"`` for ``sg(F(x_t, t, t))``.
        tangent_normalisation: ``c`` of ``g / (||g|| + c)`` (sCM's trick, used by AYF), or ``None``.
        weight: optional per-sample weight ``w(t, s)``.
        derivative: ``"jvp"`` or a finite-difference route.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``d f_{theta-}/dt`` (before sign and normalisation).
    """
    x_t = path_point(path, x0, x1, t, s=s)
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1, model=model)
    f, df_dt = total_derivative(flow_of(model), x_t, t, s, v, derivative=derivative)
    df_dt = df_dt.detach()
    direction = col(torch.sign(t - s)) * normalise_tangent(df_dt, tangent_normalisation)
    loss, per_sample = surrogate_loss(f, direction, weight)
    return LossOutput(
        loss=loss, residual=df_dt, target=(f - direction).detach(), per_sample=per_sample
    )


def ayf_lmd_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice,
    tangent_normalisation: float | None = None,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """The AYF-LMD loss.

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times in ``[0, 1]``, shape ``(N,)`` (either order).
        velocity: the teacher's velocity ``v(x, t)`` (required), or ``"model"`` for the
            self-teacher ``sg(F(x_s, s, s))``. ``"conditional"`` is refused (inadmissible).
        tangent_normalisation: ``c`` of ``R / (||R|| + c)``, or ``None``.
        weight: optional per-sample weight ``w(t, s)``.
        derivative: ``"jvp"`` or a finite-difference route for ``d_s f``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``R_L = d_s f - v(f, s)`` (before sign/normalisation).
    """
    x_t = path_point(path, x0, x1, t, s=s)
    if velocity is None or (isinstance(velocity, str) and velocity == "conditional"):
        raise ValueError(
            "AYF-LMD needs a velocity field: x1 - x0 has no value at the predicted point "
            "f_{t->s}(x_t), so the conditional velocity is inadmissible (biased)"
        )
    f, df_ds = s_derivative(flow_of(model), x_t, t, s, derivative=derivative)
    x_s = f.detach()
    v_s = resolve_velocity(velocity, path=path, x_t=x_s, t=s, x0=x0, x1=x1, model=model)
    r_l = df_ds.detach() - v_s
    direction = col(torch.sign(s - t)) * normalise_tangent(r_l, tangent_normalisation)
    loss, per_sample = surrogate_loss(f, direction, weight)
    return LossOutput(
        loss=loss, residual=r_l, target=(f - direction).detach(), per_sample=per_sample
    )
