"""Checks of a flow-matching loss against :mod:`flowmap_oracle.objectives.flow_matching`
(and of ReFlow, which is flow matching on the teacher's coupling)."""

from __future__ import annotations

from ...objectives.flow_matching import flow_matching_residual
from ...objectives.reflow import reflow_couplings
from ...objectives.teacher_solvers import HeunSolver
from ..cases import CaseSpace
from ..context import Batch, CheckContext
from ..registry import check
from ..results import Case, CheckSkipped, SkipReason, compare
from ..tolerances import STANDARD
from ._common import Term, compare_loss, loss_inputs, regression_in_user_units

REFLOW_STEPS = 4  # Heun steps of the teacher solver handed to ReFlow couplings (cheap, curved)


def _fm_loss_check(ctx: CheckContext, objective: str, b: Batch, net) -> None:
    """Flow matching ``||F(x_t, t, t) - (x1 - x0)||^2`` on the batch's pairs ``(x0, x1)``."""

    def build(model):
        out, residual = flow_matching_residual(model, b.x, b.t, b.conditional_velocity)
        return regression_in_user_units(ctx, [Term(out, residual, b.x, b.t, b.t, "value")])

    compare_loss(ctx, objective, net, build, loss_inputs(ctx, b, b.t), what=f"{objective} loss")


@check(
    "flow_matching.loss.value_and_gradient",
    objective="flow_matching",
    role="loss",
    space="diagonal",
    description=(
        "The flow-matching loss ||F(x_t, t, t) - (x1 - x0)||^2 (the network on its diagonal) and "
        "its parameter gradient equal the reference's in the implementation's output units "
        "(for x0 / epsilon predictions: denoiser / noise regression)."
    ),
)
def fm_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    b = ctx.batch(case, space)
    _fm_loss_check(ctx, "flow_matching", b, ctx.random_network(case.seed + 10))


def _teacher_solver(ctx: CheckContext) -> HeunSolver:
    return HeunSolver(ctx.teacher.velocity, n_steps=REFLOW_STEPS)


def _require_both_ends(ctx: CheckContext) -> None:
    lo, hi = ctx.adapter.time_domain
    if (lo, hi) != (0.0, 1.0):
        raise CheckSkipped(
            f"ReFlow couples noise at t = 1 with data at t = 0; time convention "
            f"{ctx.conventions.time.value!r} is finite only on [{lo}, {hi}]",
            reason=SkipReason.CONVENTION,
        )


@check(
    "reflow.target.coupling",
    objective="reflow",
    role="target",
    space="diagonal",
    description=(
        "The coupling pairs each noise sample x1 with the teacher's image Phi_{1->0}(x1) (here a "
        "4-step Heun solver, handed over in the implementation's conventions), in order."
    ),
)
def reflow_coupling(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _require_both_ends(ctx)
    b = ctx.batch(case, space)
    solver = _teacher_solver(ctx)
    expected = reflow_couplings(solver, b.noise)
    out = ctx.call(
        "reflow target",
        ctx.function("reflow", "target"),
        ctx.user_field(solver, "solver"),
        ctx.to_user(b.noise),
    )
    got = ctx.to_ours(out, name="the reflow coupling", shape=tuple(b.noise.shape))
    compare(expected, got, ctx.tol(STANDARD), quantity="ReFlow coupling x0^ = Phi_{1->0}(x1)")


@check(
    "reflow.loss.value_and_gradient",
    objective="reflow",
    role="loss",
    space="diagonal",
    description=(
        "The ReFlow loss on the coupling (x0^, x1) is flow matching on it: value and gradient "
        "equal the reference's."
    ),
)
def reflow_loss(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _require_both_ends(ctx)
    b = ctx.batch(case, space)
    coupled = b.replace(data=reflow_couplings(_teacher_solver(ctx), b.noise))
    _fm_loss_check(ctx, "reflow", coupled, ctx.random_network(case.seed + 11))
