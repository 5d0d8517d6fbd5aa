"""Machinery shared by every identity: claims, derivation steps, check results and the registry.

An :class:`Identity` states one relation of the unified framework (in the project's convention:
data at t = 0, noise at t = 1, ``f_{t->s}(x) = x + (s - t) F(x, t, s)``). It carries

* a **statement**: a :class:`Claim`, i.e. a display relation (a SymPy ``Eq``) and a *builder*
  that turns concrete or abstract functions into the expression the checks examine;
* **derivation steps** (:class:`Step`): display relations, each with the rule applied;
* one or more **wrong twins**: claims that differ from the statement by a sign, a factor or a
  swapped argument;
* two checks, ``symbolic(claim)`` and ``numeric(claim)``, each returning a :class:`MethodResult`.

:meth:`Identity.check` runs both checks on the statement and on every twin; the statement must
pass both and every twin must fail both ("the same check rejects the wrong twin").

The helpers :func:`symbolic_zero` (a ladder of exact simplifications) and :func:`numeric_zero`
(``sympy.lambdify`` to mpmath and evaluation at random points) are the two ways a residual is
shown to vanish.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import mpmath
import numpy as np
import sympy as sp

__all__ = [
    "LIMIT_STEP",
    "LIMIT_TOL",
    "NUMERIC_DPS",
    "NUMERIC_TOL",
    "CheckResult",
    "Claim",
    "ClaimResult",
    "Identity",
    "MethodResult",
    "Step",
    "TwinResult",
    "all_identities",
    "display_latex",
    "flow_points",
    "get",
    "jets",
    "numeric_limit",
    "numeric_values",
    "numeric_zero",
    "random_points",
    "register",
    "seed_of",
    "symbolic_limit",
    "symbolic_true",
    "symbolic_zero",
    "taylor_residuals",
]

NUMERIC_DPS = 40
"""Working precision (decimal digits) of every numeric check."""

NUMERIC_TOL = 1e-25
"""Largest absolute residual a numeric check at ``NUMERIC_DPS`` digits accepts as zero.

The test functions and exact flows are O(1) to O(100) on the sampled points, so rounding at 40
digits leaves residuals far below 1e-30; 1e-25 keeps a margin of five orders. Limits evaluated at
a tiny step use their own tolerance (see :data:`LIMIT_TOL`)."""

LIMIT_STEP = mpmath.mpf("1e-20")
"""Step ``h`` at which a numeric check evaluates a limit ``h -> 0`` (at ``NUMERIC_DPS`` digits)."""

LIMIT_TOL = 1e-14
"""Tolerance of a numeric limit at step :data:`LIMIT_STEP`: the remainder is O(h) = O(1e-20)
times derivatives of the O(1) test functions, so 1e-14 leaves six orders of margin while a wrong
limit differs by O(1)."""


@dataclass(frozen=True)
class Claim:
    """A checkable statement: how it reads and how the checks build it.

    Attributes:
        name: short name (``"statement"`` for the identity's own claim, a slug for a twin).
        description: one sentence saying what the claim asserts (for a twin: what is wrong).
        relation: the display relation (a SymPy ``Eq`` or expression, built unevaluated).
        build: the builder the identity's checks call; its arguments and what it returns are
            documented by the identity's module (a residual that must vanish, a target, ...).
    """

    name: str
    description: str
    relation: sp.Basic
    build: Callable[..., Any]


@dataclass(frozen=True)
class Step:
    """One derivation step: a display relation and the rule that produced it."""

    relation: sp.Basic
    rule: str


@dataclass(frozen=True)
class MethodResult:
    """The outcome of one check (symbolic or numeric) of one claim.

    Attributes:
        kind: ``"symbolic"`` or ``"numeric"``.
        method: how it was checked ("exact simplification", "series limit", "numeric at 6
            random points, mpmath 40 digits, random exact flow (d=2)", ...).
        passed: whether the claim held.
        residual: the largest absolute residual (0.0 for an exact symbolic zero; ``None`` when
            a symbolic remainder has no numeric value, e.g. it holds abstract functions).
        seconds: wall time of the check.
        detail: a remainder, an error message or a note.
    """

    kind: Literal["symbolic", "numeric"]
    method: str
    passed: bool
    residual: float | None
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "passed": self.passed,
            "residual": self.residual,
            "seconds": round(self.seconds, 4),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ClaimResult:
    """Both checks of one claim."""

    claim: Claim
    symbolic: MethodResult
    numeric: MethodResult

    @property
    def passed(self) -> bool:
        return self.symbolic.passed and self.numeric.passed

    @property
    def rejected(self) -> bool:
        """True when *both* checks reject the claim (what a wrong twin must show)."""
        return not self.symbolic.passed and not self.numeric.passed

    @property
    def seconds(self) -> float:
        return self.symbolic.seconds + self.numeric.seconds


@dataclass(frozen=True)
class TwinResult(ClaimResult):
    """The checks of one wrong twin; ``rejected`` must be true."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.claim.name,
            "description": self.claim.description,
            "rejected": self.rejected,
            "symbolic": self.symbolic.to_json(),
            "numeric": self.numeric.to_json(),
        }


@dataclass(frozen=True)
class CheckResult:
    """Everything :meth:`Identity.check` found.

    ``status`` is ``"pass"`` when the statement passed both checks; ``twin_rejected`` is true when
    every wrong twin failed both checks. ``seconds`` covers statement and twins.
    """

    id: str
    title: str
    status: Literal["pass", "fail"]
    statement: ClaimResult
    twins: tuple[TwinResult, ...]
    seconds: float

    @property
    def symbolic(self) -> MethodResult:
        return self.statement.symbolic

    @property
    def numeric(self) -> MethodResult:
        return self.statement.numeric

    @property
    def method(self) -> str:
        return f"{self.symbolic.method}; {self.numeric.method}"

    @property
    def residual(self) -> float | None:
        """The numeric check's largest residual (the symbolic one is exactly zero on a pass)."""
        return self.numeric.residual

    @property
    def twin_rejected(self) -> bool:
        return bool(self.twins) and all(tw.rejected for tw in self.twins)

    @property
    def symbolic_seconds(self) -> float:
        """Time of every symbolic check (statement and twins)."""
        return self.symbolic.seconds + sum(tw.symbolic.seconds for tw in self.twins)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "method": self.method,
            "residual": self.residual,
            "seconds": round(self.seconds, 4),
            "symbolic_seconds": round(self.symbolic_seconds, 4),
            "twin_rejected": self.twin_rejected,
            "symbolic": self.symbolic.to_json(),
            "numeric": self.numeric.to_json(),
            "twins": [tw.to_json() for tw in self.twins],
        }


