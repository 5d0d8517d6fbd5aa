"""MeanFlow (Geng et al. 2025): regress F onto the target given by the MeanFlow identity.

Loss type (b), backward. ``F(x, t, s)`` is the average velocity, ``f_{t->s} = x - (t - s) F``.
Differentiating ``(t - s) F(x_t, t, s) = int_s^t v(x_tau, tau) dtau`` along a trajectory with s
fixed gives the MeanFlow identity ``v = F + (t - s) D_t F``, hence the target and loss::

    x_t   = (1 - t) x0 + t x1
    D_t F = J_x F_{theta-}(x_t, t, s) v + d_t F_{theta-}(x_t, t, s)
    F_tgt = v - (t - s) D_t F
    L     = E_{x0, x1, t, s} [ w(t, s) d(F_theta(x_t, t, s) - sg(F_tgt)) ]

with ``d`` the squared L2 norm or MeanFlow's adaptive L2 ``||r||^2 / sg((||r||^2 + c)^p)``.
At ``s = t`` the target is ``v`` and the loss is flow matching. The choices of ``v``:

* the teacher's marginal velocity (distillation): the exact map zeroes the residual pointwise;
* ``x1 - x0`` (MeanFlow's choice, training from scratch): the residual is
  ``F_tgt(v_c) - u* = D Phi_{t->s}(x_t) (v_c - v_m)`` at the exact map, zero only in conditional
  expectation, so only the plain L2 loss has a zero expected gradient there; the adaptive
  weight makes it biased on a multi-modal teacher (MATH.md section 4);
* the model's own ``F_theta(x_t, t, t)``: no teacher anchor; every exact flow of any field is a
  fixed point.

The total derivative is one forward-mode pass of ``F(x, t, s)`` with tangents ``(v, 1, 0)``: the
network's own ``fused_jvp`` when it offers one (the benchmark's MLPs, single or stacked), else
``torch.func.jvp`` (:func:`~.derivatives.directional_derivative`).
The MeanFlow code calls its network as ``fn(z, r, t)`` and uses tangents ``(v, 0, 1)``: the same
derivative for the other argument order. The target is detached, which stops reverse-mode
gradients and forward-mode tangents alike (``torch.no_grad`` would stop only the former).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    col,
    path_point,
    resolve_velocity,
)
from .derivatives import Derivative, total_derivative
from .distances import adaptive_l2

__all__ = ["meanflow_loss", "meanflow_target"]

AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


def meanflow_target(
    F: AverageVelocity,
    x_t: Tensor,
    t: Tensor,
    s: Tensor,
    v: Tensor,
    *,
    derivative: Derivative = "jvp",
) -> tuple[Tensor, Tensor]:
    """Evaluate ``F(x_t, t, s)`` and the MeanFlow target in one forward-mode pass.

    Arguments:
        F: the average-velocity network, called as ``F(x, t, s)``.
        x_t: points, shape ``(N, d)``.
        t, s: times, shape ``(N,)``.
        v: the velocity used for the total derivative and the target, shape ``(N, d)``.
        derivative: ``"jvp"`` or a :class:`~.derivatives.FiniteDifference`.

    Returns:
        ``(F(x_t, t, s), F_tgt)`` where ``F_tgt = v - (t - s) D_t F`` is detached (stop-gradient
        on both reverse-mode gradients and forward-mode tangents).
    """
    out, dF_dt = total_derivative(F, x_t, t, s, v, derivative=derivative)
    target = v - col(t - s) * dF_dt
    return out, target.detach()


def meanflow_loss(
    model: AverageVelocity,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    adaptive_p: float = 0.0,
    adaptive_c: float = 1e-3,
    weight: Tensor | None = None,
    derivative: Derivative = "jvp",
) -> LossOutput:
    """The MeanFlow loss on the linear path ``x_t = (1 - t) x0 + t x1``.

    Arguments:
        model: ``F(x, t, s)``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times in ``[0, 1]``, shape ``(N,)``; generative training uses ``s <= t`` (the
            identity holds in both directions); ``s = t`` gives flow matching.
        velocity: a teacher velocity ``v(x, t)``; ``None``/``"conditional"`` uses ``x1 - x0``;
            ``"model"`` uses ``sg(F(x_t, t, t))``.
        adaptive_p: MeanFlow's adaptive weight ``sg(1 / (||r||^2 + c)^p)``; 0 gives plain L2.
        adaptive_c: the constant c of the adaptive weight.
        weight: optional per-sample weight ``w(t, s)``, shape ``(N,)`` (detached).
        derivative: ``"jvp"`` or a :class:`~.derivatives.FiniteDifference` route for ``D_t F``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with the mean loss, the residual ``F - F_tgt`` and the target.
    """
    x_t = path_point(path, x0, x1, t, s=s)
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1, model=model)
    out, target = meanflow_target(model, x_t, t, s, v, derivative=derivative)
    residual = out - target
    per_sample = adaptive_l2(residual, p=adaptive_p, c=adaptive_c)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=target)
