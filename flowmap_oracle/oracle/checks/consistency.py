"""Checks of consistency models: discrete (CT), continuous (sCM) and CTM, against
:mod:`~flowmap_oracle.objectives.consistency`, :mod:`~...continuous_consistency` and
:mod:`~...ctm`.

A consistency model's output ``f_{t->0}`` lives in data space in every convention (all of them
agree at ``t = 0``), so discrete losses compare directly. The sCM tangent ``d f_{t->0} / d tau``
is taken in the user's own time: ours is ``tau'(t)`` times it.

The sCM *loss* is the limit of the discrete consistency loss ``1/2 ||f(tau) - sg f(tau')||^2 /
|tau - tau'|`` with ``tau'`` one step towards data, whose gradient is ``(d_theta f)^T (f(tau) -
f(tau')) / |tau - tau'|``: the tangent taken *towards noise*, ``sign(tau') d f / d tau``, which is
``d f / dt / |tau'|`` in ours. Where user time runs towards data (``noise_at_0``, ``tau' = -1``)
that is ``-d f / d tau``: dividing by ``tau'`` instead of ``|tau'|`` negated the reference.
"""

from __future__ import annotations

import torch

from ...objectives.consistency import consistency_loss
from ...objectives.continuous_consistency import consistency_tangent
from ...objectives.ctm import ctm_loss
from ...objectives.teacher_solvers import HeunSolver
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case, compare
from ..tolerances import EXACT_MAP, STANDARD
from ._common import (
    assert_stop_gradient,
    call_target,
    compare_loss,
    loss_inputs,
    surrogate_in_user_units,
    target_inputs,
)
from ._inputs import split_time

NEEDS_T = "the continuous consistency tangent differentiates f_{t->0} in t"


def _per_entry(ctx: CheckContext, loss: torch.Tensor, d: int) -> torch.Tensor:
    """A per-sample-sum loss under the implementation's reduction."""
    return loss if ctx.impl.loss_reduction == "sum_mean" else loss / d


@check(
    "consistency.loss.value_and_gradient",
    objective="consistency",
    role="loss",
    space="strict",
    description=(
        "The consistency-training loss ||f(x_t, t, 0) - sg(f(x_t', t', 0))||^2 with the earlier "
        "point x_t' = x_t - (t - t') (x1 - x0) (on the same conditional path) and its gradient "
        "equal the reference's."
    ),
)
def cm_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 50)
    d = b.x.shape[1]

    def build(model):
        out = consistency_loss(
            model, b.data, b.noise, b.t, delta_t=b.t - b.s, solver=None, path=b.path
        )
        return _per_entry(ctx, out.loss, d)

    args = loss_inputs(ctx, b, b.t, b.s)
    compare_loss(ctx, "consistency", net, build, args, what="consistency-training loss")


# ---------------------------------------------------------------------------------------------
# Continuous consistency (sCM)


def _scm_target(ctx: CheckContext, net, b, v) -> torch.Tensor:
    """The implementation's tangent ``d f_{t->0} / d tau`` times ``tau'(t)``: ours."""
    args = [ctx.user_network(net), *target_inputs(ctx, b.x, b.t, v=v)]
    return ctx.adapter.tau_dot(b.t)[:, None] * call_target(ctx, "scm", args, tuple(b.x.shape))


@check(
    "scm.target.random_network",
    objective="scm",
    role="target",
    space="to_zero",
    description=(
        "The tangent d f_{t->0}/dt = J_x f v + d_t f of the stop-gradient model along the ring "
        "teacher's velocity equals the reference (product rule: v - F - t D_t F for f = x - t F)."
    ),
)
def scm_random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 60)
    v = ctx.teacher.velocity(b.x, b.t)
    _, expected = consistency_tangent(net, b.x, b.t, v)
    compare(
        expected,
        _scm_target(ctx, net, b, v),
        ctx.tol(STANDARD),
        quantity="sCM tangent d f_{t->0} / dt (our time)",
        inputs=b.inputs(),
    )


@check(
    "scm.target.exact_map_zero",
    objective="scm",
    role="target",
    space="to_zero",
    description="At the exact map of the ring teacher the tangent vanishes (f_{t->0} is constant "
    "along trajectories).",
    draws=False,
    cost=5,
)
def scm_exact(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    v = ctx.teacher.velocity(b.x, b.t)
    got = _scm_target(ctx, ctx.exact, b, v)
    compare(
        torch.zeros_like(got),
        got,
        ctx.tol(EXACT_MAP),
        quantity="sCM tangent at the exact map (should vanish)",
        inputs=b.inputs(),
    )


@check(
    "scm.target.stop_gradient",
    objective="scm",
    role="target",
    space="to_zero",
    description="The tangent carries no reverse-mode gradient in the network parameters (a "
    "forward-mode tangent without one is harmless in reverse-mode training and reported).",
    draws=False,
    cost=2,
)
def scm_stop_gradient(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    args = target_inputs(ctx, b.x, b.t, v=ctx.teacher.velocity(b.x, b.t))
    assert_stop_gradient(ctx, "scm", ctx.random_network(case.seed + 61), args)


@check(
    "scm.loss.gradient",
    objective="scm",
    role="loss",
    space="to_zero",
    description=(
        "The sCM loss's gradient mean_i (d_theta f_{t->0}(x_i))^T sign(tau') d f_{theta-}/dtau "
        "(teacher velocity; the tangent towards noise in the user's time tau) equals the "
        "reference's (values of gradient-defined losses are not compared)."
    ),
    cost=2,
)
def scm_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 62)
    v = ctx.teacher.velocity(b.x, b.t)
    # sign(tau') d f / d tau = (d f / dt) / |tau'|: the tangent towards noise in user time.
    tau_speed = ctx.adapter.tau_dot(b.t).abs()[:, None]

    def build(model):
        f, g = consistency_tangent(model, b.x, b.t, v)
        return surrogate_in_user_units(ctx, f, g / tau_speed)

    args = [*loss_inputs(ctx, b, b.t), ctx.user_field(ctx.teacher.velocity, "velocity")]
    compare_loss(ctx, "scm", net, build, args, what="sCM loss", value=False)


# ---------------------------------------------------------------------------------------------
# CTM


@check(
    "ctm.loss.value_and_gradient",
    objective="ctm",
    role="loss",
    space="split",
    description=(
        "The CTM loss ||sg(f_{s->0})(f(x_t, t, s)) - sg(f_{s->0})(sg f(Solver_{t->r}(x_t), r, s))||^2"
        " (teacher: one Heun step, handed over in the implementation's conventions; gradient "
        "through the frozen map's input) and its gradient equal the reference's."
    ),
    cost=2,
)
def ctm_loss_check(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    r = split_time(b)
    net = ctx.random_network(case.seed + 70)
    solver = HeunSolver(ctx.teacher.velocity, n_steps=1)
    d = b.x.shape[1]

    def build(model):
        out = ctm_loss(
            model, b.data, b.noise, b.t, r, b.s, solver=solver, compare="data", path=b.path
        )
        return _per_entry(ctx, out.loss, d)

    args = [*loss_inputs(ctx, b, b.t, r, b.s), ctx.user_field(solver, "solver")]
    compare_loss(ctx, "ctm", net, build, args, what="CTM loss", frozen_copy=True)
