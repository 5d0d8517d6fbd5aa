"""Checks of flow map matching's Lagrangian and Eulerian losses and of the self-distillation
losses (LSD, ESD, PSD) against :mod:`flowmap_oracle.objectives.flow_map_matching` and
:mod:`~flowmap_oracle.objectives.self_distillation`.

Each is a loss whose gradient flows through a derivative of the network (``d_s f``, ``J_x f v +
d_t f``) or through a composition, with stop-gradients in specific places; the value *and* the
gradient in every parameter of a random network are compared with the reference, so a
derivative taken along the wrong argument, a stop-gradient missing or added, a composition in the
wrong order or a sign error in the transport term all show. Rows with ``s = t`` (a quarter of the
batch for the self-distillation losses) are flow matching with ``x1 - x0``.

The losses are compared in the project's convention (noise at ``t = 1``, ``net(x, t, s)`` the
average velocity; any framework and dtype): other declared conventions skip these checks with
that reason. The Lagrangian FMM loss has no stop-gradient, so its gradient reaches the teacher's
input; it is handed a differentiable teacher velocity, which only torch can be (JAX skips it).
Checks: ``fmm_lagrangian.loss.value_and_gradient``, ``fmm_eulerian.loss.value_and_gradient``,
``lsd.loss.value_and_gradient``, ``esd.loss.value_and_gradient``, ``psd.loss.value_and_gradient``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...objectives._common import LossOutput
from ...objectives.flow_map_matching import fmm_eulerian_loss, fmm_lagrangian_loss
from ...objectives.self_distillation import esd_loss, lsd_loss, psd_loss
from ..adapters import Prediction, Signature, Time
from ..cases import CaseSpace
from ..context import Batch, CheckContext
from ..registry import check
from ..results import Case, CheckSkipped, SkipReason
from ._common import compare_loss, loss_inputs
from ._inputs import split_time


def _require_project_convention(ctx: CheckContext, what: str) -> None:
    c = ctx.conventions
    if (
        c.time != Time.NOISE_AT_1
        or c.signature != Signature.X_T_S
        or c.prediction != Prediction.AVERAGE_VELOCITY
    ):
        raise CheckSkipped(
            f"the {what} is compared in the project's convention (time noise_at_1, signature "
            f"x_t_s, prediction average_velocity); declared {c.describe()}",
            reason=SkipReason.CONVENTION,
        )
    ctx.require_continuous_steps(f"the {what} differentiates the map in continuous time")


def _in_user_reduction(ctx: CheckContext, loss: Tensor, dim: int) -> Tensor:
    """Our ``mean_i ||R_i||^2`` (``"sum_mean"``) in the implementation's reduction."""
    return loss if ctx.impl.loss_reduction == "sum_mean" else loss / dim


def _differentiable_teacher(ctx: CheckContext) -> Callable[[Tensor, Tensor], Tensor]:
    """The teacher velocity as a differentiable torch callable in the declared dtype."""
    if ctx.conventions.framework != "torch":
        raise CheckSkipped(
            "the Lagrangian FMM loss differentiates through the teacher's input f(x_t, t, s); "
            "the oracle's teacher is differentiable in torch only",
            reason=SkipReason.CONVENTION,
        )
    teacher = ctx.teacher

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return teacher.velocity(x.double(), t.double()).to(x.dtype)

    return velocity


def _with_diagonal(ctx: CheckContext, b: Batch, *, quarter: bool) -> Batch:
    """The flow-matching rows ``s = t`` (and ``r = t``): a quarter of the batch (``quarter``),
    and every row whose gap ``|t - s|`` is below ``eps^(1/3)`` of the declared dtype.

    A self-distillation loss switches term at ``s = t`` (flow matching there, distillation
    elsewhere), so a gap that the implementation's dtype rounds to zero (``t = 7.5e-195``,
    ``s = 0`` in float32) must be a diagonal row for the reference too; and PSD's velocity-space
    residual divides a difference of maps by ``s - t``, which amplifies the implementation's
    rounding by ``1 / |t - s|``: below ``eps^(1/3)`` (4.9e-3 in float32, 6.1e-6 in float64) that
    would exceed the tolerance of a correct implementation. Both sides see the same rows."""
    dtype = getattr(torch, ctx.conventions.dtype)
    gap = torch.finfo(dtype).eps ** (1 / 3)
    diag = (b.t.to(dtype) == b.s.to(dtype)) | ((b.t - b.s).abs() < gap)
    if quarter:
        diag = diag | (torch.arange(b.t.shape[0]) % 4 == 0)
    r = None if b.r is None else torch.where(diag, b.t, b.r)
    return b.replace(s=torch.where(diag, b.t, b.s), r=r)


