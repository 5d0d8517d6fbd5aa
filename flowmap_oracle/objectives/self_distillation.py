"""Self-distillation of flow maps (Boffi, Albergo & Vanden-Eijnden 2025, "How to build a
consistency model"): Lagrangian (LSD), Eulerian (ESD) and progressive (PSD) self-distillation.

One network ``F`` gives both the flow map ``f_{t->s}(x) = x + (s - t) F(x, t, s)`` and, on its
diagonal, the velocity ``v_hat(x, t) = F(x, t, t) = d_s f_{t->s}(x)|_{s=t}`` (the *tangent
condition*). Every loss has two parts on one batch, as the paper's code splits it:

* rows with ``s = t``: flow matching on the diagonal, ``||F(x_t, t, t) - v||^2`` with the
  conditional velocity ``alpha' x0 + beta' x1`` (training) or a teacher's ``v(x_t, t)``;
* rows with ``s != t``: the distillation term, with the model's own diagonal velocity as the
  teacher (stop-gradient), or a given teacher field (``distill_from``):

  - **LSD** (Lagrangian, loss type (a)): ``R = d_s f_{t->s}(x_t) - sg(v_hat(sg(f_{t->s}(x_t)), s))``;
    the gradient flows through ``d_s f``, not through the teacher or its input point;
  - **ESD** (Eulerian, loss type (b)): ``R = d_t f_{t->s}(x_t) + J_x f_{t->s}(x_t) sg(v_hat(x_t, t))``
    (one forward-mode derivative with tangents ``(sg(v_hat), 1, 0)``, the network's own
    ``fused_jvp`` when it offers one, else ``torch.func.jvp``, differentiated in reverse mode);
  - **PSD** (progressive, loss type (c)): with ``s <= u <= t``,
    ``R = (f_{t->s}(x_t) - sg(f_{u->s}(f_{t->u}(x_t)))) / (s - t)``: the map against the
    composition of two shorter jumps of the same network. For the MeanFlow parameterisation this
    is ``F(x_t, t, s) - sg([(t - u) F(x_t, t, u) + (u - s) F(x_u, u, s)] / (t - s))`` with
    ``x_u = f_{t->u}(x_t)``, the paper's velocity-space form (``space="map"``: the map residual,
    weight ``(t - s)^2``).

  ``L = mean_i w_i ||R_i||^2``.

Convention: the paper's ``X_{s,t}`` (base at 0, data at 1) is our ``f_{t->s}`` with times
``tau -> 1 - tau``; the residuals change by an overall sign only (MATH.md section 7). At the exact
map of the teacher every residual vanishes pointwise when the diagonal rows use the teacher's
velocity, and in conditional expectation when they use ``x1 - x0`` (a linear term).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR, col
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    Velocity,
    VelocityChoice,
    check_order,
    check_times,
    flow_of,
    path_point,
    refuse_model_velocity,
    resolve_velocity,
)
from .derivatives import Derivative, s_derivative, total_derivative

__all__ = [
    "esd_loss",
    "lsd_loss",
    "psd_loss",
    "psd_target",
    "self_distillation_times",
]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def self_distillation_times(
    n: int,
    *,
    diagonal_fraction: float = 0.25,
    intermediate: Literal["uniform", "midpoint"] = "uniform",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Times ``(t, u, s)`` with ``s <= u <= t`` for the self-distillation losses.

    ``s <= t`` are two uniform draws, sorted; ``u = s + h (t - s)`` with ``h ~ U(0, 1)``
    (``"uniform"``) or ``h = 1/2`` (``"midpoint"``), PSD's two choices; a ``diagonal_fraction``
    of the rows has ``s = u = t`` (the flow-matching rows). LSD and ESD use ``(t, s)``.
    """
    if not 0.0 <= diagonal_fraction <= 1.0:
        raise ValueError(f"diagonal_fraction must lie in [0, 1], got {diagonal_fraction}")
    if intermediate not in ("uniform", "midpoint"):
        raise ValueError(f"intermediate must be 'uniform' or 'midpoint', got {intermediate!r}")
    u2 = torch.rand(n, 2, generator=generator, dtype=dtype)
    t, s = u2.max(dim=1).values, u2.min(dim=1).values
    if intermediate == "uniform":
        h = torch.rand(n, generator=generator, dtype=dtype)
    else:
        h = torch.full((n,), 0.5, dtype=dtype)
    u = torch.minimum(torch.maximum(s + h * (t - s), s), t)
    diag = torch.rand(n, generator=generator, dtype=dtype) < diagonal_fraction
    return t, torch.where(diag, t, u), torch.where(diag, t, s)


def _diagonal_residual(
    model: Model,
    velocity: VelocityChoice,
    *,
    path: ProbabilityPath,
    x_t: Tensor,
    t: Tensor,
    x0: Tensor,
    x1: Tensor,
) -> Tensor:
    """``F(x_t, t, t) - v``: flow matching on the diagonal (the tangent condition)."""
    refuse_model_velocity(velocity, term="the diagonal flow-matching term")
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    return model(x_t, t, t) - v


def _teacher(model: Model, distill_from: Velocity | None, x: Tensor, t: Tensor) -> Tensor:
    """``sg(v_hat(x, t))``: the model's own diagonal ``F(x, t, t)`` or the given field."""
    if distill_from is None:
        return model(x, t, t).detach()
    if not callable(distill_from):
        raise TypeError(
            f"distill_from must be a callable v(x, t) or None, got {type(distill_from).__name__}"
        )
    v = distill_from(x, t)
    if not isinstance(v, Tensor) or v.shape != x.shape:
        raise ValueError(
            f"distill_from returned shape {getattr(v, 'shape', None)}; expected {tuple(x.shape)}"
        )
    return v.detach()


