"""The reference implementation as an :class:`Implementation` (the oracle's default target).

It wraps the project's own objectives (:mod:`flowmap_oracle.numerics.objectives`) in the
oracle's protocols, in the project's convention. ``pytest`` without ``--impl`` runs every check
against it; it must pass them all (asserted in the tests).
"""

from __future__ import annotations

from torch import Tensor

from ..objectives.meanflow import meanflow_loss, meanflow_target
from .implementation import Implementation

__all__ = ["implementation"]


def _meanflow_target(net, x: Tensor, t: Tensor, s: Tensor, v: Tensor) -> Tensor:
    return meanflow_target(net, x, t, s, v)[1]


def _meanflow_loss(net, data: Tensor, noise: Tensor, t: Tensor, s: Tensor) -> Tensor:
    return meanflow_loss(net, data, noise, t, s).loss


def _flow_map(net, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    return x + (s - t)[:, None] * net(x, t, s)


def implementation() -> Implementation:
    """The reference implementation (torch, float64, the project's convention)."""
    return Implementation(
        name="flowmap-oracle reference",
        conventions={},
        targets={"meanflow": _meanflow_target},
        losses={"meanflow": _meanflow_loss},
        flow_map=_flow_map,
        description="the project's own objectives, flowmap_oracle.numerics.objectives",
    )
