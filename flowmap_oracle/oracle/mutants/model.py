"""Mutants of the flow-map step built from a network."""

from __future__ import annotations

from ._registry import mutant


@mutant(
    "model.c_out_t_minus_s",
    objective="model",
    description="the one-step map x + (t - s) F: c_out = t - s instead of s - t",
)
def c_out_t_minus_s():
    return {"flow_map": lambda net, x, t, s: x + (t - s)[:, None] * net(x, t, s)}
