"""The catalogue's flow-matching and MeanFlow mutants, handed over as black-box losses.

Research code does not expose its target: the same bug reaches the oracle inside a loss that
draws its own times and noise. :func:`as_shipped_losses` composes a mutant's (or the reference's)
MeanFlow target or flow-matching loss into such a loss, written as training code writes it
(uniform times with a quarter of the batch on the diagonal, ``z = (1 - t) x + t e``, an L2
regression onto the stop-gradient target), and :func:`run_mutant_as_shipped` runs the as-shipped
checks (:mod:`..shipped`) on it. ``tests/test_mutants.py`` requires these mutants killed this way
too, and the reference composed the same way to pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..implementation import Implementation
from ..shipped import ShippedLoss, run_shipped_checks

__all__ = ["ShippedMutantResult", "as_shipped_losses", "run_mutant_as_shipped"]


def _times(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    t = 0.02 + 0.96 * torch.rand(n, dtype=dtype)
    s = t * torch.rand(n, dtype=dtype)
    return t, torch.where(torch.rand(n) < 0.25, t, s)


def _meanflow_from_target(target: Callable) -> Callable:
    def loss(model, x):
        t, s = _times(x.shape[0], x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        u = model(z, t, s)
        u_tgt = target(model, z, t, s, e - x)
        return (u - u_tgt.detach()).pow(2).sum(dim=1).mean()

    return loss


def _meanflow_from_loss(explicit: Callable) -> Callable:
    def loss(model, x):
        t, s = _times(x.shape[0], x.dtype)
        return explicit(model, x, torch.randn_like(x), t, s)

    return loss


def _flow_matching_from_loss(explicit: Callable) -> Callable:
    def loss(model, x):
        t, _ = _times(x.shape[0], x.dtype)
        return explicit(model, x, torch.randn_like(x), t)

    return loss


def as_shipped_losses(impl: Implementation, *, prefer: str = "targets") -> dict[str, ShippedLoss]:
    """``impl``'s MeanFlow target (or loss; ``prefer="losses"`` takes the loss where both
    exist) and flow-matching loss as black-box losses."""
    out: dict[str, ShippedLoss] = {}
    if "meanflow" in impl.losses and (prefer == "losses" or "meanflow" not in impl.targets):
        out["meanflow"] = ShippedLoss(_meanflow_from_loss(impl.losses["meanflow"]))
    elif "meanflow" in impl.targets:
        out["meanflow"] = ShippedLoss(_meanflow_from_target(impl.targets["meanflow"]))
    if "flow_matching" in impl.losses:
        out["flow_matching"] = ShippedLoss(_flow_matching_from_loss(impl.losses["flow_matching"]))
    return out


@dataclass(frozen=True)
class ShippedMutantResult:
    """Whether the as-shipped checks killed a mutant, and which check did."""

    mutant: str
    killed: bool
    by: str | None
    message: str


def run_mutant_as_shipped(
    impl: Implementation,
    *,
    name: str,
    method: str,
    prefer: str = "targets",
    repeats: int = 16,
) -> ShippedMutantResult:
    """Run the as-shipped checks on ``impl``'s ``method`` composed as a black-box loss
    (``prefer``: compose the target or the loss where the implementation has both)."""
    losses = {k: v for k, v in as_shipped_losses(impl, prefer=prefer).items() if k == method}
    if not losses:
        raise ValueError(f"{name}: no {method} target or loss to compose into a black-box loss")
    results = run_shipped_checks(impl.conventions, losses=losses, repeats=repeats)
    failed = [r for r in results if r.status == "fail"]
    by = failed[0] if failed else None
    return ShippedMutantResult(
        name,
        killed=by is not None,
        by=None if by is None else by.check,
        message="survived every as-shipped check" if by is None else by.message.splitlines()[0],
    )
