"""FACM mutants: the reference loss with one part written wrong, and one wrong target."""

from __future__ import annotations

import math
from functools import partial

import torch

from ._registry import mutant


def _norm_l2(sq):
    return sq / torch.sqrt(sq.detach() + 1e-3)


def _sin(t):
    return torch.sin(0.5 * math.pi * t)


def _facm(net, data, noise, t, *, anchor=lambda t: 2 - t, weight=_sin, norm=_norm_l2):
    """FACM's loss with its defaults (norm-L2 consistency part weighted by ``sin(pi t / 2)``,
    anchor ``||F(x, 2 - t, 2 - t) - v||^2`` plus the cosine distance); one part can be replaced."""
    x = (1 - t)[:, None] * data + t[:, None] * noise
    v = noise - data
    out, dF = torch.func.jvp(
        net, (x, t, torch.zeros_like(t)), (v, torch.ones_like(t), torch.zeros_like(t))
    )
    target = (v - t[:, None] * dF).detach()
    sq = (out - target).pow(2).sum(dim=1)
    cm = norm(sq) * weight(t)
    tau = anchor(t)
    f_fm = net(x, tau, tau)
    cos = (f_fm * v).sum(1) / (f_fm.norm(dim=1).clamp_min(1e-12) * v.norm(dim=1).clamp_min(1e-12))
    fm = (f_fm - v).pow(2).sum(dim=1) + 1 - cos
    return (cm + fm).mean()


@mutant(
    "facm.anchor_at_t",
    objective="facm",
    description="the flow-matching anchor queried at t instead of the expanded time 2 - t",
)
def anchor_at_t():
    return {"losses": {"facm": partial(_facm, anchor=lambda t: t)}}


@mutant(
    "facm.norm_l2_squares_twice",
    objective="facm",
    description="the adaptive (norm-L2) weight squares the error twice: "
    "||r||^2 / sg(sqrt(||r||^4 + c))",
)
def norm_l2_squares_twice():
    def norm(sq):  # sq is already ||r||^2
        return sq / torch.sqrt(sq.detach() ** 2 + 1e-3)

    return {"losses": {"facm": partial(_facm, norm=norm)}}


@mutant(
    "facm.time_weight_reversed",
    objective="facm",
    description="the time weight cos(pi t / 2) copied from code whose time runs the other way "
    "(alpha_t = 1 - t): time reversed in one place only",
)
def time_weight_reversed():
    return {"losses": {"facm": partial(_facm, weight=lambda t: torch.cos(0.5 * math.pi * t))}}


@mutant(
    "facm.target_missing_t_factor",
    objective="facm",
    description="consistency target v - dF/dt: the factor t (= t - s at s = 0) dropped",
)
def target_missing_t_factor():
    def target(net, x, t, v):
        zeros = torch.zeros_like(t)
        _, dF = torch.func.jvp(net, (x, t, zeros), (v, torch.ones_like(t), zeros))
        return (v - dF).detach()

    return {"targets": {"facm": target}}