SymbolicCheck = Callable[[Claim], MethodResult]
NumericCheck = Callable[[Claim], MethodResult]


@dataclass(frozen=True)
class Identity:
    """One identity of the unified framework, with its checks.

    Attributes:
        id: stable identifier, ``"<family>.<name>"``.
        title: one line.
        seed_section: the heading of the seed document the identity comes from.
        assumptions: what the statement assumes (smoothness, s fixed, exact flow, ...).
        statement: the claim that must pass.
        steps: the derivation, one :class:`Step` per rule applied.
        twins: wrong variants that the same checks must reject (at least one).
        symbolic: ``symbolic(claim) -> MethodResult``.
        numeric: ``numeric(claim) -> MethodResult``.
        notes: remarks for the report (pitfalls, seed errata).
    """

    id: str
    title: str
    seed_section: str
    assumptions: tuple[str, ...]
    statement: Claim
    steps: tuple[Step, ...]
    twins: tuple[Claim, ...]
    symbolic: SymbolicCheck = field(repr=False)
    numeric: NumericCheck = field(repr=False)
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.twins:
            raise ValueError(f"identity {self.id!r} has no wrong twin; every check needs one")
        if "." not in self.id:
            raise ValueError(f"identity id {self.id!r} must read '<family>.<name>'")

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def seed(self) -> int:
        """The seed of this identity's random points and test functions (stable per id)."""
        return seed_of(self.id)

    def check_claim(self, claim: Claim) -> ClaimResult:
        """Run the symbolic and the numeric check on ``claim`` (the statement or a twin)."""
        return ClaimResult(
            claim,
            _guarded(self.symbolic, claim, "symbolic"),
            _guarded(self.numeric, claim, "numeric"),
        )

    def check(self) -> CheckResult:
        """Check the statement and every twin; see :class:`CheckResult`."""
        start = time.perf_counter()
        stmt = self.check_claim(self.statement)
        twins = tuple(
            TwinResult(
                tw, _guarded(self.symbolic, tw, "symbolic"), _guarded(self.numeric, tw, "numeric")
            )
            for tw in self.twins
        )
        return CheckResult(
            id=self.id,
            title=self.title,
            status="pass" if stmt.passed else "fail",
            statement=stmt,
            twins=twins,
            seconds=time.perf_counter() - start,
        )


