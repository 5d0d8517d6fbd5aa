"""Flow-Anchored Consistency Models (FACM; Peng et al. 2025).

Loss type (b), backward. FACM parameterises ``f_{t->0}(x) = x - t F(x, t, 0)`` (``c_skip = 1``,
``c_out = -t``; valid only towards ``s = 0``) and trains two tasks on one network:

*Consistency part* (the accelerator). ``d f_{t->0}(x_t)/dt = 0`` is, for this parameterisation,
the MeanFlow identity at ``s = 0`` (MATH.md 1b)::

    x_t   = (1 - t) x0 + t x1
    F_tgt = v - t D_t F_{theta-}(x_t, t, 0),          D_t F = J_x F v + d_t F
    g     = sg(F) - F_tgt
    tgt   = sg(F) - a(t) clip(g, -1, 1)               (a = 1, no clip: tgt = F_tgt)
    L_CM  = E [ beta(t) ||F_theta(x_t, t, 0) - tgt||^2 / sg(sqrt(||F_theta - tgt||^2 + c)) ]

with FACM's norm-L2 distance (``p = 1/2`` adaptive L2), time weight ``beta(t) = sin(pi t / 2)``
(the code's ``cos(pi alpha_t / 2)`` with ``alpha_t = 1 - t``) and the optional relaxation
``a(t) = 1 - (1 - t)^p``.

*Flow-matching anchor*. The same network, queried at the task time ``tau``, regresses the
velocity with FACM's L2-plus-cosine distance::

    L_FM = E [ ||F_theta(x_t, tau, tau) - v||^2 + 1 - cos(F_theta(x_t, tau, tau), v) ]

``tau = 2 - t`` in ``[1, 2]`` (the *expanded time interval* for networks with one time input:
the two tasks live on disjoint time ranges), or ``tau = t`` for networks with separate ``(t, s)``
inputs, where ``F(x, t, t)`` is the velocity (FACM's code does this when the network embeds
``r``). :class:`~flowmap_oracle.experiments.models.ExpandedTimeFlowMap` puts a flow map behind the
expanded encoding.

With plain L2 (``cm_p = 0``), no relaxation and no weight, the CM part *is* the MeanFlow loss at
``s = 0``. With the teacher's velocity the exact map zeroes both parts pointwise; with
``x1 - x0`` the norm-L2 and cosine distances are nonlinear in the residual and hence biased on a
multi-modal teacher (MATH.md section 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    col,
    path_point,
    refuse_model_velocity,
    resolve_velocity,
)
from .derivatives import Derivative, total_derivative
from .distances import adaptive_l2, cosine_distance, squared_l2

__all__ = ["facm_loss"]


def facm_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    time_encoding: Literal["expanded", "diagonal"] = "expanded",
    cm_p: float = 0.5,
    cm_c: float = 1e-3,
    relaxation_p: float | None = None,
    time_weight: bool = True,
    fm_cosine: bool = True,
    fm_weight: float = 1.0,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """The FACM loss ``L_CM + fm_weight * L_FM``.

    Arguments:
        model: the network ``F(x, t, s)``; the CM part calls ``F(x_t, t, 0)``, the anchor
            ``F(x_t, tau, tau)``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t: times in ``[0, 1]``, shape ``(N,)``.
        velocity: a teacher velocity ``v(x, t)`` (distillation) or ``None``/``"conditional"``
            for ``x1 - x0`` (FACM from scratch). ``"model"`` is refused (the anchor would vanish).
        time_encoding: ``"expanded"`` (``tau = 2 - t``) or ``"diagonal"`` (``tau = t``).
        cm_p, cm_c: the CM distance ``||r||^2 / sg((||r||^2 + c)^p)``; ``cm_p = 0`` is plain L2.
        relaxation_p: the power ``p`` of ``a(t) = 1 - (1 - t)^p`` (FACM's relaxed target), or
            ``None`` for the plain target ``F_tgt``.
        time_weight: apply ``beta(t) = sin(pi t / 2)`` to the CM part.
        fm_cosine: add the cosine distance to the anchor's L2.
        fm_weight: weight of the anchor (0 keeps only the CM part).
        derivative: ``"jvp"`` or a finite-difference route for ``D_t F``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput`; ``residual`` is the CM residual ``F - F_tgt`` (the MeanFlow residual
        at ``s = 0``), ``target`` the CM target, ``per_sample`` the sum of both parts.
    """
    x_t = path_point(path, x0, x1, t)
    refuse_model_velocity(velocity, term="FACM's flow-matching anchor")
    if time_encoding not in ("expanded", "diagonal"):
        raise ValueError(f"time_encoding must be 'expanded' or 'diagonal', got {time_encoding!r}")
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    zeros = torch.zeros_like(t)
    out, dF_dt = total_derivative(model, x_t, t, zeros, v, derivative=derivative)
    f_tgt = (v - col(t) * dF_dt).detach()
    if relaxation_p is None:
        target = f_tgt
    else:
        a = 1 - (1 - t) ** relaxation_p
        g = out.detach() - f_tgt
        target = out.detach() - col(a) * g.clamp(-1.0, 1.0)
    cm = adaptive_l2(out - target, p=cm_p, c=cm_c)
    if time_weight:
        cm = cm * torch.sin(0.5 * math.pi * t)
    per_sample = cm
    parts = {"consistency part": cm.mean()}
    if fm_weight:
        tau = 2 - t if time_encoding == "expanded" else t
        f_fm = model(x_t, tau, tau)
        fm = squared_l2(f_fm - v)
        if fm_cosine:
            fm = fm + cosine_distance(f_fm, v)
        per_sample = per_sample + fm_weight * fm
        parts["flow-matching anchor"] = (fm_weight * fm).mean()
    result = LossOutput.weighted_mean(per_sample, weight=None, residual=out - f_tgt, target=target)
    return replace(result, parts=parts)
