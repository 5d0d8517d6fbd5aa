"""ReFlow's straightness measure and Inductive Moment Matching's MMD.

* ReFlow: ``S(Z) = int_0^1 E ||(Z_1 - Z_0) - Z_t'||^2 dt`` vanishes exactly for straight paths
  ``Z_t = (1 - t) Z_0 + t Z_1`` (for any coupling of the endpoints).
* IMM: with a characteristic kernel (Gaussian), ``MMD^2(P, Q) = 0`` if and only if ``P = Q``;
  a polynomial kernel only sees moments and is blind to distributions with equal moments.
* IMM's target: for the exact flow map, the laws of ``f_{t->s}(x_t)`` and ``f_{r->s}(x_r)`` are both
  ``p_s``, so their MMD vanishes for every kernel (distributionally: the points differ pointwise).
"""

from __future__ import annotations

import time

import mpmath
import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import GaussianTeacher1D, gaussian_teacher_1d, random_rational
from ._notation import r, s, t, tex

__all__ = ["gauss_kernel_mean", "mmd2_discrete", "straightness"]

# --------------------------------------------------------------------------- ReFlow

_ID_STRAIGHT = "reflow.straightness"
_z0 = sp.Matrix(sp.symbols("z0_1 z0_2", real=True))
_z1 = sp.Matrix(sp.symbols("z1_1 z1_2", real=True))


def straightness(path: sp.Matrix) -> sp.Expr:
    """``int_0^1 ||(Z_1 - Z_0) - Z_t'||^2 dt`` for one pair, ``path`` a column in ``t``."""
    chord = path.subs(t, 1) - path.subs(t, 0)
    gap = chord - path.diff(t)
    return sp.integrate(sp.expand((gap.T * gap)[0]), (t, 0, 1))


def _straight(z0, z1):
    return (1 - t) * z0 + t * z1


def _trig(z0, z1):
    return sp.cos(sp.pi * t / 2) * z0 + sp.sin(sp.pi * t / 2) * z1


def _bump(z0, z1):
    return (1 - t) * z0 + t * z1 + t * (1 - t) * sp.Matrix([1, -1])


