"""Consistency models: the discrete-to-continuous limit of the consistency loss, and CTM's
composition (semigroup) property.

* Discrete CM with the squared L2 distance,
  ``L_D = ||f_theta(x_t, t) - f_{theta-}(x~, t - D)||^2`` with ``x~ = x_t - D v + D^2 w`` (an exact
  ODE step, an Euler step ``w = 0``, or the consistency-training point ``x_t - D (x1 - x0)``):
  ``grad_theta L_D / D -> 2 (d_theta f)^T d f_{theta-}/dt`` as ``D -> 0``, twice the continuous-CM
  (sCM) gradient. The raw gradient tends to 0.
* CTM: for the exact flow map ``f_{t->s} = f_{r->s} o f_{t->r}`` (and ``f_{t->t} = id``): the
  teacher-solver target ``f_{r->s}(Solver_{t->r}(x_t))`` is exact only when the solver is.
"""

from __future__ import annotations

import time

import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import (
    ExactFlow,
    VectorFunction,
    abstract,
    numeric_on_random_exact_flow,
    random_vector_function,
    sg_gradient,
    symbolic_on_exact_flows,
)
from ._notation import DIM, THETA_MINUS, X, h, r, s, t, tex, theta, v_d, x_t

__all__: list[str] = []

# --------------------------------------------------------------------------- discrete -> continuous

_ID_DC = "consistency.discrete_to_continuous"
_N_ARGS = DIM + 1 + len(theta)  # f(x1, x2, t, theta1, theta2)


def _discrete_build(order: int, factor: int):
    """Claim: ``grad L_D = D^order * factor * (d_theta f)^T d f_{theta-}/dt + O(D^(order+1))``."""

    def build(f: VectorFunction, v: VectorFunction, w: VectorFunction, x: sp.Matrix, tt):
        vx = v(x, tt)
        x_step = x - h * vx + h**2 * w(x, tt, h)
        gap = f(x, tt, theta) - f(x_step, tt - h, THETA_MINUS)
        grad = sg_gradient((gap.T * gap)[0])
        f_th, f_m = f(x, tt, theta), f(x, tt, THETA_MINUS)
        scm = sg_gradient((f_th.T * (f_m.jacobian(x) * vx + f_m.diff(tt)))[0])
        return grad, order, factor * scm

    return build


