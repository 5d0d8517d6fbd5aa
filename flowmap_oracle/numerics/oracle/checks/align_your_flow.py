"""Checks of Align Your Flow's gradient-defined losses against
:mod:`flowmap_oracle.numerics.objectives.align_your_flow`.

Both are defined by their gradients; the implementation's surrogate must have the gradient
``mean_i (d_theta g_i)^T d_i`` with the user's flow map ``g = a(s) f`` and

* EMD: ``d = sign(tau - rho) d g / d tau`` (the tangent along the teacher velocity, s fixed);
* LMD: ``d = sign(rho - tau) (d_rho g - v_u(g, rho))`` (teacher queried at the predicted point),

both ``a(s)^2 / |tau'|`` times ours. Times are drawn in both orders (``s < t`` and ``s > t``), so a
dropped ``sign`` is visible.
"""

from __future__ import annotations

import torch

from ...objectives._common import flow_of
from ...objectives.align_your_flow import ayf_emd_loss, ayf_lmd_loss
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case
from ._common import compare_loss, reference_gradients, surrogate_in_user_units, user_gradients


def _args(ctx: CheckContext, b) -> list:
    return [
        ctx.to_user(b.data),
        ctx.to_user(b.noise),
        ctx.user_times(b.t),
        ctx.user_times(b.s),
        ctx.user_field(ctx.teacher.velocity, "velocity"),
    ]


def _factors(ctx: CheckContext, t: torch.Tensor, s: torch.Tensor, at: torch.Tensor):
    ad = ctx.adapter
    return ad.scale(s)[:, None], torch.sign(ad.tau_dot(at))[:, None], ad.tau_dot(at).abs()[:, None]


@check(
    "ayf_emd.loss.gradient",
    objective="ayf_emd",
    role="loss",
    space="any",
    description=(
        "The AYF-EMD gradient mean_i sign(t - s) (d_theta f)^T d f_{theta-}/dt (teacher velocity)"
        " equals the reference's, for s < t and s > t."
    ),
    cost=2,
)
def emd_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps("AYF-EMD differentiates f in t with s fixed")
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 80)
    v = ctx.teacher.velocity
    a_s, sign_tau, tau_dot = _factors(ctx, b.t, b.s, b.t)

    def build(model):
        df_dt = ayf_emd_loss(model, b.data, b.noise, b.t, b.s, velocity=v).residual
        f = flow_of(model)(b.x, b.t, b.s)
        sign = sign_tau * torch.sign(b.t - b.s)[:, None]
        return surrogate_in_user_units(ctx, a_s * f, sign * a_s * df_dt / tau_dot / sign_tau)

    compare_loss(
        ctx,
        "AYF-EMD loss",
        reference_gradients(net, build),
        user_gradients(ctx, "ayf_emd", net, _args(ctx, b)),
        value=False,
    )


@check(
    "ayf_lmd.loss.gradient",
    objective="ayf_lmd",
    role="loss",
    space="any",
    description=(
        "The AYF-LMD gradient mean_i sign(s - t) (d_theta f)^T (d_s f_{theta-} - v(f_{theta-}, s))"
        " (teacher at the predicted point and end time) equals the reference's, both orders."
    ),
    cost=2,
)
def lmd_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps("AYF-LMD differentiates f in s")
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 81)
    v = ctx.teacher.velocity
    a_s, sign_tau, tau_dot = _factors(ctx, b.t, b.s, b.s)

    def build(model):
        r_l = ayf_lmd_loss(model, b.data, b.noise, b.t, b.s, velocity=v).residual
        f = flow_of(model)(b.x, b.t, b.s)
        sign = sign_tau * torch.sign(b.s - b.t)[:, None]
        return surrogate_in_user_units(ctx, a_s * f, sign * a_s * r_l / tau_dot / sign_tau)

    compare_loss(
        ctx,
        "AYF-LMD loss",
        reference_gradients(net, build),
        user_gradients(ctx, "ayf_lmd", net, _args(ctx, b)),
        value=False,
    )
