"""Per-sample distances used by the objectives, on residuals ``r = a - b`` of shape ``(N, d)``.

* squared L2: ``||r||^2``;
* pseudo-Huber (improved consistency training): ``sqrt(||r||^2 + c^2) - c``;
* adaptive L2 (MeanFlow): ``||r||^2 / sg((||r||^2 + c)^p)``; ``p = 0`` is plain L2 and FACM's
  norm-L2 loss ``||r||^2 / sg(sqrt(||r||^2 + c))`` is ``p = 1/2``;
* cosine distance (FACM's flow-matching anchor): ``1 - <a, b> / (||a|| ||b||)``.

Only the squared L2 distance is linear in the residual's square, so only it keeps an unbiased
expected gradient when the target is built from the conditional velocity ``x1 - x0``
(MATH.md section 4); the others are biased on a multi-modal teacher.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["adaptive_l2", "consistency_distance", "cosine_distance", "pseudo_huber", "squared_l2"]


def squared_l2(r: Tensor) -> Tensor:
    """``||r_i||^2`` per sample, shape ``(N,)``."""
    return r.pow(2).sum(dim=1)


def pseudo_huber(r: Tensor, *, c: float) -> Tensor:
    """``sqrt(||r_i||^2 + c^2) - c`` per sample; ``c > 0``."""
    if not c > 0:
        raise ValueError(f"pseudo-Huber constant c must be positive, got {c}")
    return torch.sqrt(squared_l2(r) + c * c) - c


def consistency_distance(
    r: Tensor, *, distance: Literal["l2", "pseudo_huber"], huber_c: float | None
) -> Tensor:
    """The consistency models' distance per sample: ``||r_i||^2`` or pseudo-Huber.

    ``huber_c`` defaults to improved consistency training's ``c = 0.00054 sqrt(d)``.
    """
    if distance == "l2":
        return squared_l2(r)
    if distance == "pseudo_huber":
        return pseudo_huber(r, c=0.00054 * r.shape[1] ** 0.5 if huber_c is None else huber_c)
    raise ValueError(f"distance must be 'l2' or 'pseudo_huber', got {distance!r}")


def adaptive_l2(r: Tensor, *, p: float, c: float) -> Tensor:
    """``||r_i||^2 / sg((||r_i||^2 + c)^p)`` per sample (MeanFlow's adaptive weight)."""
    if p < 0:
        raise ValueError(f"adaptive-weight power p must be non-negative, got {p}")
    if not c > 0:
        raise ValueError(f"adaptive-weight constant c must be positive, got {c}")
    sq = squared_l2(r)
    if p == 0:
        return sq
    return sq / (sq.detach() + c) ** p


def cosine_distance(a: Tensor, b: Tensor, *, eps: float = 1e-12) -> Tensor:
    """``1 - <a_i, b_i> / (||a_i|| ||b_i||)`` per sample (norms clamped below by ``eps``)."""
    na = a.norm(dim=1).clamp_min(eps)
    nb = b.norm(dim=1).clamp_min(eps)
    return 1 - (a * b).sum(dim=1) / (na * nb)
