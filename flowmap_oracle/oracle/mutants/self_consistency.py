"""SplitMeanFlow and Shortcut mutants: each is the reference target with one step written wrong."""

from __future__ import annotations

from functools import partial

import torch

from ._registry import mutant


def _c(t):
    return t[:, None]


def _split(net, x, t, s, r, *, x_r_sign=-1.0, f_rs_at_x_t=False, swap=False, normalise=True):
    """The split target ``[(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s)`` (``F`` at
    ``s = t``), stop-gradiented, with one of its steps optionally written wrong."""
    f_tr = net(x, t, r)
    x_r = x if f_rs_at_x_t else x + x_r_sign * _c(t - r) * f_tr
    f_rs = net(x_r, r, s)
    w_tr, w_rs = (r - s, t - r) if swap else (t - r, r - s)
    out = _c(w_tr) * f_tr + _c(w_rs) * f_rs
    if normalise:
        out = out / _c(torch.where(t == s, torch.ones_like(t), t - s))
    return torch.where(_c(t == s), net(x, t, s), out).detach()


@mutant(
    "split_meanflow.f_rs_at_x_t",
    objective="split_meanflow",
    description="F_{r->s} evaluated at x_t instead of the model's own point x_r "
    "(the seed writes the split rule without arguments)",
)
def split_f_rs_at_x_t():
    return {"targets": {"split_meanflow": partial(_split, f_rs_at_x_t=True)}}


@mutant(
    "split_meanflow.weights_swapped",
    objective="split_meanflow",
    description="interval weights swapped: (r - s) F_{t->r} + (t - r) F_{r->s}",
)
def split_weights_swapped():
    return {"targets": {"split_meanflow": partial(_split, swap=True)}}


@mutant(
    "split_meanflow.x_r_wrong_direction",
    objective="split_meanflow",
    description="x_r = x_t + (t - r) F(x_t, t, r): the intermediate step taken towards noise",
)
def split_x_r_wrong_direction():
    return {"targets": {"split_meanflow": partial(_split, x_r_sign=1.0)}}


@mutant(
    "split_meanflow.not_normalised",
    objective="split_meanflow",
    description="the split target not divided by (t - s): a displacement, not an average velocity",
)
def split_not_normalised():
    return {"targets": {"split_meanflow": partial(_split, normalise=False)}}


def _shortcut(net, x, t, s, *, m_of=lambda t, s: 0.5 * (t + s), at_x_m=True, average=True):
    """The velocity-space Shortcut target ``(F(x_t, t, m) + F(x_m, m, s)) / 2``, stop-gradiented,
    with one of its steps optionally written wrong."""
    m = m_of(t, s)
    f1 = net(x, t, m)
    x_m = x - _c(t - m) * f1 if at_x_m else x
    f2 = net(x_m, m, s)
    return ((0.5 if average else 1.0) * (f1 + f2)).detach()


@mutant(
    "shortcut.second_half_at_x_t",
    objective="shortcut",
    description="the second half step evaluated at x_t instead of the midpoint x_m",
)
def shortcut_second_half_at_x_t():
    return {"targets": {"shortcut": partial(_shortcut, at_x_m=False)}}


@mutant(
    "shortcut.sum_not_average",
    objective="shortcut",
    description="the two half-step velocities summed instead of averaged",
)
def shortcut_sum_not_average():
    return {"targets": {"shortcut": partial(_shortcut, average=False)}}


@mutant(
    "shortcut.midpoint_from_step_size",
    objective="shortcut",
    description="midpoint m = (t - s) / 2: half the step size used as a time",
)
def shortcut_midpoint_from_step_size():
    return {"targets": {"shortcut": partial(_shortcut, m_of=lambda t, s: 0.5 * (t - s))}}
