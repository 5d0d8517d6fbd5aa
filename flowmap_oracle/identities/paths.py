"""The seed's table of probability paths: each conditional field derived from its path, checked
against the continuity equation, and compared with the seed's formula literally.

For a Gaussian conditional path ``p_t(. | z) = N(mu_t, sigma_t^2 I)`` the generating field is
``u(x | z) = mu_t' + (sigma_t'/sigma_t)(x - mu_t)`` (write ``x = mu_t + sigma_t e`` with ``e`` fixed and
differentiate in t). It solves the continuity equation ``d_t p + div(p u) = 0``. Isotropic paths
factorise over coordinates, so the 1-D check is the d-dimensional one.

Each row is an :class:`Identity` (``paths.<row>``): the statement is the derived field, checked
symbolically (the continuity residual simplifies to 0) and numerically (mpmath's numerical
differentiation of ``p`` and ``p u`` at random points). The wrong twin of a row where the seed
disagrees *is the seed's literal formula*; rows where the seed is right get a plausible mutant.
:func:`compare_seed_table` and :func:`seed_table_errata` return the comparison as data for the
report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, display_latex, register
from ._functions import random_rational
from ._notation import tex

__all__ = [
    "PATH_ROWS",
    "Erratum",
    "PathRow",
    "PathRowComparison",
    "compare_seed_table",
    "continuity_residual",
    "derived_field",
    "seed_table_errata",
]

SEED_SECTION = "Notation at a Glance (table of probability paths)"

x = sp.Symbol("x", real=True)
x0, x1 = sp.symbols("x_0 x_1", real=True)
t = sp.Symbol("t", real=True)
sigma = sp.Symbol("sigma", positive=True)
alpha, beta = sp.Function("alpha", real=True), sp.Function("beta", real=True)


@dataclass(frozen=True)
class PathRow:
    """One row of the seed's table.

    Attributes:
        key: identifier (``paths.<key>`` is the identity's id).
        method: the seed's name for the row.
        mean, std: the path ``N(mean, std^2 I)`` as SymPy expressions in ``t`` and the
            conditioning variables (``x0``, ``x1``) and parameters.
        conditioning: the variables the field is conditioned on.
        seed_field: the seed's vector field, literally (``x`` stands for the seed's ``x_t``).
        twin: ``(name, description, field)`` of the wrong twin when the seed's formula is right
            (when it is wrong, the seed's formula is the twin).
        seed_is_twin: whether the twin is the seed's formula (the row is an erratum).
        concrete: substitutions making the row concrete for numeric checks (schedules); each
            entry is one variant, ``(name, {function: Lambda})``.
        ranges: ranges of the random parameters ``(symbol, lo, hi)`` besides x, t, x0, x1.
        t_range: the times sampled.
        note: what the report says about the row (conditioning, convention).
        fix: ``(description, function)`` turning the seed's formula into the derived one, verified
            symbolically by :func:`compare_seed_table`.
        other_convention: ``(mean, std, description)`` of the same path in the seed's
            convention (data at t = 0) when the row uses another one.
    """

    key: str
    method: str
    mean: sp.Expr
    std: sp.Expr
    conditioning: tuple[sp.Symbol, ...]
    seed_field: sp.Expr
    twin: tuple[str, str, sp.Expr] | None
    seed_is_twin: bool
    concrete: tuple[tuple[str, dict], ...] = (("as is", {}),)
    ranges: tuple[tuple[sp.Symbol, float, float], ...] = ()
    t_range: tuple[float, float] = (0.1, 0.9)
    note: str = ""
    fix: tuple[str, Callable[[sp.Expr], sp.Expr]] | None = None
    other_convention: tuple[sp.Expr, sp.Expr, str] | None = field(default=None)
    display: Callable[[sp.Expr], sp.Expr] | None = None
    other_display: sp.Expr | None = None


def derived_field(mean: sp.Expr, std: sp.Expr) -> sp.Expr:
    """``u = mean' + (std'/std)(x - mean)``: the field generating ``N(mean, std^2)``."""
    return sp.diff(mean, t) + sp.diff(std, t) / std * (x - mean)


def continuity_residual(field_: sp.Expr, mean: sp.Expr, std: sp.Expr) -> sp.Expr:
    """``(d_t p + d_x(p u)) / p = d_t log p + d_x u + u d_x log p`` for ``p = N(x; mean, std^2)``."""
    log_p = -((x - mean) ** 2) / (2 * std**2) - sp.log(std)
    return sp.diff(log_p, t) + sp.diff(field_, x) + field_ * sp.diff(log_p, x)


# --------------------------------------------------------------------------- the rows

_u = sp.Dummy("u", real=True)
_vp = {alpha: sp.Lambda(_u, sp.cos(sp.pi * _u / 2)), beta: sp.Lambda(_u, sp.sin(sp.pi * _u / 2))}


def _random_schedule(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ka, kb = abs(random_rational(rng)) / 6, abs(random_rational(rng)) / 6
    return {
        alpha: sp.Lambda(_u, (1 - _u) * (1 + ka * _u)),
        beta: sp.Lambda(_u, _u * (1 + kb * (1 - _u))),
    }


_ad, _bd = sp.diff(alpha(t), t), sp.diff(beta(t), t)
_smin = sp.Symbol("sigma_min", positive=True)
_fm_std = 1 - t + _smin * t
_fm_seed_den = 1 - _smin + _smin * t
_fm_num = x1 - (1 - _smin) * x
_icfm_mean = t * x1 + (1 - t) * x0
_vp_mean = sp.cos(sp.pi * t / 2) * x0 + sp.sin(sp.pi * t / 2) * x1

PATH_ROWS: tuple[PathRow, ...] = (
    PathRow(
        key="gaussian",
        method="Gaussian",
        mean=alpha(t) * x0,
        std=beta(t),
        conditioning=(x0,),
        seed_field=(_ad - _bd / beta(t) * alpha(t)) * x0 + _bd / beta(t) * x1,
        twin=None,
        seed_is_twin=True,
        concrete=(("VP schedule", _vp), ("random schedule", _random_schedule(1))),
        note=(
            "Conditioned on x0 only, the field must be a function of (x, t, x0). On the path "
            "x = alpha x0 + beta x1 the derived field equals alpha' x0 + beta' x1."
        ),
        fix=("replace x1 by the argument x (= x_t)", lambda e: e.subs(x1, x)),
        display=lambda e: sp.collect(sp.expand(e), [x0, x]),
    ),
    PathRow(
        key="fm_lipman",
        method="FM (Lipman et al.)",
        mean=t * x1,
        std=_fm_std,
        conditioning=(x1,),
        seed_field=_fm_num / _fm_seed_den,
        twin=None,
        seed_is_twin=True,
        ranges=((_smin, 0.01, 0.5),),
        note=(
            "This row uses Lipman et al.'s convention (t = 0 noise, t = 1 data, x1 = DATA), "
            "opposite to the seed's."
        ),
        fix=(
            "use the path's standard deviation 1 - (1 - sigma_min) t as the denominator "
            "(the seed's 1 - sigma_min + sigma_min t is it with t and sigma_min swapped)",
            lambda e: e * _fm_seed_den / _fm_std,
        ),
        other_convention=(
            (1 - t) * x0,
            _smin + (1 - _smin) * t,
            "the same path in the seed's convention (data x0 at t = 0)",
        ),
        display=lambda e: sp.Mul(
            x1 - (1 - _smin) * x, sp.Pow(1 - (1 - _smin) * t, -1, evaluate=False), evaluate=False
        ),
        other_display=sp.Mul(
            (1 - _smin) * x - x0,
            sp.Pow(_smin + (1 - _smin) * t, -1, evaluate=False),
            evaluate=False,
        ),
    ),
    PathRow(
        key="icfm",
        method="iCFM",
        mean=_icfm_mean,
        std=sigma,
        conditioning=(x0, x1),
        seed_field=x1 - x0,
        twin=(
            "zero_sigma_field",
            "(x - x0)/t, the field of the sigma = 0 path, used with sigma > 0.",
            (x - x0) / t,
        ),
        seed_is_twin=False,
        ranges=((sigma, 0.05, 1.0),),
        note="Conditioned on z = (x0, x1), not on x0 as the table's header says.",
    ),
    PathRow(
        key="ot_cfm",
        method="OT-CFM",
        mean=_icfm_mean,
        std=sigma,
        conditioning=(x0, x1),
        seed_field=x1 - x0,
        twin=(
            "reversed_direction",
            "x0 - x1, the direction of the opposite time convention.",
            x0 - x1,
        ),
        seed_is_twin=False,
        ranges=((sigma, 0.05, 1.0),),
        note=(
            "Same conditional path and field as iCFM; only the coupling q(z) = pi(x0, x1) (an "
            "optimal-transport plan) changes."
        ),
    ),
    PathRow(
        key="vp_si",
        method="VP-SI",
        mean=_vp_mean,
        std=sigma,
        conditioning=(x0, x1),
        seed_field=sp.pi / 2 * (sp.cos(sp.pi * t / 2) * x1 - sp.sin(sp.pi * t / 2) * x0),
        twin=(
            "missing_chain_rule_factor",
            "cos(pi t/2) x1 - sin(pi t/2) x0 without the chain-rule factor pi/2.",
            sp.cos(sp.pi * t / 2) * x1 - sp.sin(sp.pi * t / 2) * x0,
        ),
        seed_is_twin=False,
        ranges=((sigma, 0.05, 1.0),),
        note="Correct for a constant sigma; the endpoints match the seed's convention.",
    ),
)


def _row(key: str) -> PathRow:
    for row in PATH_ROWS:
        if row.key == key:
            return row
    raise KeyError(f"no path row {key!r}")


# --------------------------------------------------------------------------- checks


def _symbolic_row(row: PathRow):
    def symbolic(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        return _core.symbolic_zero(
            continuity_residual(claim.build(), row.mean, row.std),
            method="exact simplification of the continuity equation (d_t p + d_x(p u))/p",
            start=start,
        )

    return symbolic


def _numeric_row(row: PathRow):
    """``d_t p + d_x(p u)`` by mpmath's numerical differentiation (at 40 digits) at random
    points, for each concrete variant of the row (schedules)."""

    def numeric(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        seed = _core.seed_of(f"paths.{row.key}")
        params = [p for p, _, _ in row.ranges]
        args = [x, t, x0, x1, *params]
        ranges = [(-2.0, 2.0), row.t_range, (-1.0, 1.0), (-1.0, 1.0)]
        ranges += [(lo, hi) for _, lo, hi in row.ranges]
        points = _core.random_points(seed, ranges, n=4)
        checks = []
        for name, subs in row.concrete:
            mean = row.mean.subs(subs).doit()
            std = row.std.subs(subs).doit()
            u = claim.build().subs(subs).doit()
            p = sp.exp(-((x - mean) ** 2) / (2 * std**2)) / std
            p_fn = sp.lambdify(args, p, "mpmath")
            pu_fn = sp.lambdify(args, p * u, "mpmath")
            with mpmath.workdps(_core.NUMERIC_DPS):
                for pt in points:
                    rest = pt[1:]
                    dpdt = mpmath.diff(lambda tt, pt=pt, f=p_fn: f(pt[0], tt, *pt[2:]), pt[1])
                    dpudx = mpmath.diff(lambda xx, rest=rest, f=pu_fn: f(xx, *rest), pt[0])
                    checks.append((name, float(abs(dpdt + dpudx)), _core.NUMERIC_TOL))
        return _core.numeric_values(
            checks,
            method=(
                f"numeric at {len(points)} random points per variant, mpmath "
                f"{_core.NUMERIC_DPS} digits: numerical d_t p + d_x(p u)"
            ),
            start=start,
        )

    return numeric


# --------------------------------------------------------------------------- display

_disp = {
    sp.Derivative(alpha(t), t): tex(r"\dot{\alpha}_t"),
    sp.Derivative(beta(t), t): tex(r"\dot{\beta}_t"),
    alpha(t): tex(r"\alpha_t"),
    beta(t): tex(r"\beta_t"),
    x: sp.Symbol("x_t"),
}


def display(expr: sp.Expr) -> sp.Expr:
    """The expression with the seed's display names (``x_t``, ``alpha_t``, dotted derivatives)."""
    return expr.xreplace(_disp)


