"""SplitMeanFlow's split consistency, its two limits, and Shortcut models' midpoint rule.

With ``x_r = x_t - (t - r) F(x_t, t, r)`` (the model's own predicted point) the split residual is

    S(t, r, s) = (t - s) F(x_t, t, s) - (t - r) F(x_t, t, r) - (r - s) F(x_r, r, s).

* For the exact ``F = (x - Phi_{t->s}(x))/(t - s)``: ``x_r = Phi_{t->r}(x_t)`` and
  ``S = Phi_{r->s}(Phi_{t->r}(x_t)) - Phi_{t->s}(x_t)``: split consistency is the semigroup property.
* ``r = t - h``: ``S = h [F + (t - s)(J_x F F_{t->t} + d_t F) - F_{t->t}] + O(h^2)``, the MeanFlow
  identity with ``v := F(x, t, t)``.
* ``r = s + h``: ``S = h [F + (s - t) d_s F - F(x_s, s, s)] + O(h^2)``, ``x_s = x_t + (s - t) F``:
  the Lagrangian (AYF-LMD) residual with the self-teacher ``F_{s->s}``.
* Shortcut: ``f_{t->s} - f_{r->s} o f_{t->r} = -S(t, r, s)``; at ``m = (t + s)/2`` the f-space
  Shortcut loss is ``(t - s)^2`` times the velocity-space one.
"""

from __future__ import annotations

import time

import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import (
    VectorFunction,
    abstract,
    numeric_on_random_exact_flow,
    random_vector_function,
)
from ._notation import DIM, F_d, JxF, X, f_d, h, r, s, t, tex, x_r, x_s, x_t
from .meanflow import _semigroup_rule

__all__ = ["split_residual"]

SEED_SECTION = "MeanFlow (SplitMeanFlow)"


def split_residual(
    F: VectorFunction, x: sp.Matrix, t, r, s, *, second_at_x_t: bool = False
) -> sp.Matrix:
    """``S(t, r, s)``; ``F_{r->s}`` is evaluated at ``x_r = x - (t - r) F(x, t, r)`` (or, for the
    twin, at ``x`` itself)."""
    x_r_ = x if second_at_x_t else x - (t - r) * F(x, t, r)
    return (t - s) * F(x, t, s) - (t - r) * F(x, t, r) - (r - s) * F(x_r_, r, s)


def _swapped_weights(F: VectorFunction, x: sp.Matrix, t, r, s) -> sp.Matrix:
    x_r_ = x - (t - r) * F(x, t, r)
    return (t - s) * F(x, t, s) - (r - s) * F(x, t, r) - (t - r) * F(x_r_, r, s)


def _random_F(seed: int) -> VectorFunction:
    return random_vector_function(DIM + 2, DIM, np.random.default_rng(seed))


def _random_F_method(n: int) -> str:
    return f"numeric at {n} random points, mpmath {_core.NUMERIC_DPS} digits, random smooth F (d=2)"


# --------------------------------------------------------------------------- exact form

_ID_SEMI = "split.semigroup"


def _symbolic_semigroup(claim: Claim) -> MethodResult:
    """Abstract flow map ``Phi`` (d=1), ``F = (x - Phi)/(t - s)``: S must vanish under the
    semigroup rule."""
    start = time.perf_counter()
    phi = sp.Function("Phi", real=True)
    y, a, b = sp.symbols("y a b", real=True)
    F = VectorFunction((y, a, b), sp.Matrix([(y - phi(y, a, b)) / (a - b)]))
    x = sp.Matrix([sp.Symbol("x", real=True)])
    return _core.symbolic_zero(
        claim.build(F, x, t, r, s),
        method="exact simplification with the semigroup rule (abstract Phi)",
        rules=_semigroup_rule(phi),
        start=start,
    )


