"""MeanFlow distilled from a pretrained flow-matching teacher, in float32 throughout.

The student ``u(z, t, r)`` learns the average velocity from ``t`` down to ``r <= t`` (noise at
``t = 1``). Distillation replaces the conditional velocity ``e - x`` of MeanFlow's target by the
teacher's, ``v = teacher(z_t, t)``, so that the target ``v - (t - r) du/dt`` no longer depends
on which noise made ``z_t``. As in code whose teacher was trained on ``t <= 0.994`` only (its
schedule stops short of pure noise), the loss draws ``t`` and ``r`` logit-normally and clips
them at ``T_MAX``, and the samplers start there. The JVP comes from ``torch.func.jvp``, the
distance is MeanFlow's adaptive L2 with power 1, the loss returns ``(loss, logs)``, and every
tensor is float32 (the default dtype of training scripts).

``wrong_implementation()`` carries two bugs seen in practice: the JVP tangents ``(v, 0, 1)``
copied from code whose network reads ``(z, r, t)`` into code whose network reads ``(z, t, r)``
(the derivative is then taken in ``r``), and a one-step sampler moved to ``T_MAX`` that still
steps by a whole unit of time.
"""

from __future__ import annotations

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

T_MAX = 0.994  # the teacher's largest training time
LATENT_SHAPE = (2, 2, 2)  # (C, H, W) of a tiny latent
MEANFLOW_RATIO = 0.5  # fraction of the batch with r != t
P_MEAN, P_STD = -0.4, 1.0  # logit-normal times
ADAPTIVE_P, ADAPTIVE_C = 1.0, 1e-3


def sample_times(b: int, device=None):
    """(t, r), logit-normal, clipped at T_MAX, r <= t; the rest of the batch on r = t."""
    u = torch.sigmoid(torch.randn(b, 2, device=device) * P_STD + P_MEAN).clamp(max=T_MAX)
    t, r = u.max(dim=1).values, u.min(dim=1).values
    keep = torch.rand(b, device=device) < MEANFLOW_RATIO
    return t, torch.where(keep, r, t)


def distill_loss(student, z0, teacher, tangent_on_t: bool = True):
    """MeanFlow distillation; ``z0`` is a batch of clean latents, ``teacher(z, t)`` a velocity."""
    b = z0.shape[0]
    t, r = sample_times(b, z0.device)
    t_, r_ = t.view(-1, 1, 1, 1), r.view(-1, 1, 1, 1)
    e = torch.randn_like(z0)
    z_t = (1 - t_) * z0 + t_ * e
    with torch.no_grad():
        v = teacher(z_t, t)
    if tangent_on_t:
        tangents = (v, torch.ones_like(t), torch.zeros_like(r))
    else:  # bug: the tangents of a network that reads (z, r, t)
        tangents = (v, torch.zeros_like(t), torch.ones_like(r))
    u, dudt = torch.func.jvp(student, (z_t, t, r), tangents)
    u_tgt = (v - (t_ - r_) * dudt).detach()
    err = (u - u_tgt).pow(2).sum(dim=(1, 2, 3))
    w = 1.0 / (err.detach() + ADAPTIVE_C).pow(ADAPTIVE_P)
    return (w * err).mean(), {"mse": err.mean().detach()}


@torch.no_grad()
def one_step(student, e, step: float = T_MAX):
    t = torch.full((e.shape[0],), T_MAX, dtype=e.dtype)
    return e - step * student(e, t, torch.zeros_like(t))


@torch.no_grad()
def two_step(student, e):
    z = e
    for t_now, t_next in ((T_MAX, 0.4), (0.4, 0.0)):
        t = torch.full((e.shape[0],), t_now, dtype=e.dtype)
        z = z - (t_now - t_next) * student(z, t, torch.full_like(t, t_next))
    return z


def implementation(loss=distill_loss, sampler=one_step) -> Implementation:
    return Implementation(
        name="example: MeanFlow distilled from a teacher, float32, t <= 0.994",
        conventions={"dtype": "float32"},
        shipped_losses={"meanflow": ShippedLoss(loss, velocity="teacher", data_shape=LATENT_SHAPE)},
        samplers={
            "one_step": ShippedSampler(sampler, data_shape=LATENT_SHAPE),
            "two_step": ShippedSampler(two_step, data_shape=LATENT_SHAPE),
        },
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda student, z0, teacher: distill_loss(student, z0, teacher, tangent_on_t=False),
        sampler=lambda student, e: one_step(student, e, step=1.0),
    )
