"""MeanFlow mutants: each is the reference with one wrong target or loss."""

from __future__ import annotations

import torch

from ._registry import mutant


def _jvp(net, x, t, s, v, tangent_t, tangent_s):
    return torch.func.jvp(net, (x, t, s), (v, tangent_t, tangent_s))


@mutant(
    "meanflow.sign_of_t_minus_s",
    objective="meanflow",
    description=(
        "F_tgt = v + (t - s) dF/dt: the sign of the (t - s) term flipped (the identity "
        "rearranged wrongly); invisible on straight flows"
    ),
)
def sign_of_t_minus_s():
    def target(net, x, t, s, v):
        _, dF = _jvp(net, x, t, s, v, torch.ones_like(t), torch.zeros_like(s))
        return (v + (t - s)[:, None] * dF).detach()

    return {"targets": {"meanflow": target}}
