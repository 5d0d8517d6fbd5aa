"""Mutants as they ship: training losses that draw their own times and noise, and samplers with
hard-coded times, each with a bug seen in practice (killed by the as-shipped checks,
:mod:`..shipped`).

Each bug is one switch of a correct loss or sampler written as training code writes it; the
correct versions (:func:`correct_implementations`) pass every as-shipped check
(``tests/test_mutants.py``). Most losses distil from the teacher's velocity, where the exact map
is a pointwise fixed point and the stationarity check is exact and cheap; the bugs that only
exist with the conditional velocity use it.

An adaptive weight that squares the error *norm* twice, ``||e||^4 / sg(||e||^2 + c)^p``, is
still a radial distance of each sample's residual: with the teacher's velocity the exact map stays
its pointwise fixed point, and with the conditional velocity it is biased on a multi-modal teacher
exactly as the adaptive weight itself is (MATH.md section 4), so the invariant checks accept it.
It changes the weighting the loss declares, so the value check (:mod:`..shipped_value`, with the
loss's :class:`~flowmap_oracle.oracle.declared.Declared` extras) kills it. Squaring the error
twice *per component* (``sum_i e_i^4``) is not radial and does move the fixed point; the
invariant checks kill it. The correct versions declare their extras, so their value check runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ..declared import Adaptive, Declared
from ..implementation import Implementation
from ..shipped import ShippedLoss, ShippedSampler
from ._registry import mutant

__all__ = ["correct_implementations"]

Teacher = Callable[[Tensor, Tensor], Tensor]


def _pairs(n: int, dtype: torch.dtype, *, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """``(t, r)`` with ``r <= t`` (``r >= t`` when ``reverse``), a quarter on ``r = t``."""
    a, b = torch.rand(n, dtype=dtype), torch.rand(n, dtype=dtype)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    if reverse:
        t, r = r, t
    return t, torch.where(torch.rand(n) < 0.25, t, r)


def _jvp(fn: Callable[..., Tensor], primals: tuple, tangents: tuple) -> tuple[Tensor, Tensor]:
    return cast(tuple[Tensor, Tensor], torch.func.jvp(fn, primals, tangents))


# ----------------------------------------------------------------------------------------------
# MeanFlow, (z, t, r) network, noise at t = 1


def meanflow_distillation(
    model: Any,
    x: Tensor,
    teacher: Teacher,
    *,
    swap: bool = False,
    reverse: bool = False,
    sign: float = -1.0,
    tangent_on_r: bool = False,
    placeholder: bool = False,
) -> Tensor:
    """MeanFlow distilled from a teacher velocity; the switches plant one bug each."""
    t, r = _pairs(x.shape[0], x.dtype, reverse=reverse)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    v = teacher(z, t)

    def u_fn(z: Tensor, t: Tensor, r: Tensor) -> Tensor:
        return model(z, r, t) if swap else model(z, t, r)

    one, zero = torch.ones_like(t), torch.zeros_like(t)
    dt, dr = (zero, one) if tangent_on_r else (one, zero)
    u, dudt = _jvp(u_fn, (z, t, r), (v, dt, dr))
    if placeholder:
        dudt = torch.zeros_like(u)
    u_tgt = v + sign * (t - r)[:, None] * dudt
    return (u - u_tgt.detach()).pow(2).sum(dim=1).mean()


def meanflow_conditional(
    model: Any,
    x: Tensor,
    *,
    reversed_velocity: bool = False,
    quartic: bool = False,
    norm_squared_twice: bool = False,
) -> Tensor:
    """MeanFlow on the conditional velocity with an adaptive weight (:data:`ADAPTIVE`); the
    switches plant a velocity ``x - e`` (a residual that does not vanish at the exact map), an
    error squared twice per component, or the squared norm squared again under the weight."""
    t, r = _pairs(x.shape[0], x.dtype)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    v = x - e if reversed_velocity else e - x
    u, dudt = _jvp(model, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    err = u - (v - (t - r)[:, None] * dudt).detach()
    sq = err.pow(2).pow(2) if quartic else err.pow(2)
    per_sample = sq.sum(dim=1)
    w = 1.0 / (per_sample.detach() + 1e-3).pow(0.5)
    if norm_squared_twice:
        per_sample = per_sample.pow(2)
    return (w * per_sample).mean()


ADAPTIVE = Declared(distance=Adaptive(p=0.5, c=1e-3), reduction="sum_mean")
"""What :func:`meanflow_conditional` declares: MeanFlow's adaptive weight with ``p = 0.5``,
``c = 1e-3`` on each sample's summed squared error, averaged over the batch."""


