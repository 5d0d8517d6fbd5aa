"""What a check reports: the case it ran, the mismatch it found, and its result.

A failing check says what differs and where: the check, the inputs (:class:`Case` and the
settings), expected against got at the worst entry, the largest error and its index, how many
entries are outside the tolerance, and a Python snippet that reproduces the failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

import torch
from torch import Tensor

from .tolerances import Tolerance

__all__ = [
    "Case",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Mismatch",
    "SkipReason",
    "Status",
    "compare",
]

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class Case:
    """The random inputs of one evaluation of a check.

    Attributes:
        seed: seeds the points, the noise and the random network.
        t, s: start and end time shared by the batch, or ``None`` for per-sample times drawn from
            ``seed`` (uniform in the check's domain).
        r: an intermediate time (split objectives), a fraction in ``(0, 1)`` of the way from
            ``s`` to ``t``, or ``None`` for per-sample fractions.
    """

    seed: int
    t: float | None = None
    s: float | None = None
    r: float | None = None

    def describe(self) -> str:
        parts = [f"seed={self.seed}"]
        for name in ("t", "s", "r"):
            value = getattr(self, name)
            parts.append(f"{name}={'per-sample' if value is None else repr(value)}")
        return ", ".join(parts)

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Mismatch:
    """Where an implementation's output differs from the reference.

    Attributes:
        quantity: what was compared, in words (with the convention it is expressed in).
        max_error: the largest ``|got - expected|``.
        index: the index of the entry that violates the tolerance most.
        expected, got: the values at ``index``.
        expected_row, got_row: the whole sample (row) at ``index[0]`` when the arrays are 2-D.
        n_bad, n_total: entries outside the tolerance, and all entries.
        tolerance: the tolerance that was applied.
        inputs: the inputs at that sample (times of the row, for per-sample times).
    """

    quantity: str
    max_error: float
    index: tuple[int, ...]
    expected: float
    got: float
    n_bad: int
    n_total: int
    tolerance: Tolerance
    expected_row: list[float] | None = None
    got_row: list[float] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [
            f"{self.quantity} differs from the reference",
            f"  largest error {self.max_error:.3e}; worst entry at index {self.index}: "
            f"expected {self.expected:.10g}, got {self.got:.10g}",
            f"  {self.n_bad} of {self.n_total} entries outside the tolerance "
            f"({self.tolerance.describe()}: {self.tolerance.reason})",
        ]
        if self.expected_row is not None:
            lines.append(
                f"  sample {self.index[0]}: expected {_fmt(self.expected_row)}, "
                f"got {_fmt(self.got_row)}"
            )
        if self.inputs:
            lines.append(
                "  at " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.inputs.items())
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tolerance"] = asdict(self.tolerance)
        out["index"] = list(self.index)
        return out


class CheckFailure(AssertionError):
    """Raised inside a check body: the implementation disagrees with the reference (or broke)."""

    def __init__(self, message: str, *, mismatch: Mismatch | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.mismatch = mismatch
        self.case: Case | None = None


class SkipReason(StrEnum):
    """Why a check did not run (data, so that tools need not read message text)."""

    NOT_PROVIDED = "not_provided"
    """The implementation provides no function for the check's method and role."""
    CONVENTION = "convention"
    """The declared conventions cannot express the check's inputs (times, steps, path)."""
    NOT_APPLICABLE = "not_applicable"
    """The check's reference is defined only for options the implementation did not declare."""


class CheckSkipped(Exception):
    """Raised inside a check body when the check cannot apply; the message says why.

    Arguments:
        message: one line naming what is missing.
        reason: the :class:`SkipReason` category.
    """

    def __init__(self, message: str, *, reason: SkipReason = SkipReason.NOT_APPLICABLE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one implementation.

    Attributes:
        check: the check's name, ``<objective>.<what>``.
        objective: the objective (or ``"model"`` for objective-free checks).
        status: ``"pass"``, ``"fail"`` or ``"skip"``.
        message: one line for pass/skip; for a failure, what differs and where.
        description: what the check verifies.
        mismatch: the worst mismatch of a failing comparison.
        case: the inputs of the failing evaluation.
        reproduce: a Python snippet that reruns the failing case.
        seconds: wall-clock time.
        skip_reason: why a skipped check did not run (``None`` unless ``status == "skip"``).
    """

    check: str
    objective: str
    status: Status
    message: str
    description: str = ""
    mismatch: Mismatch | None = None
    case: Case | None = None
    reproduce: str | None = None
    seconds: float = 0.0
    skip_reason: SkipReason | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "objective": self.objective,
            "status": self.status,
            "skip_reason": None if self.skip_reason is None else self.skip_reason.value,
            "message": self.message,
            "description": self.description,
            "mismatch": None if self.mismatch is None else self.mismatch.to_json(),
            "case": None if self.case is None else asdict(self.case),
            "reproduce": self.reproduce,
            "seconds": round(self.seconds, 4),
        }

    def report(self) -> str:
        """The full text shown by pytest and the CLI for a failure."""
        text = f"{self.check} [{self.status}]: {self.message}"
        if self.reproduce:
            text += "\nreproduce with:\n" + _indent(self.reproduce)
        return text


def compare(
    expected: Tensor,
    got: Tensor,
    tol: Tolerance,
    *,
    quantity: str,
    inputs: dict[str, Tensor] | None = None,
) -> None:
    """Raise :class:`CheckFailure` unless ``got`` matches ``expected`` within ``tol``.

    Arguments:
        expected, got: float64 tensors of the same shape (the reference and the implementation,
            both in our convention).
        tol: the tolerance (``|got - expected| <= atol + rtol |expected|``).
        quantity: what is compared, for the message.
        inputs: per-sample inputs (``(N,)`` tensors such as t and s) reported at the worst row.
    """
    if expected.shape != got.shape:
        raise CheckFailure(
            f"{quantity}: shape {tuple(got.shape)} where the reference has {tuple(expected.shape)}"
        )
    err = (got - expected).abs()
    allowed = tol.atol + tol.rtol * expected.abs()
    excess = err / allowed
    bad = excess > 1
    if not bad.any():
        return
    flat = int(torch.argmax(excess))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), excess.shape))
    row_in: dict[str, Any] = {}
    if inputs:
        for name, value in inputs.items():
            if value.ndim >= 1 and value.shape[0] == expected.shape[0]:
                v = value[index[0]]
                row_in[name] = v.tolist() if v.ndim else float(v)
    mismatch = Mismatch(
        quantity=quantity,
        max_error=float(err.max()),
        index=index,
        expected=float(expected[index]),
        got=float(got[index]),
        n_bad=int(bad.sum()),
        n_total=bad.numel(),
        tolerance=tol,
        expected_row=expected[index[0]].tolist() if expected.ndim == 2 else None,
        got_row=got[index[0]].tolist() if got.ndim == 2 else None,
        inputs=row_in,
    )
    raise CheckFailure(mismatch.describe(), mismatch=mismatch)


def _fmt(row: list[float] | None) -> str:
    if row is None:
        return "None"
    return "[" + ", ".join(f"{v:.6g}" for v in row) + "]"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return _fmt(v)
    return repr(v)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
