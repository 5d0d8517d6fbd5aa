"""Conditional flow matching in Lipman et al.'s convention: noise at ``t = 0``, data at 1.

``x_t = t x1 + (1 - t) x0`` with ``x0`` the noise, regression onto ``x1 - x0`` with
``F.mse_loss`` (a mean over every entry), and an Euler sampler with eight hard-coded steps from
``t = 0`` to ``t = 1``. The network takes ``(x, t, t)``: a velocity model is the diagonal of a
flow map.

``wrong_implementation()``: the regression target written as ``x0 - x1`` (the other convention's
velocity), and a sampler that integrates from data to noise.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

EULER_STEPS = 8


def cfm_loss(model, x1, flip=False):
    x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0], dtype=x1.dtype)
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    ut = x0 - x1 if flip else x1 - x0
    return F.mse_loss(model(xt, t, t), ut)


@torch.no_grad()
def euler(model, x0, reverse=False):
    ts = torch.linspace(0, 1, EULER_STEPS + 1, dtype=x0.dtype)
    if reverse:
        ts = ts.flip(0)
    x = x0
    for a, b in itertools.pairwise(ts):
        t = torch.full((len(x),), float(a), dtype=x.dtype)
        x = x + (b - a) * model(x, t, t)
    return x


def implementation(loss=cfm_loss, sampler=euler) -> Implementation:
    return Implementation(
        name="example: conditional flow matching, noise at t = 0, F.mse_loss, 8 Euler steps",
        conventions={"time": "noise_at_0"},
        shipped_losses={"flow_matching": ShippedLoss(loss)},
        samplers={"euler": ShippedSampler(sampler)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda model, x1: cfm_loss(model, x1, flip=True),
        sampler=lambda model, x0: euler(model, x0, reverse=True),
    )