def flow_matching_loss(model: Any, x: Tensor, *, reversed_target: bool = False) -> Tensor:
    t = torch.rand(x.shape[0], dtype=x.dtype)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    target = x - e if reversed_target else e - x
    return torch.nn.functional.mse_loss(model(z, t, t), target)


def split_meanflow_distillation(
    model: Any, x: Tensor, teacher: Teacher, *, second_at_start: bool = False
) -> Tensor:
    """SplitMeanFlow distilled from a teacher: the split rule at an interior time, and a
    flow-matching boundary term; ``second_at_start`` evaluates the second segment at ``z_t``."""
    n = x.shape[0]
    t, s = _pairs(n, x.dtype)
    s = torch.minimum(s, t - 0.05).clamp_min(0.0)
    lam = torch.rand(n, dtype=x.dtype)
    r = s + lam * (t - s)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        u1 = model(z, t, r)
        z_r = z - (t - r)[:, None] * u1
        u2 = model(z if second_at_start else z_r, r, s)
        target = ((t - r)[:, None] * u1 + (r - s)[:, None] * u2) / (t - s)[:, None]
    boundary = (model(z, t, t) - teacher(z, t)).pow(2).sum(dim=1)
    split = (model(z, t, s) - target).pow(2).sum(dim=1)
    return (boundary + split).mean()


# ----------------------------------------------------------------------------------------------
# Shortcut models: noise at t = 0, model(x, t, level), level LEVELS is the velocity

LEVELS = 4


def shortcut_distillation(
    model: Any,
    x1: Tensor,
    teacher: Teacher,
    *,
    boundary_level: int = LEVELS,
    half_step: bool = True,
) -> Tensor:
    """Shortcut self-consistency (levels ``0 .. LEVELS - 2``) plus a boundary term distilling the
    teacher's velocity at level ``boundary_level`` (correct: ``LEVELS``, the velocity)."""
    n = x1.shape[0]
    k = torch.randint(0, LEVELS - 1, (n,)).to(x1.dtype)
    d = 2.0**-k
    t = torch.floor(torch.rand(n, dtype=x1.dtype) / d) * d
    x0 = torch.randn_like(x1)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    with torch.no_grad():
        u1 = model(xt, t, k + 1)
        x_mid = xt + ((d / 2) if half_step else d)[:, None] * u1
        target = 0.5 * (u1 + model(x_mid, t + d / 2, k + 1))
    level = torch.full_like(t, float(boundary_level))
    tb = torch.rand(n, dtype=x1.dtype) * 0.8
    xb = (1 - tb[:, None]) * x0 + tb[:, None] * x1
    boundary = (model(xb, tb, level) - teacher(xb, tb)).pow(2).sum(dim=1)
    consistency = (model(xt, t, k) - target).pow(2).sum(dim=1)
    return (boundary + consistency).mean()


SHORTCUT = {"time": "noise_at_0", "signature": "shortcut_log2", "shortcut_levels": LEVELS}


# ----------------------------------------------------------------------------------------------
# Samplers (noise at t = 1, (x, t, s) network, average velocity)


