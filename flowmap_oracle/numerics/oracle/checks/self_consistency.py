"""Checks of the self-consistency objectives: SplitMeanFlow and Shortcut models
(:mod:`~flowmap_oracle.numerics.objectives.split_meanflow`, :mod:`~...shortcut`).

Their residuals vanish for *every* exact flow and for any constant ``F`` (MATH.md 4.4), so a
check at the exact map alone proves little: targets and gradients are compared pointwise with
the reference on random networks, where the intermediate point ``x_r`` (the model's own
prediction), the interval weights and the midpoint all matter. The constant-network and
exact-map checks are kept as fixed points that a wrong target breaks.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...objectives.shortcut import shortcut_residual
from ...objectives.split_meanflow import split_meanflow_loss, split_target
from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case, compare
from ..tolerances import EXACT_MAP, STANDARD
from ._common import (
    Term,
    compare_loss,
    reference_gradients,
    regression_in_user_units,
    user_gradients,
    user_target,
)


class _Constant:
    """The network ``F(x, t, s) = c`` (a fixed point of every self-consistency target)."""

    def __init__(self, c: torch.Tensor) -> None:
        self.c = c

    def __call__(self, x, t, s):
        return self.c.expand(x.shape[0], -1) + 0 * x


def _constant(ctx: CheckContext, seed: int) -> _Constant:
    g = torch.Generator().manual_seed(seed)
    return _Constant(torch.randn(1, ctx.teacher.dim, generator=g, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# SplitMeanFlow


def _split(ctx, net, b):
    return user_target(ctx, "split", "value", net, b.x, b.t, b.s, extra_times=(b.r,))


@check(
    "split.target.random_network",
    objective="split",
    role="target",
    space="split",
    description=(
        "The split target [(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s), with F_{r->s} "
        "at the model's own point x_r = x_t - (t - r) F(x_t, t, r), equals the reference."
    ),
)
def split_random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 30)
    _, expected = split_target(net, b.x, b.t, b.r, b.s)
    compare(
        expected,
        _split(ctx, net, b),
        ctx.tol(STANDARD),
        quantity="split target (our convention)",
        inputs=b.inputs(),
    )


@check(
    "split.target.constant_network",
    objective="split",
    role="target",
    space="split",
    description="For a constant F the split target is that constant (a degenerate fixed point).",
    draws=False,
)
def split_constant(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    net = _constant(ctx, case.seed)
    compare(
        net(b.x, b.t, b.s),
        _split(ctx, net, b),
        ctx.tol(STANDARD),
        quantity="split target of a constant network (should equal the constant)",
        inputs=b.inputs(),
    )


@check(
    "split.target.exact_map_fixed_point",
    objective="split",
    role="target",
    space="split",
    description="At the exact map of the ring teacher the split target equals F* (semigroup).",
    draws=False,
    cost=5,
)
def split_exact(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    compare(
        ctx.exact.value(b.x, b.t, b.s),
        _split(ctx, ctx.exact, b),
        ctx.tol(EXACT_MAP),
        quantity="split target at the exact map (should equal F*, our convention)",
        inputs=b.inputs(),
    )


@check(
    "split.loss.value_and_gradient",
    objective="split",
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
    s = torch.where(boundary, b.t, b.s)
    r = torch.where(boundary, b.t, b.r)
    b = replace(b, s=s, r=r)
    net = ctx.random_network(case.seed + 31)

    def build(model):
        target = split_meanflow_loss(model, b.data, b.noise, b.t, b.r, b.s).target
        F = model(b.x, b.t, b.s)
        return regression_in_user_units(ctx, [Term(F, F - target, b.x, b.t, b.s, "value")])

    args = [ctx.to_user(b.data), ctx.to_user(b.noise)] + [
        ctx.user_times(a) for a in (b.t, b.r, b.s)
    ]
    compare_loss(
        ctx,
        "SplitMeanFlow loss",
        reference_gradients(net, build),
        user_gradients(ctx, "split", net, args),
    )


# ---------------------------------------------------------------------------------------------
# Shortcut models


def _shortcut_space(ctx: CheckContext, space: CaseSpace) -> CaseSpace:
    ctx.require_linear_time("Shortcut's midpoint m = (t + s) / 2 is taken in the user's time")
    if space.levels is not None:
        # Halving a step of level k uses level k + 1, which must stay a real (non-zero) step.
        return replace(space, max_level=space.levels - 2)
    return space


def _shortcut(ctx, net, b):
    return user_target(ctx, "shortcut", "value", net, b.x, b.t, b.s)


def _shortcut_reference(net, b):
    return shortcut_residual(net, b.x, b.t, b.s, space="velocity")[1]


@check(
    "shortcut.target.random_network",
    objective="shortcut",
    role="target",
    space="forward",
    description=(
        "The velocity-space Shortcut target (F(x_t, t, m) + F(x_m, m, s)) / 2 with m = (t + s) / 2 "
        "and x_m = x_t - (t - m) F(x_t, t, m) equals the reference on a random network."
    ),
)
def shortcut_random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    space = _shortcut_space(ctx, space)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 40)
    with torch.no_grad():
        expected = _shortcut_reference(net, b)
    compare(
        expected,
        _shortcut(ctx, net, b),
        ctx.tol(STANDARD),
        quantity="Shortcut target (our convention)",
        inputs=b.inputs(),
    )


@check(
    "shortcut.target.constant_network",
    objective="shortcut",
    role="target",
    space="forward",
    description="For a constant F the Shortcut target is that constant (a degenerate fixed point).",
    draws=False,
)
def shortcut_constant(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    space = _shortcut_space(ctx, space)
    b = ctx.batch(case, space)
    net = _constant(ctx, case.seed)
    compare(
        net(b.x, b.t, b.s),
        _shortcut(ctx, net, b),
        ctx.tol(STANDARD),
        quantity="Shortcut target of a constant network (should equal the constant)",
        inputs=b.inputs(),
    )


@check(
    "shortcut.target.exact_map_fixed_point",
    objective="shortcut",
    role="target",
    space="forward",
    description="At the exact map of the ring teacher the Shortcut target equals F*.",
    draws=False,
    cost=5,
)
def shortcut_exact(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    space = _shortcut_space(ctx, space)
    b = ctx.batch(case, space)
    compare(
        ctx.exact.value(b.x, b.t, b.s),
        _shortcut(ctx, ctx.exact, b),
        ctx.tol(EXACT_MAP),
        quantity="Shortcut target at the exact map (should equal F*, our convention)",
        inputs=b.inputs(),
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
    space = _shortcut_space(ctx, space)
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 41)

    def build(model):
        fm = model(b.x, b.t, b.t)
        residual, _ = shortcut_residual(model, b.x, b.t, b.s, space="velocity")
        F = model(b.x, b.t, b.s)
        terms = [
            Term(fm, fm - b.conditional_velocity, b.x, b.t, b.t, "value"),
            Term(F, residual, b.x, b.t, b.s, "value"),
        ]
        return regression_in_user_units(ctx, terms)

    args = [ctx.to_user(b.data), ctx.to_user(b.noise), ctx.user_times(b.t), ctx.user_times(b.s)]
    compare_loss(
        ctx,
        "Shortcut loss",
        reference_gradients(net, build),
        user_gradients(ctx, "shortcut", net, args),
    )