def _combine(diag: Tensor, on_diag: Tensor, off_diag: Tensor, weight: Tensor | None) -> LossOutput:
    residual = torch.where(col(diag), on_diag, off_diag)
    per_sample = residual.pow(2).sum(dim=1)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=None)


def lsd_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    distill_from: Velocity | None = None,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """Lagrangian self-distillation: flow matching where ``s = t``, else
    ``||d_s f_{t->s}(x_t) - sg(v_hat(sg(f_{t->s}(x_t)), s))||^2``.

    Arguments:
        model: a flow-map model (its ``flow``) or an average velocity ``F``; ``F(x, t, t)`` is
            its velocity.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times in ``[0, 1]``, shape ``(N,)`` (either order; ``s = t`` rows are flow
            matching).
        path: the probability path of ``x_t`` and of the conditional velocity.
        velocity: the diagonal rows' target: ``None``/``"conditional"`` for ``alpha' x0 + beta'
            x1`` or a teacher's ``v(x, t)``; ``"model"`` is refused (vacuous).
        distill_from: the off-diagonal teacher; ``None`` for the model's own ``F(x, s, s)``
            (self-distillation), or a field ``v(x, t)`` (distillation: then LSD is the
            Lagrangian FMM loss with a stop-gradient on the teacher and its input).
        weight: optional per-sample weight ``w(t, s)``.
        derivative: ``"jvp"`` or a finite-difference route for ``d_s f``.

    Returns:
        :class:`LossOutput` with the residual of each row (flow matching or Lagrangian).
    """
    x_t = path_point(path, x0, x1, t, s=s)
    diag = t == s
    on_diag = _diagonal_residual(model, velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    f, df_ds = s_derivative(flow_of(model), x_t, t, s, derivative=derivative)
    off_diag = df_ds - _teacher(model, distill_from, f.detach(), s)
    return _combine(diag, on_diag, off_diag, weight)


def esd_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    distill_from: Velocity | None = None,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """Eulerian self-distillation: flow matching where ``s = t``, else
    ``||d_t f_{t->s}(x_t) + J_x f_{t->s}(x_t) sg(v_hat(x_t, t))||^2``.

    Arguments: as :func:`lsd_loss`; the teacher ``v_hat`` is queried at ``(x_t, t)``.

    Returns:
        :class:`LossOutput` with the residual of each row (flow matching or Eulerian ``D_t f``).
    """
    x_t = path_point(path, x0, x1, t, s=s)
    diag = t == s
    on_diag = _diagonal_residual(model, velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    v_hat = _teacher(model, distill_from, x_t, t)
    _, off_diag = total_derivative(flow_of(model), x_t, t, s, v_hat, derivative=derivative)
    return _combine(diag, on_diag, off_diag, weight)


def psd_target(model: Model, x: Tensor, t: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``f_{t->s}(x)`` and the progressive target ``sg(f_{u->s}(f_{t->u}(x)))``.

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x: points, ``(N, d)``.
        t, u, s: times with ``s <= u <= t`` (or all reversed), ``(N,)``.

    Returns:
        ``(f_{t->s}(x), target)``; the target is detached (the composition is the teacher).
    """
    flow = flow_of(model)
    x_u = flow(x, t, u)
    return flow(x, t, s), flow(x_u, u, s).detach()


def psd_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    u: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    space: Literal["velocity", "map"] = "velocity",
    weight: Tensor | None = None,
) -> LossOutput:
    """Progressive self-distillation: flow matching where ``s = t``, else the map against the
    stop-gradient composition ``f_{u->s} o f_{t->u}`` (see the module docstring).

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, u, s: times in ``[0, 1]`` with ``t >= u >= s`` per row, shape ``(N,)``
            (:func:`self_distillation_times`).
        path: the probability path of ``x_t`` and of the conditional velocity.
        velocity: the diagonal rows' target (as :func:`lsd_loss`).
        space: ``"velocity"`` (the residual divided by ``s - t``: ``F - sg(F_tgt)``, the
            paper's form) or ``"map"`` (``f - sg(f o f)``).
        weight: optional per-sample weight ``w(t, s)``.

    Returns:
        :class:`LossOutput` with each row's residual and the composition as ``target``.
    """
    if space not in ("velocity", "map"):
        raise ValueError(f"space must be 'velocity' or 'map', got {space!r}")
    x_t = path_point(path, x0, x1, t, s=s)
    check_times(x_t.shape[0], x_t.dtype, u=u)
    slack = 8 * torch.finfo(t.dtype).eps  # u = s + h (t - s) can round a hair past t
    check_order("t >= u >= s", t + slack, u, s - slack)
    u = torch.minimum(torch.maximum(u, s), t)
    diag = t == s
    on_diag = _diagonal_residual(model, velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    f, target = psd_target(model, x_t, t, u, s)
    off_diag = f - target
    if space == "velocity":
        off_diag = off_diag / col(torch.where(diag, torch.ones_like(t), s - t))
    out = _combine(diag, on_diag, off_diag, weight)
    return LossOutput(
        loss=out.loss, residual=out.residual, target=target, per_sample=out.per_sample
    )
