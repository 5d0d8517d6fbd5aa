"""Flow-Anchored Consistency Models (FACM) in flow-map notation.

* Consistency ``d/dt f_{t->0}(x_t) = 0`` with ``f_{t->0} = x - t F(x, t, 0)`` is the MeanFlow
  identity at ``s = 0``: along ``dx/dt = v``,
  ``d/dt f_{t->0} = v - F - t D_t F = -(MeanFlow residual at s = 0)``, so the FACM target is
  ``F = v - t D_t F`` with ``D_t F = J_x F v + d_t F(x, t, 0)``.
* The flow-matching anchors are trained on the shifted time ``t' = 2 - t``: an orientation
  reversing bijection of the consistency interval [0, 1] onto [1, 2], meeting it only at t = 1,
  with inverse ``t = 2 - t'``.
"""

from __future__ import annotations

import time

import mpmath
import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import VectorFunction, abstract, random_vector_function
from ._notation import DIM, F_d, JxF, X, t, tex, v_d, x_t
from .meanflow import _along_trajectory, _trajectory, meanflow_target, total_derivative

__all__: list[str] = []

SEED_SECTION = "Flow Anchor Consistency Model"

# --------------------------------------------------------------------------- consistency = MF

_ID_CM = "facm.consistency_is_meanflow"


def _facm_target(F: VectorFunction, v: VectorFunction) -> sp.Matrix:
    vx = v(X, t)
    return vx - t * total_derivative(F, vx, X, t, 0)


def _facm_target_sign(F: VectorFunction, v: VectorFunction) -> sp.Matrix:
    vx = v(X, t)
    return vx + t * total_derivative(F, vx, X, t, 0)


def _residuals(claim: Claim, F: VectorFunction, v: VectorFunction, dfdt: sp.Matrix):
    target = claim.build(F, v)
    return [dfdt - (target - F(X, t, 0)), target - meanflow_target(F, v(X, t), X, t, 0)]


def _symbolic_cm(claim: Claim) -> MethodResult:
    """Differentiate ``X(t) - t F(X(t), t, 0)`` along ``X' = v`` (SymPy chain rule)."""
    start = time.perf_counter()
    F, v = abstract("F", DIM + 2, DIM), abstract("v", DIM + 1, DIM)
    Xs, Xt = _trajectory()
    dfdt = _along_trajectory((Xt - t * F(Xt, t, 0)).diff(t), Xs, Xt, v)
    return _core.symbolic_zero(
        _residuals(claim, F, v, dfdt),
        method="exact simplification of d/dt f_{t->0} along the ODE (d=2, abstract F, v)",
        start=start,
    )


def _numeric_cm(claim: Claim) -> MethodResult:
    """Random smooth F and v (the equivalence holds for any F and v): the tangent
    ``J_x f v + d_t f`` of the concrete ``f = x - t F(x, t, 0)`` against the claim."""
    start = time.perf_counter()
    seed = _core.seed_of(_ID_CM)
    rng = np.random.default_rng(seed)
    F = random_vector_function(DIM + 2, DIM, rng)
    v = random_vector_function(DIM + 1, DIM, rng)
    f = X - t * F(X, t, 0)
    dfdt = f.jacobian(X) * v(X, t) + f.diff(t)
    points = _core.random_points(seed, [(-1.5, 1.5), (-1.5, 1.5), (0, 1)], n=6)
    return _core.numeric_zero(
        _residuals(claim, F, v, dfdt),
        [*X, t],
        points,
        method=(
            f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits, "
            "random smooth F and v (d=2)"
        ),
        start=start,
    )


_dF0 = JxF * v_d(x_t, t) + sp.Derivative(F_d(x_t, t, 0), t)
with sp.evaluate(False):
    _cm_relation = sp.Eq(F_d(x_t, t, 0), v_d(x_t, t) - t * _dF0)
    _cm_twin = sp.Eq(F_d(x_t, t, 0), v_d(x_t, t) + t * _dF0)
    _df = tex(r"\frac{d}{dt} f_{t\to 0}(x_t)")

