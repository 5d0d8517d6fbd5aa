"""Checks of Align Your Flow's gradient-defined losses against
:mod:`flowmap_oracle.objectives.align_your_flow`.

Both are defined by their gradients; the implementation's surrogate must have the gradient
``mean_i (d_theta g_i)^T d_i`` with the user's flow map ``g = a(s) f`` and

* EMD: ``d = sign(tau - rho) d g / d tau`` (the tangent along the teacher velocity, s fixed);
* LMD: ``d = sign(rho - tau) (d_rho g - v_u(g, rho))`` (teacher queried at the predicted point),

``d`` is ``a(s) / |tau'|`` times ours and the gradient ``a(s)^2 / |tau'|`` times ours (``tau'`` at
``t`` for EMD, at ``s`` for LMD): ``sign(tau - rho) = sign(tau') sign(t - s)``, and the sign of
``tau'`` cancels against the division by ``tau'``.
Times are drawn in both orders (``s < t`` and ``s > t``), so a dropped ``sign`` is visible.
Checks: ``ayf_emd.loss.gradient`` and ``ayf_lmd.loss.gradient``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...objectives._common import LossOutput, flow_of
from ...objectives.align_your_flow import ayf_emd_loss, ayf_lmd_loss
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case
from ._common import compare_loss, loss_inputs, surrogate_in_user_units


def _compare_ayf_gradient(
    ctx: CheckContext,
    case: Case,
    space: CaseSpace,
    *,
    objective: str,
    loss: Callable[..., LossOutput],
    at_end: bool,
    seed: int,
) -> None:
    """The implementation's ``objective`` gradient against the surrogate with direction
    ``sign(t - s) a(s) R / |tau'|`` (EMD: ``R = d f / dt``, ``tau'`` at ``t``) or
    ``sign(s - t) a(s) R / |tau'|`` (LMD, ``at_end``: ``R = d_s f - v(f, s)``, ``tau'`` at ``s``),
    ``R`` the reference loss's residual."""
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + seed)
    v = ctx.teacher.velocity
    a_s = ctx.adapter.scale(b.s)[:, None]
    tau_dot = ctx.adapter.tau_dot(b.s if at_end else b.t).abs()[:, None]
    sign = torch.sign(b.s - b.t if at_end else b.t - b.s)[:, None]

    def build(model):
        residual = loss(model, b.data, b.noise, b.t, b.s, velocity=v, path=b.path).residual
        f = flow_of(model)(b.x, b.t, b.s)
        return surrogate_in_user_units(ctx, a_s * f, sign * a_s * residual / tau_dot)

    args = [*loss_inputs(ctx, b, b.t, b.s), ctx.user_field(v, "velocity")]
    what = f"{'AYF-LMD' if at_end else 'AYF-EMD'} loss"
    compare_loss(ctx, objective, net, build, args, what=what, value=False)


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
    _compare_ayf_gradient(
        ctx, case, space, objective="ayf_emd", loss=ayf_emd_loss, at_end=False, seed=80
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
    _compare_ayf_gradient(
        ctx, case, space, objective="ayf_lmd", loss=ayf_lmd_loss, at_end=True, seed=81
    )
