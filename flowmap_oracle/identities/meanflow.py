"""MeanFlow: the average velocity, sampling with it, the MeanFlow identity and target, the JVP
that computes the total derivative, and the identity on a general path.

Convention: ``f_{t->s}(x) = x + (s - t) F(x, t, s)``; the exact ``F`` is the average velocity
``u*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s) = 1/(t - s) int_s^t v(x_tau, tau) dtau``. The total
derivative along the ODE with ``s`` fixed is ``D_t F = J_x F v + d_t F`` (a Jacobian-vector
product). The MeanFlow identity is ``v = F + (t - s) D_t F``; the target is
``F_tgt = v - (t - s) D_t F``.

Builders shared with other families: :func:`total_derivative`, :func:`meanflow_residual`,
:func:`meanflow_target`.
"""

from __future__ import annotations

import itertools
import time

import mpmath
import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import (
    ExactFlow,
    GaussianTeacher1D,
    VectorFunction,
    abstract,
    gaussian_teacher_1d,
    jvp,
    numeric_on_random_exact_flow,
    random_exact_flow,
    random_rational,
    random_vector_function,
)
from ._notation import DIM, F_d, JxF, X, h, s, t, tau, tex, v_d, x_s, x_t

__all__ = ["meanflow_residual", "meanflow_target", "total_derivative"]

SEED_SECTION = "MeanFlow"


# --------------------------------------------------------------------------- builders


def total_derivative(F: VectorFunction, v: sp.Matrix, x: sp.Matrix, t: sp.Expr, s: sp.Expr):
    """``D_t F = J_x F(x, t, s) v + d_t F(x, t, s)`` (s fixed); ``x`` and ``t`` are symbols."""
    Fx = F(x, t, s)
    return Fx.jacobian(x) * v + Fx.diff(t)


