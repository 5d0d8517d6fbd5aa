"""Flow map matching and self-distillation (Boffi, Albergo & Vanden-Eijnden 2024, 2025), and what
relates Align Your Flow's EMD and LMD to them.

Notation as in :mod:`.ayf`: ``f_theta(x, t, s) = x + (s - t) F_theta(x, t, s)``, ``theta-`` the
stop-gradient copy (own symbols, differentiated in ``theta`` only, then ``theta- := theta``).
The residuals, in the project's convention (MATH.md section 7):

* Lagrangian ``R_L = d_s f_{t->s}(x) - v(f_{t->s}(x), s)``;
* Eulerian ``R_E = d_t f_{t->s}(x) + J_x f_{t->s}(x) v(x, t)``.

Identities:

* ``fmm.lagrangian_eulerian``: for any two-time map with ``Phi_{t->s} o Phi_{s->t} = id`` and any
  field ``v``, ``R_E(Phi_{s->t}(y), t, s) = -J_x Phi_{t->s}(Phi_{s->t}(y)) R_L(y, s, t)``: with an
  invertible Jacobian the Eulerian and the Lagrangian conditions are equivalent (both vanish for
  the flow of ``v``).
* ``fmm.eulerian_gradient``: ``g_EMD = |t - s| grad 1/2 ||sg(F + R_E) - F||^2`` (the Eulerian
  loss with a stop-gradient on all but ``F``), while the FMM/ESD loss as written has
  ``grad 1/2 ||R_E||^2 = g_EMD / |t - s| + (s - t)(d_theta D_t F)^T R_E``.
* ``fmm.lagrangian_gradient``: ``g_LMD = |t - s| grad 1/2 ||F - sg(F - R_L)||^2``, while LSD (a
  stop-gradient on the teacher and its input only) has
  ``grad 1/2 ||R_L||^2 = g_LMD / |t - s| + (s - t)(d_theta d_s F)^T R_L``.
* ``fmm.progressive_composition``: PSD's target ``f_{u->s}(f_{t->u}(x))`` equals ``f_{t->s}(x)`` for
  the exact map (the semigroup property), so the PSD residual vanishes there.
"""

from __future__ import annotations

import time

import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import ExactFlow, VectorFunction, numeric_on_random_exact_flow, sg_gradient
from ._notation import THETA_MINUS, F_d, X, f_d, r, s, t, tex, theta, v_d, x_t
from .ayf import _f, _gradient_identity_checks, emd_gradient, lmd_gradient
from .meanflow import _semigroup_rule

__all__ = ["eulerian_residual", "lagrangian_residual"]

SEED_SECTION = "Align Your Flow"


def lagrangian_residual(flow, v, x: sp.Matrix, tt, ss) -> sp.Matrix:
    """``R_L = d_s Phi(x, t, s) - v(Phi(x, t, s), s)`` for a map ``flow(x, t, s)``."""
    phi = flow(x, tt, ss)
    return phi.diff(ss) - v(phi, ss)


def eulerian_residual(flow, v, x: sp.Matrix, tt, ss, *, sign: int = 1) -> sp.Matrix:
    """``R_E = d_t Phi(x, t, s) + J_x Phi(x, t, s) v(x, t)`` (``sign`` flips the transport term,
    for a twin)."""
    phi = flow(x, tt, ss)
    return phi.diff(tt) + sign * phi.jacobian(x) * v(x, tt)


# --------------------------------------------------------------------------- (a) equivalence

_ID_EQ = "fmm.lagrangian_eulerian"


