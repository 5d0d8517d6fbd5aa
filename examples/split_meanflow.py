"""SplitMeanFlow (Guo et al. 2025): MeanFlow's average velocity learnt without a JVP.

The network reads ``u(z, r, t)``: the average velocity of the interval from ``t`` down to
``r <= t`` at the point ``z_t`` (noise at ``t = 1``, ``z_t = (1 - t) x + t e``). Interval
splitting: for a split point ``s = (1 - lam) t + lam r``,

    (t - r) u(z_t, r, t) = (s - r) u(z_s, r, s) + (t - s) u(z_t, s, t),
    z_s = z_t - (t - s) u(z_t, s, t),

so ``u(z_t, r, t)`` is regressed onto ``(1 - lam) u(z_s, r, s) + lam u(z_t, s, t)`` under a
stop-gradient. A quarter of the batch trains the boundary ``u(z_t, t, t) = e - x`` (flow
matching), which anchors the model to the data. Times are uniform, losses ``F.mse_loss``. Two
samplers: one step ``1 -> 0`` and two steps ``1 -> 0.5 -> 0``.

``wrong_implementation()`` carries two bugs seen in practice: the second segment evaluated at
``z_t`` instead of the intermediate point ``z_s`` (the exact flow map then no longer satisfies
the rule), and a one-step sampler that adds the average velocity to the noise, as code written
for noise at ``t = 0`` does, while the network was trained with noise at ``t = 1``. Two more
switches of the loss plant other bugs seen in practice: ``z_s_from_full`` builds the split point
from the wrong call (the whole interval's ``u(z_t, r, t)``), ``lam_swapped`` weights the two
segments by ``lam`` and ``1 - lam`` the wrong way round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

BOUNDARY_FRACTION = 0.25


def split_meanflow_loss(
    model, x, split_at_z_s: bool = True, z_s_from_full: bool = False, lam_swapped: bool = False
):
    b = x.shape[0]
    n_fm = int(b * BOUNDARY_FRACTION)
    e = torch.randn_like(x)
    tt = torch.rand(b, 2, dtype=x.dtype)
    t, r = tt.max(dim=1).values, tt.min(dim=1).values
    t_ = t[:, None]
    z_t = (1 - t_) * x + t_ * e

    # boundary: u(z_t, t, t) = v, on the first n_fm rows
    loss_fm = F.mse_loss(model(z_t[:n_fm], t[:n_fm], t[:n_fm]), (e - x)[:n_fm])

    # interval splitting on the rest
    z_t, t, r = z_t[n_fm:], t[n_fm:], r[n_fm:]
    lam = torch.rand(b - n_fm, dtype=x.dtype)
    s = (1 - lam) * t + lam * r
    with torch.no_grad():
        u2 = model(z_t, s, t)
        z_s = z_t - (t - s)[:, None] * (model(z_t, r, t) if z_s_from_full else u2)
        u1 = model(z_s if split_at_z_s else z_t, r, s)
        w1 = lam if lam_swapped else 1 - lam
        target = w1[:, None] * u1 + (1 - w1)[:, None] * u2
    loss_split = F.mse_loss(model(z_t, r, t), target)
    return loss_fm * BOUNDARY_FRACTION + loss_split * (1 - BOUNDARY_FRACTION)


@torch.no_grad()
def one_step(model, e, sign: float = -1.0):
    t = torch.ones(e.shape[0], dtype=e.dtype)
    return e + sign * model(e, torch.zeros_like(t), t)


@torch.no_grad()
def two_step(model, e):
    z = e
    for t_now, r_next in ((1.0, 0.5), (0.5, 0.0)):
        t = torch.full((e.shape[0],), t_now, dtype=e.dtype)
        z = z - (t_now - r_next) * model(z, torch.full_like(t, r_next), t)
    return z


def implementation(loss=split_meanflow_loss, sampler=one_step) -> Implementation:
    return Implementation(
        name="example: SplitMeanFlow, network u(z, r, t), interval splitting + FM boundary",
        conventions={"signature": "x_s_t"},
        shipped_losses={"split_meanflow": ShippedLoss(loss)},
        samplers={"one_step": ShippedSampler(sampler), "two_step": ShippedSampler(two_step)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda model, x: split_meanflow_loss(model, x, split_at_z_s=False),
        sampler=lambda model, e: one_step(model, e, sign=1.0),
    )