def _steps(
    model: Any, noise: Tensor, grid: tuple[float, ...], *, stride: float | None = None
) -> Tensor:
    x = noise
    for t_now, t_next in itertools.pairwise(grid):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype)
        step = (t_now - t_next) if stride is None else stride
        x = x - step * model(x, t, torch.full_like(t, t_next))
    return x


GRID = (1.0, 0.75, 0.5, 0.25, 0.0)


def four_steps(model: Any, noise: Tensor) -> Tensor:
    return _steps(model, noise, GRID)


def one_step_from_data_end(model: Any, noise: Tensor) -> Tensor:
    t = torch.zeros(noise.shape[0], dtype=noise.dtype)
    return noise + model(noise, t, torch.ones_like(t))


def two_steps_unit_stride(model: Any, noise: Tensor) -> Tensor:
    return _steps(model, noise, (1.0, 0.5, 0.0), stride=1.0)


def sampled_in_the_training_direction_reversed(model: Any, noise: Tensor) -> Tensor:
    """Trained with noise at t = 1, sampled on a grid from 0 to 1 as if noise sat at 0."""
    x = noise
    for t_now, t_next in ((0.0, 0.5), (0.5, 1.0)):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype)
        x = x + (t_next - t_now) * model(x, t, torch.full_like(t, t_next))
    return x


def four_steps_adding(model: Any, noise: Tensor) -> Tensor:
    x = noise
    for t_now, t_next in itertools.pairwise(GRID):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype)
        x = x + (t_now - t_next) * model(x, t, torch.full_like(t, t_next))
    return x


def four_steps_stopping_early(model: Any, noise: Tensor) -> Tensor:
    return _steps(model, noise, GRID[:-1])


def four_steps_time_not_advanced(model: Any, noise: Tensor) -> Tensor:
    x = noise
    t = torch.ones(noise.shape[0], dtype=noise.dtype)
    for _ in range(4):
        x = x - 0.25 * model(x, t, t - 0.25)  # bug: t is never moved on
    return x


# ----------------------------------------------------------------------------------------------
# The correct versions


def correct_implementations() -> dict[str, Implementation]:
    """The correct loss or sampler of each mutant family (each passes the as-shipped checks)."""
    return {
        "meanflow_distillation": Implementation(
            "correct MeanFlow distillation",
            shipped_losses={
                "meanflow": ShippedLoss(
                    meanflow_distillation,
                    velocity="teacher",
                    declared=Declared(reduction="sum_mean"),
                )
            },
        ),
        "meanflow_conditional": Implementation(
            "correct MeanFlow with an adaptive weight",
            shipped_losses={"meanflow": ShippedLoss(meanflow_conditional, declared=ADAPTIVE)},
        ),
        "flow_matching": Implementation(
            "correct flow matching",
            shipped_losses={
                "flow_matching": ShippedLoss(
                    flow_matching_loss, declared=Declared(reduction="mean")
                )
            },
        ),
        "split_meanflow": Implementation(
            "correct SplitMeanFlow distillation",
            shipped_losses={
                "split_meanflow": ShippedLoss(split_meanflow_distillation, velocity="teacher")
            },
        ),
        "shortcut": Implementation(
            "correct Shortcut distillation",
            conventions=SHORTCUT,
            shipped_losses={"shortcut": ShippedLoss(shortcut_distillation, velocity="teacher")},
        ),
        "sampler": Implementation(
            "correct four-step sampler", samplers={"four_steps": ShippedSampler(four_steps)}
        ),
    }


def _loss(method: str, fn: Callable[..., Tensor], **kw: Any) -> dict[str, Any]:
    return {"shipped_losses": {method: ShippedLoss(fn, **kw)}}


def _teacher_loss(method: str, base: Callable[..., Tensor], **switches: Any) -> dict[str, Any]:
    def loss(model: Any, x: Tensor, teacher: Teacher) -> Tensor:
        return base(model, x, teacher, **switches)

    return _loss(method, loss, velocity="teacher")


