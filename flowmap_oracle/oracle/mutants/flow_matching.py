"""Flow-matching and ReFlow mutants."""

from __future__ import annotations

import torch

from ._registry import mutant


@mutant(
    "flow_matching.velocity_x0_minus_x1",
    objective="flow_matching",
    description="flow matching against x0 - x1 (the velocity of the reversed path)",
)
def fm_velocity_x0_minus_x1():
    def loss(net, data, noise, t):
        x = (1 - t)[:, None] * data + t[:, None] * noise
        return (net(x, t, t) - (data - noise)).pow(2).sum(dim=1).mean()

    return {"losses": {"flow_matching": loss}}


@mutant(
    "flow_matching.network_at_s_zero",
    objective="flow_matching",
    description="the velocity read as F(x, t, 0) (the one-step map's average velocity) "
    "instead of the diagonal F(x, t, t)",
)
def fm_network_at_s_zero():
    def loss(net, data, noise, t):
        x = (1 - t)[:, None] * data + t[:, None] * noise
        return (net(x, t, torch.zeros_like(t)) - (noise - data)).pow(2).sum(dim=1).mean()

    return {"losses": {"flow_matching": loss}}


@mutant(
    "reflow.coupling_solved_from_data_end",
    objective="reflow",
    description="the coupling solved from t = 0 to t = 1 (noise pushed the wrong way)",
)
def reflow_coupling_from_data_end():
    def target(solver, noise):
        n = noise.shape[0]
        ones, zeros = torch.ones(n, dtype=noise.dtype), torch.zeros(n, dtype=noise.dtype)
        return solver(noise, zeros, ones)

    return {"targets": {"reflow": target}}
