"""Inductive moment matching (IMM) with the biased MMD estimator, written the way training
scripts are.

The linear path ``x_t = (1 - t) x + t e`` with times restricted to ``t <= T_MAX = 0.994``. The
network ``model(x_t, t, s)`` predicts the clean sample and the map to ``s`` is the DDIM step
``x_s = (1 - s) g + s (x_t - (1 - t) g) / t``. Each group of ``GROUP`` samples shares its times
``s < r < t`` with ``r = max(s, t - 2^-K)``; ``x_r`` is the DDIM step of ``x_t`` towards its own
data sample (the same noise). The loss is the squared MMD, with a Laplace kernel, between the
group's ``f(x_t, t, s)`` and the stop-gradient ``f(x_r, r, s)``, estimated by the biased
V-statistic (the diagonal terms kept), as small-batch code often does. A one-step sampler from
``T_MAX`` and a two-step pushforward sampler through ``t = 0.5``.

``implementation()`` hands them over as they are; ``wrong_implementation()`` draws ``s`` and
``r`` in the wrong order (the target map then runs from ``r`` to a later ``s``).

The biased estimator moves the fixed point: at the exact map, the loss's mean gradient over 128
draws of 256 samples is 5.7e-2 of its size at a perturbed map, |t| = 5.84 against the bound
4.38 at false-alarm rate 1e-4 (``python -c "from examples.imm_biased import measured_bias;
print(measured_bias().message)"``); at the oracle's default 16 to 32 draws it is within the
bound. The oracle reports it as a property of the method, never as a defect.
"""

from __future__ import annotations

import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.results import CheckResult
from flowmap_oracle.oracle.shipped import (
    ShippedLoss,
    ShippedSampler,
    _Harness,
    check_stationarity,
)

T_MIN, T_MAX = 0.0, 0.994
GROUP = 4
K = 3
DATA_SHAPE = (2,)


def ddim(model, x_t, t, s):
    g = model(x_t, t, s)
    tt, ss = t[:, None], s[:, None]
    return (1 - ss) * g + ss * (x_t - (1 - tt) * g) / tt


def laplace(a, b, width):
    return torch.exp(-torch.cdist(a, b) / width)


def mmd_biased(y, y_sg, width):
    """The V-statistic: every pair, the diagonal included."""
    return (
        laplace(y, y, width).mean()
        + laplace(y_sg, y_sg, width).mean()
        - 2 * laplace(y, y_sg, width).mean()
    )


def imm_loss(model, x, swap_sr=False):
    b = x.shape[0]
    groups = b // GROUP
    t = T_MIN + 0.02 + (T_MAX - T_MIN - 0.02) * torch.rand(groups, dtype=x.dtype)
    s = torch.rand(groups, dtype=x.dtype) * t
    r = torch.maximum(s, t - 2.0**-K)
    if swap_sr:  # bug: the roles of s and r exchanged
        s, r = r, s
    t, s, r = (a.repeat_interleave(GROUP) for a in (t, s, r))
    e = torch.randn_like(x)
    x_t = (1 - t[:, None]) * x + t[:, None] * e
    x_r = (1 - r[:, None]) * x + r[:, None] * e
    y = ddim(model, x_t, t, s)
    with torch.no_grad():
        y_sg = ddim(model, x_r, r, s)
    width = float(x.shape[1])
    losses = [mmd_biased(y[i : i + GROUP], y_sg[i : i + GROUP], width) for i in range(0, b, GROUP)]
    return torch.stack(losses).mean()


@torch.no_grad()
def one_step(model, noise):
    t = torch.full((noise.shape[0],), T_MAX, dtype=noise.dtype)
    return ddim(model, noise, t, torch.zeros_like(t))


@torch.no_grad()
def two_step(model, noise):
    x = noise
    for a, b in ((T_MAX, 0.5), (0.5, 0.0)):
        t = torch.full((noise.shape[0],), a, dtype=noise.dtype)
        x = ddim(model, x, t, torch.full_like(t, b))
    return x


def implementation(swap_sr: bool = False) -> Implementation:
    return Implementation(
        name="example: IMM with the biased MMD estimator and t <= 0.994",
        conventions={"time": "noise_at_1", "signature": "x_t_s", "prediction": "x0"},
        shipped_losses={
            "imm": ShippedLoss(
                lambda m, x: imm_loss(m, x, swap_sr=swap_sr),
                data_shape=DATA_SHAPE,
                time_range=(T_MIN, T_MAX),
                batch_size=64,
            )
        },
        samplers={
            "one_step": ShippedSampler(one_step, data_shape=DATA_SHAPE, time_range=(0, T_MAX)),
            "two_step": ShippedSampler(two_step, data_shape=DATA_SHAPE, time_range=(0, T_MAX)),
        },
    )


def wrong_implementation() -> Implementation:
    """s and r drawn in the wrong order."""
    return implementation(swap_sr=True)


def measured_bias(repeats: int = 128, seed: int = 1) -> CheckResult:
    """The stationarity check of the correct loss at ``repeats`` draws (the bias quoted above)."""
    impl = implementation()
    shipped = impl.shipped_losses["imm"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        harness = _Harness.build(Conventions.from_mapping(impl.conventions), shipped.data_shape)
        return check_stationarity("imm", shipped, harness, repeats=repeats)
