"""What a shipped loss declares about itself, so that its *value* can be checked exactly.

The as-shipped invariant checks (times, alignment, stationarity, descent) hold for every
weighting, distance and reduction, so they cannot tell a correct adaptive weight from one that
squares the error twice. A user who writes down what their loss does, next to the loss::

    ShippedLoss(
        meanflow_loss,
        declared=Declared(distance=Adaptive(p=0.5, c=1e-3), reduction="mean"),
    )

gets the value check ``<method>.shipped.value``
(:mod:`~flowmap_oracle.oracle.shipped_value`): the oracle rebuilds the declared loss from the
network calls it recorded and compares its value, and the gradient it sends to every network
output, with the user's. Whatever is not declared is not assumed: without a declaration the value
check is skipped with the reason, and the invariant checks run as before.

The per-sample loss is ``weight(t, s) * distance(q)`` with ``q`` the squared norm of the
sample's residual (the difference the loss compares: the network output against its stop-gradient
target for flow matching and MeanFlow, the online against the target consistency function for
discrete consistency, the normalised tangent for sCM), summed or averaged over the sample's
entries as ``reduction`` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

__all__ = ["L2", "Adaptive", "Declared", "JvpTangent", "PseudoHuber", "Reduction"]

Reduction = Literal["mean", "sum_mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum_mean", "sum")
JvpTangent = Literal["conditional", "teacher", "model"]
JVP_TANGENTS: tuple[str, ...] = ("conditional", "teacher", "model")


def _positive(value: Any, name: str, *, zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        bound = "non-negative" if zero else "positive"
        raise ValueError(f"{name} must be a finite {bound} number, got {value!r}")


@dataclass(frozen=True)
class L2:
    """The squared norm itself: ``distance(q) = q`` (plain mean squared error)."""

    def __call__(self, q: Tensor) -> Tensor:
        return q


@dataclass(frozen=True)
class Adaptive:
    """MeanFlow's adaptive L2: ``distance(q) = q / sg(q + c)^p`` (``sg`` the stop-gradient).

    Arguments:
        p: the power of the detached normaliser (MeanFlow's ``1 - gamma``; ``p = 0`` is L2,
            ``p = 0.5`` a robust, ``p = 1`` a normalised L2).
        c: the constant that keeps the weight finite at ``q = 0`` (MeanFlow: ``1e-3``).
    """

    p: float
    c: float = 1e-3

    def __post_init__(self) -> None:
        _positive(self.p, "Adaptive.p", zero=True)
        _positive(self.c, "Adaptive.c")

    def __call__(self, q: Tensor) -> Tensor:
        return q / (q.detach() + self.c) ** self.p


@dataclass(frozen=True)
class PseudoHuber:
    """The pseudo-Huber distance ``sqrt(q + c^2) - c`` (improved consistency training, ECT).

    Arguments:
        c: the constant, in the residual's units (iCT: ``0.00054 sqrt(d)`` for ``d`` entries).
    """

    c: float

    def __post_init__(self) -> None:
        _positive(self.c, "PseudoHuber.c")

    def __call__(self, q: Tensor) -> Tensor:
        return (q + self.c**2).sqrt() - self.c


Distance = L2 | Adaptive | PseudoHuber


@dataclass(frozen=True)
class Declared:
    """The extras a shipped loss declares: its value is then checked exactly.

    Arguments:
        distance: :class:`L2` (default), :class:`Adaptive` or :class:`PseudoHuber`, applied to
            each sample's squared residual norm ``q``.
        weight: ``weight(t, s) -> (N,)`` per-sample weights in the user's own time variable
            (torch tensors of shape ``(N,)``): ``t`` the time of the trained call, ``s`` its end
            (MeanFlow's ``r``; the target's time ``r`` for discrete consistency, e.g.
            ``lambda t, r: 1 / (t - r)`` with EDM's sigma; the data end for sCM). ``None``: 1.
        reduction: ``"mean"``: ``q`` is the mean over the sample's entries and the batch is
            averaged (``F.mse_loss``); ``"sum_mean"``: ``q`` sums over the entries, the batch is
            averaged; ``"sum"``: both summed.
        tangent_normalisation: sCM's and AYF-EMD's ``c`` in ``g / (||g|| + c)`` (``None``: the
            tangent is not normalised). The norm is taken over each sample's entries.
        tangent_scale: sCM's tangent as the loss writes it, per unit of the consistency
            function's derivative in the user's own time, ``g = tangent_scale(t) df/dt``
            (TrigFlow's sCM: ``torch.cos``). ``None``: 1.
        reset_fraction: the fraction of the loss's trained rows on the diagonal ``s = t``
            (MeanFlow's flow-matching share; ``None``: not declared). Checked by a binomial test.
        flow_matching_term: the coefficient of an extra flow-matching term computed on a
            second network call on the diagonal (MeanFlow plus ``lambda`` times flow matching),
            with the same distance, weight and reduction (``None``: no extra term).
        jvp_tangent: MeanFlow's velocity along which ``dF/dt`` is taken (the JVP's tangent,
            ``(v_tan, 1, 0)``), the regression target staying the loss's ``velocity``:
            ``"conditional"`` (``x1 - x0``), ``"teacher"`` (the teacher's ``v(x_t, t)``; the
            loss must be handed the teacher, ``ShippedLoss(velocity="teacher")``) or
            ``"model"`` (the network's own instantaneous velocity ``F(x_t, t, t)``, detached,
            as improved and two-head MeanFlow variants take it). ``None``: the velocity the loss
            regresses onto.
    """

    distance: Distance = L2()
    weight: Callable[[Tensor, Tensor], Tensor] | None = None
    reduction: Reduction = "mean"
    tangent_normalisation: float | None = None
    tangent_scale: Callable[[Tensor], Tensor] | None = None
    reset_fraction: float | None = None
    flow_matching_term: float | None = None
    jvp_tangent: JvpTangent | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.distance, L2 | Adaptive | PseudoHuber):
            raise TypeError(
                "Declared.distance must be L2(), Adaptive(p, c) or PseudoHuber(c), got "
                f"{type(self.distance).__name__}"
            )
        if self.weight is not None and not callable(self.weight):
            raise TypeError("Declared.weight must be a callable weight(t, s) or None")
        if self.tangent_scale is not None and not callable(self.tangent_scale):
            raise TypeError("Declared.tangent_scale must be a callable tangent_scale(t) or None")
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"Declared.reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}"
            )
        if self.tangent_normalisation is not None:
            _positive(self.tangent_normalisation, "Declared.tangent_normalisation", zero=True)
        if self.flow_matching_term is not None:
            _positive(self.flow_matching_term, "Declared.flow_matching_term")
        if self.jvp_tangent is not None and self.jvp_tangent not in JVP_TANGENTS:
            raise ValueError(
                f"Declared.jvp_tangent must be one of {', '.join(JVP_TANGENTS)} or None, got "
                f"{self.jvp_tangent!r}"
            )
        r = self.reset_fraction
        if r is not None:
            ok = isinstance(r, int | float) and not isinstance(r, bool) and 0.0 <= r <= 1.0
            if not ok:
                raise ValueError(f"Declared.reset_fraction must be in [0, 1], got {r!r}")

    def problem_for(self, method: str) -> str | None:
        """Why this declaration cannot describe a ``method`` loss (one line), or ``None``.

        Checked when an :class:`~flowmap_oracle.oracle.Implementation` is built and before any
        as-shipped check runs, so a mismatched declaration stops the run before any work.
        """
        if self.tangent_scale is not None and method != "scm":
            return (
                f"tangent_normalisation and tangent_scale describe sCM's tangent; the {method} "
                "loss declares a tangent_scale"
            )
        if self.tangent_normalisation is not None and method not in ("scm", "ayf_emd"):
            return (
                "tangent_normalisation and tangent_scale describe sCM's tangent "
                f"(tangent_normalisation also AYF-EMD's); the {method} loss declares one"
            )
        if self.jvp_tangent is not None and method != "meanflow":
            return f"jvp_tangent is a MeanFlow extra; the {method} loss declares one"
        if self.flow_matching_term is not None and method != "meanflow":
            return f"flow_matching_term is a MeanFlow extra; the {method} loss declares one"
        return None

    @property
    def declares_tangent(self) -> bool:
        """Whether an sCM tangent normalisation or scale is declared."""
        return self.tangent_normalisation is not None or self.tangent_scale is not None

    def describe(self) -> str:
        """One line naming what is declared (for messages)."""
        d = self.distance
        parts = [
            {
                L2: "L2",
                Adaptive: f"adaptive L2 (p = {getattr(d, 'p', 0):g}, c = {getattr(d, 'c', 0):g})",
                PseudoHuber: f"pseudo-Huber (c = {getattr(d, 'c', 0):g})",
            }[type(d)],
            f"reduction {self.reduction!r}",
        ]
        if self.weight is not None:
            parts.append("a weight(t, s)")
        if self.tangent_normalisation is not None:
            parts.append(f"tangent normalisation c = {self.tangent_normalisation:g}")
        if self.tangent_scale is not None:
            parts.append("a tangent scale")
        if self.flow_matching_term is not None:
            parts.append(f"a flow-matching term x {self.flow_matching_term:g}")
        if self.jvp_tangent is not None:
            parts.append(f"the JVP along the {self.jvp_tangent} velocity")
        return ", ".join(parts)
