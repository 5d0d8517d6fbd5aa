"""Consistency Trajectory Models (CTM; Kim et al. 2023).

Loss type (a), forward. CTM learns the whole flow map ``f_{t->s}``: the student's jump
``t -> s`` must land where the teacher's solver from ``t`` to an intermediate ``r`` followed by the
stop-gradient student ``r -> s`` lands (``s <= r <= t``)::

    x_t   = (1 - t) x0 + t x1
    x_r   = Solver_{t->r}(x_t)                               (teacher, no gradient)
    a     = f_theta(x_t, t, s),         b = sg(f_theta-(x_r, r, s))
    L_CTM = E [ w d( sg(f_{s->0})(a), sg(f_{s->0})(b) ) ]    (compare="data", the paper's choice)
          = E [ w d(a, b) ]                                  (compare="s")
    L_DSM = E [ ||x0 - D_theta(x_t, t)||^2 ] = E [ t^2 ||F_theta(x_t, t, t) - (x1 - x0)||^2 ]

``sg(f_{s->0})`` is the student's map to data with *parameters* frozen; the gradient still flows
through its input ``a``. The denoiser of the flow-map parameterisation is
``D = x_t - t F(x_t, t, t)``, so CTM's denoising-score-matching term is flow matching with the
weight ``t^2`` (``velocity`` may replace ``x1 - x0`` by a teacher's ``v``). CTM's GAN term is
outside the scope of an exact-flow-map oracle and is not included.

*Local* consistency is ``r = t - Dt`` (one teacher step, a discrete consistency loss for every
``s``); *global* consistency is ``r = s`` (the teacher solves the whole interval). CTM draws
``r`` uniformly in ``[s, t]``. With an exact teacher solver the exact map zeroes the residual
pointwise; with a Heun solver it leaves the solver's local error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR, interpolant
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    VelocityChoice,
    check_order,
    check_points,
    check_times,
    col,
    flow_of,
    frozen_flow,
    refuse_model_velocity,
    resolve_velocity,
)
from .distances import consistency_distance, squared_l2
from .teacher_solvers import TeacherSolver

__all__ = ["ctm_loss"]


def ctm_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    r: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    solver: TeacherSolver,
    compare: Literal["data", "s"] = "data",
    distance: Literal["l2", "pseudo_huber"] = "l2",
    huber_c: float | None = None,
    dsm_weight: float = 0.0,
    velocity: VelocityChoice = None,
    weight: Tensor | None = None,
) -> LossOutput:
    """The CTM loss (soft consistency matching, plus optional DSM term).

    Arguments:
        model: a flow-map model or an average velocity ``F``; an ``nn.Module`` for
            ``compare="data"`` (whose ``sg(f_{s->0})`` detaches the module's parameters).
        x0, x1: data and noise samples, shape ``(N, d)``.
        t, r, s: times in ``[0, 1]`` with ``s <= r <= t``, shape ``(N,)``.
        solver: the teacher solver ``solver(x, t, r)`` (for instance
            :class:`~.teacher_solvers.HeunSolver` or :class:`~.teacher_solvers.ExactSolver`).
        compare: ``"data"`` (map both points to ``t = 0`` with ``sg(f_{s->0})``) or ``"s"``.
        distance: ``"l2"`` or ``"pseudo_huber"`` (constant ``huber_c``, default
            ``0.00054 sqrt(d)``).
        dsm_weight: weight of the denoising term ``t^2 ||F(x_t, t, t) - v||^2``.
        velocity: the DSM velocity (``None``/``"conditional"``: ``x1 - x0``; or a teacher's).
        weight: optional per-sample weight ``w(t, r, s)``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput` with residual ``d``'s argument difference and the detached target.
    """
    n, _, dtype = check_points(x0=x0, x1=x1)
    check_times(n, dtype, t=t, r=r, s=s)
    check_order("t >= r >= s", t, r, s)
    if compare not in ("data", "s"):
        raise ValueError(f"compare must be 'data' or 's', got {compare!r}")
    flow = flow_of(model)
    to_data = frozen_flow(model) if compare == "data" else None
    x_t = interpolant(path, x0, x1, t)
    x_r = solver(x_t, t, r).detach()
    both = flow(torch.cat([x_t, x_r]), torch.cat([t, r]), torch.cat([s, s]))
    a, b = both[:n], both[n:].detach()
    if to_data is not None:
        zeros = torch.zeros_like(s)
        mapped = to_data(torch.cat([a, b]), torch.cat([s, s]), torch.cat([zeros, zeros]))
        a, b = mapped[:n], mapped[n:].detach()
    residual = a - b
    per_sample = consistency_distance(residual, distance=distance, huber_c=huber_c)
    if dsm_weight:
        refuse_model_velocity(velocity, term="the DSM term")
        v = resolve_velocity(velocity, path=path, x_t=x_t, t=t, x0=x0, x1=x1)
        per_sample = per_sample + dsm_weight * squared_l2(col(t) * (model(x_t, t, t) - v))
    return LossOutput.weighted_mean(per_sample, weight=weight, residual=residual, target=b)
