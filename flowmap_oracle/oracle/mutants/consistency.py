"""Consistency-model mutants: discrete (CT), continuous (sCM) and CTM."""

from __future__ import annotations

from functools import partial

import torch

from ._registry import mutant


def _c(t):
    return t[:, None]


def _to_data(net, x, t):
    return x - _c(t) * net(x, t, torch.zeros_like(t))


def _ct(net, data, noise, t, t_prev, *, step=-1.0, detach=True):
    """Consistency training ``||f(x_t, t, 0) - sg(f(x_t', t', 0))||^2`` with the earlier point
    ``x_t' = x_t - (t - t') (x1 - x0)``; the step's sign and the stop-gradient can be changed."""
    x = (1 - _c(t)) * data + _c(t) * noise
    x_prev = x + step * _c(t - t_prev) * (noise - data)
    target = _to_data(net, x_prev, t_prev)
    return (_to_data(net, x, t) - (target.detach() if detach else target)).pow(2).sum(1).mean()


@mutant(
    "consistency.step_wrong_direction",
    objective="consistency",
    description="the neighbour x_t + dt (x1 - x0): a consistency step in the wrong direction",
)
def cm_step_wrong_direction():
    return {"losses": {"consistency": partial(_ct, step=1.0)}}


@mutant(
    "consistency.target_not_detached",
    objective="consistency",
    description="the target f(x_t', t', 0) not stop-gradiented (the loss pulls both ends)",
)
def cm_target_not_detached():
    return {"losses": {"consistency": partial(_ct, detach=False)}}


@mutant(
    "scm.tangent_missing_minus_F",
    objective="scm",
    description="d f/dt of f = x - t F computed as v - t dF/dt: the product rule's -F dropped",
)
def scm_tangent_missing_minus_f():
    def target(net, x, t, v):
        zeros = torch.zeros_like(t)
        _, dF = torch.func.jvp(net, (x, t, zeros), (v, torch.ones_like(t), zeros))
        return (v - _c(t) * dF).detach()

    return {"targets": {"scm": target}}


@mutant(
    "scm.tangent_on_s",
    objective="scm",
    description="the tangent taken along s (tangents (v, 0, 1) of f(x, t, s)) instead of t",
)
def scm_tangent_on_s():
    def target(net, x, t, v):
        zeros = torch.zeros_like(t)

        def f(x_, t_, s_):
            return x_ + _c(s_ - t_) * net(x_, t_, s_)

        _, g = torch.func.jvp(f, (x, t, zeros), (v, zeros, torch.ones_like(t)))
        return g.detach()

    return {"targets": {"scm": target}}


@mutant(
    "ctm.student_at_t_from_x_r",
    objective="ctm",
    description="the stop-gradient student jump from the teacher's point x_r evaluated at time t "
    "instead of r",
)
def ctm_student_at_t_from_x_r():
    def loss(net, net_sg, data, noise, t, r, s, solver):
        x = (1 - _c(t)) * data + _c(t) * noise
        x_r = solver(x, t, r).detach()
        a = x + _c(s - t) * net(x, t, s)
        b = (x_r + _c(s - t) * net_sg(x_r, t, s)).detach()
        return (_to_data(net_sg, a, s) - _to_data(net_sg, b, s).detach()).pow(2).sum(1).mean()

    return {"losses": {"ctm": loss}}
