"""Checks of FACM against :mod:`flowmap_oracle.numerics.objectives.facm`.

FACM's consistency target is the MeanFlow target at ``s = 0`` (MATH.md 1b), compared like
MeanFlow's on the curved ring teacher. Its loss (norm-L2 consistency part with the time weight
``sin(pi t / 2)``, and the flow-matching anchor queried at the expanded time ``2 - t`` with an
L2-plus-cosine distance) is defined in the noise-at-1 average-velocity parameterisation, so the
loss check applies to implementations declaring that convention.
"""

from __future__ import annotations

import torch

from ...objectives.facm import facm_loss
from ...objectives.meanflow import meanflow_target
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case, CheckSkipped, compare
from ..tolerances import EXACT_MAP, STANDARD
from ._common import compare_loss, reference_gradients, user_gradients, user_target

OBJECTIVE = "facm"
KIND = "time_derivative"
NEEDS_T = "FACM's target differentiates F in t at s = 0"


def _target(ctx: CheckContext, net, b, v):
    zeros = torch.zeros_like(b.t)
    return user_target(ctx, OBJECTIVE, KIND, net, b.x, b.t, zeros, v=v, with_end=False)


@check(
    "facm.target.random_network",
    objective=OBJECTIVE,
    role="target",
    space="to_zero",
    description=(
        "The consistency target F_tgt = v - t (J_x F v + d_t F) at s = 0 on a random network "
        "with the ring teacher's velocity equals the reference (MeanFlow's target at s = 0)."
    ),
)
def target_random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 20)
    v = ctx.teacher.velocity(b.x, b.t)
    _, expected = meanflow_target(net, b.x, b.t, b.s, v)
    compare(
        expected,
        _target(ctx, net, b, v),
        ctx.tol(STANDARD),
        quantity="FACM consistency target (our convention)",
        inputs=b.inputs(),
    )


@check(
    "facm.target.exact_map_fixed_point",
    objective=OBJECTIVE,
    role="target",
    space="to_zero",
    description="At the exact map of the ring teacher the FACM target equals F*(x, t, 0).",
    draws=False,
    cost=5,
)
def target_exact_map(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_continuous_steps(NEEDS_T)
    b = ctx.batch(case, space)
    v = ctx.teacher.velocity(b.x, b.t)
    compare(
        ctx.exact.value(b.x, b.t, b.s),
        _target(ctx, ctx.exact, b, v),
        ctx.tol(EXACT_MAP),
        quantity="FACM target at the exact map (should equal F*, our convention)",
        inputs=b.inputs(),
    )


@check(
    "facm.loss.value_and_gradient",
    objective=OBJECTIVE,
    role="loss",
    space="to_zero",
    description=(
        "FACM's loss with its defaults (norm-L2 CM part weighted by sin(pi t / 2); anchor "
        "||F(x, 2-t, 2-t) - v||^2 + cosine distance; v = x1 - x0) and its gradient equal the "
        "reference's."
    ),
    cost=2,
)
def loss_value_and_gradient(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    if not ctx.adapter.is_identity or ctx.impl.loss_reduction != "sum_mean":
        raise CheckSkipped(
            "FACM's loss (c_out = -t, anchor at the expanded time 2 - t, per-sample norms) is "
            "defined in the noise-at-1 average-velocity convention with per-sample sums; declared "
            f"{ctx.conventions.describe()}, loss_reduction={ctx.impl.loss_reduction}"
        )
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 21)
    args = [ctx.to_user(b.data), ctx.to_user(b.noise), ctx.user_times(b.t)]
    compare_loss(
        ctx,
        "FACM loss",
        reference_gradients(net, lambda m: facm_loss(m, b.data, b.noise, b.t).loss),
        user_gradients(ctx, OBJECTIVE, net, args),
    )