def _symbolic_straight(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return _core.symbolic_zero(
        straightness(claim.build(_z0, _z1)),
        method="exact integration over t for symbolic endpoints (d=2)",
        start=start,
    )


def _numeric_straight(claim: Claim) -> MethodResult:
    """A batch of random endpoint pairs; ``E`` is the batch mean, the t-integral is mpmath
    quadrature of the pointwise integrand (no symbolic integration)."""
    start = time.perf_counter()
    rng = np.random.default_rng(_core.seed_of(_ID_STRAIGHT))
    path = claim.build(_z0, _z1)
    gap = (path.subs(t, 1) - path.subs(t, 0)) - path.diff(t)
    integrand = sp.lambdify([t, *_z0, *_z1], (gap.T * gap)[0], "mpmath")
    pairs = [[mpmath.mpf(float(c)) for c in rng.normal(size=4)] for _ in range(8)]
    with mpmath.workdps(_core.NUMERIC_DPS):
        value = mpmath.quad(lambda u: sum(integrand(u, *p) for p in pairs) / len(pairs), [0, 1])
    return _core.numeric_values(
        [("S(Z)", float(abs(value)), _core.NUMERIC_TOL)],
        method=(
            f"numeric: mpmath quadrature ({_core.NUMERIC_DPS} digits) of the batch mean over 8 "
            "random Gaussian endpoint pairs (d=2)"
        ),
        start=start,
    )


_SZ = tex(r"S(Z) = \int_0^1 \mathbb{E}\|(Z_1 - Z_0) - \dot Z_t\|^2 dt")
_Zt = sp.Symbol("Z_t")
_Z0, _Z1 = sp.symbols("Z_0 Z_1")
with sp.evaluate(False):
    _straight_rel = sp.Eq(_Zt, (1 - t) * _Z0 + t * _Z1)
    _trig_rel = sp.Eq(_Zt, sp.cos(sp.pi * t / 2) * _Z0 + sp.sin(sp.pi * t / 2) * _Z1)
    _bump_rel = sp.Eq(_Zt, (1 - t) * _Z0 + t * _Z1 + t * (1 - t) * sp.Symbol("c"))

register(
    Identity(
        id=_ID_STRAIGHT,
        title="ReFlow straightness: S(Z) = 0 for straight paths Z_t = (1 - t) Z_0 + t Z_1",
        seed_section="ReFlow",
        assumptions=(
            "any coupling of (Z_0, Z_1); the statement holds pair by pair",
            "conversely S(Z) = 0 forces Z_t' = Z_1 - Z_0 for almost every t: straight paths",
        ),
        statement=Claim(
            "statement",
            "For the straight interpolation the straightness measure is exactly 0.",
            _straight_rel,
            _straight,
        ),
        steps=(
            Step(_SZ, "the straightness of a process (rectified flow)"),
            Step(
                sp.Eq(tex(r"\dot Z_t"), _Z1 - _Z0, evaluate=False),
                "the straight path has constant velocity",
            ),
            Step(sp.Eq(tex("S(Z)"), 0, evaluate=False), "the integrand vanishes"),
        ),
        twins=(
            Claim(
                "trigonometric_path",
                "The VP (cos, sin) interpolation with the same endpoints is straight.",
                _trig_rel,
                _trig,
            ),
            Claim(
                "bumped_path",
                "A path with the same endpoints plus a bump t(1 - t)c is straight.",
                _bump_rel,
                _bump,
            ),
        ),
        symbolic=_symbolic_straight,
        numeric=_numeric_straight,
        notes="S(Z) = 0 lets the ODE be solved in one Euler step; ReFlow's re-coupling aims at it.",
    )
)


# --------------------------------------------------------------------------- IMM: kernel

_ID_CHAR = "imm.mmd_characteristic"
_a, _b = sp.symbols("a b", real=True)


def _gaussian_kernel(a, b):
    return sp.exp(-((a - b) ** 2) / 2)


def _quadratic_kernel(a, b):
    return (1 + a * b) ** 2


def mmd2_discrete(kernel, p_atoms, p_weights, q_atoms, q_weights):
    """``MMD^2`` between two discrete measures (the V-statistic, exact for discrete laws):
    ``E k(X, X') + E k(Y, Y') - 2 E k(X, Y)``; ``kernel`` is an mpmath callable."""

    def e(xs, ws, ys, vs):
        return mpmath.fsum(
            wi * vj * kernel(xi, yj)
            for xi, wi in zip(xs, ws, strict=True)
            for yj, vj in zip(ys, vs, strict=True)
        )

    return (
        e(p_atoms, p_weights, p_atoms, p_weights)
        + e(q_atoms, q_weights, q_atoms, q_weights)
        - 2 * e(p_atoms, p_weights, q_atoms, q_weights)
    )


def _symbolic_char(claim: Claim) -> MethodResult:
    """``P = N(0, 1)`` and ``Q = (delta_{-1} + delta_{+1})/2`` share mean and variance; the claim
    ("MMD^2 = 0 iff P = Q") needs ``MMD^2(P, Q) > 0`` exactly; ``MMD^2(P, P) = 0`` is exact."""
    start = time.perf_counter()
    k = claim.build(_a, _b)
    phi = lambda u: sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi)  # noqa: E731
    inner = sp.integrate(k * phi(_a), (_a, -sp.oo, sp.oo))  # E_{X ~ P} k(X, b)
    e_pp = sp.integrate(inner * phi(_b), (_b, -sp.oo, sp.oo))
    atoms = (-1, 1)
    e_qq = sum(k.subs({_a: u, _b: w}) for u in atoms for w in atoms) / 4
    e_pq = sum(inner.subs(_b, w) for w in atoms) / 2
    mmd_pq = e_pp + e_qq - 2 * e_pq
    mmd_pp = e_pp + e_pp - 2 * e_pp
    return _core.symbolic_true(
        [
            ("MMD^2(P, P) = 0", sp.simplify(mmd_pp) == 0),
            (
                f"MMD^2(N(0,1), (d_-1 + d_1)/2) = {sp.N(mmd_pq, 6)} > 0",
                bool(mmd_pq.is_positive),
            ),
        ],
        method="exact Gaussian integrals: P = N(0, 1) against Q = (d_-1 + d_+1)/2 (same mean, variance)",
        start=start,
    )


def _numeric_char(claim: Claim) -> MethodResult:
    """Random discrete ``P`` (5 atoms); ``P'`` = the same law written differently (atoms
    permuted, one split in two); ``Q`` = ``P`` reflected about its mean (same mean and variance,
    a different law). Pass: ``MMD^2(P, P') = 0`` and ``MMD^2(P, Q) > 1e-12``."""
    start = time.perf_counter()
    rng = np.random.default_rng(_core.seed_of(_ID_CHAR))
    kernel = sp.lambdify([_a, _b], claim.build(_a, _b), "mpmath")
    checks = []
    with mpmath.workdps(_core.NUMERIC_DPS):
        for trial in range(3):
            atoms = [mpmath.mpf(float(c)) for c in rng.normal(size=5)]
            raw = rng.uniform(0.5, 1.5, size=5)
            weights = [mpmath.mpf(float(w)) / mpmath.fsum(map(float, raw)) for w in raw]
            perm = rng.permutation(5)
            p2_atoms = [atoms[i] for i in perm] + [atoms[perm[0]]]
            p2_weights = [weights[i] for i in perm] + [weights[perm[0]] / 2]
            p2_weights[0] = weights[perm[0]] / 2
            mean = mpmath.fsum(w * a for w, a in zip(weights, atoms, strict=True))
            q_atoms = [2 * mean - a for a in atoms]
            same = mmd2_discrete(kernel, atoms, weights, p2_atoms, p2_weights)
            diff = mmd2_discrete(kernel, atoms, weights, q_atoms, weights)
            checks.append((f"trial {trial}: MMD^2(P, P')", float(abs(same)), _core.NUMERIC_TOL))
            # a distinct law must be seen: residual 1 when MMD^2(P, Q) is not positive, else 0
            checks.append(
                (
                    f"trial {trial}: MMD^2(P, Q) = {float(diff):.2e} must exceed 1e-12",
                    0.0 if diff > 1e-12 else 1.0,
                    0.5,
                )
            )
    return _core.numeric_values(
        checks,
        method=(
            f"numeric, exact MMD^2 of random discrete laws (mpmath {_core.NUMERIC_DPS} digits): "
            "equal laws in two representations, and a reflected law with equal mean and variance"
        ),
        start=start,
    )