register(
    Identity(
        id=_ID_CM,
        title="FACM: d/dt f_{t->0} = 0 with c_out = -t is the MeanFlow identity at s = 0",
        seed_section=SEED_SECTION,
        assumptions=(
            "dx_t/dt = v(x_t, t) along the trajectory; F and v arbitrary smooth functions",
            "f_{t->0}(x) = x - t F(x, t, 0)",
        ),
        statement=Claim(
            "statement",
            "d/dt f_{t->0} = F_tgt - F with F_tgt = v - t (J_x F v + d_t F), the MeanFlow target "
            "at s = 0.",
            _cm_relation,
            _facm_target,
        ),
        steps=(
            Step(
                sp.Eq(_df, v_d(x_t, t) - F_d(x_t, t, 0) - t * _dF0, evaluate=False),
                "product and chain rule along dx_t/dt = v",
            ),
            Step(
                sp.Eq(_df, sp.Symbol("0"), evaluate=False),
                "the consistency property imposed by FACM",
            ),
            Step(_cm_relation, "rearrange: the MeanFlow identity with s = 0"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Sign of the t term flipped: F = v + t dF/dt.",
                _cm_twin,
                _facm_target_sign,
            ),
        ),
        symbolic=_symbolic_cm,
        numeric=_numeric_cm,
        notes=(
            "FACM's cosine and norm-l2 losses are nonlinear in the residual; with the "
            "conditional velocity x1 - x0 they are biased in general (only the plain L2 loss has "
            "a zero expected gradient at the exact map)."
        ),
    )
)


# --------------------------------------------------------------------------- time shift

_ID_SHIFT = "facm.time_shift"
_tp = sp.Symbol("t'", real=True)


def _shift_conditions(expr: sp.Expr) -> list[tuple[str, bool]]:
    unit = sp.Interval(0, 1)
    image = sp.imageset(sp.Lambda(t, expr), unit)
    inverse = sp.solve(sp.Eq(_tp, expr), t)
    return [
        ("image of [0, 1] is [1, 2]", image == sp.Interval(1, 2)),
        ("meets [0, 1] only at t = 1", sp.Intersection(image, unit) == sp.FiniteSet(1)),
        ("inverse is t = 2 - t'", inverse == [2 - _tp]),
    ]


def _symbolic_shift(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return _core.symbolic_true(
        _shift_conditions(claim.build(t)), method="exact set algebra (imageset, solve)", start=start
    )


def _numeric_shift(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    fn = sp.lambdify([t], claim.build(t), "mpmath")
    rng = np.random.default_rng(_core.seed_of(_ID_SHIFT))
    checks = []
    with mpmath.workdps(_core.NUMERIC_DPS):
        for u in [0.0, 1.0, *rng.uniform(0, 1, 8)]:
            tp = fn(mpmath.mpf(u))
            outside = max(mpmath.mpf(1) - tp, tp - 2, 0)
            checks.append((f"t'({u:.3f}) in [1, 2]", float(outside), 0.0))
            checks.append((f"2 - t'({u:.3f}) = t", float(abs(2 - tp - u)), _core.NUMERIC_TOL))
    return _core.numeric_values(
        checks, method="numeric at 10 times in [0, 1] (endpoints included), mpmath", start=start
    )


with sp.evaluate(False):
    _shift_relation = sp.Eq(_tp, 2 - t)

register(
    Identity(
        id=_ID_SHIFT,
        title="FACM's flow-matching anchors on t' = 2 - t: [0, 1] -> [1, 2], inverse t = 2 - t'",
        seed_section=SEED_SECTION,
        assumptions=(
            "the consistency task uses t in [0, 1] (s = 0); the anchor task feeds the same network "
            "t' and is trained toward the velocity at t = 2 - t'",
        ),
        statement=Claim(
            "statement",
            "t' = 2 - t maps [0, 1] onto [1, 2], meets [0, 1] only at t = 1 and is inverted by "
            "t = 2 - t'.",
            _shift_relation,
            lambda tt: 2 - tt,
        ),
        steps=(
            Step(sp.Eq(tex("t'(0)"), 2, evaluate=False), "the data end moves to t' = 2"),
            Step(sp.Eq(tex("t'(1)"), 1, evaluate=False), "the noise end stays at t' = 1"),
            Step(sp.Eq(t, 2 - _tp, evaluate=False), "the map is its own inverse"),
        ),
        twins=(
            Claim(
                "no_shift",
                "t' = 1 - t stays in [0, 1]: anchors and consistency targets share inputs.",
                sp.Eq(_tp, 1 - t, evaluate=False),
                lambda tt: 1 - tt,
            ),
            Claim(
                "wrong_shift",
                "t' = 2 + t lands in [2, 3], outside the stated anchor interval.",
                sp.Eq(_tp, 2 + t, evaluate=False),
                lambda tt: 2 + tt,
            ),
        ),
        symbolic=_symbolic_shift,
        numeric=_numeric_shift,
    )
)
