"""Flow map matching (Boffi, Albergo & Vanden-Eijnden 2024): Lagrangian and Eulerian map
distillation of a known velocity field.

The paper writes the flow map ``X_{s,t}`` from time ``s`` to time ``t`` with the base (noise) at 0
and the data at 1. In the project's convention (:mod:`flowmap_oracle.conventions`: data at 0,
noise at 1, ``f_{t->s}(x) = x + (s - t) F(x, t, s)``) its time ``tau`` is our ``1 - tau``, its
start time is our ``t`` and its end time our ``s``; its velocity is ``-v``. Both residuals keep
their form up to an overall sign, which a squared norm does not see (MATH.md section 7)::

    Lagrangian  R_L = d_s f_{t->s}(x_t) - v(f_{t->s}(x_t), s)          (paper: d_t X - b_t(X))
    Eulerian    R_E = d_t f_{t->s}(x_t) + J_x f_{t->s}(x_t) v(x_t, t)   (paper: d_s X + grad X b_s)

    L = E_{x0, x1, t, s} [ w(t, s) ||R||^2 ]

Both losses are pure residual minimisation, as the paper states them: *no* stop-gradient. The
gradient reaches the network through ``f``, through its derivative (``d_s f`` or ``J_x f v + d_t
f``) and, in the Lagrangian loss, through the teacher's input ``f_{t->s}(x_t)``. Both vanish
pointwise at the exact flow map of ``v`` (the flow map is their unique minimiser with
``f_{t->t} = x``). Loss types (the seed's): Lagrangian (a) forward, Eulerian (b) backward.

Both need a velocity *field*: the Lagrangian residual queries it at the predicted point, where
``x1 - x0`` has no value, and the Eulerian loss is quadratic in ``v`` through the Jacobian, so the
conditional velocity biases its minimiser by ``E ||J_x f (v_c - v_m)||^2`` (a term that depends on
the network). ``velocity="conditional"`` is refused for both.

Align Your Flow's EMD and LMD put a stop-gradient on all but the network output and weight by
``|t - s|``; their gradients are not those of these losses (MATH.md section 7,
``fmm.*_gradient`` identities).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import LossOutput, Velocity, flow_of, path_point
from .derivatives import Derivative, s_derivative, total_derivative

__all__ = ["fmm_eulerian_loss", "fmm_lagrangian_loss", "require_velocity_field"]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def require_velocity_field(velocity: object, *, method: str) -> Velocity:
    """``velocity`` as a callable ``v(x, t)``, or a one-line error naming why it must be one.

    Raises:
        ValueError: for ``None``, ``"conditional"`` or ``"model"`` (the Lagrangian and Eulerian
            map distillation losses need a teacher's velocity field).
        TypeError: for anything else that is not callable.
    """
    if velocity is None or isinstance(velocity, str):
        raise ValueError(
            f"{method} needs a teacher's velocity field v(x, t), got {velocity!r}: the conditional "
            "velocity x1 - x0 has no value at the predicted point and biases a loss quadratic in "
            "v (pass e.g. teacher.velocity; the self-distillation losses use the model's own)"
        )
    if not callable(velocity):
        raise TypeError(f"velocity must be a callable v(x, t), got {type(velocity).__name__}")
    return velocity


def _field(velocity: Velocity, x: Tensor, t: Tensor) -> Tensor:
    """``velocity(x, t)`` checked for shape; *not* detached (gradients reach its input)."""
    v = velocity(x, t)
    if not isinstance(v, Tensor) or v.shape != x.shape:
        raise ValueError(
            f"the velocity returned shape {getattr(v, 'shape', None)}; expected {tuple(x.shape)}"
        )
    return v


def fmm_lagrangian_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    velocity: Velocity,
    path: ProbabilityPath = LINEAR,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """Flow map matching's Lagrangian map distillation loss ``E w ||d_s f - v(f, s)||^2``.

    Arguments:
        model: a flow-map model (its ``flow`` gives ``f_{t->s}``) or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: start and end times in ``[0, 1]``, shape ``(N,)`` (either order).
        velocity: the teacher's velocity field ``v(x, t)`` (required; it is called at the
            predicted point ``f_{t->s}(x_t)`` and time ``s``, and must be differentiable there:
            the paper's loss has no stop-gradient).
        path: the probability path of ``x_t`` (pass the teacher's ``teacher.path``).
        weight: optional per-sample weight ``w(t, s)``, shape ``(N,)`` (detached).
        derivative: ``"jvp"`` or a finite-difference route for ``d_s f``.

    Returns:
        :class:`LossOutput` with the residual ``R_L = d_s f - v(f, s)`` (detached) and no target.
    """
    v_field = require_velocity_field(velocity, method="the Lagrangian FMM loss")
    x_t = path_point(path, x0, x1, t, s=s)
    f, df_ds = s_derivative(flow_of(model), x_t, t, s, derivative=derivative)
    residual = df_ds - _field(v_field, f, s)
    per_sample = residual.pow(2).sum(dim=1)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=None)


def fmm_eulerian_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    velocity: Velocity,
    path: ProbabilityPath = LINEAR,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """Flow map matching's Eulerian map distillation loss ``E w ||d_t f + J_x f v(x_t, t)||^2``.

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: start and end times in ``[0, 1]``, shape ``(N,)`` (either order).
        velocity: the teacher's velocity field ``v(x, t)`` (required), called at ``(x_t, t)``.
        path: the probability path of ``x_t`` (pass the teacher's ``teacher.path``).
        weight: optional per-sample weight ``w(t, s)``, shape ``(N,)`` (detached).
        derivative: ``"jvp"`` (one forward-mode derivative with tangents ``(v, 1, 0)``,
            differentiated in reverse mode: the network's own ``fused_jvp`` when it offers one,
            else ``torch.func.jvp``) or a finite-difference route.

    Returns:
        :class:`LossOutput` with the residual ``R_E = D_t f`` (detached) and no target.
    """
    v_field = require_velocity_field(velocity, method="the Eulerian FMM loss")
    x_t = path_point(path, x0, x1, t, s=s)
    v = _field(v_field, x_t, t).detach()  # the teacher has no parameters of the student
    _, residual = total_derivative(flow_of(model), x_t, t, s, v, derivative=derivative)
    per_sample = residual.pow(2).sum(dim=1)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=None)
