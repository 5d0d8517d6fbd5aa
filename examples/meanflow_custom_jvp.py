"""MeanFlow whose network embeds its times through a hand-written forward-mode derivative.

Research code that trains MeanFlow with ``torch.func.jvp`` often writes fused or custom layers as
``torch.autograd.Function``: here the sinusoidal time embedding has its own ``forward``,
``setup_context``, ``backward`` and ``jvp`` (the tangent of ``sin(w t)`` is ``w cos(w t) dt``).
The network reads ``(z, t, r)`` with noise at ``t = 1``; the loss draws logit-normal times, puts
half the batch on ``r = t`` and regresses onto the stop-gradient MeanFlow target; the sampler
takes two average-velocity steps.

The oracle checks the loss and sampler through its own instrumented network, and the network
itself (``Implementation(network=...)``): its JVP against finite differences and how it reads
its times. ``wrong_implementation()`` carries the bug seen in practice in hand-written JVPs: the
embedding's ``jvp`` returns the primal ``(sin, cos)`` where the tangent belongs. Training runs,
the loss goes down, and every ``dF/dt`` in the MeanFlow target is wrong.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler
from flowmap_oracle.oracle.user_network import UserNetwork

FREQS = torch.tensor([1.0, 2.0, 4.0, 8.0]) * math.pi


class SinusoidalEmbedding(torch.autograd.Function):
    """``[sin(w t), cos(w t)]`` with hand-written derivatives in both modes."""

    generate_vmap_rule = True

    @staticmethod
    def forward(t, freqs):
        wt = t[:, None] * freqs
        return torch.cat([wt.sin(), wt.cos()], dim=1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        t, freqs = inputs
        ctx.save_for_backward(t, freqs)
        ctx.save_for_forward(t, freqs)

    @staticmethod
    def backward(ctx, grad_out):
        t, freqs = ctx.saved_tensors
        wt = t[:, None] * freqs
        d_emb = torch.cat([freqs * wt.cos(), -freqs * wt.sin()], dim=1)
        return (grad_out * d_emb).sum(dim=1), None

    @staticmethod
    def jvp(ctx, t_dot, freqs_dot):
        t, freqs = ctx.saved_tensors
        wt = t[:, None] * freqs
        return torch.cat([freqs * wt.cos(), -freqs * wt.sin()], dim=1) * t_dot[:, None]


class PrimalJvpEmbedding(SinusoidalEmbedding):
    """Bug: the ``jvp`` returns the embedding itself where its tangent belongs."""

    @staticmethod
    def jvp(ctx, t_dot, freqs_dot):
        t, freqs = ctx.saved_tensors
        wt = t[:, None] * freqs
        return torch.cat([wt.sin(), wt.cos()], dim=1)


class MeanFlowNet(nn.Module):
    def __init__(self, dim=2, hidden=64, embedding=SinusoidalEmbedding, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = embedding
        self.register_buffer("freqs", FREQS.clone())
        n_emb = 2 * len(FREQS)
        self.mlp = nn.Sequential(
            nn.Linear(dim + 2 * n_emb, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )

    def forward(self, z, t, r):
        t_emb = self.embedding.apply(t, self.freqs)
        r_emb = self.embedding.apply(r, self.freqs)
        return self.mlp(torch.cat([z, t_emb, r_emb], dim=1))


def sample_t_r(n, dtype, mu=-0.4, sigma=1.0, flow_ratio=0.5):
    a = torch.sigmoid(torch.randn(n, 2) * sigma + mu).to(dtype)
    t, r = a.max(dim=1).values, a.min(dim=1).values
    return t, torch.where(torch.rand(n) < flow_ratio, t, r)


def meanflow_loss(model, x):
    t, r = sample_t_r(x.shape[0], x.dtype)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    v = e - x
    u, dudt = torch.func.jvp(model, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    u_tgt = (v - (t - r)[:, None] * dudt).detach()
    return ((u - u_tgt) ** 2).sum(dim=1).mean()


@torch.no_grad()
def two_steps(model, noise):
    x = noise
    for t_now, t_next in ((1.0, 0.5), (0.5, 0.0)):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype)
        x = x - (t_now - t_next) * model(x, t, torch.full_like(t, t_next))
    return x


def implementation(embedding=SinusoidalEmbedding) -> Implementation:
    return Implementation(
        name="example: MeanFlow with a hand-written JVP in the time embedding",
        conventions={"time": "noise_at_1", "signature": "x_t_s", "dtype": "float32"},
        shipped_losses={"meanflow": ShippedLoss(meanflow_loss)},
        samplers={"two_steps": ShippedSampler(two_steps)},
        network=UserNetwork(
            MeanFlowNet(embedding=embedding),
            jvp_apis=("torch.func.jvp", "torch.autograd.functional.jvp"),
        ),
    )


def wrong_implementation() -> Implementation:
    return implementation(embedding=PrimalJvpEmbedding)
