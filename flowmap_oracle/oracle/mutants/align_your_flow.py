"""Align Your Flow mutants."""

from __future__ import annotations

from functools import partial

import torch

from ._registry import mutant


def _c(t):
    return t[:, None]


def _flow(net):
    return lambda x, t, s: x + _c(s - t) * net(x, t, s)


def _surrogate(f, direction):
    return 0.5 * (f - (f - direction).detach()).pow(2).sum(dim=1).mean()


@mutant(
    "ayf_emd.sign_dropped",
    objective="ayf_emd",
    description="AYF-EMD without sign(t - s): the gradient points the wrong way for s > t",
)
def ayf_emd_sign_dropped():
    def loss(net, data, noise, t, s, velocity):
        x = (1 - _c(t)) * data + _c(t) * noise
        v = velocity(x, t)
        f, df = torch.func.jvp(_flow(net), (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
        return _surrogate(f, df.detach())

    return {"losses": {"ayf_emd": loss}}


def _lmd(net, data, noise, t, s, velocity, *, teacher_at_x_t=False, sign_of=lambda t, s: s - t):
    """AYF-LMD's surrogate with direction ``sign(s - t) (d_s f - v(f, s))`` (teacher at the
    predicted point and end time); the teacher's point and the sign can be replaced."""
    x = (1 - _c(t)) * data + _c(t) * noise
    zeros = torch.zeros_like(t)
    f, df_ds = torch.func.jvp(
        _flow(net), (x, t, s), (torch.zeros_like(x), zeros, torch.ones_like(s))
    )
    v = velocity(x, t) if teacher_at_x_t else velocity(f.detach(), s)
    return _surrogate(f, _c(torch.sign(sign_of(t, s))) * (df_ds.detach() - v))


@mutant(
    "ayf_lmd.velocity_at_x_t",
    objective="ayf_lmd",
    description="AYF-LMD's teacher queried at (x_t, t) instead of the predicted point (x_s, s)",
)
def ayf_lmd_velocity_at_x_t():
    return {"losses": {"ayf_lmd": partial(_lmd, teacher_at_x_t=True)}}


@mutant(
    "ayf_lmd.sign_t_minus_s",
    objective="ayf_lmd",
    description="AYF-LMD with sign(t - s) (EMD's sign) instead of sign(s - t)",
)
def ayf_lmd_sign_t_minus_s():
    return {"losses": {"ayf_lmd": partial(_lmd, sign_of=lambda t, s: t - s)}}
