"""Shortcut models (Frans et al. 2024): flow matching plus midpoint self-consistency.

Loss type (c), self-consistency. With ``m = (t + s) / 2`` and the AYF boundary conditions
``f_{t->s} = x + (s - t) F(x, t, s)``, the seed's flow-map form is::

    x_t = (1 - t) x0 + t x1
    L   = E [ ||F_theta(x_t, t, t) - v||^2
              + || f_theta(x_t, t, s) - sg(f_theta-(f_theta-(x_t, t, m), m, s)) ||^2 ]

The original (velocity-space) consistency term is
``||F_theta(x_t, t, s) - sg(1/2 (F(x_t, t, m) + F(x_m, m, s)))||^2`` with
``x_m = x_t - (t - m) F(x_t, t, m)``; the flow-space term equals it times ``(t - s)^2``
(MATH.md 1c), and both are the split rule at ``r = m``. ``space`` selects which.

What it pins down: the consistency term vanishes for every exact flow of any field and for any
constant ``F``; only the flow-matching term anchors the model to the teacher. With ``v = x1 - x0``
(the paper's choice) that term is zero only in expectation at the exact map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    check_order,
    flow_of,
    path_point,
    refuse_model_velocity,
    resolve_velocity,
)
from .distances import squared_l2
from .split_meanflow import split_target

__all__ = ["shortcut_loss", "shortcut_residual"]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def shortcut_residual(
    model: Model, x_t: Tensor, t: Tensor, s: Tensor, *, space: Literal["flow", "velocity"]
) -> tuple[Tensor, Tensor]:
    """The midpoint consistency residual (with its graph) and its detached target.

    ``space="flow"``: ``f(x_t, t, s) - sg(f_{m->s}(f_{t->m}(x_t)))``.
    ``space="velocity"``: ``F(x_t, t, s) - sg((F(x_t, t, m) + F(x_m, m, s)) / 2)``.

    Returns:
        ``(residual, target)``.
    """
    m = 0.5 * (t + s)
    if space == "velocity":
        out, target = split_target(model, x_t, t, m, s)
        return out - target, target
    if space != "flow":
        raise ValueError(f"space must be 'flow' or 'velocity', got {space!r}")
    flow = flow_of(model)
    n = x_t.shape[0]
    both = flow(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([s, m]))
    out, x_m = both[:n], both[n:].detach()
    target = flow(x_m, m, s).detach()
    return out - target, target


def shortcut_loss(
    model: Model,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    velocity: VelocityChoice = None,
    space: Literal["flow", "velocity"] = "flow",
    consistency_weight: float = 1.0,
    weight: Tensor | None = None,
) -> LossOutput:
    """The Shortcut loss: flow matching at ``(x_t, t)`` plus midpoint consistency on ``t -> s``.

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, s: times in ``[0, 1]`` with ``s <= t``, shape ``(N,)``; ``s = t`` leaves only the
            flow-matching term.
        velocity: the flow-matching velocity: ``None``/``"conditional"`` for ``x1 - x0`` (the
            paper) or a teacher's ``v(x, t)``.
        space: ``"flow"`` (the seed's form) or ``"velocity"`` (the paper's form).
        consistency_weight: weight of the consistency term.
        weight: optional per-sample weight.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput`; ``residual`` is the consistency residual, ``target`` its target.
    """
    x_t = path_point(path, x0, x1, t, s=s)
    check_order("t >= s", t, s)
    refuse_model_velocity(velocity, term="flow matching")
    v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
    fm = squared_l2(model(x_t, t, t) - v)
    residual, target = shortcut_residual(model, x_t, t, s, space=space)
    per_sample = fm + consistency_weight * squared_l2(residual)
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=target)
