"""Mutants that declare another convention and get it wrong in one place."""

from __future__ import annotations

import torch

from ._registry import mutant


@mutant(
    "conventions.noise_at_0_reversed_once",
    objective="meanflow",
    description=(
        "noise at t = 0 (Lipman's convention): the MeanFlow target written with (1 - t) - (1 - s) "
        "for the interval while the network and the derivative use the user's own time: time "
        "reversed in one place only"
    ),
    inherit=False,
)
def noise_at_0_reversed_once():
    def target(net, x, t, s, v):
        _, dN = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        interval = (1 - t) - (1 - s)
        return (v - interval[:, None] * dN).detach()

    return {"targets": {"meanflow": target}, "conventions": {"time": "noise_at_0"}}


@mutant(
    "conventions.t_minus_s_input_held_fixed",
    objective="meanflow",
    description=(
        "a network taking (x, t, t - s) differentiated with tangents (v, 1, 0) on its own inputs: "
        "holding t - s fixed moves s along with t (the tangent on t - s must be 1)"
    ),
    inherit=False,
)
def t_minus_s_input_held_fixed():
    def target(net, x, t, s, v):
        _, dN = torch.func.jvp(net, (x, t, t - s), (v, torch.ones_like(t), torch.zeros_like(s)))
        return (v - (t - s)[:, None] * dN).detach()

    return {"targets": {"meanflow": target}, "conventions": {"signature": "x_t_dt"}}


@mutant(
    "conventions.linear_interpolant_on_trig_path",
    objective="flow_matching",
    description=(
        "declares the VP (trig) path but builds x_t = (1 - t) x0 + t x1 and regresses onto "
        "x1 - x0: the linear interpolant paired with a VP teacher (a copied training loop)"
    ),
    inherit=False,
)
def linear_interpolant_on_trig_path():
    def loss(net, data, noise, t):
        x_t = (1 - t)[:, None] * data + t[:, None] * noise
        return (net(x_t, t, t) - (noise - data)).pow(2).sum(dim=1).mean()

    return {"losses": {"flow_matching": loss}, "conventions": {"path": "trig"}}


@mutant(
    "conventions.linear_velocity_on_trig_path",
    objective="flow_matching",
    description=(
        "declares the VP (trig) path and interpolates on it, but keeps the linear path's "
        "conditional velocity x1 - x0 as the target (half of a path change)"
    ),
    inherit=False,
)
def linear_velocity_on_trig_path():
    def loss(net, data, noise, t):
        a = torch.cos(torch.pi * t / 2)[:, None]
        b = torch.sin(torch.pi * t / 2)[:, None]
        x_t = a * data + b * noise
        return (net(x_t, t, t) - (noise - data)).pow(2).sum(dim=1).mean()

    return {"losses": {"flow_matching": loss}, "conventions": {"path": "trig"}}