def _sampler(fn: Callable[..., Tensor]) -> dict[str, Any]:
    return {"samplers": {"sampler": ShippedSampler(fn)}}


# ----------------------------------------------------------------------------------------------
# Loss mutants


@mutant(
    "meanflow.shipped_network_arguments_swapped",
    objective="meanflow",
    description="a loss as shipped calls the (z, t, r) network as model(z, r, t)",
    inherit=False,
)
def shipped_network_arguments_swapped() -> dict[str, Any]:
    return _teacher_loss("meanflow", meanflow_distillation, swap=True)


@mutant(
    "meanflow.shipped_pairs_reversed",
    objective="meanflow",
    description=(
        "a loss as shipped draws its pairs the wrong way round: t = min, r = max (maps towards "
        "the noise)"
    ),
    inherit=False,
)
def shipped_pairs_reversed() -> dict[str, Any]:
    return _teacher_loss("meanflow", meanflow_distillation, reverse=True)


@mutant(
    "meanflow.shipped_target_sign",
    objective="meanflow",
    description="a loss as shipped builds u_tgt = v + (t - r) du/dt (the identity's sign flipped)",
    inherit=False,
)
def shipped_target_sign() -> dict[str, Any]:
    return _teacher_loss("meanflow", meanflow_distillation, sign=1.0)


@mutant(
    "meanflow.shipped_tangent_on_r",
    objective="meanflow",
    description=(
        "a loss as shipped takes jvp tangents (v, 0, 1) on (z, t, r): the tangents of a (z, r, "
        "t) network copied to the other order"
    ),
    inherit=False,
)
def shipped_tangent_on_r() -> dict[str, Any]:
    return _teacher_loss("meanflow", meanflow_distillation, tangent_on_r=True)


@mutant(
    "meanflow.shipped_placeholder_derivative",
    objective="meanflow",
    description="a loss as shipped with du/dt left at a placeholder zero",
    inherit=False,
)
def shipped_placeholder_derivative() -> dict[str, Any]:
    return _teacher_loss("meanflow", meanflow_distillation, placeholder=True)


@mutant(
    "meanflow.shipped_velocity_reversed",
    objective="meanflow",
    description=(
        "a loss as shipped regresses onto v = x - e in a noise-at-1 convention: its residual "
        "does not vanish at the exact map"
    ),
    inherit=False,
)
def shipped_velocity_reversed() -> dict[str, Any]:
    def loss(model: Any, x: Tensor) -> Tensor:
        return meanflow_conditional(model, x, reversed_velocity=True)

    return _loss("meanflow", loss)


@mutant(
    "meanflow.shipped_error_squared_twice",
    objective="meanflow",
    description=(
        "a loss as shipped squares the error twice per component (sum_i e_i^4 under the adaptive "
        "weight): not a function of the residual's norm, so the gradient leaves the residual's "
        "direction and the minimiser leaves the conditional mean on skewed noise"
    ),
    inherit=False,
)
def shipped_error_squared_twice() -> dict[str, Any]:
    def loss(model: Any, x: Tensor) -> Tensor:
        return meanflow_conditional(model, x, quartic=True)

    return _loss("meanflow", loss)


@mutant(
    "meanflow.shipped_adaptive_norm_squared_twice",
    objective="meanflow",
    description=(
        "a loss as shipped declares MeanFlow's adaptive weight ||e||^2 / sg(||e||^2 + c)^p but "
        "squares the norm again under it (||e||^4 / sg(||e||^2 + c)^p): radial, so only the "
        "declared value check sees it"
    ),
    inherit=False,
)
def shipped_adaptive_norm_squared_twice() -> dict[str, Any]:
    def loss(model: Any, x: Tensor) -> Tensor:
        return meanflow_conditional(model, x, norm_squared_twice=True)

    return _loss("meanflow", loss, declared=ADAPTIVE)


