"""MeanFlow (Geng et al.): regress F onto the target given by the MeanFlow identity.

Loss type (b), backward. In the project's notation, with ``F(x, t, s)`` the average velocity::

    F_tgt = v - (t - s) (J_x F_{theta-}(x_t, t, s) v + d_t F_{theta-}(x_t, t, s))
    L     = E || F_theta(x_t, t, s) - sg(F_tgt) ||^2

``v`` is either the conditional velocity ``x1 - x0`` (MeanFlow's choice; the loss is then zero
only in expectation at the exact map) or a teacher's marginal velocity (zero pointwise).
The total derivative is one ``torch.func.jvp`` of ``F(x, t, s)`` with tangents ``(v, 1, 0)``.
The MeanFlow code calls its network as ``fn(z, r, t)`` and uses tangents ``(v, 0, 1)``: the same
derivative for the other argument order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._common import LossOutput, Velocity

__all__ = ["meanflow_loss", "meanflow_target"]

AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]


def meanflow_target(
    F: AverageVelocity, x_t: Tensor, t: Tensor, s: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """Evaluate ``F(x_t, t, s)`` and the MeanFlow target in one forward-mode pass.

    Arguments:
        F: the average-velocity network, called as ``F(x, t, s)``.
        x_t: points, shape ``(N, d)``.
        t, s: times, shape ``(N,)``.
        v: the velocity used for the total derivative and the target, shape ``(N, d)``.

    Returns:
        ``(F(x_t, t, s), F_tgt)`` where ``F_tgt = v - (t - s) dF/dt`` is detached (stop-gradient
        on both reverse-mode gradients and forward-mode tangents).
    """
    out, dF_dt = torch.func.jvp(F, (x_t, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    target = v - (t - s)[:, None] * dF_dt
    return out, target.detach()


def meanflow_loss(
    model: AverageVelocity,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    velocity: Velocity | None = None,
    adaptive_p: float = 0.0,
    adaptive_c: float = 1e-3,
) -> LossOutput:
    """The MeanFlow loss on the linear path ``x_t = (1 - t) x0 + t x1``.

    Arguments:
        model: ``F(x, t, s)``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times, shape ``(N,)``; ``s = t`` gives the flow-matching case.
        velocity: a teacher velocity ``v(x, t)``; ``None`` uses the conditional ``x1 - x0``.
        adaptive_p: MeanFlow's adaptive weight ``sg(1 / (||r||^2 + c)^p)``; 0 gives plain L2.
        adaptive_c: the constant c of the adaptive weight.

    Returns:
        :class:`LossOutput` with the mean loss, the residual ``F - F_tgt`` and the target.
    """
    x_t = (1 - t)[:, None] * x0 + t[:, None] * x1
    v = x1 - x0 if velocity is None else velocity(x_t, t)
    out, target = meanflow_target(model, x_t, t, s, v)
    residual = out - target
    sq = residual.pow(2).sum(dim=1)
    if adaptive_p:
        sq = sq / (sq.detach() + adaptive_c) ** adaptive_p
    return LossOutput(loss=sq.mean(), residual=residual.detach(), target=target)
