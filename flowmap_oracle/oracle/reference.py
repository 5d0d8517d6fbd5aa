"""The reference implementation as an :class:`Implementation` (the oracle's default target).

It wraps the project's own objectives (:mod:`flowmap_oracle.objectives`) in the
oracle's protocols (:data:`~.implementation.PROTOCOLS`), in the project's convention. ``pytest``
without ``--impl`` runs every check against it; it must pass them all (asserted in the tests).
Each wrapper only adapts the call; the mathematics is in the objective modules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..conventions import flow_step, interpolant, path_named
from ..objectives import (
    ayf_emd_loss,
    ayf_lmd_loss,
    consistency_loss,
    consistency_tangent,
    ctm_loss,
    esd_loss,
    facm_loss,
    flow_matching_loss,
    fmm_eulerian_loss,
    fmm_lagrangian_loss,
    imm_loss,
    lsd_loss,
    meanflow_loss,
    meanflow_target,
    psd_loss,
    reflow_couplings,
    reflow_loss,
    scm_loss,
    shortcut_loss,
    shortcut_residual,
    split_meanflow_loss,
    split_target,
)
from ..reference_models.paths import ProbabilityPath
from .implementation import Implementation

__all__ = ["implementation", "reference_implementation"]


def _ctm(path: ProbabilityPath):
    """CTM compared in data space. :func:`ctm_loss` freezes ``nn.Module`` parameters itself; the
    protocol's ``net`` is a plain callable, so the frozen data-space map ``sg(f_{s->0})`` uses the
    stop-gradient copy ``net_sg`` here (the oracle's check compares this with ``ctm_loss`` on a
    module)."""

    def loss(net, net_sg, data, noise, t, r, s, solver) -> Tensor:
        b = ctm_loss(net_sg, data, noise, t, r, s, solver=solver, compare="s", path=path).target
        if b is None:
            raise RuntimeError("ctm_loss returned no target")
        x_t = interpolant(path, data, noise, t)
        a = flow_step(x_t, net(x_t, t, s), t, s)
        zeros = torch.zeros_like(s)

        def to_data(x: Tensor) -> Tensor:
            return flow_step(x, net_sg(x, s, zeros), s, zeros)

        return (to_data(a) - to_data(b).detach()).pow(2).sum(dim=1).mean()

    return loss


def implementation() -> Implementation:
    """The reference implementation (torch, float64, the project's convention, linear path)."""
    return reference_implementation()


def reference_implementation(path: str = "linear") -> Implementation:
    """The reference implementation on the named path (one of
    :data:`~flowmap_oracle.conventions.PATH_NAMES`): every loss interpolates on it, and the oracle
    checks it against a teacher on the same path."""
    P = path_named(path)
    return Implementation(
        name="flowmap-oracle reference" + ("" if path == "linear" else f" ({path} path)"),
        conventions={} if path == "linear" else {"path": path},
        targets={
            "meanflow": lambda net, x, t, s, v: meanflow_target(net, x, t, s, v)[1],
            "facm": lambda net, x, t, v: meanflow_target(net, x, t, torch.zeros_like(t), v)[1],
            "split_meanflow": lambda net, x, t, s, r: split_target(net, x, t, r, s)[1],
            "shortcut": lambda net, x, t, s: shortcut_residual(net, x, t, s, space="velocity")[1],
            "scm": lambda net, x, t, v: consistency_tangent(net, x, t, v)[1],
            "reflow": lambda solver, noise: reflow_couplings(solver, noise),
        },
        losses={
            "flow_matching": lambda net, data, noise, t: (
                flow_matching_loss(net, data, noise, t, path=P).loss
            ),
            "meanflow": lambda net, data, noise, t, s: (
                meanflow_loss(net, data, noise, t, s, path=P).loss
            ),
            "facm": lambda net, data, noise, t: facm_loss(net, data, noise, t, path=P).loss,
            "split_meanflow": lambda net, data, noise, t, r, s: (
                split_meanflow_loss(net, data, noise, t, r, s, path=P).loss
            ),
            "shortcut": lambda net, data, noise, t, s: (
                shortcut_loss(net, data, noise, t, s, space="velocity", path=P).loss
            ),
            "consistency": lambda net, data, noise, t, t_prev: (
                consistency_loss(net, data, noise, t, delta_t=t - t_prev, solver=None, path=P).loss
            ),
            "scm": lambda net, data, noise, t, velocity: (
                scm_loss(net, data, noise, t, velocity=velocity, path=P).loss
            ),
            "ayf_emd": lambda net, data, noise, t, s, velocity: (
                ayf_emd_loss(net, data, noise, t, s, velocity=velocity, path=P).loss
            ),
            "ayf_lmd": lambda net, data, noise, t, s, velocity: (
                ayf_lmd_loss(net, data, noise, t, s, velocity=velocity, path=P).loss
            ),
            "ctm": _ctm(P),
            "imm": lambda net, data, noise, t, r, s: (
                imm_loss(net, data, noise, t, r, s, group_size=4, bandwidth=1.0, path=P).loss
            ),
            "reflow": lambda net, coupled, noise, t: (
                reflow_loss(net, coupled, noise, t, path=P).loss
            ),
            "fmm_lagrangian": lambda net, data, noise, t, s, velocity: (
                fmm_lagrangian_loss(net, data, noise, t, s, velocity=velocity, path=P).loss
            ),
            "fmm_eulerian": lambda net, data, noise, t, s, velocity: (
                fmm_eulerian_loss(net, data, noise, t, s, velocity=velocity, path=P).loss
            ),
            "lsd": lambda net, data, noise, t, s: lsd_loss(net, data, noise, t, s, path=P).loss,
            "esd": lambda net, data, noise, t, s: esd_loss(net, data, noise, t, s, path=P).loss,
            "psd": lambda net, data, noise, t, u, s: (
                psd_loss(net, data, noise, t, u, s, path=P).loss
            ),
        },
        flow_map=lambda net, x, t, s: flow_step(x, net(x, t, s), t, s),
        description="the project's own objectives, flowmap_oracle.objectives",
    )
