"""Rectified flow with a velocity network ``model(x, t)``, as minimal training scripts write it.

Noise at ``t = 0`` and data at ``t = 1`` (``x_t = t x1 + (1 - t) x0``, velocity ``x1 - x0``), a
single-time network with Fourier time features, ``F.mse_loss`` on logit-normal times, and a
16-step Euler sampler that passes the time as one number for the whole batch. The network itself
is handed over too: the sampler calls it with a scalar time and the loss with one time per
sample, so both shapes are declared.

``wrong_implementation()`` carries two bugs seen in practice: the network keeps the first time
of the batch (written for the sampler's shared time, it reads ``t[0]`` during training too), and
the sampler integrates from ``t = 1`` down to ``t = 0``, the opposite of the direction the model
was trained in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler
from flowmap_oracle.oracle.user_network import UserNetwork

N_STEPS = 16


class VelocityNet(nn.Module):
    def __init__(self, dim=2, hidden=64, n_freqs=8, shared_time=False):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs) * math.pi)
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * n_freqs, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )
        self.shared_time = shared_time

    def forward(self, x, t):
        t = t.reshape(-1).expand(x.shape[0]) if t.ndim <= 1 else t.reshape(x.shape[0])
        if self.shared_time:
            t = t[:1].expand(x.shape[0])  # bug: the sampler's shared time, kept in training
        wt = t[:, None].to(self.freqs.dtype) * self.freqs
        return self.net(torch.cat([x, wt.sin(), wt.cos()], dim=1))


def rectified_flow_loss(model, x1):
    t = torch.sigmoid(torch.randn(x1.shape[0])).to(x1.dtype)
    x0 = torch.randn_like(x1)
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    return F.mse_loss(model(xt, t), x1 - x0)


@torch.no_grad()
def euler(model, x0, reverse=False):
    x, dt = x0, 1.0 / N_STEPS
    for i in range(N_STEPS):
        t = torch.tensor(1.0 - i * dt if reverse else i * dt, dtype=x.dtype)
        x = x + (-dt if reverse else dt) * model(x, t)
    return x


def implementation(shared_time=False, reverse=False) -> Implementation:
    return Implementation(
        name="example: rectified flow with a model(x, t) velocity network",
        conventions={"time": "noise_at_0", "signature": "x_t", "dtype": "float32"},
        shipped_losses={"flow_matching": ShippedLoss(rectified_flow_loss)},
        samplers={"euler": ShippedSampler(lambda model, x0: euler(model, x0, reverse))},
        network=UserNetwork(VelocityNet(shared_time=shared_time), time_shapes=("vector", "scalar")),
    )


def wrong_implementation() -> Implementation:
    return implementation(shared_time=True, reverse=True)
