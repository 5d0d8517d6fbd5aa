"""Checks of a MeanFlow implementation against :mod:`flowmap_oracle.objectives.meanflow`.

The MeanFlow target ``F_tgt = v - (t - s)(J_x F v + d_t F)`` contains ``d F / d t``, which a
straight flow hides: every comparison runs on the curved 8-mode ring teacher, with random
networks whose ``d_t F`` and ``d_s F`` differ, so the sign of the ``(t - s)`` term, the JVP
tangents and the argument order are all visible. Checks: ``meanflow.target.random_network`` and
``.exact_map_fixed_point`` (registered by :func:`~._common.register_target_checks`),
``.conditional_velocity``, ``.stop_gradient``, ``meanflow.loss.value_and_gradient``.
"""

from __future__ import annotations

from torch import Tensor

from ...objectives.meanflow import meanflow_target
from ..adapters import TargetKind
from ..cases import CaseSpace
from ..context import Batch, CheckContext
from ..registry import check
from ..results import Case, compare
from ..tolerances import STANDARD
from ._common import (
    Term,
    assert_stop_gradient,
    compare_loss,
    loss_inputs,
    register_target_checks,
    regression_terms_in_user_units,
    target_inputs,
    user_target,
)
from ._inputs import given_velocity

OBJECTIVE = "meanflow"
KIND: TargetKind = "time_derivative"
NEEDS_T = "the MeanFlow target differentiates F in t with s held fixed"


def _needs_t(ctx: CheckContext, space: CaseSpace) -> CaseSpace:
    ctx.require_continuous_steps(NEEDS_T)
    return space


def _target(ctx: CheckContext, net, b: Batch, v: Tensor | None) -> Tensor:
    return user_target(ctx, OBJECTIVE, KIND, net, b.x, b.t, b.s, v=v)


def _reference(ctx: CheckContext, net, b: Batch, v: Tensor | None) -> Tensor:
    return meanflow_target(net, b.x, b.t, b.s, given_velocity(v))[1]


register_target_checks(
    OBJECTIVE,
    space="forward",
    target="MeanFlow target F_tgt",
    formula="the target F_tgt = v - (t - s)(J_x F v + d_t F) at random (t, s)",
    user=_target,
    reference=_reference,
    seed=0,
    velocity=True,
    prepare=_needs_t,
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
    b = ctx.batch(case, _needs_t(ctx, space))
    net = ctx.random_network(case.seed + 1)
    v = b.conditional_velocity
    compare(
        _reference(ctx, net, b, v),
        _target(ctx, net, b, v),
        ctx.tol(STANDARD),
        quantity="MeanFlow target F_tgt (our convention) with v = x1 - x0",
        inputs=b.inputs(),
        gain=ctx.rounding_gain(b.t, b.s),
    )


@check(
    "meanflow.target.stop_gradient",
    objective=OBJECTIVE,
    role="target",
    space="forward",
    description=(
        "The target carries no reverse-mode gradient in the network parameters (whichever JVP "
        "API computes it); a forward-mode tangent without one (torch.no_grad, not detach) is "
        "harmless in reverse-mode training and reported."
    ),
    draws=False,
    cost=2,
)
def target_stop_gradient(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    args = target_inputs(ctx, b.x, b.t, b.s, v=ctx.teacher.velocity(b.x, b.t))
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
        return regression_terms_in_user_units(ctx, [Term(F, F - F_tgt, b.x, b.t, b.s, KIND)])

    compare_loss(ctx, OBJECTIVE, net, build, loss_inputs(ctx, b, b.t, b.s), what="MeanFlow loss")