_k = sp.Function("k")
with sp.evaluate(False):
    _char_rel = sp.Eq(
        _k(sp.Symbol("x"), sp.Symbol("y")), sp.exp(-((sp.Symbol("x") - sp.Symbol("y")) ** 2) / 2)
    )
    _quad_rel = sp.Eq(
        _k(sp.Symbol("x"), sp.Symbol("y")), (1 + sp.Symbol("x") * sp.Symbol("y")) ** 2
    )

register(
    Identity(
        id=_ID_CHAR,
        title="IMM: with a characteristic (Gaussian) kernel, MMD^2(P, Q) = 0 iff P = Q",
        seed_section="Inductive Moment Matching",
        assumptions=(
            "MMD^2(P, Q) = E k(X, X') + E k(Y, Y') - 2 E k(X, Y), X, X' ~ P, Y, Y' ~ Q",
            "1-D laws; the Gaussian kernel is characteristic, a polynomial kernel is not",
        ),
        statement=Claim(
            "statement",
            "The Gaussian-kernel MMD vanishes for equal laws and is positive for distinct laws, "
            "even with equal mean and variance.",
            _char_rel,
            _gaussian_kernel,
        ),
        steps=(
            Step(
                tex(r"\mathrm{MMD}^2(P,Q) = \|\mu_P - \mu_Q\|^2_{\mathcal{H}_k}"),
                "MMD is the RKHS distance of the kernel mean embeddings",
            ),
            Step(
                tex(r"\mu_P = \mu_Q \Leftrightarrow P = Q"),
                "the embedding is injective for a characteristic kernel",
            ),
        ),
        twins=(
            Claim(
                "polynomial_kernel",
                "The quadratic kernel (1 + xy)^2 sees only the first two moments: MMD = 0 for "
                "distinct laws with equal mean and variance.",
                _quad_rel,
                _quadratic_kernel,
            ),
        ),
        symbolic=_symbolic_char,
        numeric=_numeric_char,
        notes=(
            "A finite-sample MMD^2 estimate (the unbiased U-statistic) is zero only in mean; the "
            "checks here use exact laws."
        ),
    )
)


# --------------------------------------------------------------------------- IMM: exact flow

_ID_FLOW = "imm.exact_flow_marginals"


