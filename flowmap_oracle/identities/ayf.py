"""Align Your Flow: the Eulerian (EMD) and Lagrangian (LMD) map distillation objectives.

Notation: ``f_theta(x, t, s) = x + (s - t) F_theta(x, t, s)``; ``theta-`` is the stop-gradient copy
(the checks give it its own symbols, differentiate in ``theta`` only, then set ``theta- = theta``:
exactly the semantics of ``sg``). Gradients are per sample.

* EMD tangent: along ``dx/dt = v``, ``d f_{theta-}/dt = F_tgt - F`` with the MeanFlow target
  ``F_tgt = v - (t - s)(J_x F v + d_t F)``, for any vector ``v``.
* EMD gradient: ``sign(t - s) (d_theta f)^T d f_{theta-}/dt = |t - s| grad_theta 1/2 ||F - sg(F_tgt)||^2``.
* As ``s -> t``: ``g_EMD = |t - s| grad 1/2 ||F_{t->t} - v||^2 + o(|t - s|)``: the flow-matching
  gradient up to the factor ``|t - s|`` (the raw gradient tends to 0).
* At ``s = 0``: ``g_EMD`` is the continuous-CM (sCM) gradient and ``t`` times the MeanFlow
  gradient at ``s = 0``.
* LMD: ``R_L = d_s f - v(f, s) = F + (s - t) d_s F - v(x_s, s)`` vanishes for the exact flow (the
  teacher queried at the predicted point ``x_s`` and time ``s``) and
  ``sign(s - t)(d_theta f)^T R_L = |t - s| grad 1/2 ||F - sg(F_tgt^L)||^2`` with
  ``F_tgt^L = v(x_s, s) + (t - s) d_s F``.
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
    sg_gradient,
    symbolic_on_exact_flows,
)
from ._notation import (
    DIM,
    THETA_MINUS,
    F_d,
    JxF,
    X,
    delta,
    f_d,
    h,
    s,
    t,
    tex,
    theta,
    v_d,
    x_s,
    x_t,
)
from .meanflow import _along_trajectory, _trajectory, total_derivative

__all__ = ["emd_gradient", "lmd_gradient", "meanflow_gradient"]

SEED_SECTION = "Align Your Flow"

N_ARGS = DIM + 2 + len(theta)  # F(x1, x2, t, s, theta1, theta2)


# --------------------------------------------------------------------------- builders


def _f(F: VectorFunction, th: sp.Matrix, x: sp.Matrix, tt, ss) -> sp.Matrix:
    return x + (ss - tt) * F(x, tt, ss, th)


def _param(F: VectorFunction, th: sp.Matrix) -> VectorFunction:
    """``F`` with its parameters fixed to ``th``, as a function of ``(x, t, s)``."""
    p = tuple(sp.Dummy(f"q{i}", real=True) for i in range(DIM + 2))
    return VectorFunction(p, F(sp.Matrix(p[:DIM]), p[DIM], p[DIM + 1], th))


def emd_gradient(F: VectorFunction, v: sp.Matrix, x: sp.Matrix, tt, ss, *, sign_arg=None):
    """``g_EMD = sign(t - s) (d_theta f_theta)^T d f_{theta-}/dt`` (``sign_arg`` overrides the
    argument of ``sign``, for twins)."""
    f_th = _f(F, theta, x, tt, ss)
    f_m = _f(F, THETA_MINUS, x, tt, ss)
    tangent = f_m.jacobian(x) * v + f_m.diff(tt)
    sgn = sp.sign(tt - ss if sign_arg is None else sign_arg)
    return sg_gradient(sgn * (f_th.T * tangent)[0])


def _half_sq_gradient(F: VectorFunction, target_m: sp.Matrix, x, tt, ss) -> sp.Matrix:
    """``grad_theta 1/2 ||F_theta - sg(target)||^2``; ``target_m`` is built with ``theta-``."""
    diff = F(x, tt, ss, theta) - target_m
    return sg_gradient((diff.T * diff)[0] / 2)


def meanflow_gradient(F: VectorFunction, v: sp.Matrix, x: sp.Matrix, tt, ss) -> sp.Matrix:
    """``grad_theta 1/2 ||F_theta - sg(F_tgt)||^2`` with the MeanFlow target."""
    Fm = _param(F, THETA_MINUS)
    target = v - (tt - ss) * total_derivative(Fm, v, x, tt, ss)
    return _half_sq_gradient(F, target, x, tt, ss)


def lmd_residual(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss, th) -> sp.Matrix:
    """``R_L = d_s f - v(f, s) = F + (s - t) d_s F - v(x_s, s)``, ``x_s = x + (s - t) F``."""
    Fx = F(x, tt, ss, th) if th is not None else F(x, tt, ss)
    return Fx + (ss - tt) * Fx.diff(ss) - v(x + (ss - tt) * Fx, ss)


def lmd_gradient(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss, *, sign_arg=None):
    """``g_LMD = sign(s - t) (d_theta f_theta)^T R_L(theta-)``."""
    f_th = _f(F, theta, x, tt, ss)
    sgn = sp.sign(ss - tt if sign_arg is None else sign_arg)
    return sg_gradient(sgn * (f_th.T * lmd_residual(F, v, x, tt, ss, THETA_MINUS))[0])


# --------------------------------------------------------------------------- helpers


def _cases(expr, *, positive: bool) -> sp.Matrix:
    """Resolve ``sign``/``Abs`` of ``t - s`` for the case ``t > s`` (or ``t < s``)."""
    sgn = 1 if positive else -1
    rep = {
        a: a.subs(t, s + sgn * delta).subs(delta, sgn * (t - s))
        for a in expr.atoms(sp.sign, sp.Abs)
    }
    return expr.xreplace(rep)


def _abstract_Fv():
    return abstract("F", N_ARGS, DIM), abstract("v", DIM + 1, DIM)


def _random_Fv(seed: int):
    rng = np.random.default_rng(seed)
    return random_vector_function(N_ARGS, DIM, rng), random_vector_function(DIM + 1, DIM, rng)


def _numeric_random_Fv(identity_id: str, residual):
    """Numeric check of ``residual(claim, F, v)`` on random smooth parametric ``F`` and ``v``
    (``theta-`` set to ``theta``) at points ``(x, t, s, theta)`` with ``t`` and ``s`` in either
    order."""

    def numeric(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        seed = _core.seed_of(identity_id)
        F, v = _random_Fv(seed)
        points = _core.flow_points(seed, extra=[(-1, 1), (-1, 1)])
        return _core.numeric_zero(
            residual(claim, F, v).xreplace(dict(zip(THETA_MINUS, theta, strict=True))),
            [*X, t, s, *theta],
            points,
            method=(
                f"numeric at {len(points)} random points (x, t, s, theta) with t > s and t < s, "
                f"mpmath {_core.NUMERIC_DPS} digits, random smooth parametric F and v (d=2)"
            ),
            start=start,
        )

    return numeric


def _gradient_identity_checks(identity_id: str):
    """Symbolic (cases t > s and t < s, abstract F, v) and numeric checks for claims whose
    builder returns a residual from ``(F, v, x, t, s)``."""

    def symbolic(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        F, v = _abstract_Fv()
        res = claim.build(F, v, X, t, s)
        return _core.symbolic_zero(
            [_cases(res, positive=True), _cases(res, positive=False)],
            method="exact simplification, cases t > s and t < s (d=2, abstract F_theta, v)",
            start=start,
        )

    numeric = _numeric_random_Fv(identity_id, lambda claim, F, v: claim.build(F, v, X, t, s))
    return symbolic, numeric


# --------------------------------------------------------------------------- EMD tangent

_ID_TAN = "ayf.emd_tangent"


def _tangent_build(sign: int):
    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss) -> sp.Matrix:
        Fp = _param(F, THETA_MINUS)
        vx = v(x, tt)
        target = vx - (tt - ss) * total_derivative(Fp, vx, x, tt, ss)
        return sign * (target - Fp(x, tt, ss))

    return build


def _symbolic_tangent(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    F, v = _abstract_Fv()
    Fm = _param(F, THETA_MINUS)
    Xs, Xt = _trajectory()
    tangent = _along_trajectory((Xt + (s - t) * Fm(Xt, t, s)).diff(t), Xs, Xt, v)
    return _core.symbolic_zero(
        tangent - claim.build(F, v, X, t, s),
        method="exact simplification of d/dt f along dx/dt = v (d=2, abstract F, v)",
        start=start,
    )


def _tangent_residual(claim: Claim, F: VectorFunction, v: VectorFunction) -> sp.Matrix:
    """``d f_{theta-}/dt = J_x f v + d_t f`` minus the claimed tangent."""
    f = _f(F, THETA_MINUS, X, t, s)
    return f.jacobian(X) * v(X, t) + f.diff(t) - claim.build(F, v, X, t, s)


_Ftgt = sp.Function(r"F^{\mathrm{tgt}}")
_dfdt = tex(r"\frac{d f_{\theta^-}}{dt}")
with sp.evaluate(False):
    _tan_relation = sp.Eq(_dfdt, _Ftgt(x_t, t, s) - F_d(x_t, t, s))
    _tan_twin = sp.Eq(_dfdt, F_d(x_t, t, s) - _Ftgt(x_t, t, s))

register(
    Identity(
        id=_ID_TAN,
        title="AYF-EMD tangent: d f_{theta-}/dt = F_tgt - F for any v",
        seed_section=SEED_SECTION,
        assumptions=(
            "dx_t/dt = v with v any vector field (marginal teacher or conditional x1 - x0)",
            "f = x + (s - t) F (AYF boundary conditions); s fixed",
        ),
        statement=Claim(
            "statement",
            "The EMD tangent is the MeanFlow target minus F: d f/dt = F_tgt - F.",
            _tan_relation,
            _tangent_build(1),
        ),
        steps=(
            Step(
                sp.Eq(
                    _dfdt,
                    v_d(x_t, t)
                    - F_d(x_t, t, s)
                    + (s - t) * (JxF * v_d(x_t, t) + sp.Derivative(F_d(x_t, t, s), t)),
                    evaluate=False,
                ),
                "product and chain rule on x + (s - t) F along dx/dt = v",
            ),
            Step(_tan_relation, "collect the MeanFlow target F_tgt = v - (t - s) D_t F"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Opposite sign: d f/dt = F - F_tgt.",
                _tan_twin,
                _tangent_build(-1),
            ),
        ),
        symbolic=_symbolic_tangent,
        numeric=_numeric_random_Fv(_ID_TAN, _tangent_residual),
    )
)


# --------------------------------------------------------------------------- EMD gradient

_ID_GRAD = "ayf.emd_gradient"


def _emd_grad_build(weight):
    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss) -> sp.Matrix:
        vx = v(x, tt)
        return emd_gradient(F, vx, x, tt, ss) - weight(tt, ss) * meanflow_gradient(F, vx, x, tt, ss)

    return build


_gEMD = tex(r"g_{\mathrm{EMD}}")
_gradMF = tex(r"\nabla_\theta \frac{1}{2}\|F_\theta - \mathrm{sg}(F^{\mathrm{tgt}})\|^2")
with sp.evaluate(False):
    _grad_relation = sp.Eq(_gEMD, sp.Abs(t - s) * _gradMF)
    _grad_twin_sign = sp.Eq(_gEMD, -sp.Abs(t - s) * _gradMF)
    _grad_twin_abs = sp.Eq(_gEMD, (t - s) * _gradMF)

_sym, _num = _gradient_identity_checks(_ID_GRAD)
register(
    Identity(
        id=_ID_GRAD,
        title="AYF-EMD gradient = |t - s| x the MeanFlow L2 gradient",
        seed_section=SEED_SECTION,
        assumptions=(
            "per-sample gradients at theta- = theta; v any vector (the same v in both)",
            "s < t and s > t both allowed",
        ),
        statement=Claim(
            "statement",
            "sign(t - s)(d_theta f)^T d f_{theta-}/dt = |t - s| grad_theta 1/2 ||F - sg(F_tgt)||^2.",
            _grad_relation,
            _emd_grad_build(lambda a, b: sp.Abs(a - b)),
        ),
        steps=(
            Step(
                sp.Eq(
                    _gEMD,
                    sp.sign(t - s)
                    * tex(r"(\partial_\theta f_\theta)^T")
                    * tex(r"(F^{\mathrm{tgt}} - F_{\theta^-})"),
                    evaluate=False,
                ),
                "insert the EMD tangent d f/dt = F_tgt - F",
            ),
            Step(
                sp.Eq(
                    tex(r"\partial_\theta f_\theta"),
                    (s - t) * tex(r"\partial_\theta F_\theta"),
                    evaluate=False,
                ),
                "f = x + (s - t) F",
            ),
            Step(_grad_relation, "sign(t - s)(s - t) = -|t - s|; theta- = theta"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "Gradient ascent: g_EMD = -|t - s| grad (the LMD sign sign(s - t) used for EMD).",
                _grad_twin_sign,
                _emd_grad_build(lambda a, b: -sp.Abs(a - b)),
            ),
            Claim(
                "no_absolute_value",
                "Weight (t - s) instead of |t - s|: wrong for s > t.",
                _grad_twin_abs,
                _emd_grad_build(lambda a, b: a - b),
            ),
        ),
        symbolic=_sym,
        numeric=_num,
        notes="The sign is right: gradient descent on g_EMD moves F toward F_tgt.",
    )
)


# --------------------------------------------------------------------------- s -> t limit

_ID_FM = "ayf.emd_fm_limit"


def _fm_gradient(F: VectorFunction, v: sp.Matrix, x: sp.Matrix, tt) -> sp.Matrix:
    diff = F(x, tt, tt, theta) - v
    return sg_gradient((diff.T * diff)[0] / 2)


def _fm_limit_build(order: int):
    """Claim: ``g_EMD(s = t - h) = h^order * FM gradient + O(h^(order+1))``."""

    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt):
        vx = v(x, tt)
        # differentiate with s free (s is held fixed by d/dt), then put s = t - h
        g = emd_gradient(F, vx, x, tt, s).subs(s, tt - h)
        return g, order, _fm_gradient(F, vx, x, tt)

    return build


def _symbolic_fm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    F, v = _abstract_Fv()
    g, order, coeff = claim.build(F, v, X, t)
    return _core.symbolic_limit(
        (g.xreplace({sp.sign(h): 1}), order, coeff),  # h > 0
        h,
        method="series limit in h = t - s > 0 (d=2, abstract F_theta, v)",
        start=start,
    )


def _numeric_fm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_FM)
    F, v = _random_Fv(seed)
    points = _core.random_points(seed, [(-1.5, 1.5), (-1.5, 1.5), (0, 1), (-1, 1), (-1, 1)], n=6)
    return _core.numeric_limit(
        claim.build(F, v, X, t),
        [*X, t, *theta],
        h,
        points,
        method=(
            f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits, "
            "random smooth F_theta and v (d=2), s = t - h with h = 1e-20"
        ),
        start=start,
    )


_gradFM = tex(r"\nabla_\theta \frac{1}{2}\|F_\theta(x_t,t,t) - v(x_t,t)\|^2")
with sp.evaluate(False):
    _fm_relation = sp.Eq(sp.Limit(_gEMD / sp.Abs(t - s), s, t, dir="+-"), _gradFM)
    _fm_twin = sp.Eq(sp.Limit(_gEMD, s, t, dir="+-"), _gradFM)

register(
    Identity(
        id=_ID_FM,
        title="AYF-EMD as s -> t: g_EMD/|t - s| -> the flow-matching gradient",
        seed_section=SEED_SECTION,
        assumptions=("F_theta smooth in s at s = t; per-sample gradients at theta- = theta",),
        statement=Claim(
            "statement",
            "g_EMD = |t - s| grad 1/2 ||F_{t->t} - v||^2 + o(|t - s|): the FM gradient up to the "
            "factor |t - s|.",
            _fm_relation,
            _fm_limit_build(1),
        ),
        steps=(
            Step(_grad_relation, "the EMD gradient identity"),
            Step(
                sp.Eq(tex(r"F^{\mathrm{tgt}}(x_t,t,t)"), v_d(x_t, t), evaluate=False),
                "at s = t the MeanFlow target is v",
            ),
            Step(_fm_relation, "divide by |t - s| and let s -> t"),
        ),
        twins=(
            Claim(
                "raw_gradient",
                "The raw EMD gradient tends to the FM gradient (it tends to 0).",
                _fm_twin,
                _fm_limit_build(0),
            ),
        ),
        symbolic=_symbolic_fm,
        numeric=_numeric_fm,
        notes=(
            "Seed imprecision: 'matches the FM gradient up to some constant' - the factor is "
            "|t - s|, which a weight w(t, s) proportional to 1/|t - s| absorbs."
        ),
    )
)


# --------------------------------------------------------------------------- s = 0: sCM

_ID_SCM = "ayf.emd_scm"


def _scm_build(factor):
    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, _ss) -> list[sp.Matrix]:
        vx = v(x, tt)
        g = emd_gradient(F, vx, x, tt, 0)
        f_th, f_m = _f(F, theta, x, tt, 0), _f(F, THETA_MINUS, x, tt, 0)
        scm = sg_gradient((f_th.T * (f_m.jacobian(x) * vx + f_m.diff(tt)))[0])
        return [g - scm, g - factor(tt) * meanflow_gradient(F, vx, x, tt, 0)]

    return build


def _symbolic_scm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    F, v = _abstract_Fv()
    res = claim.build(F, v, X, t, 0)
    res = [e.xreplace({sp.sign(t): 1}) for e in res]  # t > 0
    return _core.symbolic_zero(
        res, method="exact simplification, t > 0 (d=2, abstract F_theta, v)", start=start
    )


def _numeric_scm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_SCM)
    F, v = _random_Fv(seed)
    points = _core.random_points(seed, [(-1.5, 1.5), (-1.5, 1.5), (0.05, 1), (-1, 1), (-1, 1)], n=6)
    return _core.numeric_zero(
        claim.build(F, v, X, t, 0),
        [*X, t, *theta],
        points,
        method=(
            f"numeric at {len(points)} random points (t > 0), mpmath {_core.NUMERIC_DPS} "
            "digits, random smooth F_theta and v (d=2)"
        ),
        start=start,
    )


_gSCM = tex(r"(\partial_\theta f_\theta)^T \frac{d f_{\theta^-}(x_t,t,0)}{dt}")
_gMF0 = sp.Symbol(
    r"\nabla_\theta \frac{1}{2}\|F_\theta(x_t,t,0) - \mathrm{sg}(F^{\mathrm{tgt}})\|^2"
)
with sp.evaluate(False):
    _scm_relation = sp.Eq(tex(r"g_{\mathrm{EMD}}|_{s=0}"), sp.Eq(_gSCM, t * _gMF0))
    _scm_twin = sp.Eq(tex(r"g_{\mathrm{EMD}}|_{s=0}"), sp.Eq(_gSCM, _gMF0))

register(
    Identity(
        id=_ID_SCM,
        title="AYF-EMD at s = 0 is the continuous-CM (sCM) gradient, = t x MeanFlow gradient at s = 0",
        seed_section=SEED_SECTION,
        assumptions=("s = 0, t > 0; f_{t->0} = x - t F(x, t, 0); theta- = theta",),
        statement=Claim(
            "statement",
            "At s = 0 the EMD gradient is (d_theta f)^T d f_{theta-}/dt (the sCM gradient) and "
            "equals t times the MeanFlow gradient at s = 0.",
            _scm_relation,
            _scm_build(lambda tt: tt),
        ),
        steps=(
            Step(sp.Eq(sp.sign(t), 1, evaluate=False), "t > 0"),
            Step(_scm_relation, "the EMD gradient identity with |t - 0| = t"),
        ),
        twins=(
            Claim(
                "missing_factor_t",
                "EMD at s = 0 equals the MeanFlow gradient itself (factor t dropped).",
                _scm_twin,
                _scm_build(lambda tt: sp.S.One),
            ),
        ),
        symbolic=_symbolic_scm,
        numeric=_numeric_scm,
    )
)


# --------------------------------------------------------------------------- LMD condition

_ID_LMDC = "ayf.lmd_condition"


def _lmd_condition_build(teacher_at_x_t: bool):
    def build(flow, x: sp.Matrix, tt, ss) -> sp.Matrix:
        F = flow.average_velocity()
        Fx = F(x, tt, ss)
        point, time_ = (x, tt) if teacher_at_x_t else (x + (ss - tt) * Fx, ss)
        return Fx + (ss - tt) * Fx.diff(ss) - flow.velocity(point, time_)

    return build


def _symbolic_lmd_condition(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return symbolic_on_exact_flows(lambda flow, x: claim.build(flow, x, t, s), start=start)


def _numeric_lmd_condition(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return numeric_on_random_exact_flow(
        lambda flow: claim.build(flow, X, t, s), (t, s), seed=_core.seed_of(_ID_LMDC), start=start
    )


_RL = sp.Symbol("R_L")
with sp.evaluate(False):
    _lmdc_relation = sp.Eq(
        _RL,
        sp.Eq(
            F_d(x_t, t, s) + (s - t) * sp.Derivative(F_d(x_t, t, s), s) - v_d(x_s, s),
            0,
        ),
    )
    _lmdc_twin = sp.Eq(F_d(x_t, t, s) + (s - t) * sp.Derivative(F_d(x_t, t, s), s) - v_d(x_t, t), 0)

register(
    Identity(
        id=_ID_LMDC,
        title="AYF-LMD: d/ds f_{t->s}(x) = v(f_{t->s}(x), s) for the exact flow",
        seed_section=SEED_SECTION,
        assumptions=("f = Phi is the exact flow of v, F = u*; x_s = x_t + (s - t) F(x_t, t, s)",),
        statement=Claim(
            "statement",
            "The Lagrangian residual F + (s - t) d_s F - v(x_s, s) vanishes: the teacher is "
            "queried at the predicted point x_s and time s.",
            _lmdc_relation,
            _lmd_condition_build(False),
        ),
        steps=(
            Step(
                sp.Eq(
                    sp.Derivative(f_d(x_t, t, s), s),
                    F_d(x_t, t, s) + (s - t) * sp.Derivative(F_d(x_t, t, s), s),
                    evaluate=False,
                ),
                "differentiate f = x + (s - t) F in s",
            ),
            Step(
                sp.Eq(sp.Derivative(f_d(x_t, t, s), s), v_d(f_d(x_t, t, s), s), evaluate=False),
                "the flow solves the ODE in its endpoint variable s",
            ),
            Step(_lmdc_relation, "subtract"),
        ),
        twins=(
            Claim(
                "teacher_at_x_t",
                "Teacher queried at (x_t, t) instead of the predicted (x_s, s).",
                _lmdc_twin,
                _lmd_condition_build(True),
            ),
        ),
        symbolic=_symbolic_lmd_condition,
        numeric=_numeric_lmd_condition,
        notes=(
            "The conditional velocity x1 - x0 has no value at the predicted point, so LMD needs a "
            "teacher; EMD/MeanFlow query the teacher at (x_t, t) instead (Eulerian form). The "
            "seed's LMD formula has an unbalanced parenthesis: F_{s->s}((f(x_t, t, s), s, s)."
        ),
    )
)


# --------------------------------------------------------------------------- LMD gradient

_ID_LMDG = "ayf.lmd_gradient"


def _lmd_grad_build(weight, target_sign: int = 1):
    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss) -> sp.Matrix:
        Fm = F(x, tt, ss, THETA_MINUS)
        target = v(x + (ss - tt) * Fm, ss) + target_sign * (tt - ss) * Fm.diff(ss)
        return lmd_gradient(F, v, x, tt, ss) - weight(tt, ss) * _half_sq_gradient(
            F, target, x, tt, ss
        )

    return build


_gLMD = tex(r"g_{\mathrm{LMD}}")
_gradL = tex(r"\nabla_\theta \frac{1}{2}\|F_\theta - \mathrm{sg}(F^{L})\|^2")
with sp.evaluate(False):
    _lmdg_relation = sp.Eq(_gLMD, sp.Abs(t - s) * _gradL)
    _lmdg_twin = sp.Eq(_gLMD, -sp.Abs(t - s) * _gradL)
    _FL = sp.Eq(
        sp.Symbol("F^{L}"),
        v_d(x_s, s) + (t - s) * sp.Derivative(F_d(x_t, t, s), s),
    )
    _FL_twin = sp.Eq(
        sp.Symbol("F^{L}"),
        v_d(x_s, s) - (t - s) * sp.Derivative(F_d(x_t, t, s), s),
    )

_sym, _num = _gradient_identity_checks(_ID_LMDG)
register(
    Identity(
        id=_ID_LMDG,
        title="AYF-LMD gradient = |t - s| grad 1/2 ||F - sg(F^L)||^2, F^L = v(x_s, s) + (t - s) d_s F",
        seed_section=SEED_SECTION,
        assumptions=(
            "g_LMD = sign(s - t)(d_theta f)^T (d_s f_{theta-} - v(f_{theta-}, s)), the seed's sign",
            "per-sample gradients at theta- = theta; s < t and s > t",
        ),
        statement=Claim(
            "statement",
            "The LMD gradient is |t - s| times the L2 gradient toward F^L = v(x_s, s) + (t - s) d_s F.",
            _lmdg_relation,
            _lmd_grad_build(lambda a, b: sp.Abs(a - b)),
        ),
        steps=(
            Step(_FL, "the Lagrangian target"),
            Step(
                sp.Eq(
                    _RL,
                    F_d(x_t, t, s) - sp.Symbol("F^{L}"),
                    evaluate=False,
                ),
                "R_L = F + (s - t) d_s F - v(x_s, s)",
            ),
            Step(_lmdg_relation, "sign(s - t)(s - t) = |t - s|; theta- = theta"),
        ),
        twins=(
            Claim(
                "sign_flipped",
                "EMD's sign(t - s) used for LMD: gradient ascent.",
                _lmdg_twin,
                _lmd_grad_build(lambda a, b: -sp.Abs(a - b)),
            ),
            Claim(
                "target_sign",
                "Lagrangian target with the d_s F term's sign flipped.",
                _FL_twin,
                _lmd_grad_build(lambda a, b: sp.Abs(a - b), target_sign=-1),
            ),
        ),
        symbolic=_sym,
        numeric=_num,
        notes="At s = t, R_L = F_{t->t}(x) - v(x, t): the flow-matching residual.",
    )
)