def _compare(
    ctx: CheckContext,
    case: Case,
    space: CaseSpace,
    *,
    method: str,
    what: str,
    seed: int,
    loss: Callable[[torch.nn.Module, Batch], LossOutput],
    extra_args: Callable[[Batch], list],
    diagonal: bool,
) -> None:
    _require_project_convention(ctx, what)
    b = _with_diagonal(ctx, ctx.batch(case, space), quarter=diagonal)
    net = ctx.random_network(case.seed + seed)
    dim = b.x.shape[1]

    def build(model: torch.nn.Module) -> Tensor:
        return _in_user_reduction(ctx, loss(model, b).loss, dim)

    compare_loss(ctx, method, net, build, extra_args(b), what=what)


@check(
    "fmm_lagrangian.loss.value_and_gradient",
    objective="fmm_lagrangian",
    role="loss",
    space="any",
    description=(
        "The Lagrangian FMM loss mean ||d_s f - v(f, s)||^2 (teacher at the predicted point and "
        "the end time, no stop-gradient) and its gradient equal the reference's, both orders."
    ),
    cost=2,
)
def fmm_lagrangian(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    teacher = _differentiable_teacher(ctx)
    _compare(
        ctx,
        case,
        space,
        method="fmm_lagrangian",
        what="Lagrangian FMM loss",
        seed=90,
        loss=lambda m, b: fmm_lagrangian_loss(
            m, b.data, b.noise, b.t, b.s, velocity=ctx.teacher.velocity, path=b.path
        ),
        extra_args=lambda b: [*loss_inputs(ctx, b, b.t, b.s), teacher],
        diagonal=False,
    )


@check(
    "fmm_eulerian.loss.value_and_gradient",
    objective="fmm_eulerian",
    role="loss",
    space="any",
    description=(
        "The Eulerian FMM loss mean ||d_t f + J_x f v(x_t, t)||^2 (no stop-gradient: the "
        "gradient flows through the JVP) and its gradient equal the reference's, both orders."
    ),
    cost=2,
)
def fmm_eulerian(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _compare(
        ctx,
        case,
        space,
        method="fmm_eulerian",
        what="Eulerian FMM loss",
        seed=91,
        loss=lambda m, b: fmm_eulerian_loss(
            m, b.data, b.noise, b.t, b.s, velocity=ctx.teacher.velocity, path=b.path
        ),
        extra_args=lambda b: [
            *loss_inputs(ctx, b, b.t, b.s),
            ctx.user_field(ctx.teacher.velocity, "velocity"),
        ],
        diagonal=False,
    )


@check(
    "lsd.loss.value_and_gradient",
    objective="lsd",
    role="loss",
    space="forward",
    description=(
        "The LSD loss (flow matching with x1 - x0 where s = t, else ||d_s f - sg(F(sg(f), s, s))"
        "||^2) and its gradient equal the reference's."
    ),
    cost=2,
)
def lsd(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _compare(
        ctx,
        case,
        space,
        method="lsd",
        what="LSD loss",
        seed=92,
        loss=lambda m, b: lsd_loss(m, b.data, b.noise, b.t, b.s, path=b.path),
        extra_args=lambda b: loss_inputs(ctx, b, b.t, b.s),
        diagonal=True,
    )


@check(
    "esd.loss.value_and_gradient",
    objective="esd",
    role="loss",
    space="forward",
    description=(
        "The ESD loss (flow matching with x1 - x0 where s = t, else ||d_t f + J_x f sg(F(x_t, t,"
        " t))||^2) and its gradient equal the reference's."
    ),
    cost=2,
)
def esd(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _compare(
        ctx,
        case,
        space,
        method="esd",
        what="ESD loss",
        seed=93,
        loss=lambda m, b: esd_loss(m, b.data, b.noise, b.t, b.s, path=b.path),
        extra_args=lambda b: loss_inputs(ctx, b, b.t, b.s),
        diagonal=True,
    )


@check(
    "psd.loss.value_and_gradient",
    objective="psd",
    role="loss",
    space="split",
    description=(
        "The PSD loss (flow matching with x1 - x0 where s = t, else ||F(x_t, t, s) - sg([(t - u)"
        " F(x_t, t, u) + (u - s) F(x_u, u, s)] / (t - s))||^2, x_u the model's own point) and its "
        "gradient equal the reference's."
    ),
    cost=2,
)
def psd(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    _compare(
        ctx,
        case,
        space,
        method="psd",
        what="PSD loss",
        seed=94,
        loss=lambda m, b: psd_loss(m, b.data, b.noise, b.t, split_time(b), b.s, path=b.path),
        extra_args=lambda b: loss_inputs(ctx, b, b.t, split_time(b), b.s),
        diagonal=True,
    )