def _u_of(row: PathRow) -> sp.Expr:
    z = ",".join(sp.latex(c) for c in row.conditioning)
    return sp.Symbol(rf"u(x_t,t\,|\,{z})")


def _path_symbol(row: PathRow) -> sp.Expr:
    return sp.Symbol(
        rf"p_t = \mathcal{{N}}({sp.latex(display(row.mean))}, "
        rf"({sp.latex(display(row.std))})^2 I)"
    )


def _ascii(expr: sp.Expr) -> str:
    return sp.sstr(expr).replace("**", "^").replace("*", " ")


def display_form(row: PathRow) -> sp.Expr:
    """The derived field in the row's display form (checked equal to the derivation by
    :func:`compare_seed_table`)."""
    derived = derived_field(row.mean, row.std)
    return row.display(derived) if row.display is not None else sp.simplify(derived)


def _make_identity(row: PathRow) -> Identity:
    derived = display_form(row)
    u_sym = _u_of(row)
    if row.seed_is_twin:
        twin = Claim(
            "seed_formula",
            f"The seed's table entry for {row.method}, literally.",
            sp.Eq(u_sym, display(row.seed_field), evaluate=False),
            lambda f=row.seed_field: f,
        )
    else:
        assert row.twin is not None
        name, desc, expr = row.twin
        twin = Claim(name, desc, sp.Eq(u_sym, display(expr), evaluate=False), lambda f=expr: f)
    return Identity(
        id=f"paths.{row.key}",
        title=f"Path table, {row.method}: the conditional field from the path",
        seed_section=SEED_SECTION,
        assumptions=(
            f"p_t(x | {', '.join(map(str, row.conditioning))}) = "
            f"N({_ascii(row.mean)}, ({_ascii(row.std)})^2 I)",
            "isotropic Gaussian path: the d-dim continuity equation factorises into 1-D ones",
        ),
        statement=Claim(
            "statement",
            "u = mu' + (sigma'/sigma)(x - mu) solves the continuity equation for the row's path.",
            sp.Eq(u_sym, display(derived), evaluate=False),
            lambda f=derived: f,
        ),
        steps=(
            Step(_path_symbol(row), "the row's conditional probability path"),
            Step(
                sp.Eq(
                    u_sym,
                    tex(r"\dot\mu_t + \frac{\dot\sigma_t}{\sigma_t}(x_t - \mu_t)"),
                    evaluate=False,
                ),
                "x = mu_t + sigma_t e with e fixed: dx/dt = mu' + sigma' e",
            ),
            Step(sp.Eq(u_sym, display(derived), evaluate=False), "insert the row's mean and std"),
            Step(
                sp.Eq(tex(r"\partial_t p_t + \nabla\cdot(p_t u)"), 0, evaluate=False),
                "the continuity equation, checked",
            ),
        ),
        twins=(twin,),
        symbolic=_symbolic_row(row),
        numeric=_numeric_row(row),
        notes=row.note,
    )


