"""Checks of Inductive Moment Matching against :mod:`flowmap_oracle.objectives.imm`.

The protocol fixes the estimator: groups of :data:`GROUP` consecutive samples share ``(t, r, s)``,
``x_r`` lies on the conditional path of the same pair ``(x0, x1)``, the Laplace kernel
``exp(-||a - b|| / 1)`` and the unbiased U-statistic over ``i != j``. The kernel acts on points at
time ``s`` in the user's coordinates, so the check needs conventions that leave points unscaled.
"""

from __future__ import annotations

import torch

from ...objectives.imm import imm_loss
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case
from ._common import compare_loss, loss_inputs
from ._inputs import split_time

GROUP = 4
BANDWIDTH = 1.0


def _grouped(a: torch.Tensor) -> torch.Tensor:
    g = a.reshape(-1, GROUP)[:, :1]
    return g.expand(-1, GROUP).reshape(-1).clone()


@check(
    "imm.loss.value_and_gradient",
    objective="imm",
    role="loss",
    space="split",
    description=(
        "The IMM loss (unbiased MMD^2 between f(x_t, t, s) and sg f(x_r, r, s) over groups of 4 "
        "with the Laplace kernel, bandwidth 1) and its gradient equal the reference's."
    ),
    cost=2,
)
def imm_loss_check(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    ctx.require_linear_time("the MMD kernel acts on unscaled points at time s")
    b = ctx.batch(case, space)
    b = b.replace(t=_grouped(b.t), r=_grouped(split_time(b)), s=_grouped(b.s))
    r = split_time(b)
    net = ctx.random_network(case.seed + 90)

    def build(model):
        return imm_loss(
            model,
            b.data,
            b.noise,
            b.t,
            r,
            b.s,
            group_size=GROUP,
            bandwidth=BANDWIDTH,
            path=b.path,
        ).loss

    compare_loss(ctx, "imm", net, build, loss_inputs(ctx, b, b.t, r, b.s), what="IMM loss")