def _numeric_semigroup(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return numeric_on_random_exact_flow(
        lambda flow: claim.build(flow.average_velocity(), X, t, r, s),
        (t, r, s),
        seed=_core.seed_of(_ID_SEMI),
        ordered=True,
        start=start,
    )


_S = sp.Function("S")
_Phi = sp.Function(r"\Phi")
with sp.evaluate(False):
    _split_relation = sp.Eq(
        (t - s) * F_d(x_t, t, s), (t - r) * F_d(x_t, t, r) + (r - s) * F_d(x_r, r, s)
    )
    _split_twin_xt = sp.Eq(
        (t - s) * F_d(x_t, t, s), (t - r) * F_d(x_t, t, r) + (r - s) * F_d(x_t, r, s)
    )
    _split_twin_w = sp.Eq(
        (t - s) * F_d(x_t, t, s), (r - s) * F_d(x_t, t, r) + (t - r) * F_d(x_r, r, s)
    )
    _xr_def = sp.Eq(x_r, x_t - (t - r) * F_d(x_t, t, r))

register(
    Identity(
        id=_ID_SEMI,
        title="Split consistency (t-s)F_{t->s} = (t-r)F_{t->r} + (r-s)F_{r->s}(x_r) is the semigroup property",
        seed_section=SEED_SECTION,
        assumptions=(
            "F = u* is the exact average velocity of a flow Phi; s < r < t",
            "x_r = x_t - (t - r) F(x_t, t, r), the model's own predicted point",
        ),
        statement=Claim(
            "statement",
            "For the exact average velocity the split residual vanishes; it equals "
            "Phi_{r->s}(Phi_{t->r}(x_t)) - Phi_{t->s}(x_t).",
            _split_relation,
            split_residual,
        ),
        steps=(
            Step(_xr_def, "the second jump starts from the model's own predicted point"),
            Step(
                sp.Eq(x_r, _Phi(x_t, t, r), evaluate=False),
                "insert F = (x - Phi)/(t - s): x_r is exact",
            ),
            Step(
                sp.Eq(_S(t, r, s), _Phi(_Phi(x_t, t, r), r, s) - _Phi(x_t, t, s), evaluate=False),
                "the three weighted average velocities are displacements",
            ),
            Step(sp.Eq(_S(t, r, s), 0, evaluate=False), "semigroup property of the flow"),
        ),
        twins=(
            Claim(
                "second_jump_at_x_t",
                "F_{r->s} evaluated at x_t instead of x_r (the seed states the rule without "
                "arguments).",
                _split_twin_xt,
                lambda F, x, t, r, s: split_residual(F, x, t, r, s, second_at_x_t=True),
            ),
            Claim(
                "swapped_weights",
                "Weights (t - r) and (r - s) swapped.",
                _split_twin_w,
                _swapped_weights,
            ),
        ),
        symbolic=_symbolic_semigroup,
        numeric=_numeric_semigroup,
        notes=(
            "Seed imprecision: the split identity is written without arguments; F_{r->s} must be "
            "evaluated at x_r. Teacher-free: F = 0 (and the 'Cholesky family' of maps with the "
            "right marginals) also zero it, so it needs a flow-matching anchor."
        ),
    )
)


# --------------------------------------------------------------------------- limits


def _limit_identity(
    identity_id: str,
    *,
    r_of_h,
    title: str,
    statement: Claim,
    steps: tuple[Step, ...],
    twins: tuple[Claim, ...],
    assumptions: tuple[str, ...],
    notes: str = "",
) -> Identity:
    """An identity ``S(t, r(h), s) = h C + O(h^2)`` where the claim builds ``C`` from ``F``."""

    def symbolic(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        F = abstract("F", DIM + 2, DIM)
        S = split_residual(F, X, t, r_of_h(h), s)
        return _core.symbolic_limit(
            (S, 1, claim.build(F, X, t, s)),
            h,
            method="series limit: S at h = 0 and its first-order coefficient in h (d=2, abstract F)",
            start=start,
        )

    def numeric(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        seed = _core.seed_of(identity_id)
        F = _random_F(seed)
        S = split_residual(F, X, t, r_of_h(h), s)
        points = _core.flow_points(seed)
        return _core.numeric_limit(
            (S, 1, claim.build(F, X, t, s)),
            [*X, t, s],
            h,
            points,
            method=_random_F_method(len(points)) + ", S/h at h = 1e-20",
            start=start,
        )

    return Identity(
        id=identity_id,
        title=title,
        seed_section=SEED_SECTION,
        assumptions=assumptions,
        statement=statement,
        steps=steps,
        twins=twins,
        symbolic=symbolic,
        numeric=numeric,
        notes=notes,
    )


def _coeff_r_to_t(F: VectorFunction, x: sp.Matrix, t, s, *, sign: int = 1) -> sp.Matrix:
    """MeanFlow residual with the self-velocity ``v = F(x, t, t)``."""
    v = F(x, t, t)
    Fx = F(x, t, s)
    return Fx + sign * (t - s) * (Fx.jacobian(x) * v + Fx.diff(t)) - v


def _coeff_r_to_s(F: VectorFunction, x: sp.Matrix, t, s, *, teacher_at_x_t: bool = False):
    """``F + (s - t) d_s F - F(x_s, s, s)`` with ``x_s = x + (s - t) F``."""
    Fx = F(x, t, s)
    xs_ = x if teacher_at_x_t else x + (s - t) * Fx
    return Fx + (s - t) * Fx.diff(s) - F(xs_, s, s)


_Ftt = F_d(x_t, t, t)
with sp.evaluate(False):
    _lim_t_relation = sp.Eq(
        sp.Limit(_S(t, t - h, s) / h, h, 0, dir="+-"),
        F_d(x_t, t, s) + (t - s) * (JxF * _Ftt + sp.Derivative(F_d(x_t, t, s), t)) - _Ftt,
    )
    _lim_t_twin = sp.Eq(
        sp.Limit(_S(t, t - h, s) / h, h, 0, dir="+-"),
        F_d(x_t, t, s) - (t - s) * (JxF * _Ftt + sp.Derivative(F_d(x_t, t, s), t)) - _Ftt,
    )
    _lim_s_relation = sp.Eq(
        sp.Limit(_S(t, s + h, s) / h, h, 0, dir="+-"),
        F_d(x_t, t, s) + (s - t) * sp.Derivative(F_d(x_t, t, s), s) - F_d(x_s, s, s),
    )
    _lim_s_twin = sp.Eq(
        sp.Limit(_S(t, s + h, s) / h, h, 0, dir="+-"),
        F_d(x_t, t, s) + (s - t) * sp.Derivative(F_d(x_t, t, s), s) - F_d(x_t, s, s),
    )

register(
    _limit_identity(
        "split.limit_r_to_t",
        r_of_h=lambda hh: t - hh,
        title="Split rule as r -> t: the MeanFlow identity with v = F(x, t, t)",
        assumptions=("F arbitrary smooth (the expansion holds for every F)", "r = t - h, h -> 0"),
        statement=Claim(
            "statement",
            "S(t, t - h, s) = h [F + (t - s)(J_x F F_{t->t} + d_t F) - F_{t->t}] + O(h^2).",
            _lim_t_relation,
            _coeff_r_to_t,
        ),
        steps=(
            Step(sp.Eq(_S(t, t, s), 0, evaluate=False), "at r = t the split residual vanishes"),
            Step(
                _lim_t_relation,
                "expand F(x_t, t, t - h), x_r = x_t - h F(x_t, t, t - h) and F(x_r, t - h, s) to "
                "first order in h",
            ),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "The MeanFlow residual with the (t - s) term's sign flipped.",
                _lim_t_twin,
                lambda F, x, t, s: _coeff_r_to_t(F, x, t, s, sign=-1),
            ),
        ),
        notes="So SplitMeanFlow's discrete rule recovers MeanFlow (with the self-velocity) as r -> t.",
    )
)

register(
    _limit_identity(
        "split.limit_r_to_s",
        r_of_h=lambda hh: s + hh,
        title="Split rule as r -> s: the Lagrangian (LMD) residual with the self-teacher F_{s->s}",
        assumptions=("F arbitrary smooth", "r = s + h, h -> 0; x_s = x_t + (s - t) F(x_t, t, s)"),
        statement=Claim(
            "statement",
            "S(t, s + h, s) = h [F + (s - t) d_s F - F(x_s, s, s)] + O(h^2).",
            _lim_s_relation,
            _coeff_r_to_s,
        ),
        steps=(
            Step(sp.Eq(_S(t, s, s), 0, evaluate=False), "at r = s the split residual vanishes"),
            Step(
                _lim_s_relation,
                "expand to first order in h; the last jump is F(x_r, s + h, s) with x_r -> x_s",
            ),
        ),
        twins=(
            Claim(
                "teacher_at_x_t",
                "The self-teacher F_{s->s} evaluated at x_t instead of the predicted x_s.",
                _lim_s_twin,
                lambda F, x, t, s: _coeff_r_to_s(F, x, t, s, teacher_at_x_t=True),
            ),
        ),
    )
)


# --------------------------------------------------------------------------- Shortcut

_ID_SHORT = "split.shortcut"


def _shortcut_build(*, weight_power: int = 2, second_at_x_t: bool = False):
    def build(F: VectorFunction, x: sp.Matrix, t, r, s) -> list[sp.Expr]:
        def f(y, a, b):
            return y + (b - a) * F(y, a, b)

        composite = f(x, t, r)
        gap = f(x, t, s) - f(composite, r, s) + split_residual(F, x, t, r, s)
        m = (t + s) / 2
        x_m = x - (t - m) * F(x, t, m)
        lhs = f(x, t, s) - f(f(x, t, m), m, s)
        inner = F(x, t, s) - (F(x, t, m) + F(x if second_at_x_t else x_m, m, s)) / 2
        norms = (lhs.T * lhs)[0] - (t - s) ** weight_power * (inner.T * inner)[0]
        return [gap, norms]

    return build


def _symbolic_shortcut(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return _core.symbolic_zero(
        claim.build(abstract("F", DIM + 2, DIM), X, t, r, s),
        method="exact simplification (d=2, abstract F)",
        start=start,
    )


def _numeric_shortcut(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_SHORT)
    points = _core.random_points(
        seed,
        [(-1.5, 1.5), (-1.5, 1.5), (0, 1), (0, 1), (0, 1)],
        n=6,
        accept=lambda p: abs(p[2] - p[4]) > 0.05,
    )
    return _core.numeric_zero(
        claim.build(_random_F(seed), X, t, r, s),
        [*X, t, r, s],
        points,
        method=_random_F_method(len(points)),
        start=start,
    )


_m = sp.Symbol("m")
_x_m = sp.Symbol("x_m")
_fnorm = tex(r"\|f_{t\to s}(x_t) - f_{m\to s}(f_{t\to m}(x_t))\|^2")
_Fnorm = tex(r"\|F(x_t,t,s) - \frac{1}{2}(F(x_t,t,m) + F(x_m,m,s))\|^2")
_Fnorm_xt = tex(r"\|F(x_t,t,s) - \frac{1}{2}(F(x_t,t,m) + F(x_t,m,s))\|^2")
with sp.evaluate(False):
    _short_relation = sp.Eq(_fnorm, (t - s) ** 2 * _Fnorm)
    _short_twin_w = sp.Eq(_fnorm, (t - s) * _Fnorm)
    _short_twin_xt = sp.Eq(_fnorm, (t - s) ** 2 * _Fnorm_xt)

register(
    Identity(
        id=_ID_SHORT,
        title="Shortcut: f_{t->s} - f_{r->s} o f_{t->r} = -S; at the midpoint the loss is (t-s)^2 x the velocity loss",
        seed_section="Shortcut Models",
        assumptions=(
            "f_{t->s}(x) = x + (s - t) F(x, t, s) (AYF boundary conditions); F arbitrary",
            "m = (t + s)/2, x_m = x_t - (t - m) F(x_t, t, m)",
        ),
        statement=Claim(
            "statement",
            "f_{t->s} - f_{r->s} o f_{t->r} = -S(t, r, s) for every r, and at r = m the f-space "
            "loss is (t - s)^2 times the velocity-space Shortcut loss.",
            _short_relation,
            _shortcut_build(),
        ),
        steps=(
            Step(
                sp.Eq(
                    f_d(x_t, t, s) - tex(r"f_{r\to s}(f_{t\to r}(x_t))"),
                    -_S(t, r, s),
                    evaluate=False,
                ),
                "expand f = x + (s - t) F on both sides",
            ),
            Step(
                sp.Eq(
                    f_d(x_t, t, s) - tex(r"f_{m\to s}(f_{t\to m}(x_t))"),
                    -(t - s) * tex(r"(F_{t\to s} - \frac{1}{2}(F_{t\to m} + F_{m\to s}(x_m)))"),
                    evaluate=False,
                ),
                "r = m: t - m = m - s = (t - s)/2",
            ),
            Step(_short_relation, "take squared norms"),
        ),
        twins=(
            Claim(
                "weight_not_squared",
                "Weight (t - s) instead of (t - s)^2.",
                _short_twin_w,
                _shortcut_build(weight_power=1),
            ),
            Claim(
                "second_half_at_x_t",
                "The second half-step evaluated at x_t instead of x_m.",
                _short_twin_xt,
                _shortcut_build(second_at_x_t=True),
            ),
        ),
        symbolic=_symbolic_shortcut,
        numeric=_numeric_shortcut,
        notes=(
            "The seed's f-space Shortcut loss weights the original (velocity-space) Shortcut "
            "consistency loss by (t - s)^2; it is the r = (t + s)/2 case of the split rule."
        ),
    )
)