def meanflow_residual(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    """The MeanFlow identity's residual ``F + (t - s)(J_x F v + d_t F) - v`` at ``(x, t, s)``."""
    vx = v(x, t)
    return F(x, t, s) + (t - s) * total_derivative(F, vx, x, t, s) - vx


def meanflow_target(F: VectorFunction, v: sp.Matrix, x: sp.Matrix, t, s) -> sp.Matrix:
    """The MeanFlow target ``F_tgt = v - (t - s)(J_x F v + d_t F)`` for a given vector ``v``."""
    return v - (t - s) * total_derivative(F, v, x, t, s)


def _abstract_F_v(d: int = DIM) -> tuple[VectorFunction, VectorFunction]:
    return abstract("F", d + 2, d), abstract("v", d + 1, d)


# --------------------------------------------------------------------------- average velocity

_ID_AVG = "meanflow.average_velocity"


def _avg_formula(xt: sp.Matrix, xs: sp.Matrix, tt, ss) -> sp.Matrix:
    return (xt - xs) / (tt - ss)


def _avg_formula_twin(xt: sp.Matrix, xs: sp.Matrix, tt, ss) -> sp.Matrix:
    return (xs - xt) / (tt - ss)


def _symbolic_average_velocity(claim: Claim) -> MethodResult:
    """Along a trajectory ``X`` with ``X' = v(X, tau)``: the integral of ``v`` is
    ``X(t) - X(s)`` (fundamental theorem of calculus); and ``F -> v`` as ``s -> t``
    (first-order series of ``X(t - h)`` in ``h``)."""
    start = time.perf_counter()
    Xs = [sp.Function(f"X_{i + 1}", real=True) for i in range(DIM)]
    X_of = lambda a: sp.Matrix([Xi(a) for Xi in Xs])  # noqa: E731
    integral = sp.Matrix([sp.Integral(sp.diff(Xi(tau), tau), (tau, s, t)) for Xi in Xs])
    part_a = claim.build(X_of(t), X_of(s), t, s) - integral / (t - s)
    near = claim.build(X_of(t), X_of(t - h), t, t - h)
    part_b = [
        sp.series(e, h, 0, 1).removeO() - sp.diff(Xi(t), t) for e, Xi in zip(near, Xs, strict=True)
    ]
    return _core.symbolic_zero(
        [part_a, part_b],
        method="exact simplification (fundamental theorem of calculus) and series limit s -> t",
        start=start,
    )


def _numeric_average_velocity(claim: Claim) -> MethodResult:
    """On a random exact flow: quadrature of ``v(Phi_{t->tau}(x), tau)`` over ``[s, t]`` against
    the formula at ``x_s = Phi_{t->s}(x)``; and the formula at ``s = t - h``, ``h = 1e-20``,
    against ``v(x, t)``."""
    start = time.perf_counter()
    seed = _core.seed_of(_ID_AVG)
    flow = random_exact_flow()
    Phi, v = flow.flow_map, flow.velocity
    along = sp.lambdify([*X, t, tau], list(v(Phi(X, t, tau), tau)), "mpmath", cse=True)
    formula = sp.lambdify([*X, t, s], list(claim.build(X, Phi(X, t, s), t, s)), "mpmath", cse=True)
    vel = sp.lambdify([*X, t], list(v(X, t)), "mpmath", cse=True)
    points = _core.flow_points(seed, n=3)
    checks = []
    with mpmath.workdps(_core.NUMERIC_DPS):
        for a, b, tt, ss in points:
            for i in range(DIM):
                quad = mpmath.quad(
                    lambda u, i=i, a=a, b=b, tt=tt: along(a, b, tt, u)[i], [ss, tt]
                ) / (tt - ss)
                checks.append(
                    (
                        f"integral {i}",
                        float(abs(formula(a, b, tt, ss)[i] - quad)),
                        _core.NUMERIC_TOL,
                    )
                )
                lim = formula(a, b, tt, tt - _core.LIMIT_STEP)[i] - vel(a, b, tt)[i]
                checks.append((f"limit {i}", float(abs(lim)), _core.LIMIT_TOL))
    return _core.numeric_values(
        checks,
        method=(
            f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits: "
            "quadrature of v along a random exact flow (d=2); limit at h = 1e-20"
        ),
        start=start,
    )


_x_tau = sp.Symbol("x_tau")
_int_v = sp.Integral(v_d(_x_tau, tau), (tau, s, t))  # built evaluated (no Mul(1, v) inside)
_int_dx = sp.Integral(sp.Derivative(_x_tau, tau), (tau, s, t))
with sp.evaluate(False):
    _avg_relation = sp.Eq(
        F_d(x_t, t, s),
        sp.Eq(sp.Mul(1 / (t - s), _int_v), (x_t - x_s) / (t - s)),
    )
    _avg_twin_relation = sp.Eq(F_d(x_t, t, s), (x_s - x_t) / (t - s))

register(
    Identity(
        id=_ID_AVG,
        title="Average velocity: F = (x_t - x_s)/(t - s), and F -> v as s -> t",
        seed_section=SEED_SECTION,
        assumptions=(
            "x_tau solves dx/dtau = v(x, tau) through x_t; v smooth",
            "s != t for the quotient; the limit s -> t for the diagonal",
        ),
        statement=Claim(
            "statement",
            "The average velocity (1/(t-s)) int_s^t v equals (x_t - x_s)/(t - s) and tends to "
            "v(x_t, t) as s -> t.",
            _avg_relation,
            _avg_formula,
        ),
        steps=(
            Step(
                sp.Eq(_int_v, _int_dx, evaluate=False),
                "the trajectory solves the ODE: v(x_tau, tau) = dx_tau/dtau",
            ),
            Step(
                sp.Eq(_int_dx, x_t - x_s, evaluate=False),
                "fundamental theorem of calculus",
            ),
            Step(
                sp.Eq(
                    sp.Limit(F_d(x_t, t, s), s, t, dir="+-"),
                    v_d(x_t, t),
                    evaluate=False,
                ),
                "x_s = x_t - (t - s) v(x_t, t) + O((t - s)^2) (first-order series in t - s)",
            ),
        ),
        twins=(
            Claim(
                "swapped_endpoints",
                "Endpoints swapped: F = (x_s - x_t)/(t - s), which is minus the average velocity.",
                _avg_twin_relation,
                _avg_formula_twin,
            ),
        ),
        symbolic=_symbolic_average_velocity,
        numeric=_numeric_average_velocity,
    )
)


# --------------------------------------------------------------------------- sampling

_ID_SAMPLING = "meanflow.sampling"


def _sample(F: VectorFunction, x: sp.Matrix, times: list[sp.Expr]) -> sp.Matrix:
    """Multi-step rule ``x_{k+1} = x_k - (tau_k - tau_{k+1}) F(x_k, tau_k, tau_{k+1})``."""
    for a, b in itertools.pairwise(times):
        x = x - (a - b) * F(x, a, b)
    return x


def _sample_sign_twin(F: VectorFunction, x: sp.Matrix, times: list[sp.Expr]) -> sp.Matrix:
    for a, b in itertools.pairwise(times):
        x = x + (a - b) * F(x, a, b)
    return x


def _sample_frozen_twin(F: VectorFunction, x: sp.Matrix, times: list[sp.Expr]) -> sp.Matrix:
    x0 = x
    for a, b in itertools.pairwise(times):
        x = x - (a - b) * F(x0, a, b)
    return x


_t1, _t2 = sp.symbols("tau_1 tau_2", real=True)


def _semigroup_rule(phi: sp.Function):
    """Rewrite ``Phi(Phi(y, a, b), b, c) -> Phi(y, a, c)`` (the semigroup property) and
    ``Phi(y, a, a) -> y``, to a fixed point."""

    def is_nested(e: sp.Basic) -> bool:
        return (
            isinstance(e, sp.core.function.AppliedUndef)
            and e.func == phi
            and isinstance(e.args[0], sp.core.function.AppliedUndef)
            and e.args[0].func == phi
            and sp.simplify(e.args[0].args[2] - e.args[1]) == 0
        )

    def rule(expr: sp.Expr) -> sp.Expr:
        while True:
            new = expr.replace(
                is_nested, lambda e: phi(e.args[0].args[0], e.args[0].args[1], e.args[2])
            )
            new = new.replace(
                lambda e: (
                    isinstance(e, sp.core.function.AppliedUndef)
                    and e.func == phi
                    and e.args[1] == e.args[2]
                ),
                lambda e: e.args[0],
            )
            if new == expr:
                return expr
            expr = new

    return rule


def _symbolic_sampling(claim: Claim) -> MethodResult:
    """Abstract flow map ``Phi`` (d=1) with ``F = (x - Phi(x, a, b))/(a - b)``; one step and
    three steps must reduce to ``Phi(x, t, s)`` under the semigroup rule."""
    start = time.perf_counter()
    phi = sp.Function("Phi", real=True)
    y, a, b = sp.symbols("y a b", real=True)
    F = VectorFunction((y, a, b), sp.Matrix([(y - phi(y, a, b)) / (a - b)]))
    x = sp.Matrix([sp.Symbol("x", real=True)])
    target = phi(x[0], t, s)
    res = [
        claim.build(F, x, [t, s])[0] - target,
        claim.build(F, x, [t, _t1, _t2, s])[0] - target,
    ]
    return _core.symbolic_zero(
        res,
        method="exact simplification with the semigroup rule",
        rules=_semigroup_rule(phi),
        start=start,
    )


def _numeric_sampling(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_SAMPLING)
    flow = random_exact_flow()
    F = flow.average_velocity()
    target = flow.flow_map(X, t, s)
    res = [
        claim.build(F, X, [t, s]) - target,
        claim.build(F, X, [t, _t1, _t2, s]) - target,
    ]
    points = _core.random_points(
        seed,
        [(-1.5, 1.5), (-1.5, 1.5), (0.7, 1.0), (0.45, 0.65), (0.2, 0.4), (0.0, 0.15)],
        n=5,
    )
    return _core.numeric_zero(
        res,
        [*X, t, _t1, _t2, s],
        points,
        method=(
            f"numeric at {len(points)} random points (x, t > tau_1 > tau_2 > s), mpmath "
            f"{_core.NUMERIC_DPS} digits, random exact flow (d=2)"
        ),
        start=start,
    )


_xk = sp.Symbol("x_{k}")
_xk1 = sp.Symbol("x_{k+1}")
_tk, _tk1 = sp.symbols(r"\tau_k \tau_{k+1}")
with sp.evaluate(False):
    _sampling_relation = sp.Eq(_xk1, _xk - (_tk - _tk1) * F_d(_xk, _tk, _tk1))
    _sampling_sign = sp.Eq(_xk1, _xk + (_tk - _tk1) * F_d(_xk, _tk, _tk1))
    _sampling_frozen = sp.Eq(_xk1, _xk - (_tk - _tk1) * F_d(x_t, _tk, _tk1))

register(
    Identity(
        id=_ID_SAMPLING,
        title="One-step and multi-step sampling with the average velocity reach Phi_{t->s}",
        seed_section=SEED_SECTION,
        assumptions=(
            "F = u* is the exact average velocity of a flow Phi (semigroup: "
            "Phi_{r->s} o Phi_{t->r} = Phi_{t->s}, Phi_{t->t} = id)",
            "times t = tau_0 > tau_1 > ... > tau_K = s; K = 1 (one step) and K = 3 are checked",
        ),
        statement=Claim(
            "statement",
            "x_{k+1} = x_k - (tau_k - tau_{k+1}) F(x_k, tau_k, tau_{k+1}) ends at Phi_{t->s}(x_t).",
            _sampling_relation,
            _sample,
        ),
        steps=(
            Step(
                sp.Eq(
                    x_t - (t - s) * F_d(x_t, t, s),
                    x_t - (x_t - sp.Function(r"\Phi_{t\to s}")(x_t)),
                    evaluate=False,
                ),
                "insert F = (x_t - Phi_{t->s}(x_t))/(t - s): one step lands on Phi_{t->s}(x_t)",
            ),
            Step(
                sp.Eq(
                    sp.Symbol("x_K"),
                    sp.Function(r"\Phi_{\tau_{K-1}\to s} \circ \cdots \circ \Phi_{t\to \tau_1}")(
                        x_t
                    ),
                    evaluate=False,
                ),
                "each step is one exact map from the current point; compose them",
            ),
            Step(
                sp.Eq(sp.Symbol("x_K"), sp.Function(r"\Phi_{t\to s}")(x_t), evaluate=False),
                "semigroup property of the flow",
            ),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Step taken with the wrong sign: x_{k+1} = x_k + (tau_k - tau_{k+1}) F.",
                _sampling_sign,
                _sample_sign_twin,
            ),
            Claim(
                "frozen_point",
                "Every step evaluates F at the starting point x_t instead of the current x_k.",
                _sampling_frozen,
                _sample_frozen_twin,
            ),
        ),
        symbolic=_symbolic_sampling,
        numeric=_numeric_sampling,
    )
)