for _r in PATH_ROWS:
    register(_make_identity(_r))


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class PathRowComparison:
    """The comparison of one row of the seed's table with the derivation.

    Attributes:
        key, method: the row.
        path_latex: the path.
        seed_latex: the seed's field, literally.
        derived_latex: the derived field (the correction when they disagree).
        agrees: the seed's field equals the derived one identically.
        seed_solves_continuity: the seed's field solves the continuity equation.
        derived_solves_continuity: the derived field does (always true; checked).
        fix: the verified description of the correction, when the row disagrees and the row
            names one.
        fix_verified: the named correction turns the seed's formula into the derived one.
        other_convention_latex: the derived field of the same path in the seed's convention
            (data at t = 0), when the row uses another convention.
        other_convention_is_time_reversal: that field is ``-u(x, 1 - t)`` of the row's field with
            ``x1 -> x0`` (checked), or ``None`` when the row has no other convention.
        note: what the report says about the row.
    """

    key: str
    method: str
    path_latex: str
    seed_latex: str
    derived_latex: str
    agrees: bool
    seed_solves_continuity: bool
    derived_solves_continuity: bool
    fix: str | None
    fix_verified: bool
    other_convention_latex: str | None
    other_convention_is_time_reversal: bool | None
    note: str


def _is_zero(e: sp.Expr) -> bool:
    return _core.symbolic_zero(e).passed