def _guarded(
    check: Callable[[Claim], MethodResult],
    claim: Claim,
    kind: Literal["symbolic", "numeric"],
) -> MethodResult:
    """Run ``check``; an exception becomes a failed result that names it.

    A twin may be ill-defined where the statement is not (a division by zero, an undefined
    point); that counts as a rejection, and the message says so.
    """
    start = time.perf_counter()
    try:
        return check(claim)
    except Exception as err:  # reported as a failed check, with the error's text
        return MethodResult(
            kind=kind,
            method="error",
            passed=False,
            residual=None,
            seconds=time.perf_counter() - start,
            detail=f"{type(err).__name__}: {err}",
        )


# --------------------------------------------------------------------------- the two checks


def _elements(expr: Any) -> list[sp.Expr]:
    if isinstance(expr, sp.MatrixBase):
        return list(expr)
    if isinstance(expr, (list, tuple)):
        out: list[sp.Expr] = []
        for e in expr:
            out.extend(_elements(e))
        return out
    return [sp.sympify(expr)]


def jets(expr: sp.Expr) -> sp.Expr:
    """Replace every derivative of an abstract function, then every abstract function value,
    by its own fresh symbol.

    Each ``Subs`` (a derivative at a composite point) is replaced as a whole, so derivatives at
    different points stay apart. The values and derivatives of arbitrary smooth functions at a
    point (and at distinct points) are algebraically independent, so an expression that vanishes as a function of
    these symbols vanishes for all functions, and one that does not has a counterexample. The
    replacement turns expressions with abstract functions into rational functions, where
    ``cancel`` is a canonical form.
    """
    # A derivative evaluated at a point that is not a plain symbol stays a ``Subs``; its inner
    # ``Derivative`` is the same object at every point, so each ``Subs`` (derivative *and* point)
    # gets its own symbol first; otherwise derivatives at different points would be conflated.
    subs = sorted(expr.atoms(sp.Subs), key=sp.count_ops, reverse=True)
    expr = expr.xreplace({a: sp.Dummy("jet", real=True) for a in subs})
    rep: dict[sp.Basic, sp.Symbol] = {}
    for d in sorted(expr.atoms(sp.Derivative), key=lambda d: -d.derivative_count):
        rep[d] = sp.Dummy("jet", real=True)
    expr = expr.xreplace(rep)
    undef = expr.atoms(sp.core.function.AppliedUndef)
    return expr.xreplace({a: sp.Dummy("jet", real=True) for a in undef})


def _simplify_to_zero(e: sp.Expr, rules: Callable[[sp.Expr], sp.Expr] | None) -> sp.Expr:
    """Return 0 when a ladder of exact simplifications reduces ``e`` to zero, else the
    simplest remainder found.

    Cheap steps first: ``expand``; then :func:`jets` and ``cancel`` (canonical for rational
    functions, so a nonzero result there is final); ``simplify`` only for expressions with
    radicals or transcendental functions.
    """
    e = sp.sympify(e).doit()
    if rules is not None:
        e = rules(e)
    if sp.expand(e) == 0:
        return sp.S.Zero
    j = jets(e)
    c = sp.cancel(sp.together(j))
    if c == 0:
        return sp.S.Zero
    if c.is_rational_function(*c.free_symbols):
        return e
    if sp.simplify(c) == 0:
        return sp.S.Zero
    return e


def symbolic_zero(
    residual: Any,
    *,
    method: str = "exact simplification",
    rules: Callable[[sp.Expr], sp.Expr] | None = None,
    start: float | None = None,
) -> MethodResult:
    """Show that every element of ``residual`` (expression, matrix or list) is identically 0.

    Arguments:
        residual: the expression(s) that must vanish.
        method: the name reported for this check.
        rules: an optional rewrite applied before and after simplification (e.g. the
            semigroup rule of an abstract flow map).
        start: ``time.perf_counter()`` at the start of the whole check (default: now), so that
            building the residual is timed too.

    Returns:
        A symbolic :class:`MethodResult`; ``passed`` when every element reduced to 0, otherwise
        ``detail`` holds the first remainder.
    """
    start = time.perf_counter() if start is None else start
    for e in _elements(residual):
        rem = _simplify_to_zero(e, rules)
        if rem != 0:
            return MethodResult(
                "symbolic",
                method,
                False,
                _number_or_none(rem),
                time.perf_counter() - start,
                f"remainder: {sp.sstr(rem)[:400]}",
            )
    return MethodResult("symbolic", method, True, 0.0, time.perf_counter() - start)


