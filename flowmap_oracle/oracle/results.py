"""What a check reports: the case it ran, the mismatch it found, and its result.

A failing check says what differs and where: the check, the inputs (:class:`Case` and the
settings), expected against got at the worst entry, the largest error and its index, how many
entries are outside the tolerance, and a Python snippet that reproduces the failure.

The first line of every failure message is short and self-contained (tools print only that
line); the detail follows on indented lines. :func:`likely_cause` names a recognisable cause of a
mismatch (float32 arithmetic, a constant factor, a sign flip, swapped components or reordered
samples, or an alternative reference the check supplies such as the reference at ``1 - t``), and
:func:`compare` puts it first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
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
    "ImpliedWeights",
    "Mismatch",
    "SkipReason",
    "Status",
    "compare",
    "likely_cause",
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
        hint: the likely cause (:func:`likely_cause`), or ``None`` when none is recognised.
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
    hint: str | None = None

    def headline(self) -> str:
        """The first line: the likely cause when one is recognised, else the size of the error."""
        count = f"{self.n_bad} of {self.n_total} entries"
        if self.hint:
            return f"{self.hint}; largest error {self.max_error:.3g} ({count})"
        return f"differs from the reference: largest error {self.max_error:.3g} ({count} off)"

    def describe(self) -> str:
        expected, got = _fmt_pair([self.expected], [self.got], digits=10)
        lines = [
            self.headline(),
            f"  {self.quantity} differs from the reference",
            f"  largest error {self.max_error:.3e}; worst entry at index {self.index}: "
            f"expected {expected[1:-1]}, got {got[1:-1]}",
            f"  {self.n_bad} of {self.n_total} entries outside the tolerance "
            f"({self.tolerance.describe()}: {self.tolerance.reason})",
        ]
        if self.expected_row is not None and self.got_row is not None:
            expected, got = _fmt_pair(self.expected_row, self.got_row)
            lines.append(f"  sample {self.index[0]}: expected {expected}, got {got}")
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

    def __init__(
        self,
        message: str,
        *,
        mismatch: Mismatch | None = None,
        traceback: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.mismatch = mismatch
        self.traceback = traceback
        """``"file:line in function"`` of the implementation's own frames (innermost last) when
        the implementation raised."""
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
class ImpliedWeights:
    """The weight a loss gives each row, read off its gradient: at a network output the
    gradient is ``w_i R_i`` for the reference residual ``R_i``, so ``w_i = <G_i, R_i> / |R_i|^2``
    (the alignment checks). Shown relative to the median, so a user sees what their code
    actually weights over ``(t, s)``, whatever they meant to write.

    Attributes:
        t, s: each row's times in our convention (data at 0, noise at 1).
        weight: each row's weight relative to the median weight.
    """

    t: tuple[float, ...]
    s: tuple[float, ...]
    weight: tuple[float, ...]

    MAX_ROWS = 512
    """Rows kept (evenly spaced) in a result, so the JSON stays small."""

    @classmethod
    def from_tensors(cls, t: Tensor, s: Tensor, weight: Tensor) -> ImpliedWeights:
        """Relative to the median of ``|weight|``, at most :attr:`MAX_ROWS` rows."""
        rel = weight.double() / weight.double().abs().median().clamp_min(1e-300)
        keep = torch.linspace(0, rel.shape[0] - 1, min(rel.shape[0], cls.MAX_ROWS)).round().long()
        return cls(
            tuple(float(v) for v in t.double()[keep]),
            tuple(float(v) for v in s.double()[keep]),
            tuple(float(v) for v in rel[keep]),
        )

    def table(self, bins: int = 5) -> tuple[list[str], list[list[str]]]:
        """A table by start time ``t`` (``bins`` equal bins of ``[0, 1]``): the number of rows
        and the median relative weight on the diagonal ``s = t`` and off it."""
        header = ["t", "rows s = t", "weight s = t", "rows s != t", "weight s != t"]
        rows = []
        for k in range(bins):
            lo, hi = k / bins, (k + 1) / bins
            cells = [f"[{lo:.1f}, {hi:.1f}{']' if k == bins - 1 else ')'}"]
            for on_diagonal in (True, False):
                w = [
                    wi
                    for ti, si, wi in zip(self.t, self.s, self.weight, strict=True)
                    if (lo <= ti < hi or (k == bins - 1 and ti == hi))
                    and ((ti == si) == on_diagonal)
                ]
                cells += [str(len(w)), f"{sorted(w)[len(w) // 2]:.3g}" if w else "-"]
            rows.append(cells)
        return header, rows

    def to_json(self) -> dict[str, list[float]]:
        return {"t": list(self.t), "s": list(self.s), "weight": list(self.weight)}


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
        traceback: when the implementation raised, its own frames as ``"file:line in function"``
            (innermost last; the oracle's and the frameworks' frames left out).
        weights: the loss's implied weighting per row (the as-shipped alignment checks).
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
    traceback: list[str] | None = None
    weights: ImpliedWeights | None = None

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
            "traceback": None if self.traceback is None else list(self.traceback),
            "implied_weights": None if self.weights is None else self.weights.to_json(),
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
    alternatives: Mapping[str, Tensor] | None = None,
    gain: Tensor | None = None,
) -> None:
    """Raise :class:`CheckFailure` unless ``got`` matches ``expected`` within ``tol``.

    Arguments:
        expected, got: float64 tensors of the same shape (the reference and the implementation,
            both in our convention).
        tol: the tolerance (``|got - expected| <= atol + rtol |expected|``).
        quantity: what is compared, for the message.
        inputs: per-sample inputs (``(N,)`` tensors such as t and s) reported at the worst row.
        alternatives: references under a likely mistake, cheap for the check to compute, keyed
            by what they are (``{"the reference at 1 - t": ...}``); one that ``got`` matches is
            named as the likely cause (see :func:`likely_cause`).
        gain: per-sample factor ``>= 1`` by which converting the implementation's values into
            our convention amplifies its own rounding (``(N,)``; see
            :meth:`~.context.CheckContext.rounding_gain`); the tolerance of each row is multiplied
            by it. ``None``: 1.

    Raises:
        CheckFailure: ``got`` differs (the message starts with the likely cause, if any).
        RuntimeError: the reference itself is not finite (an error of the oracle).
    """
    if expected.shape != got.shape:
        hint = likely_cause(expected, got, tol)
        raise CheckFailure(
            f"{quantity}: shape {tuple(got.shape)} where the reference has "
            f"{tuple(expected.shape)}" + (f" ({hint})" if hint else "")
        )
    if not bool(torch.isfinite(expected).all()):
        raise RuntimeError(f"the reference {quantity} is not finite")
    err = (got - expected).abs()
    allowed = tol.atol + tol.rtol * expected.abs()
    if gain is not None:
        allowed = allowed * gain.reshape(-1, *([1] * (expected.ndim - 1)))
    excess = err / allowed
    # NaN > 1 is False: a non-finite entry of ``got`` counts as outside the tolerance.
    bad = (excess > 1) | ~torch.isfinite(got)
    if not bad.any():
        return
    flat = int(torch.argmax(torch.where(torch.isnan(excess), math.inf, excess)))
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
        hint=likely_cause(expected, got, tol, alternatives=alternatives),
    )
    raise CheckFailure(mismatch.describe(), mismatch=mismatch)


# -- likely causes ------------------------------------------------------------------------------

_LOOSEN = 10.0
"""A pattern explains ``got`` when it reproduces it within this many tolerances."""


def likely_cause(
    expected: Tensor,
    got: Tensor,
    tol: Tolerance,
    *,
    alternatives: Mapping[str, Tensor] | None = None,
) -> str | None:
    """A short guess at why ``got`` differs from ``expected``, or ``None`` if none fits.

    Each guess is a pattern that reproduces ``got`` from ``expected`` within (ten times) ``tol``
    and explains at least 95% of the mismatch, so a plain wrong value gets no hint. In order:

    * float32 arithmetic: a float64-grade tolerance and an error of 5e-9 to 1e-5 of the values'
      scale (float32's unit roundoff is 6e-8);
    * an alternative reference the check supplies (``alternatives``, e.g. the reference at
      ``1 - t`` or with ``t`` and ``s`` swapped): "matches <key>";
    * a constant factor ``c`` (least squares): ``-1`` reads "exactly negated"; a scalar gets a
      hint only for a simple factor (``k`` or ``1/k``, ``k <= 64``);
    * swapped components (columns) of ``(N, d)`` arrays, or a transposed square array;
    * reordered samples (rows): every row matches a different row of the reference;
    * for different shapes: a transposed array.
    """
    if expected.shape != got.shape:
        if got.ndim == 2 and tuple(got.shape) == tuple(expected.shape)[::-1]:
            return "transposed?"
        return None
    e, g = expected.detach().double(), got.detach().double()
    if e.numel() == 0 or not bool(torch.isfinite(e).all() & torch.isfinite(g).all()):
        return None
    scale = float(e.abs().max())
    if scale == 0.0:
        return None

    mismatch = float((g - e).abs().max())

    def explains(candidate: Tensor) -> bool:
        """``candidate`` reproduces ``got`` within (ten times) the tolerance, and leaves at most
        5% of the mismatch unexplained (a near-miss is no explanation)."""
        residual = (g - candidate).abs()
        allowed = _LOOSEN * (tol.atol + tol.rtol * candidate.abs())
        return bool((residual <= allowed).all()) and float(residual.max()) <= 0.05 * mismatch

    rel = mismatch / scale
    if tol.rtol < 1e-6 and 5e-9 <= rel <= 1e-5:
        exact32 = bool((g.float().double() == g).all())
        what = "values are float32 numbers, " if exact32 else ""
        return f"looks like float32 arithmetic ({what}relative error {rel:.1e})"
    for name, alt in (alternatives or {}).items():
        if alt.shape == g.shape and explains(alt.detach().double()):
            return f"matches {name}"
    factor = _constant_factor(e, g, explains)
    if factor is not None:
        return factor
    if e.ndim == 2:
        swapped = _swapped_columns(e, explains)
        if swapped is not None:
            return swapped
        if e.shape[0] == e.shape[1] and e.shape[0] > 1 and explains(e.T):
            return "transposed?"
    if e.ndim >= 1 and 2 <= e.shape[0] <= 512:
        return _reordered_rows(e, g, tol)
    return None


def _constant_factor(e: Tensor, g: Tensor, explains) -> str | None:
    c = float((g * e).sum() / (e * e).sum())
    if not math.isfinite(c) or c == 0.0 or not explains(c * e):
        return None
    significant = int((e.abs() > 1e-3 * e.abs().max()).sum())
    simple = _simple_factor(c)
    if significant < 2 and simple is None:
        return None  # one number is always some multiple of another
    shown = f"{c:.3f}" if 1e-2 <= abs(c) < 1e4 else f"{c:.3e}"
    if simple == "-1":
        return "exactly negated: a sign or time-direction flip?"
    if simple in ("2", "1/2"):
        return f"off by a factor {shown} (a missing 1/2 or a sum vs mean?)"
    if simple is not None:
        return f"off by a factor {shown} ({simple}: a sum vs mean, or a missing constant?)"
    if c < 0:
        return f"off by a factor {shown} (a sign flip and a scale?)"
    return f"off by a factor {shown} (a missing weight or normalisation?)"


def _simple_factor(c: float) -> str | None:
    """``"-1"``, ``"k"`` or ``"1/k"`` (``2 <= k <= 64``, also negated) when ``c`` is one."""
    sign = "-" if c < 0 else ""
    a = abs(c)
    for k in range(1, 65):
        if abs(a - k) <= 1e-6 * k:
            return f"{sign}{k}" if k > 1 or sign else None
        if k > 1 and abs(a - 1 / k) <= 1e-6 / k:
            return f"{sign}1/{k}"
    return None


def _swapped_columns(e: Tensor, explains) -> str | None:
    d = e.shape[1]
    if d < 2:
        return None
    perms: list[list[int]]
    if d <= 4:
        perms = [list(p) for p in itertools.permutations(range(d)) if list(p) != list(range(d))]
    elif d <= 64:
        perms = [list(reversed(range(d)))]
        for a, b in itertools.combinations(range(d), 2):
            swap = list(range(d))
            swap[a], swap[b] = b, a
            perms.append(swap)
    else:
        return None
    for perm in perms:
        if explains(e[:, perm]):
            moved = [(i, j) for i, j in enumerate(perm) if i != j]
            if len(moved) == 2:
                (i, _), (j, _) = moved
                return f"components {i} and {j} swapped: a transposed or reordered output?"
            where = ", ".join(f"{i} holds {j}" for i, j in moved)
            return f"components permuted (column {where}): a reordered output?"
    return None


def _reordered_rows(e: Tensor, g: Tensor, tol: Tolerance) -> str | None:
    n = e.shape[0]
    ef, gf = e.reshape(n, -1), g.reshape(n, -1)
    allowed = _LOOSEN * (tol.atol + tol.rtol * ef.abs())  # (n, k): tolerance of each reference row
    # fits[i, j]: got row i equals reference row j within that row's tolerance
    fits = ((gf[:, None, :] - ef[None, :, :]).abs() <= allowed[None, :, :]).all(dim=2)
    if not bool(fits.any(dim=1).all()):
        return None
    match = fits.int().argmax(dim=1)
    if len(set(match.tolist())) != n or bool((match == torch.arange(n)).all()):
        return None
    i = int((match != torch.arange(n)).nonzero()[0])
    return (
        f"samples reordered: row {i} holds the reference's row {int(match[i])} "
        "(a shuffled or permuted batch axis?)"
    )


def _fmt(row: list[float] | None) -> str:
    if row is None:
        return "None"
    return "[" + ", ".join(f"{v:.6g}" for v in row) + "]"


def _fmt_pair(expected: list[float], got: list[float], digits: int = 6) -> tuple[str, str]:
    """Both rows with the fewest significant digits (at least ``digits``) that show them apart."""
    for p in range(digits, 18):
        a = "[" + ", ".join(f"{v:.{p}g}" for v in expected) + "]"
        b = "[" + ", ".join(f"{v:.{p}g}" for v in got) + "]"
        if a != b:
            return a, b
    return a, b


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return _fmt(v)
    return repr(v)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
