"""Shared pieces of the objectives: the loss output record, input checks and velocity choices.

Every objective in this package works on any probability path ``x_t = alpha(t) x0 + beta(t) x1``
(data at t = 0, noise at t = 1; the linear path ``(1 - t) x0 + t x1`` by default) and takes its
interpolant and conditional velocity from that path (:mod:`flowmap_oracle.conventions`). It takes
its explicit inputs (``x0``, ``x1``, the times, a teacher velocity or solver, the path) in its
signature and returns a :class:`LossOutput`. Points are ``(N, d)`` tensors and times ``(N,)``
tensors of the same dtype.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..conventions import col, conditional_velocity, interpolant
from ..reference_models.paths import ProbabilityPath

__all__ = [
    "FlowFn",
    "LossOutput",
    "Velocity",
    "VelocityChoice",
    "check_order",
    "check_points",
    "check_times",
    "col",
    "flow_of",
    "frozen_flow",
    "normalise_tangent",
    "path_point",
    "reduce",
    "refuse_model_velocity",
    "resolve_velocity",
    "surrogate_loss",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
"""A velocity field ``v(x, t)`` with ``x`` of shape ``(N, d)`` and ``t`` of shape ``(N,)``."""

VelocityChoice = Velocity | Literal["conditional", "model"] | None
"""Where an objective's velocity ``v`` comes from.

* a callable ``v(x, t)``: a teacher's (marginal) velocity, e.g. ``teacher.velocity``;
* ``"conditional"`` or ``None``: the conditional velocity ``alpha'(t) x0 + beta'(t) x1`` of the
  sampled pair on the objective's path (``x1 - x0`` on the linear path);
* ``"model"``: the model's own instantaneous velocity ``F_theta(x, t, t)`` (stop-gradient).
"""


@dataclass(frozen=True)
class LossOutput:
    """What every objective returns.

    Attributes:
        loss: the scalar training loss (differentiable in the model parameters).
        residual: the per-sample residual whose (weighted) square the loss penalises, or whose
            product with ``d f_theta / d theta`` is the loss's gradient; detached, ``(N, d)``.
        target: the stop-gradient target where the objective has one (else ``None``).
        per_sample: each sample's contribution to the loss before averaging, detached, ``(N,)``;
            for IMM, whose loss is a mean over groups of particles, each group's ``MMD^2``.
        parts: for a loss that is a sum of named parts (FACM's consistency part and its
            flow-matching anchor), each part as a differentiable scalar; they sum to ``loss``.
            ``None`` for a loss of one part.
    """

    loss: Tensor
    residual: Tensor
    target: Tensor | None = None
    per_sample: Tensor | None = None
    parts: dict[str, Tensor] | None = None

    @classmethod
    def weighted_mean(
        cls, per_sample: Tensor, *, weight: Tensor | None, residual: Tensor, target: Tensor | None
    ) -> LossOutput:
        """The record of a loss ``mean_i w_i per_sample_i`` (see :func:`reduce`).

        ``residual`` and ``per_sample`` are stored detached; ``target`` as given.
        """
        return cls(
            loss=reduce(per_sample, weight),
            residual=residual.detach(),
            target=target,
            per_sample=per_sample.detach(),
        )


def check_points(**points: Tensor) -> tuple[int, int, torch.dtype]:
    """Validate point tensors: same shape ``(N, d)``, floating dtype, finite.

    Returns:
        ``(N, d, dtype)``.

    Raises:
        ValueError / TypeError naming the offending argument.
    """
    ref_name, ref = next(iter(points.items()))
    for name, x in points.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must have shape (N, d), got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.shape != ref.shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {ref_name} has {tuple(ref.shape)}"
            )
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values")
    n, d = ref.shape
    return n, d, ref.dtype


def check_times(
    n: int, dtype: torch.dtype, *, lo: float = 0.0, hi: float = 1.0, **times: Tensor
) -> None:
    """Validate ``(N,)`` time tensors of the points' dtype with values in ``[lo, hi]``."""
    for name, t in times.items():
        if not isinstance(t, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape ({n},), got {type(t).__name__}"
            )
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
        if t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, the points have {dtype}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains non-finite values")
        if (t < lo).any() or (t > hi).any():
            raise ValueError(
                f"{name} must lie in [{lo}, {hi}]; got values in "
                f"[{float(t.min()):.4g}, {float(t.max()):.4g}]"
            )


def check_order(names: str, *times: Tensor) -> None:
    """Require ``times[0] >= times[1] >= ...`` elementwise; ``names`` reads like ``"t >= r >= s"``."""
    for a, b in itertools.pairwise(times):
        if (a < b).any():
            raise ValueError(f"times must satisfy {names} for every sample")


def path_point(
    path: ProbabilityPath, x0: Tensor, x1: Tensor, t: Tensor, **other_times: Tensor
) -> Tensor:
    """Check an objective's inputs and return ``x_t = alpha(t) x0 + beta(t) x1`` on ``path``.

    ``x0``, ``x1`` go through :func:`check_points`; ``t`` and ``other_times`` (for instance
    ``s=s``) through :func:`check_times` with values in ``[0, 1]``.
    """
    if not isinstance(path, ProbabilityPath):
        raise TypeError(f"path must be a ProbabilityPath, got {type(path).__name__}")
    n, _, dtype = check_points(x0=x0, x1=x1)
    check_times(n, dtype, lo=0.0, hi=1.0, t=t, **other_times)
    return interpolant(path, x0, x1, t)


