"""Shortcut models (Frans et al. 2024) as their training code writes them, ported to torch.

Noise at ``t = 0``, data at ``t = 1``: ``x_t = (1 - (1 - 1e-5) t) x_0 + t x_1`` with ``x_0`` the
noise. The network ``model(x_t, t, k)`` predicts the average velocity of a step of size
``d = 2^-k`` forward in ``t`` (``x_{t+d} = x_t + d model(x_t, t, k)``); the finest level
``k = LEVELS`` is the flow-matching velocity (128 steps). Each batch has two parts:

* self-consistency (one row in ``BOOTSTRAP_EVERY``): levels ``k = TOP_BOOTSTRAP, ..., 0`` in
  equal shares, ``t`` on the grid of its step size, and the target is the mean of two half steps
  at level ``k + 1``, ``(s(x_t, t, k+1) + s(x', t + d/2, k+1)) / 2`` with
  ``x' = x_t + d/2 s(x_t, t, k+1)``, computed without gradient; ``x'`` and the target are
  clipped to ``[-4, 4]``;
* flow matching (the other rows): ``t`` on the 128-step grid, level ``LEVELS``, target
  ``x_1 - (1 - 1e-5) x_0``.

One mean squared error over the merged batch. The sampler takes ``2^k`` Euler steps of size
``2^-k`` at level ``k``.

Departures from the official code: it also bootstraps level ``LEVELS - 1`` from two calls at
level ``LEVELS``, the level its flow-matching rows train as the instantaneous velocity, so that
level stands for two things (a step of ``2^-7`` and a step of 0); here the finest level is the
velocity only and the self-consistency levels stop at ``TOP_BOOTSTRAP = LEVELS - 2``. One row in
four is a self-consistency row (the official default is one in eight). The path keeps the
official ``sigma_min = 1e-5``, declared as the linear path (an offset of ``1e-5``).

``wrong_implementation()`` carries two bugs seen in practice: the self-consistency target moves
``x'`` by the full step ``d`` instead of the half step ``d / 2`` its level asks for, and a
four-step sampler that asks the network for level 2 but steps by ``2^-3``. The switch
``second_from_x_t`` plants another: the second half step taken from ``x_t`` instead of ``x'``.
"""

from __future__ import annotations

import math

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

DENOISE_TIMESTEPS = 128
LEVELS = int(math.log2(DENOISE_TIMESTEPS))  # 7: the flow-matching level
TOP_BOOTSTRAP = LEVELS - 2  # self-consistency levels TOP_BOOTSTRAP, ..., 0
BOOTSTRAP_EVERY = 4  # one self-consistency row in four
SIGMA_MIN = 1e-5
CLIP = 4.0


def shortcut_loss(model, images, half_step: bool = True, second_from_x_t: bool = False):
    b = images.shape[0]
    n_boot = b // BOOTSTRAP_EVERY

    # -- self-consistency targets, without gradient -------------------------------------------
    n_levels = TOP_BOOTSTRAP + 1
    k = (TOP_BOOTSTRAP - torch.arange(n_levels)).repeat_interleave(n_boot // n_levels)
    k = torch.cat([k, torch.zeros(n_boot - k.shape[0], dtype=k.dtype)]).to(images.dtype)
    dt = 1.0 / 2**k
    sections = 2**k
    t = torch.floor(torch.rand(n_boot, dtype=images.dtype) * sections) / sections
    x_1 = images[:n_boot]
    x_0 = torch.randn_like(x_1)
    x_t = (1 - (1 - SIGMA_MIN) * t[:, None]) * x_0 + t[:, None] * x_1
    with torch.no_grad():
        half = dt / 2
        v_b1 = model(x_t, t, k + 1)
        x_t2 = x_t + (half if half_step else dt)[:, None] * v_b1
        x_t2 = x_t2.clamp(-CLIP, CLIP)
        v_b2 = model(x_t if second_from_x_t else x_t2, t + half, k + 1)
        v_boot = ((v_b1 + v_b2) / 2).clamp(-CLIP, CLIP)

    # -- flow-matching targets -----------------------------------------------------------------
    n_fm = b - n_boot
    x_1f = images[n_boot:]
    x_0f = torch.randn_like(x_1f)
    t_f = torch.randint(0, DENOISE_TIMESTEPS, (n_fm,)).to(images.dtype) / DENOISE_TIMESTEPS
    x_tf = (1 - (1 - SIGMA_MIN) * t_f[:, None]) * x_0f + t_f[:, None] * x_1f
    v_f = x_1f - (1 - SIGMA_MIN) * x_0f

    # -- one regression over the merged batch --------------------------------------------------
    x_all = torch.cat([x_t, x_tf])
    t_all = torch.cat([t, t_f])
    k_all = torch.cat([k, torch.full((n_fm,), LEVELS, dtype=images.dtype)])
    v_all = torch.cat([v_boot, v_f])
    v_pred = model(x_all, t_all, k_all)
    return torch.mean((v_pred - v_all) ** 2)


@torch.no_grad()
def sample(model, x_0, level: int, step: float | None = None):
    """``2^level`` Euler steps of size ``2^-level`` at level ``level``, noise (t = 0) to data."""
    n_steps = 2**level
    d = 1.0 / n_steps if step is None else step
    x = x_0
    for i in range(n_steps):
        t = torch.full((x.shape[0],), i / n_steps, dtype=x.dtype)
        x = x + d * model(x, t, torch.full_like(t, level))
    return x


def one_step(model, x_0):
    return sample(model, x_0, level=0)


def four_steps(model, x_0):
    return sample(model, x_0, level=2)


def implementation(loss=shortcut_loss, sampler=four_steps) -> Implementation:
    return Implementation(
        name="example: Shortcut model as shipped, noise at t = 0, model(x, t, log2 level)",
        conventions={
            "time": "noise_at_0",
            "signature": "shortcut_log2",
            "shortcut_levels": LEVELS,
        },
        shipped_losses={"shortcut": ShippedLoss(loss)},
        samplers={"one_step": ShippedSampler(one_step), "four_steps": ShippedSampler(sampler)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda model, images: shortcut_loss(model, images, half_step=False),
        sampler=lambda model, x_0: sample(model, x_0, level=2, step=2.0**-3),
    )
