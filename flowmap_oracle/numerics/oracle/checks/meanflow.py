"""Checks of a MeanFlow implementation against :mod:`flowmap_oracle.numerics.objectives.meanflow`.

The MeanFlow target ``F_tgt = v - (t - s)(J_x F v + d_t F)`` contains ``d F / d t``, which a
straight flow hides: every comparison runs on the curved 8-mode ring teacher, with random
networks whose ``d_t F`` and ``d_s F`` differ, so the sign of the ``(t - s)`` term, the JVP
tangents and the argument order are all visible.
"""

from __future__ import annotations

from ...objectives.meanflow import meanflow_target
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case, compare
from ..tolerances import EXACT_MAP, STANDARD
from ._common import (
    Term,
    assert_stop_gradient,
    compare_loss,
    reference_gradients,
    regression_in_user_units,
    user_gradients,
    user_target,
)

OBJECTIVE = "meanflow"
KIND = "time_derivative"
NEEDS_T = "the MeanFlow target differentiates F in t with s held fixed"


@check(
    "meanflow.target.random_network",
    objective=OBJECTIVE,
    role="target",
    space="forward",
    description=(
        "The target on a random network, with the ring teacher's marginal velocity v(x_t, t), "
        "equals the reference F_tgt = v - (t - s)(J_x F v + d_t F) at random (t, s)."
    ),
)
def target_random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed)
    v = ctx.teacher.velocity(b.x, b.t)
    _, expected = meanflow_target(net, b.x, b.t, b.s, v)
    got = user_target(ctx, OBJECTIVE, KIND, net, b.x, b.t, b.s, v=v)
    compare(
        expected,
        got,
        ctx.tol(STANDARD),
        quantity="MeanFlow target F_tgt (our convention) on a random network with v = v_teacher",
        inputs=b.inputs(),
    )


@check(
    "meanflow.target.conditional_velocity",
    objective=OBJECTIVE,
    role="target",
    space="forward",
    description=(
        "With the conditional velocity v = x1 - x0 (zero only in expectation at the exact map), "
        "the target equals the reference pointwise on a random network."
    ),
)
def target_conditional_velocity(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 1)
    v = b.conditional_velocity
    _, expected = meanflow_target(net, b.x, b.t, b.s, v)
    got = user_target(ctx, OBJECTIVE, KIND, net, b.x, b.t, b.s, v=v)
    compare(
        expected,
        got,
        ctx.tol(STANDARD),
        quantity="MeanFlow target F_tgt (our convention) with v = x1 - x0",
        inputs=b.inputs(),
    )


@check(
    "meanflow.target.exact_map_fixed_point",
    objective=OBJECTIVE,
    role="target",
    space="forward",
    description=(
        "At the exact average velocity F* of the ring teacher (a float64 ODE solve), with the "
        "marginal velocity, the target equals F* itself: the exact map is a fixed point."
    ),
    draws=False,
    cost=5,
)
def target_exact_map_fixed_point(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    v = ctx.teacher.velocity(b.x, b.t)
    expected = ctx.exact.value(b.x, b.t, b.s)
    got = user_target(ctx, OBJECTIVE, KIND, ctx.exact, b.x, b.t, b.s, v=v)
    compare(
        expected,
        got,
        ctx.tol(EXACT_MAP),
        quantity="MeanFlow target at the exact map (should equal F*, our convention)",
        inputs=b.inputs(),
    )


@check(
    "meanflow.target.stop_gradient",
    objective=OBJECTIVE,
    role="target",
    space="forward",
    description=(
        "The target carries no dependence on the network parameters: zero reverse-mode gradient "
        "and zero forward-mode tangent (torch.no_grad stops only the former)."
    ),
    draws=False,
    cost=2,
)
def target_stop_gradient(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    v = ctx.teacher.velocity(b.x, b.t)
    args = [
        ctx.user_points(b.x, b.t),
        ctx.user_times(b.t),
        ctx.user_times(b.s),
        ctx.user_velocity(v, b.x, b.t),
    ]
    assert_stop_gradient(ctx, OBJECTIVE, ctx.random_network(case.seed + 2), args)


@check(
    "meanflow.loss.value_and_gradient",
    objective=OBJECTIVE,
    role="loss",
    space="forward",
    description=(
        "The loss (conditional velocity, plain L2) and its gradient in the network parameters "
        "equal the reference's, expressed in the implementation's output units."
    ),
    cost=2,
)
def loss_value_and_gradient(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 3)

    def build(model):
        F, F_tgt = meanflow_target(model, b.x, b.t, b.s, b.conditional_velocity)
        return regression_in_user_units(ctx, [Term(F, F - F_tgt, b.x, b.t, b.s, KIND)])

    args = [ctx.to_user(b.data), ctx.to_user(b.noise), ctx.user_times(b.t), ctx.user_times(b.s)]
    compare_loss(
        ctx,
        "MeanFlow loss",
        reference_gradients(net, build),
        user_gradients(ctx, OBJECTIVE, net, args),
    )