@lru_cache(maxsize=1)
def compare_seed_table() -> tuple[PathRowComparison, ...]:
    """Compare every row of the seed's table with the field derived from its path."""
    out = []
    for row in PATH_ROWS:
        derived = derived_field(row.mean, row.std)
        agrees = _is_zero(row.seed_field - derived)
        fix_ok = False
        fix_desc = None
        if not agrees and row.fix is not None:
            fix_desc, fix_fn = row.fix
            fix_ok = _is_zero(fix_fn(row.seed_field) - derived)
        shown = display_form(row)
        if not _is_zero(shown - derived):
            raise AssertionError(f"display form of row {row.key} differs from its derivation")
        other = None
        reversal = None
        if row.other_convention is not None:
            m, sd, _ = row.other_convention
            other_u = derived_field(m, sd)
            reversal = _is_zero(other_u + derived.subs({t: 1 - t, x1: x0}, simultaneous=True))
            other_shown = row.other_display if row.other_display is not None else other_u
            if not _is_zero(other_shown - other_u):
                raise AssertionError(f"display form of row {row.key}'s other convention is wrong")
            other = (
                rf"\mathcal{{N}}({display_latex(display(m))}, ({display_latex(display(sd))})^2 I):\ "
                rf"u = {display_latex(display(other_shown))}"
            )
        out.append(
            PathRowComparison(
                key=row.key,
                method=row.method,
                path_latex=_path_symbol(row).name,
                seed_latex=display_latex(display(row.seed_field)),
                derived_latex=display_latex(display(shown)),
                agrees=agrees,
                seed_solves_continuity=_is_zero(
                    continuity_residual(row.seed_field, row.mean, row.std)
                ),
                derived_solves_continuity=_is_zero(continuity_residual(derived, row.mean, row.std)),
                fix=fix_desc,
                fix_verified=fix_ok,
                other_convention_latex=other,
                other_convention_is_time_reversal=reversal,
                note=row.note,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Erratum:
    """An erratum of the seed: where, what it says, the corrected statement and why.

    ``verified`` is true when the correction was checked symbolically here.
    """

    location: str
    seed_latex: str
    corrected_latex: str
    explanation: str
    verified: bool


def _text_erratum() -> Erratum:
    """The text's "v(x_t, t | x0) = E[x_t' | x0] = x1 - x0": conditioning on x0 alone averages
    x1 ~ N(0, 1) out, giving -x0; the field conditioned on (x_t, x0) is (x_t - x0)/t."""
    e_given_x0 = sp.integrate(
        (x1 - x0) * sp.exp(-(x1**2) / 2) / sp.sqrt(2 * sp.pi), (x1, -sp.oo, sp.oo)
    )
    on_path = ((x - x0) / t).subs(x, (1 - t) * x0 + t * x1)
    ok = _is_zero(e_given_x0 + x0) and _is_zero(on_path - (x1 - x0))
    return Erratum(
        location="Text below the table (linear path)",
        seed_latex=r"v(x_t,t\,|\,x_0) = \mathbb{E}[\dot x_t\,|\,x_0] = x_1 - x_0",
        corrected_latex=(
            r"\mathbb{E}[\dot x_t\,|\,x_0] = -x_0,\quad "
            r"\mathbb{E}[\dot x_t\,|\,x_t, x_0] = \frac{x_t - x_0}{t} = x_1 - x_0"
        ),
        explanation=(
            "Conditioning on x0 alone averages x1 ~ N(0, I) out; the conditional field is the "
            "expectation given x_t and x0."
        ),
        verified=ok,
    )


@lru_cache(maxsize=1)
def seed_table_errata() -> tuple[Erratum, ...]:
    """Every row of the seed's table that disagrees with its derivation, with the corrected
    formula, plus the erratum in the text below the table."""
    out = []
    for cmp in compare_seed_table():
        if cmp.agrees:
            continue
        expl = []
        if not cmp.seed_solves_continuity:
            expl.append("The seed's field fails the continuity equation")
        if cmp.fix:
            expl.append(
                ("Fix (verified): " if cmp.fix_verified else "Fix (NOT verified): ") + cmp.fix
            )
        if cmp.note:
            expl.append(cmp.note.rstrip("."))
        corrected = f"u = {cmp.derived_latex}"
        if cmp.other_convention_latex:
            expl.append(
                "In the seed's convention (data at t = 0) the same path and its field are "
                "the second formula"
                + (
                    ", which is -u(x, 1 - t) with x1 -> x0 (verified)"
                    if cmp.other_convention_is_time_reversal
                    else ""
                )
            )
            corrected += r",\quad " + cmp.other_convention_latex
        out.append(
            Erratum(
                location=f"Table row: {cmp.method}",
                seed_latex=f"u = {cmp.seed_latex}",
                corrected_latex=corrected,
                explanation=". ".join(expl) + ".",
                verified=cmp.derived_solves_continuity and (cmp.fix_verified or not cmp.fix),
            )
        )
    out.append(_text_erratum())
    return tuple(out)
