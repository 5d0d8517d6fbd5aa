"""Checks of FACM against :mod:`flowmap_oracle.objectives.facm`.

FACM's consistency target is the MeanFlow target at ``s = 0`` (MATH.md 1b), compared like
MeanFlow's on the curved ring teacher. Its loss (norm-L2 consistency part with the time weight
``sin(pi t / 2)``, and the flow-matching anchor queried at the expanded time ``2 - t`` with an
L2-plus-cosine distance) is defined in the noise-at-1 average-velocity parameterisation, so the
loss check applies to implementations declaring that convention. Checks:
``facm.target.random_network`` and ``.exact_map_fixed_point`` (registered by
:func:`~._common.register_target_checks`) and ``facm.loss.value_and_gradient``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...objectives.facm import facm_loss
from ...objectives.meanflow import meanflow_target
from ..adapters import TargetKind
from ..cases import CaseSpace
from ..context import Batch, CheckContext
from ..registry import check
from ..results import Case, CheckSkipped
from ._common import compare_loss, loss_inputs, register_target_checks, user_target
from ._inputs import given_velocity

OBJECTIVE = "facm"
KIND: TargetKind = "time_derivative"
NEEDS_T = "FACM's target differentiates F in t at s = 0"


def _needs_t(ctx: CheckContext, space: CaseSpace) -> CaseSpace:
    ctx.require_continuous_steps(NEEDS_T)
    return space


def _target(ctx: CheckContext, net, b: Batch, v: Tensor | None) -> Tensor:
    zeros = torch.zeros_like(b.t)
    return user_target(ctx, OBJECTIVE, KIND, net, b.x, b.t, zeros, v=v, with_end=False)


def _reference(ctx: CheckContext, net, b: Batch, v: Tensor | None) -> Tensor:
    return meanflow_target(net, b.x, b.t, torch.zeros_like(b.t), given_velocity(v))[1]


register_target_checks(
    OBJECTIVE,
    space="to_zero",
    target="FACM consistency target",
    formula="the consistency target F_tgt = v - t (J_x F v + d_t F) at s = 0 (MeanFlow's target "
    "at s = 0)",
    user=_target,
    reference=_reference,
    seed=20,
    velocity=True,
    prepare=_needs_t,
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

    def build(model):
        parts = facm_loss(model, b.data, b.noise, b.t, path=b.path).parts
        assert parts is not None  # FACM's loss is the sum of its consistency part and anchor
        return parts

    compare_loss(
        ctx,
        OBJECTIVE,
        net,
        build,
        loss_inputs(ctx, b, b.t),
        what="FACM loss",
    )
