"""Consistency trajectory models (CTM; Kim et al. 2023) distilled from a teacher, in EDM's sigma.

Written the way CTM training code is: data of standard deviation ``SIGMA_DATA = 0.5``,
``x_sigma = x + sigma * noise``, times on Karras et al.'s discretisation of ``[SIGMA_MIN,
SIGMA_MAX]``. The raw network ``model(c_in x, c(t), c(s))`` reads both times as ``1000 * 0.25 *
log(sigma)`` and is wrapped by EDM's preconditioning at the start time into the denoiser ``G``;
the jump from ``t`` to ``s`` is CTM's ``g(x, t, s) = (s / t) x + (1 - s / t) G(x, t, s)``.

The loss draws per sample a start index, a number of teacher Heun steps (one per batch, as the
original code does) to the intermediate time ``u``, and an end time ``s <= u``; the student
jumps ``t -> s`` from ``x_t``, the stop-gradient target jumps ``u -> s`` from the teacher's
``x_u``, and both land at ``SIGMA_MIN`` through the student with frozen weights before an L2
comparison. An optional denoising term ``||G(x_t, t, t) - x||^2`` (CTM's DSM) regresses onto
the data.

Two samplers ship with it, as CTM's do: one jump ``SIGMA_MAX -> SIGMA_MIN`` and a two-step
deterministic (``gamma = 0``) sampler through ``SIGMA_MID``; both return the point at
``SIGMA_MIN``, the end of the path they are declared on (``time_range``).

``implementation()`` hands the loss over as it is; ``wrong_implementation(bug)`` carries one
of three bugs seen in practice: the target evaluated at ``t`` instead of ``u``
(``"target_at_t"``), the skip ratio ``s / t`` inverted (``"ratio_inverted"``), and the teacher's
Heun steps taken towards the noise (``"solver_backwards"``).

Check it with ``flowmap-oracle check examples.ctm_edm:implementation``.
"""

from __future__ import annotations

import itertools

import torch
from torch.func import functional_call

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

SIGMA_DATA = 0.5
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
SIGMA_MID = 0.8
N_SCALES = 18
MAX_HEUN_STEPS = 4
DATA_SHAPE = (1, 2, 2)


def karras_sigmas(n=N_SCALES):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    return (hi + ramp * (lo - hi)) ** RHO


def bc(a, x):
    return a.view(-1, *([1] * (x.ndim - 1)))


def denoiser(model, x, t, s):
    """EDM preconditioning at the start time around the two-time raw network."""
    c_in = 1 / (t**2 + SIGMA_DATA**2).sqrt()
    c_skip = SIGMA_DATA**2 / (t**2 + SIGMA_DATA**2)
    c_out = t * SIGMA_DATA * c_in
    rescale = lambda sigma: 1000 * 0.25 * torch.log(sigma + 1e-44)  # noqa: E731
    out = model(bc(c_in, x) * x, rescale(t), rescale(s))
    return bc(c_skip, x) * x + bc(c_out, x) * out


def jump(model, x, t, s, inverted=False):
    ratio = bc(t / s if inverted else s / t, x)
    return ratio * x + (1 - ratio) * denoiser(model, x, t, s)


@torch.no_grad()
def heun(teacher, x, sigmas, ind, k, backwards=False):
    """``k`` Heun steps of the teacher's ODE along the grid, from ``sigmas[ind]`` on."""
    for j in range(k):
        a, b = sigmas[ind + j], sigmas[ind + j + 1]
        if backwards:  # bug: the step is taken towards the noise
            a, b = b, a
        d = teacher(x, a)
        x_euler = x + bc(b - a, x) * d
        x = x + bc(b - a, x) * 0.5 * (d + teacher(x_euler, b))
    return x


def ctm_loss(model, x, teacher, dsm_weight=0.0, bug=None):
    b = x.shape[0]
    sigmas = karras_sigmas().to(x)
    k = int(torch.randint(1, MAX_HEUN_STEPS + 1, ()))
    ind = torch.randint(0, N_SCALES - k, (b,))
    s_ind = ind + k + (torch.rand(b) * (N_SCALES - ind - k)).long()
    t, u, s = sigmas[ind], sigmas[ind + k], sigmas[s_ind]
    noise = torch.randn_like(x)
    x_t = x + bc(t, x) * noise
    x_u = heun(teacher, x_t, sigmas, ind, k, backwards=bug == "solver_backwards")
    inverted = bug == "ratio_inverted"
    estimate = jump(model, x_t, t, s, inverted)
    with torch.no_grad():
        target = jump(model, x_u, t if bug == "target_at_t" else u, s, inverted)
    # both land at sigma_min through the student with its weights frozen
    frozen = {name: p.detach() for name, p in model.named_parameters()}
    end = torch.full_like(s, SIGMA_MIN)
    estimate = jump(lambda *a: functional_call(model, frozen, a), estimate, s, end, inverted)
    with torch.no_grad():
        target = jump(model, target, s, end, inverted)
    loss = (estimate - target).pow(2).flatten(1).mean(1)
    if dsm_weight:
        dsm = (denoiser(model, x_t, t, t) - x).pow(2).flatten(1).mean(1)
        loss = loss + dsm_weight * dsm
    return loss.mean()


@torch.no_grad()
def sample_one_step(model, noise):
    x = noise * SIGMA_MAX
    t = torch.full((x.shape[0],), SIGMA_MAX, dtype=x.dtype)
    return jump(model, x, t, torch.full_like(t, SIGMA_MIN))


@torch.no_grad()
def sample_two_steps(model, noise, sigmas=(SIGMA_MAX, SIGMA_MID, SIGMA_MIN)):
    x = noise * sigmas[0]
    for a, b in itertools.pairwise(sigmas):
        t = torch.full((x.shape[0],), a, dtype=x.dtype)
        x = jump(model, x, t, torch.full_like(t, b))
    return x


def implementation(bug: str | None = None) -> Implementation:
    return Implementation(
        name="example: CTM distillation (EDM two-time preconditioning, Heun teacher)",
        conventions={
            "time": "edm_sigma",
            "signature": "x_t_s",
            "prediction": "x0",
            "preconditioning": "ctm",
            "sigma_data": SIGMA_DATA,
            "time_input_scale": 1000.0,
        },
        shipped_losses={
            "ctm": ShippedLoss(
                lambda m, x, teacher: ctm_loss(m, x, teacher, bug=bug),
                velocity="teacher",
                data_shape=DATA_SHAPE,
                time_range=(SIGMA_MIN, SIGMA_MAX),
            )
        },
        samplers={
            name: ShippedSampler(fn, data_shape=DATA_SHAPE, time_range=(SIGMA_MIN, SIGMA_MAX))
            for name, fn in (("one_step", sample_one_step), ("two_steps", sample_two_steps))
        },
    )


def wrong_implementation(bug: str = "target_at_t") -> Implementation:
    """One bug: ``"target_at_t"``, ``"ratio_inverted"`` or ``"solver_backwards"``."""
    return implementation(bug=bug)