def _equivalence_build(*, sign: int = 1, start_point: bool = False):
    """Residuals that must vanish, for an exact flow ``ef`` and any field ``v``:

    * ``R_E(z, t, s) + J_x Phi_{t->s}(z) R_L(y, s, t)`` with ``z = Phi_{s->t}(y)`` and the field
      ``v`` (the equivalence);
    * ``R_E(y, t, s)`` and ``R_L(y, t, s)`` with the flow's own velocity (both conditions hold
      for a flow map).

    Twins: the Eulerian transport term with the wrong sign, or the Lagrangian teacher at the
    start point instead of the predicted point."""

    def lagrangian(flow, vel, y, tt, ss):
        phi = flow(y, tt, ss)
        return phi.diff(ss) - (vel(y, tt) if start_point else vel(phi, ss))

    def build(ef: ExactFlow, v, y: sp.Matrix, tt, ss) -> sp.Matrix:
        flow, own = _flow_fn(ef.flow_map), _flow_fn(ef.velocity)
        z = sp.Matrix(list(flow(y, ss, tt)))
        zs = sp.Matrix([sp.Dummy(f"z{i}", real=True) for i in range(len(z))])
        r_e = eulerian_residual(flow, v, zs, tt, ss, sign=sign)
        jac = flow(zs, tt, ss).jacobian(zs)
        r_e, jac = (
            r_e.xreplace(dict(zip(zs, z, strict=True))),
            jac.xreplace(dict(zip(zs, z, strict=True))),
        )
        equivalence = r_e + jac * lagrangian(flow, v, y, ss, tt)
        own_e = eulerian_residual(flow, own, y, tt, ss, sign=sign)
        own_l = lagrangian(flow, own, y, tt, ss)
        return sp.Matrix.vstack(equivalence, own_e, own_l)

    return build


def _flow_fn(vf: VectorFunction):
    return lambda x, *times: vf(x, *times)


def _symbolic_equivalence(claim: Claim) -> MethodResult:
    """The Riccati flow ``x / (1 - (s - t) x)`` and the 1-D Gaussian teacher's map (abstract
    path) with an *abstract* field ``v`` (not their own velocity)."""
    from ._functions import gaussian_teacher_1d, riccati_flow

    start = time.perf_counter()
    y = sp.Matrix([sp.Symbol("y", real=True)])
    vfun = sp.Function("v", real=True)

    def v(x, tt):
        return sp.Matrix([vfun(x[0], tt)])

    res = [
        claim.build(riccati_flow(), v, y, t, s),
        claim.build(gaussian_teacher_1d().exact_flow(), v, y, t, s),
    ]
    return _core.symbolic_zero(
        res,
        method=(
            "exact simplification on the Riccati flow and the Gaussian teacher's map (abstract "
            "path), abstract field v"
        ),
        start=start,
    )


def _numeric_equivalence(claim: Claim) -> MethodResult:
    import numpy as np

    from ._functions import random_vector_function

    start = time.perf_counter()
    seed = _core.seed_of(_ID_EQ)
    vf = random_vector_function(3, 2, np.random.default_rng(seed))
    return numeric_on_random_exact_flow(
        lambda flow: claim.build(flow, vf, X, t, s),
        (t, s),
        seed=seed,
        note=", random smooth field v (not the flow's own)",
        start=start,
    )


_RL, _RE = sp.Symbol("R_L"), sp.Symbol("R_E")
_z = sp.Symbol("z")
with sp.evaluate(False):
    _eq_relation = sp.Eq(
        _RE * tex(r"(\Phi_{s\to t}(y), t, s)"),
        -tex(r"J_x \Phi_{t\to s}(\Phi_{s\to t}(y))\,") * _RL * tex("(y, s, t)"),
    )
    _eq_twin = sp.Eq(
        tex(r"\partial_t \Phi_{t\to s}(z) - J_x \Phi_{t\to s}(z) v(z, t)"),
        -tex(r"J_x \Phi_{t\to s}(z)\,") * _RL * tex("(y, s, t)"),
    )
    _eq_twin_start = sp.Eq(
        _RE * tex(r"(\Phi_{s\to t}(y), t, s)"),
        -tex(r"J_x \Phi_{t\to s}(z)\,") * tex(r"(\partial_t \Phi_{s\to t}(y) - v(y, s))"),
    )