@mutant(
    "flow_matching.shipped_target_reversed",
    objective="flow_matching",
    description="F.mse_loss(model(z, t, t), x - e): the data-minus-noise target of the other convention",
    inherit=False,
)
def shipped_flow_matching_target_reversed() -> dict[str, Any]:
    def loss(model: Any, x: Tensor) -> Tensor:
        return flow_matching_loss(model, x, reversed_target=True)

    return _loss("flow_matching", loss)


@mutant(
    "split_meanflow.shipped_second_segment_at_start",
    objective="split_meanflow",
    description=(
        "a SplitMeanFlow loss as shipped evaluates the second segment u(z_t, r, s) at the start "
        "point instead of z_r = z_t - (t - r) u(z_t, t, r)"
    ),
    inherit=False,
)
def shipped_second_segment_at_start() -> dict[str, Any]:
    return _teacher_loss("split_meanflow", split_meanflow_distillation, second_at_start=True)


@mutant(
    "shortcut.shipped_boundary_at_wrong_step",
    objective="shortcut",
    description=(
        "a Shortcut loss as shipped trains its flow-matching boundary term at level L - 1 (a "
        "real step, twice the finest one) instead of the velocity level L"
    ),
    inherit=False,
)
def shipped_boundary_at_wrong_step() -> dict[str, Any]:
    changes = _teacher_loss("shortcut", shortcut_distillation, boundary_level=LEVELS - 1)
    return {**changes, "conventions": SHORTCUT}


@mutant(
    "shortcut.shipped_full_step_in_half_target",
    objective="shortcut",
    description=(
        "a Shortcut loss as shipped moves x' by the full step d in the two-half-steps target "
        "instead of d / 2"
    ),
    inherit=False,
)
def shipped_full_step_in_half_target() -> dict[str, Any]:
    changes = _teacher_loss("shortcut", shortcut_distillation, half_step=False)
    return {**changes, "conventions": SHORTCUT}


# ----------------------------------------------------------------------------------------------
# Sampler mutants


@mutant(
    "sampler.one_step_from_data_end",
    objective="sampler",
    description="a one-step sampler that starts at the data end (t = 0) and maps to t = 1",
    inherit=False,
)
def sampler_one_step_from_data_end() -> dict[str, Any]:
    return _sampler(one_step_from_data_end)


@mutant(
    "sampler.stride_differs_from_request",
    objective="sampler",
    description="a two-step sampler that asks for the maps 1 -> 0.5 -> 0 and moves x by a unit step",
    inherit=False,
)
def sampler_stride_differs_from_request() -> dict[str, Any]:
    return _sampler(two_steps_unit_stride)


@mutant(
    "sampler.opposite_time_direction",
    objective="sampler",
    description=(
        "trained with noise at t = 1, sampled on a grid from 0 to 1 as if noise sat at t = 0"
    ),
    inherit=False,
)
def sampler_opposite_time_direction() -> dict[str, Any]:
    return _sampler(sampled_in_the_training_direction_reversed)


@mutant(
    "sampler.adds_average_velocity",
    objective="sampler",
    description="a four-step sampler that adds (t - s) F instead of subtracting it",
    inherit=False,
)
def sampler_adds_average_velocity() -> dict[str, Any]:
    return _sampler(four_steps_adding)


@mutant(
    "sampler.stops_one_step_early",
    objective="sampler",
    description="a four-step sampler whose loop stops at t = 0.25 (an off-by-one in the grid)",
    inherit=False,
)
def sampler_stops_one_step_early() -> dict[str, Any]:
    return _sampler(four_steps_stopping_early)


@mutant(
    "sampler.time_not_advanced",
    objective="sampler",
    description="a four-step sampler that asks for the map 1 -> 0.75 at every step",
    inherit=False,
)
def sampler_time_not_advanced() -> dict[str, Any]:
    return _sampler(four_steps_time_not_advanced)