def refuse_model_velocity(velocity: VelocityChoice, *, term: str) -> None:
    """Refuse ``velocity="model"`` for a ``term`` that regresses ``F(x, t, t)`` onto ``v``.

    Against the model's own velocity such a term (flow matching, an anchor, a boundary) is
    vacuous: it is zero for every model, so nothing ties the model to the teacher.
    """
    if isinstance(velocity, str) and velocity == "model":
        raise ValueError(f"{term} against the model's own velocity is vacuous (zero loss)")


def resolve_velocity(
    velocity: VelocityChoice,
    *,
    path: ProbabilityPath,
    x_t: Tensor,
    t: Tensor,
    x0: Tensor,
    x1: Tensor,
    model: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Evaluate the chosen velocity at ``(x_t, t)`` (see :data:`VelocityChoice`); detached.

    ``path`` gives the conditional velocity.

    A teacher's velocity is detached because it is data for the student; the model's own
    velocity is detached because MeanFlow/AYF put a stop-gradient on the whole target.
    """
    if velocity is None or (isinstance(velocity, str) and velocity == "conditional"):
        return conditional_velocity(path, x0, x1, t).detach()
    if isinstance(velocity, str):
        if velocity != "model":
            raise ValueError(
                f"velocity must be a callable v(x, t), 'conditional' or 'model', got {velocity!r}"
            )
        if model is None:
            raise ValueError("velocity='model' needs the model")
        return model(x_t, t, t).detach()
    if not callable(velocity):
        raise TypeError(f"velocity must be callable or a string, got {type(velocity).__name__}")
    v = velocity(x_t, t)
    if not isinstance(v, Tensor) or v.shape != x_t.shape:
        raise ValueError(
            f"the velocity returned shape {getattr(v, 'shape', None)}; expected {tuple(x_t.shape)}"
        )
    if not torch.isfinite(v).all():
        raise ValueError("the velocity returned non-finite values")
    return v.detach()


def reduce(per_sample: Tensor, weight: Tensor | None) -> Tensor:
    """``mean_i w_i * per_sample_i`` (plain mean when ``weight`` is ``None``)."""
    if weight is None:
        return per_sample.mean()
    if weight.shape != per_sample.shape:
        raise ValueError(
            f"weight must have shape {tuple(per_sample.shape)}, got {tuple(weight.shape)}"
        )
    return (weight.detach() * per_sample).mean()


def normalise_tangent(g: Tensor, c: float | None) -> Tensor:
    """sCM's tangent normalisation ``g / (||g|| + c)`` per sample; ``c = None`` leaves ``g``."""
    if c is None:
        return g
    if not c > 0:
        raise ValueError(f"tangent_normalisation must be positive, got {c}")
    return g / (g.norm(dim=1, keepdim=True) + c)


def surrogate_loss(f: Tensor, direction: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """A loss whose gradient is ``mean_i w_i (d f_i / d theta)^T direction_i``.

    Gradient-defined objectives (continuous CM, AYF-EMD, AYF-LMD) specify a gradient
    ``(d_theta f)^T g`` rather than a loss. The standard realisation is
    ``1/2 || f_theta - sg(f_theta - g) ||^2``: its gradient is exactly ``(d_theta f)^T g`` and its
    value is ``1/2 ||g||^2``, which vanishes exactly where the gradient does.

    Returns:
        ``(loss, per_sample)`` with ``per_sample = 1/2 ||g||^2`` detached.
    """
    target = (f - direction).detach()
    per_sample = 0.5 * (f - target).pow(2).sum(dim=1)
    return reduce(per_sample, weight), per_sample.detach()


FlowFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""A flow map ``f(x, t, s) = f_{t->s}(x)`` or a network ``F(x, t, s)``."""


def flow_of(model: Callable[[Tensor, Tensor, Tensor], Tensor]) -> FlowFn:
    """The flow map ``f_{t->s}`` of a model.

    A :class:`~flowmap_oracle.experiments.models.FlowMapModel` supplies its own ``flow`` (with its
    declared ``c_skip``, ``c_out``); any other callable is read as an average velocity ``F`` in the
    MeanFlow/AYF parameterisation ``f = x + (s - t) F``.
    """
    flow = getattr(model, "flow", None)
    if callable(flow):
        return flow
    return lambda x, t, s: x + col(s - t) * model(x, t, s)


def frozen_flow(model: Callable[[Tensor, Tensor, Tensor], Tensor]) -> FlowFn:
    """``f_{theta-}``: the model's flow map with its parameters detached (``sg(theta)``).

    Gradients still flow through the *input* ``x`` (CTM's ``sg(f_{s->0})`` applied to the
    student's output), but neither reverse-mode gradients nor forward-mode tangents reach the
    parameters through this evaluation.

    Raises:
        TypeError: if ``model`` is not a ``torch.nn.Module``: a plain callable's parameters
            cannot be found, so they cannot be frozen (gradients would silently reach them).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "frozen_flow needs a torch.nn.Module, whose parameters it detaches (sg(theta)); got "
            f"{type(model).__name__}, whose parameters cannot be found: wrap the network in an "
            "nn.Module"
        )
    state = {name: p.detach() for name, p in model.named_parameters()}
    state.update(dict(model.named_buffers()))
    param = getattr(model, "parameterisation", None)

    def F(x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return torch.func.functional_call(model, state, (x, t, s))

    if param is None:
        return lambda x, t, s: x + col(s - t) * F(x, t, s)
    return lambda x, t, s: (
        param.c_skip(col(t), col(s)) * x + param.c_out(col(t), col(s)) * F(x, t, s)
    )