register(
    Identity(
        id=_ID_EQ,
        title="Lagrangian and Eulerian flow-map conditions are equivalent: R_E = -J R_L",
        seed_section=SEED_SECTION,
        assumptions=(
            "a two-time map with Phi_{t->s}(Phi_{s->t}(y)) = y (any flow), v any smooth field",
            "R_L = d_s Phi_{t->s} - v(Phi_{t->s}, s); R_E = d_t Phi_{t->s} + J_x Phi_{t->s} v(x, t)",
        ),
        statement=Claim(
            "statement",
            "R_E at z = Phi_{s->t}(y) is -J_x Phi_{t->s}(z) times R_L(y, s, t): with J invertible, "
            "the Eulerian condition holds iff the Lagrangian one does; for the flow of v both "
            "d_s f = v(f, s) and d_t f + J_x f v(x, t) = 0 hold.",
            _eq_relation,
            _equivalence_build(),
        ),
        steps=(
            Step(
                sp.Eq(tex(r"\Phi_{t\to s}(\Phi_{s\to t}(y))"), tex("y"), evaluate=False),
                "the inverse property of a two-time map",
            ),
            Step(
                sp.Eq(
                    tex(r"\partial_t \Phi_{t\to s}(z) + J_x \Phi_{t\to s}(z)\,")
                    * tex(r"\partial_t \Phi_{s\to t}(y)"),
                    0,
                    evaluate=False,
                ),
                "differentiate in t (the chain rule), z = Phi_{s->t}(y)",
            ),
            Step(_eq_relation, "add and subtract J_x Phi_{t->s}(z) v(z, t)"),
            Step(
                sp.Eq(_RL, 0, evaluate=False),
                "for the flow of v the Lagrangian condition is the ODE in s, hence R_E = 0 too",
            ),
        ),
        twins=(
            Claim(
                "transport_sign",
                "Eulerian transport term with the wrong sign: d_t Phi - J_x Phi v.",
                _eq_twin,
                _equivalence_build(sign=-1),
            ),
            Claim(
                "teacher_at_start",
                "Lagrangian teacher queried at the start point (y, s), not the predicted point.",
                _eq_twin_start,
                _equivalence_build(start_point=True),
            ),
        ),
        symbolic=_symbolic_equivalence,
        numeric=_numeric_equivalence,
        notes=(
            "Both conditions hold for the flow of v (MATH.md 1f); this identity holds for any v, "
            "so a map that satisfies one condition for a field satisfies the other for the same "
            "field. In the paper's convention (noise at 0) both residuals change sign only."
        ),
    )
)


# --------------------------------------------------------------------------- (b) gradients


def _abs_ts(tt, ss):
    return sp.Abs(tt - ss)


def _eulerian_terms(F: VectorFunction, vx: sp.Matrix, x: sp.Matrix, tt, ss):
    """``R_E(theta)``, ``D_t F(theta)`` and ``F(theta)`` (``v`` has no parameters)."""
    Fth = F(x, tt, ss, theta)
    DtF = Fth.jacobian(x) * vx + Fth.diff(tt)
    f = _f(F, theta, x, tt, ss)
    return f.jacobian(x) * vx + f.diff(tt), DtF, Fth


def _eulerian_build(*, stop_gradient: bool = True, correction: bool = True):
    """``[g_EMD - |t - s| grad 1/2 ||sg(F + R_E) - F||^2,
    grad 1/2 ||R_E||^2 - g_EMD / |t - s| - (s - t)(d_theta D_t F)^T R_E]``.

    Twins: the first without the stop-gradient (FMM's loss as written), the second without the
    correction term (the seed's 'equivalent' read as equal gradients)."""

    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss) -> list[sp.Matrix]:
        vx = v(x, tt)
        g = emd_gradient(F, vx, x, tt, ss)
        r_e, DtF, Fth = _eulerian_terms(F, vx, x, tt, ss)
        r_e_m = r_e.xreplace(dict(zip(theta, THETA_MINUS, strict=True)))
        F_m = Fth.xreplace(dict(zip(theta, THETA_MINUS, strict=True)))
        sg_res = (F_m + r_e_m) - Fth if stop_gradient else r_e
        first = g - _abs_ts(tt, ss) * sg_gradient((sg_res.T * sg_res)[0] / 2)
        full = sg_gradient((r_e.T * r_e)[0] / 2)
        extra = (ss - tt) * DtF.jacobian(theta).T * r_e if correction else sp.zeros(len(theta), 1)
        second = full - g / _abs_ts(tt, ss) - extra
        return [first, second]

    return build


def _lagrangian_terms(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss):
    Fth = F(x, tt, ss, theta)
    f = _f(F, theta, x, tt, ss)
    f_m = f.xreplace(dict(zip(theta, THETA_MINUS, strict=True)))
    return Fth, f, f_m


