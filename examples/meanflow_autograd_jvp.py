"""MeanFlow with ``torch.autograd.functional.jvp``, a network read as ``model(z, r, t)`` and a
pseudo-Huber loss, as several public reimplementations write it.

Half of the batch trains plain flow matching (``r = t``); the JVP uses the double-backward route
of ``torch.autograd.functional.jvp(create_graph=True)``; the distance is pseudo-Huber
``sqrt(||e||^2 + c^2) - c``. The sampler takes four hard-coded average-velocity steps.

``wrong_implementation()`` carries two bugs seen in practice: a placeholder time derivative left
at zero ("TODO: jvp"), and a one-step sampler that starts from the data end.
"""

from __future__ import annotations

import itertools

import torch
from torch.autograd.functional import jvp

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

HUBER_C = 0.03
STEPS = (1.0, 0.75, 0.5, 0.25, 0.0)


def pseudo_huber(error, c=HUBER_C):
    return (torch.sqrt(error.pow(2).sum(dim=1) + c**2) - c).mean()


def _times(n, dtype, flow_fraction=0.5):
    t, r = torch.rand(n, dtype=dtype), torch.rand(n, dtype=dtype)
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    return t, torch.where(torch.rand(n) < flow_fraction, t, r)


def meanflow_loss(model, x, derivative=True):
    t, r = _times(x.shape[0], x.dtype)
    noise = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * noise
    v = noise - x
    # the network reads (z, r, t): the derivative is taken in t, the last argument
    u, dudt = jvp(
        lambda z, r, t: model(z, r, t),
        (z, r, t),
        (v, torch.zeros_like(r), torch.ones_like(t)),
        create_graph=True,
    )
    if not derivative:
        dudt = torch.zeros_like(u)  # bug: placeholder left from debugging
    target = v - (t - r)[:, None] * dudt
    return pseudo_huber(u - target.detach())


@torch.no_grad()
def sample(model, noise):
    x = noise
    for t_now, t_next in itertools.pairwise(STEPS):
        t = torch.full((len(x),), t_now, dtype=x.dtype)
        r = torch.full_like(t, t_next)
        x = x - (t_now - t_next) * model(x, r, t)
    return x


@torch.no_grad()
def one_step_from_the_wrong_end(model, noise):
    """Bug: integrates from r = 0 to t = 1, the training direction reversed."""
    t = torch.zeros(len(noise), dtype=noise.dtype)
    return noise + model(noise, torch.ones_like(t), t)


def implementation(loss=meanflow_loss, sampler=sample) -> Implementation:
    return Implementation(
        name="example: MeanFlow with autograd.functional.jvp, (z, r, t) network, pseudo-Huber",
        conventions={"signature": "x_s_t"},
        shipped_losses={"meanflow": ShippedLoss(loss)},
        samplers={"four_steps": ShippedSampler(sampler)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda model, x: meanflow_loss(model, x, derivative=False),
        sampler=one_step_from_the_wrong_end,
    )
