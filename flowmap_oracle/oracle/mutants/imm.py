"""IMM mutants."""

from __future__ import annotations

from functools import partial

import torch

from ._registry import mutant

GROUP = 4


def _mmd(a, b, *, unbiased=True):
    g, d = a.shape[0] // GROUP, a.shape[1]
    a, b = a.reshape(g, GROUP, d), b.reshape(g, GROUP, d)

    def k(p, q):
        sq = (p[:, :, None, :] - q[:, None, :, :]).pow(2).sum(-1)
        return torch.exp(-sq.clamp_min(1e-30).sqrt())

    h = k(a, a) + k(b, b) - k(a, b) - k(a, b).transpose(1, 2)
    if unbiased:
        off = 1 - torch.eye(GROUP, dtype=a.dtype)
        return ((h * off).sum(dim=(1, 2)) / (GROUP * (GROUP - 1))).mean()
    return (h.sum(dim=(1, 2)) / GROUP**2).mean()


def _imm(net, data, noise, t, r, s, *, unbiased=True, fresh=False):
    """IMM's loss: MMD^2 between ``f(x_t, t, s)`` and ``sg f(x_r, r, s)`` over groups of
    :data:`GROUP`, ``x_r`` on the conditional path of the same pair (``fresh``: another
    sample's noise)."""

    def interp(tau, eps):
        return (1 - tau[:, None]) * data + tau[:, None] * eps

    x_t = interp(t, noise)
    x_r = interp(r, noise.roll(1, dims=0) if fresh else noise)
    a = x_t + (s - t)[:, None] * net(x_t, t, s)
    b = (x_r + (s - r)[:, None] * net(x_r, r, s)).detach()
    return _mmd(a, b, unbiased=unbiased)


@mutant(
    "imm.biased_v_statistic",
    objective="imm",
    description="MMD^2 estimated with the V-statistic (i = j terms kept), biased for coupled pairs",
)
def imm_biased_v_statistic():
    return {"losses": {"imm": partial(_imm, unbiased=False)}}


@mutant(
    "imm.x_r_with_fresh_noise",
    objective="imm",
    description="x_r interpolated with another sample's noise instead of the same pair (x0, x1)",
)
def imm_x_r_with_fresh_noise():
    return {"losses": {"imm": partial(_imm, fresh=True)}}