def _pushforward(teacher: GaussianTeacher1D, kind: str, tt, ss) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of ``map_{t->s}(x_t)``, ``x_t ~ N(alpha_t mu, c_t)``, for an affine map."""
    y = sp.Dummy("y", real=True)
    if kind == "exact":
        image = teacher.flow_map(y, tt, ss)
    elif kind == "euler":
        image = y - (tt - ss) * teacher.velocity(y, tt)
    else:
        raise ValueError(f"unknown map {kind!r}")
    slope = sp.diff(image, y)
    offset = image.subs(y, 0)
    u = sp.Dummy("u", real=True)
    mean_t = (teacher.alpha(u) * teacher.mu).subs(u, tt)
    return slope * mean_t + offset, slope**2 * teacher.variance(tt)


def _flow_build(kind: str):
    """Claim builder: the push-forward laws ``((m_t, v_t), (m_r, v_r))`` of ``x_t ~ p_t`` and
    ``x_r ~ p_r`` to time ``s`` by the claimed map; the claim is that they are equal."""

    def build(teacher: GaussianTeacher1D, tt, rr, ss):
        return _pushforward(teacher, kind, tt, ss), _pushforward(teacher, kind, rr, ss)

    return build


def _symbolic_flow(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    (m1, v1), (m2, v2) = claim.build(gaussian_teacher_1d(), t, r, s)
    return _core.symbolic_zero(
        [m1 - m2, v1 - v2],
        method="exact simplification of the push-forward laws (Gaussian teacher, abstract path)",
        start=start,
    )


def gauss_kernel_mean(mean, var):
    """``E exp(-Z^2/2)`` for ``Z ~ N(mean, var)``: ``exp(-mean^2 / (2 (1 + var))) / sqrt(1 + var)``
    (a Gaussian integral; the tests check it against quadrature)."""
    return mpmath.exp(-(mean**2) / (2 * (1 + var))) / mpmath.sqrt(1 + var)


def _numeric_flow(claim: Claim) -> MethodResult:
    """Concrete schedules (VP and a random one), random ``(t, r, s, mu, lambda)``: the
    Gaussian-kernel MMD^2 between the two push-forward laws, using ``X - Y ~ N(m1 - m2, v1 + v2)``
    for independent Gaussians and the closed form of the 1-D expectation."""
    start = time.perf_counter()
    seed = _core.seed_of(_ID_FLOW)
    rng = np.random.default_rng(seed)
    u = sp.Dummy("u", real=True)
    mu, lam = sp.Symbol("mu", real=True), sp.Symbol("lam", positive=True)
    ka = abs(random_rational(rng)) / 6
    teachers = [
        GaussianTeacher1D(
            sp.Lambda(u, sp.cos(sp.pi * u / 2)), sp.Lambda(u, sp.sin(sp.pi * u / 2)), mu, lam
        ),
        GaussianTeacher1D(sp.Lambda(u, (1 - u) * (1 + ka * u)), sp.Lambda(u, u), mu, lam),
    ]
    points = _core.random_points(
        seed,
        [(0.1, 0.95), (0.1, 0.95), (0.05, 0.9), (-1, 1), (0.2, 2)],
        n=3,
        accept=lambda p: p[0] > p[1] + 0.05 and p[1] > p[2] + 0.05,
    )
    checks = []
    for teacher in teachers:
        laws = claim.build(teacher, t, r, s)
        fn = sp.lambdify([t, r, s, mu, lam], [*laws[0], *laws[1]], "mpmath")
        with mpmath.workdps(_core.NUMERIC_DPS):
            for pt in points:
                m1, v1, m2, v2 = fn(*pt)
                mmd = (
                    gauss_kernel_mean(0, 2 * v1)
                    + gauss_kernel_mean(0, 2 * v2)
                    - 2 * gauss_kernel_mean(m1 - m2, v1 + v2)
                )
                checks.append(("MMD^2", float(abs(mmd)), _core.NUMERIC_TOL))
    return _core.numeric_values(
        checks,
        method=(
            f"numeric at {len(points)} random (t > r > s, mu, lambda) per schedule (VP, random), "
            f"mpmath {_core.NUMERIC_DPS} digits: Gaussian-kernel MMD^2 of the two push-forwards"
        ),
        start=start,
    )


with sp.evaluate(False):
    _flow_rel = sp.Eq(
        tex(r"\mathrm{Law}(f_{t\to s}(x_t))"),
        sp.Eq(tex(r"\mathrm{Law}(f_{r\to s}(x_r))"), sp.Symbol("p_s")),
    )
    _euler_rel = sp.Eq(
        tex(r"\mathrm{Law}(x_t - (t-s) v(x_t,t))"),
        tex(r"\mathrm{Law}(x_r - (r-s) v(x_r,r))"),
    )

register(
    Identity(
        id=_ID_FLOW,
        title="IMM: the exact flow map pushes p_t and p_r to the same p_s (MMD^2 = 0)",
        seed_section="Inductive Moment Matching",
        assumptions=(
            "1-D Gaussian data on a general path; x_t ~ p_t, x_r ~ p_r; s < r < t",
            "distributional statement: f_{t->s}(x_t) and f_{r->s}(x_r) differ pointwise for the "
            "same (x0, x1) pair",
        ),
        statement=Claim(
            "statement",
            "Both push-forward laws are N(alpha_s mu, c_s), so the MMD between them is 0.",
            _flow_rel,
            _flow_build("exact"),
        ),
        steps=(
            Step(
                tex(r"x_t \sim \mathcal{N}(\alpha_t\mu, c_t)"),
                "the marginal of the path",
            ),
            Step(
                tex(r"\Phi_{t\to s}(x_t) \sim \mathcal{N}(\alpha_s\mu, \frac{c_s}{c_t} c_t)"),
                "the exact flow map is affine with slope sqrt(c_s/c_t)",
            ),
            Step(_flow_rel, "independent of t: the same law from every starting time"),
        ),
        twins=(
            Claim(
                "euler_map",
                "One Euler step of the teacher as the map: the laws depend on the start time.",
                _euler_rel,
                _flow_build("euler"),
            ),
        ),
        symbolic=_symbolic_flow,
        numeric=_numeric_flow,
    )
)