def _symbolic_dc(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    f = abstract("f", _N_ARGS, DIM)
    v, w = abstract("v", DIM + 1, DIM), abstract("w", DIM + 2, DIM)
    return _core.symbolic_limit(
        claim.build(f, v, w, X, t),
        h,
        method="series limit in the step D (d=2, abstract f_theta, v and step remainder w)",
        start=start,
    )


def _numeric_dc(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    seed = _core.seed_of(_ID_DC)
    rng = np.random.default_rng(seed)
    f = random_vector_function(_N_ARGS, DIM, rng)
    v, w = random_vector_function(DIM + 1, DIM, rng), random_vector_function(DIM + 2, DIM, rng)
    points = _core.random_points(seed, [(-1.5, 1.5), (-1.5, 1.5), (0.05, 1), (-1, 1), (-1, 1)], n=6)
    return _core.numeric_limit(
        claim.build(f, v, w, X, t),
        [*X, t, *theta],
        h,
        points,
        method=(
            f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits, random "
            "smooth f_theta, v, w (d=2), D = 1e-20"
        ),
        start=start,
    )


_D = tex(r"\Delta t")
_gradL = tex(r"\nabla_\theta L_{\Delta t}")
_gSCM = tex(r"(\partial_\theta f_\theta)^T \frac{d f_{\theta^-}}{dt}")
with sp.evaluate(False):
    _dc_relation = sp.Eq(sp.Limit(_gradL / _D, _D, 0), 2 * _gSCM)
    _dc_twin_raw = sp.Eq(sp.Limit(_gradL, _D, 0), 2 * _gSCM)
    _dc_twin_factor = sp.Eq(sp.Limit(_gradL / _D, _D, 0), _gSCM)
    _L = sp.Eq(
        tex(r"L_{\Delta t}"),
        tex(r"\|f_\theta(x_t,t) - f_{\theta^-}(\tilde x, t-\Delta t)\|^2"),
    )

register(
    Identity(
        id=_ID_DC,
        title="Discrete CM (L2) -> continuous CM: grad L / Dt -> 2 (d_theta f)^T df/dt",
        seed_section="Consistency Models / Continuous CM",
        assumptions=(
            "d(x, y) = ||x - y||^2; f_theta smooth; theta- = theta after differentiation",
            "x~ = x_t - Dt v + Dt^2 w(x_t, t, Dt) with any smooth w (exact ODE step, Euler step, "
            "or the consistency-training point)",
        ),
        statement=Claim(
            "statement",
            "grad_theta L_Dt = Dt * 2 (d_theta f)^T d f_{theta-}/dt + O(Dt^2).",
            _dc_relation,
            _discrete_build(1, 2),
        ),
        steps=(
            Step(_L, "the discrete consistency loss with the squared L2 distance"),
            Step(
                sp.Eq(
                    _gradL,
                    2
                    * tex(r"(\partial_\theta f_\theta)^T")
                    * tex(r"(f_\theta(x_t,t) - f_{\theta^-}(\tilde x, t-\Delta t))"),
                    evaluate=False,
                ),
                "stop-gradient: only the first term depends on theta",
            ),
            Step(
                sp.Eq(
                    tex(r"f_\theta(x_t,t) - f_{\theta^-}(\tilde x, t-\Delta t)"),
                    _D * tex(r"\frac{d f_{\theta^-}}{dt}") + tex(r"O(\Delta t^2)"),
                    evaluate=False,
                ),
                "first-order expansion: J_x f v + d_t f at theta- = theta",
            ),
            Step(_dc_relation, "divide by Dt and let Dt -> 0"),
        ),
        twins=(
            Claim(
                "raw_gradient",
                "The raw gradient (not divided by Dt) converges to the continuous objective.",
                _dc_twin_raw,
                _discrete_build(0, 2),
            ),
            Claim(
                "factor_two_missing",
                "The limit without the factor 2 of the squared distance.",
                _dc_twin_factor,
                _discrete_build(1, 1),
            ),
        ),
        symbolic=_symbolic_dc,
        numeric=_numeric_dc,
        notes=(
            "Seed imprecision: it is grad L / Dt that converges (with a factor 2 from the square); "
            "the raw gradient tends to 0. Euler and exact steps differ at second order only."
        ),
    )
)


# --------------------------------------------------------------------------- CTM composition

_ID_CTM = "consistency.ctm_composition"


def _ctm_build(solver: str):
    def build(flow: ExactFlow, x: sp.Matrix, tt, rr, ss) -> list[sp.Matrix]:
        Phi = flow.flow_map
        if solver == "exact":
            composite = Phi(Phi(x, tt, rr), rr, ss)
        elif solver == "euler":
            composite = Phi(x - (tt - rr) * flow.velocity(x, tt), rr, ss)
        elif solver == "swapped":
            composite = Phi(Phi(x, rr, ss), tt, rr)
        else:
            raise ValueError(f"unknown solver {solver!r}")
        return [Phi(x, tt, tt) - x, Phi(x, tt, ss) - composite]

    return build


def _symbolic_ctm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return symbolic_on_exact_flows(lambda flow, x: claim.build(flow, x, t, r, s), start=start)


def _numeric_ctm(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return numeric_on_random_exact_flow(
        lambda flow: claim.build(flow, X, t, r, s),
        (t, r, s),
        seed=_core.seed_of(_ID_CTM),
        ordered=True,
        start=start,
    )


_solver = sp.Function(r"\mathrm{Solver}_{t\to r}")
with sp.evaluate(False):
    _ctm_relation = sp.Eq(sp.Function(r"f_{t\to s}")(x_t), sp.Function(r"f_{r\to s}")(_solver(x_t)))
    _ctm_euler = sp.Eq(
        sp.Function(r"f_{t\to s}")(x_t),
        sp.Function(r"f_{r\to s}")(x_t - (t - r) * v_d(x_t, t)),
    )
    _ctm_swapped = sp.Eq(
        sp.Function(r"f_{t\to s}")(x_t), sp.Function(r"f_{t\to r}")(sp.Function(r"f_{r\to s}")(x_t))
    )

register(
    Identity(
        id=_ID_CTM,
        title="CTM: f_{t->s} = f_{r->s} o Solver_{t->r} for the exact flow map and solver",
        seed_section="Consistency Models (CTM)",
        assumptions=(
            "f = Phi is the exact flow map of v and the teacher solver is exact",
            "s < r < t",
        ),
        statement=Claim(
            "statement",
            "The exact flow map satisfies f_{t->t} = id and f_{t->s} = f_{r->s} o f_{t->r}.",
            _ctm_relation,
            _ctm_build("exact"),
        ),
        steps=(
            Step(
                sp.Eq(_solver(x_t), sp.Function(r"\Phi_{t\to r}")(x_t), evaluate=False),
                "an exact teacher solver",
            ),
            Step(_ctm_relation, "uniqueness of ODE solutions: the semigroup property"),
        ),
        twins=(
            Claim(
                "euler_solver",
                "One Euler step of the teacher in place of the exact solver.",
                _ctm_euler,
                _ctm_build("euler"),
            ),
            Claim(
                "swapped_order",
                "Composition in the wrong order f_{t->r} o f_{r->s}.",
                _ctm_swapped,
                _ctm_build("swapped"),
            ),
        ),
        symbolic=_symbolic_ctm,
        numeric=_numeric_ctm,
        notes="f_{t->t} = x together with the semigroup law is what CTM's global target relies on.",
    )
)
