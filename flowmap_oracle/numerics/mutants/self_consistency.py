"""SplitMeanFlow and Shortcut mutants."""

from __future__ import annotations

import torch

from ._registry import mutant


def _c(t):
    return t[:, None]


@mutant(
    "split.f_rs_at_x_t",
    objective="split",
    description="F_{r->s} evaluated at x_t instead of the model's own point x_r "
    "(the seed writes the split rule without arguments)",
)
def split_f_rs_at_x_t():
    def target(net, x, t, s, r):
        f_tr, f_rs = net(x, t, r), net(x, r, s)
        gap = torch.where(t == s, torch.ones_like(t), t - s)
        out = (_c(t - r) * f_tr + _c(r - s) * f_rs) / _c(gap)
        return torch.where(_c(t == s), net(x, t, s), out).detach()

    return {"targets": {"split": target}}


@mutant(
    "split.weights_swapped",
    objective="split",
    description="interval weights swapped: (r - s) F_{t->r} + (t - r) F_{r->s}",
)
def split_weights_swapped():
    def target(net, x, t, s, r):
        f_tr = net(x, t, r)
        x_r = x - _c(t - r) * f_tr
        f_rs = net(x_r, r, s)
        gap = torch.where(t == s, torch.ones_like(t), t - s)
        out = (_c(r - s) * f_tr + _c(t - r) * f_rs) / _c(gap)
        return torch.where(_c(t == s), net(x, t, s), out).detach()

    return {"targets": {"split": target}}


@mutant(
    "split.x_r_wrong_direction",
    objective="split",
    description="x_r = x_t + (t - r) F(x_t, t, r): the intermediate step taken towards noise",
)
def split_x_r_wrong_direction():
    def target(net, x, t, s, r):
        f_tr = net(x, t, r)
        x_r = x + _c(t - r) * f_tr
        f_rs = net(x_r, r, s)
        gap = torch.where(t == s, torch.ones_like(t), t - s)
        out = (_c(t - r) * f_tr + _c(r - s) * f_rs) / _c(gap)
        return torch.where(_c(t == s), net(x, t, s), out).detach()

    return {"targets": {"split": target}}


@mutant(
    "split.not_normalised",
    objective="split",
    description="the split target not divided by (t - s): a displacement, not an average velocity",
)
def split_not_normalised():
    def target(net, x, t, s, r):
        f_tr = net(x, t, r)
        x_r = x - _c(t - r) * f_tr
        f_rs = net(x_r, r, s)
        out = _c(t - r) * f_tr + _c(r - s) * f_rs
        return torch.where(_c(t == s), net(x, t, s), out).detach()

    return {"targets": {"split": target}}


def _shortcut(net, x, t, s, *, m_of, second_at_x_m=True, average=True):
    m = m_of(t, s)
    f1 = net(x, t, m)
    x_m = x - _c(t - m) * f1 if second_at_x_m else x
    f2 = net(x_m, m, s)
    return ((0.5 if average else 1.0) * (f1 + f2)).detach()


@mutant(
    "shortcut.second_half_at_x_t",
    objective="shortcut",
    description="the second half step evaluated at x_t instead of the midpoint x_m",
)
def shortcut_second_half_at_x_t():
    def target(net, x, t, s):
        return _shortcut(net, x, t, s, m_of=lambda t, s: 0.5 * (t + s), second_at_x_m=False)

    return {"targets": {"shortcut": target}}


@mutant(
    "shortcut.sum_not_average",
    objective="shortcut",
    description="the two half-step velocities summed instead of averaged",
)
def shortcut_sum_not_average():
    def target(net, x, t, s):
        return _shortcut(net, x, t, s, m_of=lambda t, s: 0.5 * (t + s), average=False)

    return {"targets": {"shortcut": target}}


@mutant(
    "shortcut.midpoint_from_step_size",
    objective="shortcut",
    description="midpoint m = (t - s) / 2: half the step size used as a time",
)
def shortcut_midpoint_from_step_size():
    def target(net, x, t, s):
        return _shortcut(net, x, t, s, m_of=lambda t, s: 0.5 * (t - s))

    return {"targets": {"shortcut": target}}