def _lagrangian_build(*, stop_gradient: bool = True, correction: bool = True):
    """``[g_LMD - |t - s| grad 1/2 ||F - sg(F - R_L)||^2,
    grad 1/2 ||d_s f - sg(v(sg(f), s))||^2 - g_LMD / |t - s| - (s - t)(d_theta d_s F)^T R_L]``.

    Twins: the first with LSD's stop-gradient (teacher and its input only) in place of AYF's,
    the second without the correction term."""

    def build(F: VectorFunction, v: VectorFunction, x: sp.Matrix, tt, ss) -> list[sp.Matrix]:
        g = lmd_gradient(F, v, x, tt, ss)
        Fth, f, f_m = _lagrangian_terms(F, v, x, tt, ss)
        r_lsd = f.diff(ss) - v(f_m, ss)  # LSD: gradient through d_s f only
        r_l_m = f_m.diff(ss) - v(f_m, ss)
        F_m = Fth.xreplace(dict(zip(theta, THETA_MINUS, strict=True)))
        ayf_res = Fth - (F_m - r_l_m) if stop_gradient else r_lsd
        first = g - _abs_ts(tt, ss) * sg_gradient((ayf_res.T * ayf_res)[0] / 2)
        lsd = sg_gradient((r_lsd.T * r_lsd)[0] / 2)
        r_l = r_l_m.xreplace(dict(zip(THETA_MINUS, theta, strict=True)))
        dsF = Fth.diff(ss)
        extra = (ss - tt) * dsF.jacobian(theta).T * r_l if correction else sp.zeros(len(theta), 1)
        second = lsd - g / _abs_ts(tt, ss) - extra
        return [first, second]

    return build


def _resolve(build):
    """The claim's residuals with ``sign``/``Abs`` of ``t - s`` resolved per case (``_cases``)
    happens in the checks; here the list is flattened into one column."""

    def flat(F, v, x, tt, ss):
        return sp.Matrix.vstack(*build(F, v, x, tt, ss))

    return flat


_gEMD, _gLMD = tex(r"g_{\mathrm{EMD}}"), tex(r"g_{\mathrm{LMD}}")
_sgE = tex(r"\nabla_\theta \frac{1}{2}\|\mathrm{sg}(F_\theta + R_E) - F_\theta\|^2")
_fullE = tex(r"\nabla_\theta \frac{1}{2}\|R_E\|^2")
_corrE = tex(r"(\partial_\theta D_t F)^T R_E")
_sgL = tex(r"\nabla_\theta \frac{1}{2}\|F_\theta - \mathrm{sg}(F_\theta - R_L)\|^2")
_lsdL = tex(
    r"\nabla_\theta \frac{1}{2}\|\partial_s f_\theta - \mathrm{sg}(v(\mathrm{sg}(f), s))\|^2"
)
_corrL = tex(r"(\partial_\theta \partial_s F)^T R_L")
with sp.evaluate(False):
    _E_rel = sp.Eq(_gEMD, sp.Abs(t - s) * _sgE)
    _E_rel2 = sp.Eq(_fullE, _gEMD / sp.Abs(t - s) + (s - t) * _corrE)
    _E_twin_sg = sp.Eq(_gEMD, sp.Abs(t - s) * _fullE)
    _E_twin_corr = sp.Eq(_fullE, _gEMD / sp.Abs(t - s))
    _L_rel = sp.Eq(_gLMD, sp.Abs(t - s) * _sgL)
    _L_rel2 = sp.Eq(_lsdL, _gLMD / sp.Abs(t - s) + (s - t) * _corrL)
    _L_twin_sg = sp.Eq(_gLMD, sp.Abs(t - s) * _lsdL)
    _L_twin_corr = sp.Eq(_lsdL, _gLMD / sp.Abs(t - s))

