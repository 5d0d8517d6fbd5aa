"""A Shortcut model in torch as in Frans et al.: noise at t = 0, step sizes by a log2 index.

x_t = t * data + (1 - t) * noise, velocity data - noise; the network s(x, t, k) predicts the
average velocity of a step of size d = 2^-k forward in t (x_{t+d} = x_t + d s), and the finest
level k = LEVELS doubles as the instantaneous velocity (the flow-matching term trains it). The
self-consistency target for a step d is the average of two half steps (level k + 1). Losses are
means over all entries, as in the paper's code.

At k = LEVELS - 1 the half steps are level LEVELS, the velocity, as in the paper's code: there
the target averages two velocities (a midpoint rule), not two steps of 2^-LEVELS, which the
declared ``shortcut_log2`` convention cannot express. The oracle's Shortcut checks therefore draw
steps of level at most LEVELS - 2, where both half steps are real steps.

Check it with ``flowmap-oracle check examples.torch_shortcut:implementation``.
"""

from __future__ import annotations

import torch

from flowmap_oracle import Implementation

LEVELS = 7  # 128 steps at the finest level


def _level(d):
    """log2 index of a step size (LEVELS for d = 0, the instantaneous velocity)."""
    safe = torch.where(d > 0, d, torch.ones_like(d))
    return torch.where(d > 0, torch.round(-torch.log2(safe)), torch.full_like(d, LEVELS))


def shortcut_target(net, x, t, s):
    """(s(x, t, k+1) + s(x', t + d/2, k+1)) / 2 with x' = x + d/2 s(x, t, k+1); d = s - t."""
    d = s - t
    k = _level(d)
    half = torch.clamp(k + 1, max=LEVELS)
    with torch.no_grad():
        u1 = net(x, t, half)
        x_mid = x + (d / 2)[:, None] * u1
        u2 = net(x_mid, t + d / 2, half)
        instantaneous = net(x, t, torch.full_like(d, LEVELS))
    return torch.where((d > 0)[:, None], 0.5 * (u1 + u2), instantaneous)


def shortcut_loss(net, data, noise, t, s):
    x = t[:, None] * data + (1 - t)[:, None] * noise
    fm = (net(x, t, torch.full_like(t, LEVELS)) - (data - noise)).pow(2)
    sc = (net(x, t, _level(s - t)) - shortcut_target(net, x, t, s)).pow(2)
    return (fm + sc).mean()


def flow_matching_loss(net, data, noise, t):
    x = t[:, None] * data + (1 - t)[:, None] * noise
    return (net(x, t, torch.full_like(t, LEVELS)) - (data - noise)).pow(2).mean()


def step(net, x, t, s):
    return x + (s - t)[:, None] * net(x, t, _level(s - t))


def implementation() -> Implementation:
    return Implementation(
        name="example: torch Shortcut model, noise at t = 0, log2 step index",
        conventions={
            "time": "noise_at_0",
            "signature": "shortcut_log2",
            "shortcut_levels": LEVELS,
            "prediction": "average_velocity",
            "framework": "torch",
            "dtype": "float32",
        },
        targets={"shortcut": shortcut_target},
        losses={"shortcut": shortcut_loss, "flow_matching": flow_matching_loss},
        flow_map=step,
        loss_reduction="mean",
    )