def symbolic_true(
    conditions: Sequence[tuple[str, bool]], *, method: str, start: float
) -> MethodResult:
    """A symbolic result from named exact conditions (set equalities, exact signs, ...)."""
    failed = [name for name, ok in conditions if not ok]
    return MethodResult(
        "symbolic",
        method,
        not failed,
        0.0 if not failed else None,
        time.perf_counter() - start,
        "" if not failed else "false: " + "; ".join(failed),
    )


def _number_or_none(e: sp.Expr) -> float | None:
    try:
        return abs(float(e))
    except (TypeError, ValueError):
        return None


def numeric_zero(
    residual: Any,
    symbols: Sequence[sp.Symbol],
    points: Iterable[Sequence[Any]],
    *,
    method: str,
    tol: float = NUMERIC_TOL,
    dps: int = NUMERIC_DPS,
    start: float | None = None,
) -> MethodResult:
    """Evaluate ``residual`` at ``points`` with mpmath at ``dps`` digits; pass when every
    absolute value is at most ``tol``.

    Arguments:
        residual: expression(s) whose only free symbols are ``symbols``.
        symbols: the variables, in the order of each point's coordinates.
        points: the random points (numbers or ``mpmath.mpf``).
        method: the name reported for this check.
        tol: the largest residual accepted as zero.
        dps: mpmath working precision in decimal digits.
        start: as in :func:`symbolic_zero`.
    """
    start = time.perf_counter() if start is None else start
    elems = _elements(residual)
    free = set().union(*(e.free_symbols for e in elems)) - set(symbols)
    if free:
        raise ValueError(f"residual has free symbols {sorted(map(str, free))} besides the point")
    undefined = [a for e in elems for a in e.atoms(sp.core.function.AppliedUndef)]
    if undefined:
        raise ValueError(f"residual still holds abstract functions: {undefined[:3]}")
    fn = sp.lambdify(list(symbols), elems, modules="mpmath", cse=True, docstring_limit=0)
    worst = mpmath.mpf(0)
    n = 0
    with mpmath.workdps(dps):
        for p in points:
            vals = fn(*[mpmath.mpf(c) if not isinstance(c, mpmath.mpf) else c for c in p])
            for val in vals:
                a = abs(mpmath.mpmathify(val))
                if not mpmath.isfinite(a):
                    raise ArithmeticError(f"residual is not finite at point {list(map(str, p))}")
                worst = max(worst, a)
            n += 1
    worst_f = float(worst)
    return MethodResult(
        "numeric",
        method,
        worst_f <= tol,
        worst_f,
        time.perf_counter() - start,
        f"{n} points, tolerance {tol:.0e}",
    )


def numeric_values(
    checks: Sequence[tuple[str, float, float]], *, method: str, start: float
) -> MethodResult:
    """A numeric result from already computed ``(name, residual, tol)`` triples."""
    worst = max((r for _, r, _ in checks), default=0.0)
    failed = [f"{name}: {r:.3g} > {tol:.0e}" for name, r, tol in checks if not r <= tol]
    return MethodResult(
        "numeric",
        method,
        not failed,
        worst if math.isfinite(worst) else None,
        time.perf_counter() - start,
        "; ".join(failed) if failed else f"{len(checks)} values within tolerance",
    )


