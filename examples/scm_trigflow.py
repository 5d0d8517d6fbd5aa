"""Continuous-time consistency training (sCM) in TrigFlow, written the way training scripts are.

TrigFlow: ``x_t = cos(t) x0 + sin(t) z`` with ``z ~ N(0, SIGMA_D^2 I)``, ``t`` in ``[0, pi/2]``.
The raw network is called as ``model(x_t / SIGMA_D, t)`` and the consistency function is
``f(x_t, t) = cos(t) x_t - sin(t) SIGMA_D F``. The loss draws ``tan(t) SIGMA_D`` log-normally,
takes ``dF/dt`` along the conditional velocity with ``torch.func.jvp`` under ``no_grad``, builds
the tangent ``g = -cos^2(t) (SIGMA_D F - dx_t/dt) - r cos(t) sin(t) (x_t + SIGMA_D dF/dt)``
(``r`` the tangent warm-up coefficient, 1 once warmed up), normalises it as ``g / (||g|| + 0.1)``
and regresses ``F`` onto ``sg(F) + sg(g)``. A one-step sampler from ``t = atan(80 / SIGMA_D)``
and a two-step sampler through TrigFlow's intermediate time 1.1.

``implementation()`` hands them over as they are, declaring the tangent's scale ``cos(t)`` and
normalisation ``c = 0.1`` so that the loss's value is checked too; ``wrong_implementation()``
carries two bugs seen in practice: a sign error in the tangent's second term, and a two-step
sampler that re-noises to another time than the one it then asks the network for.
``wrong_normalisation_implementation()`` normalises the tangent by its norm over the whole batch
instead of each sample's: only the value check sees it.
"""

from __future__ import annotations

import math

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.declared import Declared
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

SIGMA_D = 0.5
P_MEAN, P_STD = -1.0, 1.4
T_MAX = math.atan(80.0 / SIGMA_D)
MID_T = 1.1
WARMUP_STEPS = 10_000
DATA_SHAPE = (3,)


def normalise_tangent(g, c=0.1):
    return g / (g.norm(dim=1, keepdim=True) + c)


def normalise_tangent_whole_batch(g, c=0.1):
    """Bug: the norm is taken over the whole batch, not per sample."""
    return g / (g.norm() + c)


# what the loss does, for the oracle's value check: g = cos(t) df/dt, g / (||g|| + 0.1) per sample
DECLARED = Declared(tangent_scale=torch.cos, tangent_normalisation=0.1, reduction="sum_mean")


def scm_loss(model, x0, step=50_000, sign=1.0, normalise=normalise_tangent):
    b = x0.shape[0]
    tau = (torch.randn(b, dtype=x0.dtype) * P_STD + P_MEAN).exp()
    t = torch.atan(tau / SIGMA_D)
    z = torch.randn_like(x0) * SIGMA_D
    cos, sin = t.cos()[:, None], t.sin()[:, None]
    x_t = cos * x0 + sin * z
    dxt_dt = cos * z - sin * x0

    def raw(x, tt):
        return model(x / SIGMA_D, tt)

    with torch.no_grad():
        F_sg, dF_dt = torch.func.jvp(raw, (x_t, t), (dxt_dt, torch.ones_like(t)))
    F = raw(x_t, t)
    r = min(1.0, step / WARMUP_STEPS)
    g = -(cos**2) * (SIGMA_D * F_sg - dxt_dt) - sign * r * cos * sin * (x_t + SIGMA_D * dF_dt)
    g = normalise(g)
    return ((F - F_sg - g) ** 2).sum(dim=1).mean()


def consistency_fn(model, x, t):
    tt = torch.full((x.shape[0],), t, dtype=x.dtype)
    return math.cos(t) * x - math.sin(t) * SIGMA_D * model(x / SIGMA_D, tt)


@torch.no_grad()
def one_step(model, noise):
    return consistency_fn(model, noise * SIGMA_D, T_MAX)


@torch.no_grad()
def two_step(model, noise, renoise_t=MID_T):
    x0 = consistency_fn(model, noise * SIGMA_D, T_MAX)
    z = torch.randn_like(x0) * SIGMA_D
    x = math.cos(renoise_t) * x0 + math.sin(renoise_t) * z
    return consistency_fn(model, x, MID_T)


def implementation(renoise_t: float = MID_T, **loss_options) -> Implementation:
    return Implementation(
        name="example: sCM in TrigFlow (torch.func.jvp, tangent normalisation, sigma_data)",
        conventions={
            "time": "trigflow_angle",
            "signature": "x_t",
            "prediction": "x0",
            "preconditioning": "trigflow",
            "sigma_data": SIGMA_D,
        },
        shipped_losses={
            "scm": ShippedLoss(
                lambda m, x: scm_loss(m, x, **loss_options),
                data_shape=DATA_SHAPE,
                time_range=(0.0, math.pi / 2),
                declared=DECLARED,
            )
        },
        samplers={
            "one_step": ShippedSampler(one_step, data_shape=DATA_SHAPE),
            "two_step": ShippedSampler(
                lambda m, z: two_step(m, z, renoise_t=renoise_t), data_shape=DATA_SHAPE
            ),
        },
    )


def wrong_implementation() -> Implementation:
    """A sign error in the tangent; re-noising to t = 0.8 but asking the network at 1.1."""
    return implementation(sign=-1.0, renoise_t=0.8)


def wrong_normalisation_implementation() -> Implementation:
    """The tangent normalised by its norm over the whole batch."""
    return implementation(normalise=normalise_tangent_whole_batch)
