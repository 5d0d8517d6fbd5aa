"""Errors of a learned flow map against the teacher's exact flow map."""

from __future__ import annotations

import torch

from ..reference_models import ExactFlowMap
from .models import FlowMapModel

__all__ = ["one_step_error", "rmse"]


def rmse(pred: torch.Tensor, exact: torch.Tensor) -> float:
    """``sqrt(E || pred - exact ||^2)`` over the rows of two ``(n, d)`` point sets (float64)."""
    diff = pred.to(torch.float64) - exact.to(torch.float64)
    return float(diff.pow(2).sum(dim=1).mean().sqrt())


@torch.no_grad()
def one_step_error(
    model: FlowMapModel, flow_map: ExactFlowMap, *, n: int = 2048, seed: int = 1234
) -> float:
    """RMSE of one generative step: ``sqrt(E || f(x1, 1, 0) - Phi_{1->0}(x1) ||^2)``.

    Arguments:
        model: the learned flow map.
        flow_map: the exact teacher flow map.
        n: number of noise samples ``x1 ~ N(0, I)``.
        seed: seed of the noise draw (the same points for every model compared).
    """
    gen = torch.Generator().manual_seed(seed)
    d = flow_map.teacher.dim
    x1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    exact = flow_map(x1, 1.0, 0.0)
    dtype = next(model.parameters(), exact).dtype
    ones, zeros = torch.ones(n, dtype=dtype), torch.zeros(n, dtype=dtype)
    pred = model.flow(x1.to(dtype), ones, zeros)
    return rmse(pred, exact)
