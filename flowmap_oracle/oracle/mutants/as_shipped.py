"""The catalogue's mutants, handed over as black-box losses.

Research code does not expose its target: the same bug reaches the oracle inside a loss that
draws its own times and noise. :func:`as_shipped_losses` composes a mutant's (or the reference's)
target or loss into such a loss, written as training code writes it (uniform times with a quarter
of the batch on the diagonal, ``z = (1 - t) x + t e``, an L2 regression onto the stop-gradient
target), and :func:`run_mutant_as_shipped` runs the as-shipped checks (:mod:`..shipped`) on it.
``tests/test_mutants.py`` requires these mutants killed this way too, and the reference composed
the same way to pass.

Flow matching and MeanFlow regress onto the conditional velocity; SplitMeanFlow, Shortcut, FACM's
consistency target, sCM's tangent and AYF-EMD / AYF-LMD distil from the teacher's velocity (the
velocity the methods' own distillation losses use), where the exact map is a pointwise fixed point
and the stationarity check is exact:

* SplitMeanFlow and Shortcut: ``||F(z, t, s) - sg(target)||^2`` plus the boundary
  ``||F(z, t, t) - v(z, t)||^2``;
* FACM: ``||F(z, t, 0) - sg(target(z, t, v))||^2`` (its consistency target at ``s = 0``);
* sCM: the surrogate ``||f - sg(f - g)||^2 / 2`` with ``f = z - t F(z, t, 0)`` and ``g`` the
  implementation's tangent ``d f / dt`` (its gradient is ``g^T d f / d theta``);
* AYF-EMD and AYF-LMD: the implementation's own loss with the teacher's velocity, on pairs in both
  directions.

What cannot be expressed as a black box is listed in :data:`NOT_EXPRESSIBLE` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..implementation import Implementation
from ..shipped import ShippedLoss, run_shipped_checks

__all__ = [
    "METHODS",
    "NOT_EXPRESSIBLE",
    "ShippedMutantResult",
    "as_shipped_losses",
    "run_mutant_as_shipped",
]


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


def _split_from_target(target: Callable) -> Callable:
    def loss(model, x, teacher):
        t, s = _times(x.shape[0], x.dtype)
        r = s + torch.rand(x.shape[0], dtype=x.dtype) * (t - s)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        split = (model(z, t, s) - target(model, z, t, s, r).detach()).pow(2).sum(dim=1)
        boundary = (model(z, t, t) - teacher(z, t)).pow(2).sum(dim=1)
        return (split + boundary).mean()

    return loss


def _shortcut_from_target(target: Callable) -> Callable:
    def loss(model, x, teacher):
        t, s = _times(x.shape[0], x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        consistency = (model(z, t, s) - target(model, z, t, s).detach()).pow(2).sum(dim=1)
        boundary = (model(z, t, t) - teacher(z, t)).pow(2).sum(dim=1)
        return (consistency + boundary).mean()

    return loss


def _facm_from_target(target: Callable) -> Callable:
    def loss(model, x, teacher):
        t, _ = _times(x.shape[0], x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        zero = torch.zeros_like(t)
        return (
            (model(z, t, zero) - target(model, z, t, teacher(z, t)).detach()).pow(2).sum(1).mean()
        )

    return loss


def _scm_from_target(target: Callable) -> Callable:
    def loss(model, x, teacher):
        t, _ = _times(x.shape[0], x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        f = z - t[:, None] * model(z, t, torch.zeros_like(t))
        g = target(model, z, t, teacher(z, t))
        return 0.5 * (f - (f - g).detach()).pow(2).sum(dim=1).mean()

    return loss


def _ayf_from_loss(explicit: Callable) -> Callable:
    def loss(model, x, teacher):
        n = x.shape[0]
        t = 0.02 + 0.96 * torch.rand(n, dtype=x.dtype)
        s = 0.02 + 0.96 * torch.rand(n, dtype=x.dtype)
        return explicit(model, x, torch.randn_like(x), t, s, teacher)

    return loss


TEACHER_TARGETS: dict[str, Callable[[Callable], Callable]] = {
    "split_meanflow": _split_from_target,
    "shortcut": _shortcut_from_target,
    "facm": _facm_from_target,
    "scm": _scm_from_target,
}
"""Methods whose target is composed into a distillation loss (teacher velocity)."""
TEACHER_LOSSES: dict[str, Callable[[Callable], Callable]] = {
    "ayf_emd": _ayf_from_loss,
    "ayf_lmd": _ayf_from_loss,
}
"""Methods whose own loss takes the teacher's velocity and is composed as it is."""
METHODS = ("flow_matching", "meanflow", *TEACHER_TARGETS, *TEACHER_LOSSES)
"""The methods whose mutants are handed over as black-box losses."""

NOT_EXPRESSIBLE: dict[str, str] = {
    "meanflow.no_stop_gradient": (
        "composed into a loss that detaches its target (as training code does), the bug is gone; "
        "an un-detached target changes the training dynamics, not the fixed point"
    ),
    "meanflow.no_grad_as_stop_gradient": (
        "the same: the composed loss detaches; the forward-mode leak changes the dynamics only"
    ),
    "facm.anchor_at_t": (
        "FACM's loss queries the network at the expanded time 2 - t, outside the path [0, 1] on "
        "which the oracle's instrumented network is the exact map: its loss is not composed"
    ),
    "facm.norm_l2_squares_twice": (
        "a weighting of the residual's norm (and FACM's loss leaves the path, above): the "
        "as-shipped checks accept every such weighting by design"
    ),
    "facm.time_weight_reversed": (
        "a time weighting (and FACM's loss leaves the path, above): the as-shipped checks accept "
        "every time weighting by design"
    ),
}
"""Mutants of :data:`METHODS` that the as-shipped checks cannot kill as black boxes, and why
(the explicit-input checks kill each)."""


def as_shipped_losses(impl: Implementation, *, prefer: str = "targets") -> dict[str, ShippedLoss]:
    """``impl``'s targets and losses of :data:`METHODS` as black-box losses: the MeanFlow target
    (or loss; ``prefer="losses"`` takes the loss where both exist), the flow-matching loss, the
    targets of :data:`TEACHER_TARGETS` and the losses of :data:`TEACHER_LOSSES`."""
    out: dict[str, ShippedLoss] = {}
    for method, compose in TEACHER_TARGETS.items():
        if method in impl.targets:
            out[method] = ShippedLoss(compose(impl.targets[method]), velocity="teacher")
    for method, compose in TEACHER_LOSSES.items():
        if method in impl.losses:
            out[method] = ShippedLoss(
                compose(impl.losses[method]), velocity="teacher", both_directions=True
            )
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