_ID_EG = "fmm.eulerian_gradient"
_sym_e, _num_e = _gradient_identity_checks(_ID_EG)
register(
    Identity(
        id=_ID_EG,
        title="AYF-EMD = |t - s| x the stop-gradient Eulerian loss's gradient; FMM's own differs",
        seed_section=SEED_SECTION,
        assumptions=(
            "per-sample gradients at theta- = theta; v a teacher field (no parameters); s != t",
            "R_E = d_t f + J_x f v = F_tgt - F (MATH.md 1d)",
        ),
        statement=Claim(
            "statement",
            "g_EMD = |t - s| grad 1/2 ||sg(F + R_E) - F||^2, and the Eulerian FMM (= ESD) "
            "gradient is g_EMD/|t - s| + (s - t)(d_theta D_t F)^T R_E.",
            sp.Eq(_E_rel, _E_rel2, evaluate=False),
            _resolve(_eulerian_build()),
        ),
        steps=(
            Step(
                sp.Eq(_RE, tex(r"F^{\mathrm{tgt}} - F_\theta"), evaluate=False),
                "the EMD tangent identity",
            ),
            Step(_E_rel, "sg(F + R_E) = sg(F_tgt): the MeanFlow L2 loss (ayf.emd_gradient)"),
            Step(
                sp.Eq(
                    tex(r"\partial_\theta R_E"),
                    -tex(r"\partial_\theta F") + (s - t) * tex(r"\partial_\theta D_t F"),
                    evaluate=False,
                ),
                "without the stop-gradient R_E = v - F + (s - t) D_t F depends on theta twice",
            ),
            Step(_E_rel2, "grad 1/2 ||R_E||^2 = (d_theta R_E)^T R_E"),
        ),
        twins=(
            Claim(
                "no_stop_gradient",
                "AYF-EMD is |t - s| times the gradient of the Eulerian FMM loss as written.",
                _E_twin_sg,
                _resolve(_eulerian_build(stop_gradient=False)),
            ),
            Claim(
                "equal_gradients",
                "The Eulerian FMM gradient equals g_EMD/|t - s| (no Jacobian term).",
                _E_twin_corr,
                _resolve(_eulerian_build(correction=False)),
            ),
        ),
        symbolic=lambda claim: _sym_e(claim),
        numeric=_num_e,
        notes=(
            "Seed imprecision: 'equivalent to the objectives in Flow Map Matching' holds for the "
            "residual and the fixed point (R_E = 0 at the exact map) and, at the gradient level, "
            "only with a stop-gradient on everything but F and the weight |t - s|; the FMM/ESD "
            "loss as written differs by (s - t)(d_theta D_t F)^T R_E, zero only where R_E is."
        ),
    )
)

_ID_LG = "fmm.lagrangian_gradient"
_sym_l, _num_l = _gradient_identity_checks(_ID_LG)
register(
    Identity(
        id=_ID_LG,
        title="AYF-LMD = |t - s| x the stop-gradient Lagrangian loss's gradient; LSD's differs",
        seed_section=SEED_SECTION,
        assumptions=(
            "per-sample gradients at theta- = theta; v a teacher field; s != t",
            "LSD: stop-gradient on the teacher v and its input f only (the paper's code)",
        ),
        statement=Claim(
            "statement",
            "g_LMD = |t - s| grad 1/2 ||F - sg(F - R_L)||^2, and the LSD gradient is "
            "g_LMD/|t - s| + (s - t)(d_theta d_s F)^T R_L.",
            sp.Eq(_L_rel, _L_rel2, evaluate=False),
            _resolve(_lagrangian_build()),
        ),
        steps=(
            Step(
                sp.Eq(
                    _RL,
                    F_d(x_t, t, s)
                    + (s - t) * sp.Derivative(F_d(x_t, t, s), s)
                    - v_d(f_d(x_t, t, s), s),
                    evaluate=False,
                ),
                "d_s f = F + (s - t) d_s F",
            ),
            Step(_L_rel, "sign(s - t)(s - t) = |t - s| (ayf.lmd_gradient)"),
            Step(_L_rel2, "LSD differentiates d_s f = F + (s - t) d_s F in theta"),
        ),
        twins=(
            Claim(
                "lsd_stop_gradient",
                "AYF-LMD is |t - s| times LSD's gradient (the stop-gradient on the teacher only).",
                _L_twin_sg,
                _resolve(_lagrangian_build(stop_gradient=False)),
            ),
            Claim(
                "equal_gradients",
                "LSD's gradient equals g_LMD/|t - s| (no d_s F term).",
                _L_twin_corr,
                _resolve(_lagrangian_build(correction=False)),
            ),
        ),
        symbolic=lambda claim: _sym_l(claim),
        numeric=_num_l,
        notes=(
            "The Lagrangian FMM loss without any stop-gradient adds "
            "-(s - t)(J_v(f, s) d_theta F)^T R_L through the teacher's input. All three agree "
            "where R_L = 0, and LSD's extra term is O(|t - s|) as s -> t."
        ),
    )
)


