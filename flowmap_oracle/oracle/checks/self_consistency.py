"""Checks of the self-consistency objectives: SplitMeanFlow and Shortcut models
(:mod:`~flowmap_oracle.objectives.split_meanflow`, :mod:`~...shortcut`).

Their residuals vanish for *every* exact flow and for any constant ``F`` (MATH.md 4.4), so a
check at the exact map alone proves little: targets and gradients are compared pointwise with
the reference on random networks, where the intermediate point ``x_r`` (the model's own
prediction), the interval weights and the midpoint all matter. The constant-network and
exact-map checks are kept as fixed points that a wrong target breaks. Checks, for ``split`` and
``shortcut`` each: ``<objective>.target.random_network``, ``.constant_network`` and
``.exact_map_fixed_point`` (registered by :func:`~._common.register_target_checks`) and
``<objective>.loss.value_and_gradient``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...objectives.shortcut import shortcut_residual
from ...objectives.split_meanflow import split_meanflow_loss, split_target
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import CHECKS, check
from ..results import Case
from ._common import (
    Term,
    compare_loss,
    loss_inputs,
    register_target_checks,
    regression_terms_in_user_units,
    user_target,
)
from ._inputs import split_time

# ---------------------------------------------------------------------------------------------
# SplitMeanFlow

register_target_checks(
    "split_meanflow",
    space="split",
    target="split target",
    formula=(
        "the split target [(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s), with F_{r->s} "
        "at the model's own point x_r = x_t - (t - r) F(x_t, t, r),"
    ),
    user=lambda ctx, net, b, v: user_target(
        ctx, "split_meanflow", "value", net, b.x, b.t, b.s, extra_times=(split_time(b),)
    ),
    reference=lambda ctx, net, b, v: split_target(net, b.x, b.t, split_time(b), b.s)[1],
    seed=30,
    constant_network=True,
)


@check(
    "split_meanflow.loss.value_and_gradient",
    objective="split_meanflow",
    role="loss",
    space="split",
    description=(
        "The SplitMeanFlow loss (split rule where s < t, flow matching with x1 - x0 where s = t) "
        "and its gradient equal the reference's, in the implementation's output units."
    ),
    cost=2,
)
def split_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    # A quarter of the batch on the boundary s = t (flow matching), as SplitMeanFlow trains.
    boundary = torch.arange(b.t.shape[0]) % 4 == 0
    b = b.replace(s=torch.where(boundary, b.t, b.s), r=torch.where(boundary, b.t, split_time(b)))
    r = split_time(b)
    net = ctx.random_network(case.seed + 31)

    def build(model):
        target = split_meanflow_loss(model, b.data, b.noise, b.t, r, b.s, path=b.path).target
        F = model(b.x, b.t, b.s)
        term = Term(F, F - target, b.x, b.t, b.s, "value", name="SplitMeanFlow regression")
        return regression_terms_in_user_units(ctx, [term])

    args = loss_inputs(ctx, b, b.t, r, b.s)
    compare_loss(ctx, "split_meanflow", net, build, args, what="SplitMeanFlow loss")


# ---------------------------------------------------------------------------------------------
# Shortcut models


def _shortcut_space(ctx: CheckContext, space: CaseSpace) -> CaseSpace:
    ctx.require_linear_time("Shortcut's midpoint m = (t + s) / 2 is taken in the user's time")
    if space.levels is not None:
        # Halving a step of level k uses level k + 1, which must stay a real (non-zero) step.
        return replace(space, max_level=space.levels - 2)
    return space


register_target_checks(
    "shortcut",
    space="forward",
    target="Shortcut target",
    formula=(
        "the velocity-space Shortcut target (F(x_t, t, m) + F(x_m, m, s)) / 2 with m = (t + s) / 2 "
        "and x_m = x_t - (t - m) F(x_t, t, m)"
    ),
    user=lambda ctx, net, b, v: user_target(ctx, "shortcut", "value", net, b.x, b.t, b.s),
    reference=lambda ctx, net, b, v: shortcut_residual(net, b.x, b.t, b.s, space="velocity")[1],
    seed=40,
    prepare=_shortcut_space,
    constant_network=True,
)


@check(
    "shortcut.loss.value_and_gradient",
    objective="shortcut",
    role="loss",
    space="forward",
    description=(
        "The Shortcut loss ||F(x_t, t, t) - (x1 - x0)||^2 + ||F(x_t, t, s) - sg(target)||^2 "
        "(velocity space) and its gradient equal the reference's in the output units."
    ),
    cost=2,
)
def shortcut_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, _shortcut_space(ctx, space))
    net = ctx.random_network(case.seed + 41)

    def build(model):
        fm = model(b.x, b.t, b.t)
        residual, _ = shortcut_residual(model, b.x, b.t, b.s, space="velocity")
        F = model(b.x, b.t, b.s)
        terms = [
            Term(fm, fm - b.conditional_velocity, b.x, b.t, b.t, "value", name="flow matching"),
            Term(F, residual, b.x, b.t, b.s, "value", name="self-consistency"),
        ]
        return regression_terms_in_user_units(ctx, terms)

    args = loss_inputs(ctx, b, b.t, b.s)
    compare_loss(ctx, "shortcut", net, build, args, what="Shortcut loss")


# Every Shortcut check draws its cases from the restricted space (steps of level at most
# ``levels - 2``): under ``shortcut_log2`` the finest level ``L`` is the instantaneous velocity,
# so a step of ``2^-(L-1)`` has no expressible half step, and no correct implementation can form
# its target there (drawing from the unrestricted space failed correct code at such steps).
for _name in [n for n, c in CHECKS.items() if c.objective == "shortcut"]:
    CHECKS[_name] = replace(CHECKS[_name], prepare=_shortcut_space)