def random_points(
    seed: int,
    ranges: Sequence[tuple[float, float]],
    *,
    n: int = 6,
    accept: Callable[[tuple[float, ...]], bool] | None = None,
) -> list[tuple[mpmath.mpf, ...]]:
    """``n`` random points, coordinate ``i`` uniform in ``ranges[i]``, kept when ``accept``
    (e.g. ``|t - s| > 0.05``) holds; reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out: list[tuple[mpmath.mpf, ...]] = []
    for _ in range(1000 * n):
        p = tuple(float(rng.uniform(lo, hi)) for lo, hi in ranges)
        if accept is None or accept(p):
            out.append(tuple(mpmath.mpf(c) for c in p))
            if len(out) == n:
                return out
    raise RuntimeError(f"could not draw {n} points satisfying the constraint from {ranges}")


def flow_points(
    seed: int,
    *,
    n_times: int = 2,
    ordered: bool = False,
    extra: Sequence[tuple[float, float]] = (),
    n: int = 6,
) -> list[tuple[mpmath.mpf, ...]]:
    """``n`` random points ``(x1, x2, t_1, ..., t_k, *extra)`` for checks on flows in d = 2.

    ``x`` is uniform in ``[-1.5, 1.5]^2``; the ``k = n_times`` times are uniform in ``[0, 1]``
    with consecutive ones at least 0.05 apart (``ordered``: decreasing, ``t > r > s``; else in
    either order); the ``extra`` coordinates (e.g. parameters ``theta``) are uniform in their
    ranges. Reproducible from ``seed`` (:func:`random_points`).
    """

    def accept(p: tuple[float, ...]) -> bool:
        gaps = [p[2 + i] - p[3 + i] for i in range(n_times - 1)]
        return all((g if ordered else abs(g)) > 0.05 for g in gaps)

    ranges = [(-1.5, 1.5), (-1.5, 1.5), *[(0, 1)] * n_times, *extra]
    return random_points(seed, ranges, n=n, accept=accept)


def seed_of(identity_id: str) -> int:
    """The seed of an identity's random points and functions (stable per id)."""
    return zlib.crc32(identity_id.encode())


def taylor_residuals(expr: Any, h: sp.Symbol, order: int, coefficient: Any) -> list[Any]:
    """Residuals of the claim ``expr(h) = h^order * coefficient + O(h^(order+1))``: the Taylor
    coefficients of orders below ``order`` and ``d^order expr / order!`` minus ``coefficient``,
    all at ``h = 0`` (a series limit, computed by differentiation)."""
    out = []
    for j in range(order):
        out.append(sp.diff(expr, h, j).subs(h, 0).doit() if j else expr.subs(h, 0).doit())
    top = sp.diff(expr, h, order).subs(h, 0).doit() if order else expr.subs(h, 0).doit()
    out.append(top / sp.factorial(order) - coefficient)
    return out


Expansion = tuple[Any, int, Any]
"""A series-limit claim ``(expr, order, coefficient)``: ``expr(h) = h^order coefficient +
O(h^(order+1))`` as ``h -> 0``."""


def symbolic_limit(
    expansion: Expansion, h: sp.Symbol, *, method: str, start: float | None = None
) -> MethodResult:
    """Check a series-limit claim exactly: its :func:`taylor_residuals` simplify to 0."""
    expr, order, coefficient = expansion
    return symbolic_zero(taylor_residuals(expr, h, order, coefficient), method=method, start=start)


def numeric_limit(
    expansion: Expansion,
    symbols: Sequence[sp.Symbol],
    h: sp.Symbol,
    points: Iterable[Sequence[Any]],
    *,
    method: str,
    start: float | None = None,
) -> MethodResult:
    """Check a series-limit claim numerically: ``expr / h^order - coefficient`` at the
    ``points`` (coordinates of ``symbols``) with ``h =`` :data:`LIMIT_STEP`, to within
    :data:`LIMIT_TOL`."""
    expr, order, coefficient = expansion
    return numeric_zero(
        expr / h**order - coefficient,
        [*symbols, h],
        [(*p, LIMIT_STEP) for p in points],
        tol=LIMIT_TOL,
        method=method,
        start=start,
    )


# --------------------------------------------------------------------------- display


def display_latex(expr: sp.Basic) -> str:
    """LaTeX of a display relation, terms in the order they were written (``order='none'``)."""
    return sp.latex(expr, order="none")


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Identity] = {}

FAMILY_ORDER = (
    "boundary",
    "meanflow",
    "facm",
    "split",
    "ayf",
    "consistency",
    "paths",
    "reflow",
    "imm",
)
"""The order in which families are listed (the order of the seed's story); unknown families last."""


def register(identity: Identity) -> Identity:
    """Add ``identity`` to the registry (ids are unique); returns it."""
    if identity.id in _REGISTRY:
        raise ValueError(f"identity id {identity.id!r} is registered twice")
    _REGISTRY[identity.id] = identity
    return identity


def all_identities() -> list[Identity]:
    """Every registered identity, family by family (:data:`FAMILY_ORDER`), in registration
    order within a family."""

    def rank(identity: Identity) -> int:
        fam = identity.family
        return FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER)

    return sorted(_REGISTRY.values(), key=rank)


def get(identity_id: str) -> Identity:
    """The identity with id ``identity_id``; a clear error lists the known ids otherwise."""
    try:
        return _REGISTRY[identity_id]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise KeyError(f"no identity {identity_id!r}; known ids: {known}") from None