# --------------------------------------------------------------------------- (c) PSD


def _psd_build(*, wrong_order: bool = False, second_at_x: bool = False):
    """``f_{t->s}(x) - f_{u->s}(f_{t->u}(x))`` with ``f = x + (s - t) F`` (``u`` is the symbol
    ``r``). Twins: the composition in the wrong order ``f_{t->u}(f_{u->s}(x))``; the second jump
    from ``x`` instead of ``f_{t->u}(x)``."""

    def build(F: VectorFunction, x: sp.Matrix, tt, uu, ss) -> sp.Matrix:
        def f(y, a, b):  # x - (t - s) F, so that (t - s) cancels against u*'s denominator
            return y - (a - b) * F(y, a, b)

        if wrong_order:
            comp = f(f(x, uu, ss), tt, uu)
        elif second_at_x:
            comp = f(x, tt, uu) + f(x, uu, ss) - x
        else:
            comp = f(f(x, tt, uu), uu, ss)
        return f(x, tt, ss) - comp

    return build


_ID_PSD = "fmm.progressive_composition"


def _symbolic_psd(claim: Claim) -> MethodResult:
    """Abstract flow ``Phi`` (d=1), ``F = (x - Phi)/(t - s)``, under the semigroup rule."""
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


def _numeric_psd(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return numeric_on_random_exact_flow(
        lambda flow: claim.build(flow.average_velocity(), X, t, r, s),
        (t, r, s),
        seed=_core.seed_of(_ID_PSD),
        ordered=True,
        start=start,
    )


_u = sp.Symbol("u")
with sp.evaluate(False):
    _psd_rel = sp.Eq(f_d(f_d(x_t, t, _u), _u, s), f_d(x_t, t, s))
    _psd_twin = sp.Eq(f_d(f_d(x_t, _u, s), t, _u), f_d(x_t, t, s))
    _psd_twin2 = sp.Eq(f_d(x_t, t, _u) + f_d(x_t, _u, s) - x_t, f_d(x_t, t, s))

register(
    Identity(
        id=_ID_PSD,
        title="PSD target f_{u->s}(f_{t->u}(x)) = f_{t->s}(x) at the exact map",
        seed_section=SEED_SECTION,
        assumptions=(
            "f = Phi is the exact flow (F = u*); s < u < t",
            "the paper's X_{u,t}(X_{s,u}) in its convention (noise at 0) is this composition",
        ),
        statement=Claim(
            "statement",
            "The progressive target, the composition f_{u->s} o f_{t->u}, equals the one-jump map "
            "at the exact flow: the PSD residual vanishes there.",
            _psd_rel,
            _psd_build(),
        ),
        steps=(
            Step(
                sp.Eq(f_d(x_t, t, _u), tex(r"\Phi_{t\to u}(x_t)"), evaluate=False),
                "F = u*: the first jump is exact",
            ),
            Step(_psd_rel, "the semigroup property Phi_{u->s} o Phi_{t->u} = Phi_{t->s}"),
        ),
        twins=(
            Claim(
                "wrong_order",
                "The composition in the wrong order, f_{t->u}(f_{u->s}(x)).",
                _psd_twin,
                _psd_build(wrong_order=True),
            ),
            Claim(
                "second_jump_at_x",
                "The second jump taken from x instead of the predicted f_{t->u}(x).",
                _psd_twin2,
                _psd_build(second_at_x=True),
            ),
        ),
        symbolic=_symbolic_psd,
        numeric=_numeric_psd,
        notes=(
            "In velocity space the PSD residual (f_{t->s} - sg(f_{u->s} o f_{t->u}))/(s - t) is "
            "SplitMeanFlow's split residual with r = u (split.semigroup); like it, PSD is also "
            "zero for F = const, so its flow-matching rows anchor it."
        ),
    )
)
