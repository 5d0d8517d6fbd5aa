"""Flow matching (Lipman et al. 2023; Liu et al. 2023): regress the instantaneous velocity.

Loss type (a), forward: the target is a velocity evaluated at the model's own input and time,
with no derivative of the student; it is the ``s = t`` case of the Lagrangian (AYF-LMD) residual
``d_s f - v(f_{t->s}(x_t), s)``. In the flow-map notation the velocity is the diagonal
``F_{t->t}(x, t, t)`` of the average velocity::

    x_t = (1 - t) x0 + t x1
    L   = E_{x0, x1, t} [ w(t) || F_theta(x_t, t, t) - v ||^2 ]

* ``v = v_m(x_t, t)``, a teacher's marginal velocity (distillation): the exact map is a pointwise
  zero.
* ``v = x1 - x0`` (conditional flow matching): the residual at the exact map is
  ``v_m - v_c``, zero only in conditional expectation; the loss keeps the floor
  ``E tr Cov(v_c | x_t)`` and only its expected gradient vanishes.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    path_point,
    refuse_model_velocity,
    resolve_velocity,
)
from .distances import squared_l2

__all__ = ["flow_matching_loss", "flow_matching_residual"]


def flow_matching_residual(
    model: Callable[[Tensor, Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """``(F_theta(x_t, t, t), F_theta(x_t, t, t) - v)`` (the residual keeps its graph)."""
    out = model(x_t, t, t)
    return out, out - v


def flow_matching_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    weight: Tensor | None = None,
) -> LossOutput:
    """The flow-matching loss on the linear path.

    Arguments:
        model: ``F(x, t, s)``; only its diagonal ``F(x, t, t)`` is trained.
        x0, x1: data and noise samples (or any coupling, as in ReFlow), shape ``(N, d)``.
        t: times in ``[0, 1]``, shape ``(N,)``.
        velocity: a teacher's velocity ``v(x, t)``, or ``None``/``"conditional"`` for ``x1 - x0``.
            (``"model"`` is refused: the model's own velocity makes the loss vacuous.)
        weight: optional per-sample weight ``w(t)``, shape ``(N,)``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``F(x_t, t, t) - v`` and target ``v``.
    """
    x_t = path_point(path, x0, x1, t)
    refuse_model_velocity(velocity, term="flow matching")
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    _, residual = flow_matching_residual(model, x_t, t, v)
    per_sample = squared_l2(residual)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=v)
