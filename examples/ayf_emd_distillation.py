"""Align Your Flow (Sabour, Fidler & Kreis 2025): Eulerian map distillation (AYF-EMD).

A flow map in the Euler parametrisation, ``f(x_t, t, s) = x_t + (s - t) F(x_t, t, s)``, noise at
``t = 1``, distilled from a teacher's velocity ``v(x, t)``. AYF-EMD is defined by its gradient,

    grad = E[ (d f_theta / d theta)^T g ],   g = sign(t - s) d f_theta-(x_t, t, s) / dt,

the total derivative taken along the teacher's flow (``d/dt = v . grad_x + d_t`` at fixed
``s``) with ``theta-`` a stop-gradient copy of the weights. As continuous-time consistency code
does, ``g`` comes from one ``torch.func.jvp`` of the flow map, is normalised
(``g / (||g|| + c)``, sCM's tangent normalisation) and enters as a squared distance to a
detached target, ``1/2 ||f - sg(f - g)||^2``, whose gradient is the one above. ``t`` and ``s``
are drawn independently, so pairs map towards the data and towards the noise (the objective's
``sign(t - s)`` covers both; the loss declares ``both_directions``). Samplers: one step and four
hard-coded steps.

``wrong_implementation()`` carries two bugs seen in practice: the tangent taken from the JVP of
the network output ``F`` (as MeanFlow code does) instead of the flow map ``f``, and a sampler
whose time grid runs from 0 to 1 (written for a convention with noise at ``t = 0``) while the
model was trained with noise at ``t = 1``. The switch ``signed=False`` plants another: the
``sign(t - s)`` dropped, so the pairs with ``s > t`` are pushed away from their target.
"""

from __future__ import annotations

import itertools

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

TANGENT_C = 0.1
FOUR_STEPS = (1.0, 0.8, 0.55, 0.25, 0.0)


def ayf_emd_loss(model, x0, teacher, tangent_of_flow_map: bool = True, signed: bool = True):
    b = x0.shape[0]
    t = torch.rand(b, dtype=x0.dtype)
    s = torch.rand(b, dtype=x0.dtype)
    e = torch.randn_like(x0)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * e
    with torch.no_grad():
        v = teacher(x_t, t)

    def flow_map(x, t):
        return x + (s - t)[:, None] * model(x, t, s)

    if tangent_of_flow_map:
        f, df_dt = torch.func.jvp(flow_map, (x_t, t), (v, torch.ones_like(t)))
    else:  # bug: the JVP of the network output F, as in MeanFlow code
        _, df_dt = torch.func.jvp(lambda x, t: model(x, t, s), (x_t, t), (v, torch.ones_like(t)))
        f = flow_map(x_t, t)
    g = (torch.sign(t - s)[:, None] if signed else 1.0) * df_dt.detach()
    g = g / (g.norm(dim=1, keepdim=True) + TANGENT_C)
    return 0.5 * (f - (f.detach() - g)).pow(2).sum(dim=1).mean()


@torch.no_grad()
def sample(model, e, times=FOUR_STEPS):
    x = e
    for t_now, t_next in itertools.pairwise(times):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype)
        s = torch.full_like(t, t_next)
        x = x + (t_next - t_now) * model(x, t, s)
    return x


def one_step(model, e):
    return sample(model, e, (1.0, 0.0))


def four_steps(model, e):
    return sample(model, e, FOUR_STEPS)


def implementation(loss=ayf_emd_loss, sampler=four_steps) -> Implementation:
    return Implementation(
        name="example: AYF-EMD distilled from a teacher, tangent normalisation, both directions",
        conventions={"time": "noise_at_1", "signature": "x_t_s"},
        shipped_losses={
            "ayf_emd": ShippedLoss(loss, velocity="teacher", both_directions=True),
        },
        samplers={"one_step": ShippedSampler(one_step), "four_steps": ShippedSampler(sampler)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda m, x0, teacher: ayf_emd_loss(m, x0, teacher, tangent_of_flow_map=False),
        sampler=lambda m, e: sample(m, e, tuple(1.0 - t for t in FOUR_STEPS)),
    )
