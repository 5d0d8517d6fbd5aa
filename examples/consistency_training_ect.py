"""Easy consistency training (ECT) on image tensors, written the way training scripts are.

EDM's variance-exploding setup: ``x_sigma = x + sigma * noise`` with data of standard deviation
``SIGMA_DATA = 0.5``. The raw network is called as ``model(c_in * x, c_noise)`` with
``c_noise = log(sigma) / 4`` and wrapped by EDM's preconditioning into the denoiser
``D(x, sigma) = c_skip x + c_out model(...)``, the consistency function. The loss draws
``sigma_t`` from a log-normal, sets the adjacent ``sigma_r = sigma_t (1 - n(sigma_t) / q^stage)``
(ECT's mapping function), compares ``D(x_t, sigma_t)`` with the stop-gradient target
``D(x_r, sigma_r)`` on the *same* noise by the pseudo-Huber distance (``c = 0.00054 sqrt(d)``),
and weights each sample by ``1 / (sigma_t - sigma_r)``. A one-step sampler and a two-step
sampler (re-noising to ``sigma = 0.821``).

``implementation()`` hands them over as they are, declaring the pseudo-Huber constant and the
weight so that the loss's value is checked too; ``wrong_implementation()`` carries two bugs
seen in practice: the target point drawn with fresh noise, and a one-step sampler that asks
the network at the data end. ``wrong_huber_implementation()`` adds the pseudo-Huber constant
to the squared norm unsquared: only the value check sees it.
"""

from __future__ import annotations

import math

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.declared import Declared, PseudoHuber
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

SIGMA_DATA = 0.5
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
P_MEAN, P_STD = -1.1, 2.0
IMAGE_SHAPE = (1, 2, 2)
MID_SIGMA = 0.821


def denoise(model, x, sigma):
    """EDM preconditioning around the raw network (sigma: a (B,) tensor)."""
    s = sigma.view(-1, 1, 1, 1)
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip * x + c_out * model(c_in * x, c_noise)


def pseudo_huber(diff, c):
    return ((diff**2).flatten(1).sum(1) + c**2).sqrt() - c


def pseudo_huber_c_unsquared(diff, c):
    """Bug: c added to the squared norm as it is, not squared."""
    return ((diff**2).flatten(1).sum(1) + c).sqrt() - c


def ect_weight(sigma_t, sigma_r):
    return 1 / (sigma_t - sigma_r).clamp_min(1e-8)


def sample_sigmas(b, stage=4, q=2.0, k=8.0, bb=1.0):
    sigma_t = (torch.randn(b, dtype=torch.float64) * P_STD + P_MEAN).exp()
    sigma_t = sigma_t.clamp(SIGMA_MIN, SIGMA_MAX)
    decay = 1 / q**stage
    ratio = 1 - decay * (1 + k * torch.sigmoid(-bb * sigma_t))
    sigma_r = (sigma_t * ratio).clamp(min=SIGMA_MIN)
    return sigma_t, sigma_r


# what the loss does, for the oracle's value check: pseudo-Huber on the summed squares, 1/dsigma
DECLARED = Declared(
    distance=PseudoHuber(c=0.00054 * math.sqrt(math.prod(IMAGE_SHAPE))),
    weight=ect_weight,
    reduction="sum_mean",
)


def ect_loss(model, images, fresh_target_noise=False, distance=pseudo_huber):
    b = images.shape[0]
    sigma_t, sigma_r = sample_sigmas(b)
    noise = torch.randn_like(images)
    x_t = images + sigma_t.view(-1, 1, 1, 1) * noise
    if fresh_target_noise:  # bug: the target point is on another noise draw
        noise = torch.randn_like(images)
    x_r = images + sigma_r.view(-1, 1, 1, 1) * noise
    d_t = denoise(model, x_t, sigma_t)
    with torch.no_grad():
        d_r = denoise(model, x_r, sigma_r)
    c = 0.00054 * math.sqrt(images[0].numel())
    return (ect_weight(sigma_t, sigma_r) * distance(d_t - d_r, c)).mean()


@torch.no_grad()
def one_step(model, noise, start=SIGMA_MAX):
    sigma = torch.full((noise.shape[0],), start, dtype=noise.dtype)
    return denoise(model, noise * SIGMA_MAX, sigma)


@torch.no_grad()
def two_step(model, noise):
    b = noise.shape[0]
    x0 = denoise(model, noise * SIGMA_MAX, torch.full((b,), SIGMA_MAX, dtype=noise.dtype))
    x = x0 + math.sqrt(MID_SIGMA**2 - SIGMA_MIN**2) * torch.randn_like(x0)
    return denoise(model, x, torch.full((b,), MID_SIGMA, dtype=noise.dtype))


def implementation(start: float = SIGMA_MAX, **loss_options) -> Implementation:
    return Implementation(
        name="example: easy consistency training (EDM preconditioning, pseudo-Huber, 1/dsigma)",
        conventions={
            "time": "edm_sigma",
            "signature": "x_t",
            "prediction": "x0",
            "preconditioning": "edm",
            "sigma_data": SIGMA_DATA,
        },
        shipped_losses={
            "consistency": ShippedLoss(
                lambda m, x: ect_loss(m, x, **loss_options),
                data_shape=IMAGE_SHAPE,
                time_range=(SIGMA_MIN, SIGMA_MAX),
                declared=DECLARED,
            )
        },
        samplers={
            "one_step": ShippedSampler(
                lambda m, z: one_step(m, z, start=start), data_shape=IMAGE_SHAPE
            ),
            "two_step": ShippedSampler(two_step, data_shape=IMAGE_SHAPE),
        },
    )


def wrong_implementation() -> Implementation:
    """The target on a fresh noise draw; a one-step sampler asking at sigma_min."""
    return implementation(start=SIGMA_MIN, fresh_target_noise=True)


def wrong_huber_implementation() -> Implementation:
    """The pseudo-Huber constant added to the squared norm unsquared."""
    return implementation(distance=pseudo_huber_c_unsquared)
