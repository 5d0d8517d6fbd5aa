"""Align Your Flow mutants."""

from __future__ import annotations

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


@mutant(
    "ayf_lmd.velocity_at_x_t",
    objective="ayf_lmd",
    description="AYF-LMD's teacher queried at (x_t, t) instead of the predicted point (x_s, s)",
)
def ayf_lmd_velocity_at_x_t():
    def loss(net, data, noise, t, s, velocity):
        x = (1 - _c(t)) * data + _c(t) * noise
        zeros = torch.zeros_like(t)
        f, df_ds = torch.func.jvp(
            _flow(net), (x, t, s), (torch.zeros_like(x), zeros, torch.ones_like(s))
        )
        r_l = df_ds.detach() - velocity(x, t)
        return _surrogate(f, _c(torch.sign(s - t)) * r_l)

    return {"losses": {"ayf_lmd": loss}}


@mutant(
    "ayf_lmd.sign_t_minus_s",
    objective="ayf_lmd",
    description="AYF-LMD with sign(t - s) (EMD's sign) instead of sign(s - t)",
)
def ayf_lmd_sign_t_minus_s():
    def loss(net, data, noise, t, s, velocity):
        x = (1 - _c(t)) * data + _c(t) * noise
        zeros = torch.zeros_like(t)
        f, df_ds = torch.func.jvp(
            _flow(net), (x, t, s), (torch.zeros_like(x), zeros, torch.ones_like(s))
        )
        r_l = df_ds.detach() - velocity(f.detach(), s)
        return _surrogate(f, _c(torch.sign(t - s)) * r_l)

    return {"losses": {"ayf_lmd": loss}}