# --------------------------------------------------------------------------- the identity

_ID_IDENTITY = "meanflow.identity"


def _residual_vjp_twin(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    vx = v(x, t)
    Fx = F(x, t, s)
    return Fx + (t - s) * (Fx.jacobian(x).T * vx + Fx.diff(t)) - vx


def _residual_sign_twin(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    vx = v(x, t)
    return F(x, t, s) - (t - s) * total_derivative(F, vx, x, t, s) - vx


def _trajectory(d: int = DIM):
    """Abstract trajectory functions ``X_i(t)`` and the substitutions ``X_i' -> v_i(X, t)``,
    ``X_i(t) -> x_i``."""
    Xs = [sp.Function(f"X_{i + 1}", real=True) for i in range(d)]
    return Xs, sp.Matrix([Xi(t) for Xi in Xs])


def _along_trajectory(expr, Xs, Xt: sp.Matrix, v: VectorFunction):
    """Insert the ODE ``X' = v(X, t)``, then name the point ``x`` (= X)."""
    vX = v(Xt, t)
    expr = expr.subs({sp.Derivative(Xi(t), t): vX[i] for i, Xi in enumerate(Xs)})
    return expr.xreplace({Xi(t): X[i] for i, Xi in enumerate(Xs)}).doit()


def _symbolic_identity(claim: Claim) -> MethodResult:
    """Differentiate ``E(t) = (t - s) F(X(t), t, s) - int_s^t v(X(tau), tau) dtau`` in t along
    ``X' = v`` (Leibniz rule and chain rule, by SymPy) and show that it *is* the claimed
    residual; ``E(s) = 0`` gives the converse."""
    start = time.perf_counter()
    F, v = _abstract_F_v()
    Xs, Xt = _trajectory()
    Xtau = Xt.subs(t, tau)
    E = (t - s) * F(Xt, t, s) - v(Xtau, tau).applyfunc(lambda e: sp.Integral(e, (tau, s, t)))
    dE = _along_trajectory(E.diff(t), Xs, Xt, v)
    return _core.symbolic_zero(
        [dE - claim.build(F, v, X, t, s), E.subs(t, s).doit()],
        method="exact simplification of d/dt of the integral relation (d=2, abstract F, v)",
        start=start,
    )


def _numeric_on_exact_flow(identity_id: str):
    def numeric(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        return numeric_on_random_exact_flow(
            lambda flow: claim.build(flow.average_velocity(), flow.velocity, X, t, s),
            (t, s),
            seed=_core.seed_of(identity_id),
            start=start,
        )

    return numeric


with sp.evaluate(False):
    _DtF = JxF * v_d(x_t, t) + sp.Derivative(F_d(x_t, t, s), t)
    _DtF_T = tex(r"J_{x} F^{T}\,", commutative=False) * v_d(x_t, t) + sp.Derivative(
        F_d(x_t, t, s), t
    )
    _identity_relation = sp.Eq(v_d(x_t, t), F_d(x_t, t, s) + (t - s) * _DtF)
    _identity_sign = sp.Eq(v_d(x_t, t), F_d(x_t, t, s) - (t - s) * _DtF)
    _identity_vjp = sp.Eq(v_d(x_t, t), F_d(x_t, t, s) + (t - s) * _DtF_T)
    _dFdt = sp.Derivative(sp.Function("F")(x_t, t, s), t)
    _total = tex(r"\frac{d}{dt}F(x_t,t,s)", commutative=False)

register(
    Identity(
        id=_ID_IDENTITY,
        title="MeanFlow identity v = F + (t - s)(J_x F v + d_t F), from (t - s) F = int_s^t v",
        seed_section=SEED_SECTION,
        assumptions=(
            "x_tau solves dx/dtau = v(x, tau) through x_t; v and F smooth",
            "s is fixed (independent of t); d = 2 so that J_x F v and J_x F^T v differ",
            "converse: F continuous at t = s and satisfying the identity equals u*, because "
            "E(t) = (t - s) F - int_s^t v has E' = 0 and E(s) = 0",
        ),
        statement=Claim(
            "statement",
            "Differentiating (t - s) F(x_t, t, s) = int_s^t v in t with s fixed gives "
            "v = F + (t - s)(J_x F v + d_t F).",
            _identity_relation,
            meanflow_residual,
        ),
        steps=(
            Step(
                sp.Eq((t - s) * F_d(x_t, t, s), _int_v, evaluate=False),
                "definition of the average velocity (seed eq. 2)",
            ),
            Step(
                sp.Eq(F_d(x_t, t, s) + (t - s) * _total, v_d(x_t, t), evaluate=False),
                "differentiate in t with s fixed (product rule; Leibniz rule for the integral)",
            ),
            Step(
                sp.Eq(_total, _DtF, evaluate=False),
                "chain rule along the trajectory, dx_t/dt = v(x_t, t): a Jacobian-vector product",
            ),
            Step(_identity_relation, "substitute the total derivative"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Sign of the (t - s) term flipped: v = F - (t - s)(J_x F v + d_t F).",
                _identity_sign,
                _residual_sign_twin,
            ),
            Claim(
                "vjp",
                "Vector-Jacobian product J_x F^T v instead of J_x F v (a reading of the seed's "
                "'v d_x F').",
                _identity_vjp,
                _residual_vjp_twin,
            ),
        ),
        symbolic=_symbolic_identity,
        numeric=_numeric_on_exact_flow(_ID_IDENTITY),
        notes=(
            "The seed writes the JVP as 'v d_{x_t} F'; it must be read as J_x F v (rows of J are "
            "outputs). The VJP twin shows the difference is detected in d = 2."
        ),
    )
)


# --------------------------------------------------------------------------- the target

_ID_TARGET = "meanflow.target"


def _target_claim(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    return meanflow_target(F, v(x, t), x, t, s)


def _target_sign_twin(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    vx = v(x, t)
    return vx + (t - s) * total_derivative(F, vx, x, t, s)


def _target_ds_twin(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> sp.Matrix:
    vx = v(x, t)
    Fx = F(x, t, s)
    return vx - (t - s) * (Fx.jacobian(x) * vx + Fx.diff(s))


def _symbolic_target(claim: Claim) -> MethodResult:
    """The seed's full derivation: ``F_tgt = dx_t/dt - (t - s) d/dt F(x_t, t, s(t))`` with the
    chain rule over all three arguments, then ``dx_t/dt = v`` and ``ds/dt = 0``; the claimed
    target must equal it, and ``F - F_tgt`` must equal the identity's residual."""
    start = time.perf_counter()
    F, v = _abstract_F_v()
    Xs, Xt = _trajectory()
    S = sp.Function("S", real=True)
    G = F(Xt, t, S(t))
    dG = G.diff(t).subs(sp.Derivative(S(t), t), 0).xreplace({S(t): s}).doit()
    derived = v(X, t) - (t - s) * _along_trajectory(dG, Xs, Xt, v)
    claimed = claim.build(F, v, X, t, s)
    return _core.symbolic_zero(
        [claimed - derived, (F(X, t, s) - claimed) - meanflow_residual(F, v, X, t, s)],
        method="exact simplification against the chain-rule derivation (d=2, abstract F, v)",
        start=start,
    )


def _numeric_target(claim: Claim) -> MethodResult:
    start = time.perf_counter()

    def residual(flow: ExactFlow) -> sp.Matrix:
        F = flow.average_velocity()
        return claim.build(F, flow.velocity, X, t, s) - F(X, t, s)

    return numeric_on_random_exact_flow(
        residual, (t, s), seed=_core.seed_of(_ID_TARGET), note=": F_tgt(u*) = u*", start=start
    )


_Ftgt = sp.Function(r"F^{\mathrm{tgt}}")
_dsds = tex(r"\partial_s F \, \frac{ds}{dt}")
with sp.evaluate(False):
    _target_relation = sp.Eq(_Ftgt(x_t, t, s), v_d(x_t, t) - (t - s) * _DtF)
    _target_sign = sp.Eq(_Ftgt(x_t, t, s), v_d(x_t, t) + (t - s) * _DtF)
    _target_ds = sp.Eq(
        _Ftgt(x_t, t, s),
        v_d(x_t, t) - (t - s) * (JxF * v_d(x_t, t) + sp.Derivative(F_d(x_t, t, s), s)),
    )

register(
    Identity(
        id=_ID_TARGET,
        title="MeanFlow target F_tgt = v - (t - s)(J_x F v + d_t F); F = F_tgt iff the identity",
        seed_section=SEED_SECTION,
        assumptions=(
            "dx_t/dt = v along the trajectory; s independent of t (ds/dt = 0)",
            "F_{theta-} under stop-gradient; the check uses the exact F = u* for the numeric part",
        ),
        statement=Claim(
            "statement",
            "F_tgt = v - (t - s)(J_x F v + d_t F); F - F_tgt is the identity's residual, so the "
            "exact average velocity is its own target.",
            _target_relation,
            _target_claim,
        ),
        steps=(
            Step(
                sp.Eq(
                    _Ftgt(x_t, t, s),
                    tex(r"\frac{dx_t}{dt}") - (t - s) * _total,
                    evaluate=False,
                ),
                "rearrange the MeanFlow identity",
            ),
            Step(
                sp.Eq(_total, JxF * tex(r"\frac{dx_t}{dt}") + _dFdt + _dsds, evaluate=False),
                "chain rule over the three arguments (x_t, t, s)",
            ),
            Step(
                sp.Eq(_total, _DtF, evaluate=False),
                "dx_t/dt = v and ds/dt = 0 (the seed's cancelled term)",
            ),
            Step(_target_relation, "substitute"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Sign of the (t - s) term flipped: F_tgt = v + (t - s)(J_x F v + d_t F).",
                _target_sign,
                _target_sign_twin,
            ),
            Claim(
                "ds_instead_of_dt",
                "d_s F in place of d_t F (what tangents (v, 0, 1) give on a network called "
                "F(x, t, s)).",
                _target_ds,
                _target_ds_twin,
            ),
        ),
        symbolic=_symbolic_target,
        numeric=_numeric_target,
        notes=(
            "With v the conditional velocity x1 - x0 the target is unbiased only in conditional "
            "expectation: F_tgt(v_c) - u* = D Phi_{t->s}(x_t)(v_c - v_m)."
        ),
    )
)


# --------------------------------------------------------------------------- the JVP

_ID_JVP = "meanflow.jvp"


def _reorder(F: VectorFunction, order: str) -> VectorFunction:
    """The same function called with another argument order: ``"xst"`` for ``G(x, s, t)``,
    ``"xth"`` for ``H(x, t, h) = F(x, t, t - h)`` (a network fed ``(t, t - s)``)."""
    p = tuple(sp.Dummy(f"p{i}", real=True) for i in range(len(F.params)))
    xs_, a, b = sp.Matrix(p[:-2]), p[-2], p[-1]
    if order == "xst":
        return VectorFunction(p, F(xs_, b, a))
    if order == "xth":
        return VectorFunction(p, F(xs_, a, a - b))
    raise ValueError(f"unknown argument order {order!r}")


def _jvp_claim(F: VectorFunction, v: VectorFunction, x: sp.Matrix, t, s) -> list[sp.Matrix]:
    vx, one, zero = v(x, t), sp.S.One, sp.S.Zero
    DtF = total_derivative(F, vx, x, t, s)
    return [
        jvp(_reorder(F, "xst"), [x, s, t], [vx, zero, one]) - DtF,
        jvp(F, [x, t, s], [vx, one, zero]) - DtF,
        jvp(_reorder(F, "xth"), [x, t, t - s], [vx, one, one]) - DtF,
    ]


def _jvp_seed_order_twin(F, v, x, t, s) -> list[sp.Matrix]:
    vx = v(x, t)
    return [jvp(F, [x, t, s], [vx, sp.S.Zero, sp.S.One]) - total_derivative(F, vx, x, t, s)]


def _jvp_h_twin(F, v, x, t, s) -> list[sp.Matrix]:
    vx = v(x, t)
    return [
        jvp(_reorder(F, "xth"), [x, t, t - s], [vx, sp.S.One, sp.S.Zero])
        - total_derivative(F, vx, x, t, s)
    ]


def _symbolic_jvp(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    F, v = _abstract_F_v()
    return _core.symbolic_zero(
        claim.build(F, v, X, t, s),
        method="exact simplification (d=2, abstract F, v)",
        start=start,
    )


def _numeric_jvp(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_JVP)
    rng = np.random.default_rng(seed)
    F = random_vector_function(DIM + 2, DIM, rng)
    v = random_vector_function(DIM + 1, DIM, rng)
    points = _core.flow_points(seed)
    return _core.numeric_zero(
        claim.build(F, v, X, t, s),
        [*X, t, s],
        points,
        method=(
            f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits, "
            "random smooth F and v (d=2)"
        ),
        start=start,
    )


_jvp_f = sp.Function(r"\mathrm{jvp}")
_G = sp.Symbol("G")
_H = sp.Symbol("H")
_v_sym = sp.Symbol("v")
with sp.evaluate(False):
    _jvp_relation = sp.Eq(
        _jvp_f(_G, sp.Tuple(x_t, s, t), sp.Tuple(_v_sym, 0, 1)),
        sp.Eq(
            _jvp_f(sp.Symbol("F"), sp.Tuple(x_t, t, s), sp.Tuple(_v_sym, 1, 0)),
            sp.Eq(_jvp_f(_H, sp.Tuple(x_t, t, t - s), sp.Tuple(_v_sym, 1, 1)), _DtF),
        ),
    )
    _jvp_seed_twin = sp.Eq(
        _jvp_f(sp.Symbol("F"), sp.Tuple(x_t, t, s), sp.Tuple(_v_sym, 0, 1)), _DtF
    )
    _jvp_h_twin_rel = sp.Eq(_jvp_f(_H, sp.Tuple(x_t, t, t - s), sp.Tuple(_v_sym, 1, 0)), _DtF)

register(
    Identity(
        id=_ID_JVP,
        title="The total derivative as one JVP: tangents follow the network's argument order",
        seed_section=SEED_SECTION,
        assumptions=(
            "jvp(fn, primals, tangents) = d/de fn(primals + e tangents) at e = 0 "
            "(torch.func.jvp's second output)",
            "G(x, s, t) = F(x, t, s) (MeanFlow code order fn(z, r, t)); "
            "H(x, t, h) = F(x, t, t - h) (a network fed (t, t - s))",
        ),
        statement=Claim(
            "statement",
            "Tangents (v, 0, 1) on (x, s, t), (v, 1, 0) on (x, t, s) and (v, 1, 1) on "
            "(x, t, t - s) all give J_x F v + d_t F.",
            _jvp_relation,
            _jvp_claim,
        ),
        steps=(
            Step(
                sp.Eq(
                    _jvp_f(_G, sp.Tuple(x_t, s, t), sp.Tuple(_v_sym, 0, 1)),
                    JxF * v_d(x_t, t) + tex(r"\partial_3 G"),
                    evaluate=False,
                ),
                "directional derivative; the third slot of G is t",
            ),
            Step(
                sp.Eq(
                    _jvp_f(_H, sp.Tuple(x_t, t, t - s), sp.Tuple(_v_sym, 1, 1)),
                    JxF * v_d(x_t, t) + tex(r"\partial_t F + \partial_s F - \partial_s F"),
                    evaluate=False,
                ),
                "moving t and h = t - s together keeps s fixed",
            ),
        ),
        twins=(
            Claim(
                "seed_tangents_on_seed_order",
                "Tangents (v, 0, 1) on the seed's own order F(x, t, s): gives J_x F v + d_s F.",
                _jvp_seed_twin,
                _jvp_seed_order_twin,
            ),
            Claim(
                "h_not_moved",
                "Tangents (v, 1, 0) on (x, t, t - s): moves s with t (s is not held fixed).",
                _jvp_h_twin_rel,
                _jvp_h_twin,
            ),
        ),
        symbolic=_symbolic_jvp,
        numeric=_numeric_jvp,
        notes=(
            "Seed erratum: 'jvp(f_theta, (xt, s, t), (v, 0, 1))' is correct only for a callable "
            "ordered (x, s, t); for F(x, t, s) the tangents are (v, 1, 0). Its outputs are F and "
            "dF/dt, not the flow map f."
        ),
    )
)


# --------------------------------------------------------------------------- general path

_ID_PATH = "meanflow.general_path"


def _path_velocity_formula(teacher: GaussianTeacher1D, x, tt):
    """The claimed marginal velocity ``alpha' mu + (alpha alpha' lam + beta beta')/c (x - alpha mu)``."""
    u = sp.Dummy("u", real=True)
    a, b = teacher.alpha(u), teacher.beta(u)
    ad, bd = sp.diff(a, u), sp.diff(b, u)
    c = a**2 * teacher.lam + b**2
    return (ad * teacher.mu + (a * ad * teacher.lam + b * bd) / c * (x - a * teacher.mu)).subs(
        u, tt
    )


def _linear_velocity_formula(teacher: GaussianTeacher1D, x, tt):
    """The linear path's velocity (alpha = 1 - t, beta = t) used whatever the path."""
    c = (1 - tt) ** 2 * teacher.lam + tt**2
    return -teacher.mu + (tt - (1 - tt) * teacher.lam) / c * (x - (1 - tt) * teacher.mu)


def _general_path_build(velocity_formula, sign: int = 1):
    """Claim builder on the 1-D Gaussian teacher: ``[v_claimed - v_conditioning,
    d_s Phi - v_claimed(Phi, s), Phi_{t->t} - x, MeanFlow residual]`` (``sign = -1``: the
    residual with the (t - s) term's sign flipped)."""
    residual = meanflow_residual if sign > 0 else _residual_sign_twin

    def build(teacher: GaussianTeacher1D, x: sp.Symbol, t, s) -> list[sp.Expr]:
        # x and t are symbols here, so they can serve as the placeholders
        vfun = VectorFunction((x, t), sp.Matrix([velocity_formula(teacher, x, t)]))
        phi = teacher.flow_map(x, t, s)
        F = VectorFunction((x, t, s), sp.Matrix([(x - phi) / (t - s)]))
        mf = residual(F, vfun, sp.Matrix([x]), t, s)[0]
        return [
            velocity_formula(teacher, x, t) - teacher.velocity(x, t),
            sp.diff(phi, s) - velocity_formula(teacher, phi, s),
            phi.subs(s, t) - x,
            mf,
        ]

    return build


def _symbolic_general_path(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    teacher = gaussian_teacher_1d()
    xx = sp.Symbol("x", real=True)
    return _core.symbolic_zero(
        claim.build(teacher, xx, t, s),
        method="exact simplification with abstract schedules alpha(t), beta(t)",
        start=start,
    )


def _numeric_general_path(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_PATH)
    rng = np.random.default_rng(seed)
    u = sp.Dummy("u", real=True)
    mu, lam, xx = sp.symbols("mu lam x", real=True)
    ka, kb = abs(random_rational(rng)) / 6, abs(random_rational(rng)) / 6
    schedules = [
        ("VP (cos, sin)", sp.Lambda(u, sp.cos(sp.pi * u / 2)), sp.Lambda(u, sp.sin(sp.pi * u / 2))),
        ("random", sp.Lambda(u, (1 - u) * (1 + ka * u)), sp.Lambda(u, u * (1 + kb * (1 - u)))),
    ]
    res = []
    for _, alpha, beta in schedules:
        teacher = GaussianTeacher1D(alpha=alpha, beta=beta, mu=mu, lam=lam)
        res.extend(claim.build(teacher, xx, t, s))
    points = _core.random_points(
        seed,
        [(-2, 2), (0.05, 0.95), (0.05, 0.95), (-1, 1), (0.2, 2.0)],
        n=6,
        accept=lambda p: abs(p[1] - p[2]) > 0.05,
    )
    return _core.numeric_zero(
        res,
        [xx, t, s, mu, lam],
        points,
        method=(
            f"numeric at {len(points)} random points (x, t, s, mu, lam), mpmath "
            f"{_core.NUMERIC_DPS} digits, VP and a random schedule"
        ),
        start=start,
    )


_alpha_d, _beta_d = sp.Function("alpha"), sp.Function("beta")
_mu_d, _lam_d = sp.Symbol("mu"), sp.Symbol("lambda")
_c_d = sp.Function("c")
_ad = tex(r"\dot\alpha")
_bd = tex(r"\dot\beta")
_a, _b = tex(r"\alpha"), tex(r"\beta")
with sp.evaluate(False):
    _path_v = _ad * _mu_d + (_a * _ad * _lam_d + _b * _bd) / _c_d(t) * (x_t - _a * _mu_d)
    _path_relation = sp.Eq(v_d(x_t, t), _path_v)
    _path_lin = sp.Eq(
        v_d(x_t, t),
        -_mu_d + (t - (1 - t) * _lam_d) / ((1 - t) ** 2 * _lam_d + t**2) * (x_t - (1 - t) * _mu_d),
    )

register(
    Identity(
        id=_ID_PATH,
        title="MeanFlow identity on a general path x_t = alpha(t) x0 + beta(t) x1",
        seed_section="Notation at a Glance / MeanFlow",
        assumptions=(
            "x0 ~ N(mu, lambda) (1-D; isotropic d-dim data factorises), x1 ~ N(0, 1) independent",
            "alpha, beta arbitrary smooth schedules with c(t) = alpha^2 lambda + beta^2 > 0",
            "Phi_{t->s}(x) = alpha_s mu + sqrt(c_s/c_t)(x - alpha_t mu), F = (x - Phi)/(t - s)",
        ),
        statement=Claim(
            "statement",
            "The marginal velocity is v = alpha' mu + (alpha alpha' lambda + beta beta')/c "
            "(x - alpha mu) (Gaussian conditioning), Phi is its flow, and the MeanFlow identity "
            "holds for its average velocity on any path.",
            _path_relation,
            _general_path_build(_path_velocity_formula),
        ),
        steps=(
            Step(
                sp.Eq(
                    v_d(x_t, t),
                    tex(r"\mathbb{E}[\dot\alpha x_0 + \dot\beta x_1 \,|\, x_t]"),
                    evaluate=False,
                ),
                "marginal velocity = conditional expectation of the conditional velocity",
            ),
            Step(
                _path_relation,
                "Gaussian conditioning: E[Y|x_t] = E Y + Cov(Y, x_t)/Var(x_t) (x_t - E x_t)",
            ),
            Step(
                sp.Eq(
                    sp.Function(r"\Phi_{t\to s}")(x_t),
                    _alpha_d(s) * _mu_d + sp.sqrt(_c_d(s) / _c_d(t)) * (x_t - _alpha_d(t) * _mu_d),
                    evaluate=False,
                ),
                "solve the linear ODE: d/ds log|x_s - alpha_s mu| = c'(s)/(2 c(s))",
            ),
            Step(
                _identity_relation,
                "the MeanFlow identity, checked for F = (x_t - Phi_{t->s}(x_t))/(t - s)",
            ),
        ),
        twins=(
            Claim(
                "linear_path_velocity",
                "The linear path's velocity (alpha = 1 - t, beta = t) used on a general path.",
                _path_lin,
                _general_path_build(_linear_velocity_formula),
            ),
            Claim(
                "sign_flipped",
                "Sign of the (t - s) term flipped in the identity.",
                _identity_sign,
                _general_path_build(_path_velocity_formula, sign=-1),
            ),
        ),
        symbolic=_symbolic_general_path,
        numeric=_numeric_general_path,
        notes=(
            "The conditional tangent on a general path is alpha' x0 + beta' x1 (x1 - x0 only on "
            "the linear path); its conditional expectation given x_t is the v above."
        ),
    )
)
