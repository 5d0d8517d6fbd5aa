"""MeanFlow mutants: the reference with one wrong target or loss."""

from __future__ import annotations

import torch

from ._registry import mutant


def _jvp(fn, x, t, s, tangents):
    return torch.func.jvp(fn, (x, t, s), tangents)[1]


def _total_derivative(net, x, t, s, v):
    """``dF/dt = J_x F v + d_t F``: tangents ``(v, 1, 0)`` on ``F(x, t, s)`` (the correct ones)."""
    return _jvp(net, x, t, s, (v, torch.ones_like(t), torch.zeros_like(s)))


@mutant(
    "meanflow.sign_of_t_minus_s",
    objective="meanflow",
    description=(
        "F_tgt = v + (t - s) dF/dt: the sign of the (t - s) term flipped (the identity "
        "rearranged wrongly); invisible on straight flows"
    ),
)
def sign_of_t_minus_s():
    def target(net, x, t, s, v):
        dF = _total_derivative(net, x, t, s, v)
        return (v + (t - s)[:, None] * dF).detach()

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.tangents_on_s",
    objective="meanflow",
    description=(
        "jvp tangents (v, 0, 1) on F(x, t, s): the MeanFlow code's tangents for fn(z, r, t) "
        "copied to the (x, t, s) order, giving d_s F instead of d_t F"
    ),
)
def tangents_on_s():
    def target(net, x, t, s, v):
        dF = _jvp(net, x, t, s, (v, torch.zeros_like(t), torch.ones_like(s)))
        return (v - (t - s)[:, None] * dF).detach()

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.t_and_s_swapped_at_network",
    objective="meanflow",
    description="the network called as F(x, s, t) inside the target (argument order mix-up)",
)
def t_and_s_swapped_at_network():
    def target(net, x, t, s, v):
        dF = _total_derivative(lambda a, b, c: net(a, c, b), x, t, s, v)
        return (v - (t - s)[:, None] * dF).detach()

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.no_grad_as_stop_gradient",
    objective="meanflow",
    description=(
        "torch.no_grad() used as the stop-gradient around torch.autograd.functional.jvp(..., "
        "create_graph=True), which turns gradient recording back on inside: dF/dt keeps its "
        "graph and the target built after the block carries gradients"
    ),
)
def no_grad_as_stop_gradient():
    # (torch.no_grad() around a whole target built with torch.func.jvp stops reverse mode, which
    # is what training differentiates: the oracle reports it as harmless instead.)
    def target(net, x, t, s, v):
        with torch.no_grad():
            _, dF = torch.autograd.functional.jvp(
                net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)), create_graph=True
            )
        return v - (t - s)[:, None] * dF

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.no_stop_gradient",
    objective="meanflow",
    description="the target is not detached: gradients flow through dF/dt (second-order terms)",
)
def no_stop_gradient():
    def target(net, x, t, s, v):
        dF = _total_derivative(net, x, t, s, v)
        return v - (t - s)[:, None] * dF

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.missing_t_minus_s_factor",
    objective="meanflow",
    description="F_tgt = v - dF/dt: the (t - s) factor dropped",
)
def missing_t_minus_s_factor():
    def target(net, x, t, s, v):
        dF = _total_derivative(net, x, t, s, v)
        return (v - dF).detach()

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.partial_instead_of_total_derivative",
    objective="meanflow",
    description="tangents (0, 1, 0): d_t F alone, the J_x F v term of the total derivative missing",
)
def partial_instead_of_total_derivative():
    def target(net, x, t, s, v):
        dF = _jvp(net, x, t, s, (torch.zeros_like(v), torch.ones_like(t), torch.zeros_like(s)))
        return (v - (t - s)[:, None] * dF).detach()

    return {"targets": {"meanflow": target}}


@mutant(
    "meanflow.velocity_x0_minus_x1",
    objective="meanflow",
    description="the loss's conditional velocity taken as x0 - x1 (data minus noise)",
)
def velocity_x0_minus_x1():
    def loss(net, data, noise, t, s):
        x = (1 - t)[:, None] * data + t[:, None] * noise
        v = data - noise
        out, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        target = (v - (t - s)[:, None] * dF).detach()
        return (out - target).pow(2).sum(dim=1).mean()

    return {"losses": {"meanflow": loss}}
