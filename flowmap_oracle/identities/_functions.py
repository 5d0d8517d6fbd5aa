"""Functions the identities are checked on: abstract ones (symbolic checks) and random smooth
ones or exact flows (numeric checks).

* :class:`VectorFunction` wraps SymPy expressions in placeholder arguments, so a builder can call
  ``F(x, t, s)`` the same way whether ``F`` is abstract (``F_1(x_1, x_2, t, s)``, undefined
  functions) or concrete (a random smooth expression, an exact average velocity).
* :func:`random_smooth` draws a random smooth scalar function (low-degree polynomial plus
  trigonometric terms with rational coefficients): where an identity holds for *any* function,
  the numeric check evaluates it on such functions.
* :func:`random_exact_flow` draws a random *exact* flow in d = 2: a time-dependent affine flow
  conjugated by a fixed nonlinear diffeomorphism (a shear), so the flow map
  ``Phi_{t->s}``, its velocity ``v`` and its average velocity ``u* = (x - Phi_{t->s}(x))/(t - s)``
  are all closed-form, the trajectories are curved and ``J_x F`` is not symmetric.
* :func:`gaussian_teacher_1d` is the 1-D Gaussian teacher on a general path
  ``x_t = alpha(t) x0 + beta(t) x1``: marginal velocity by Gaussian conditioning and the exact flow
  map ``Phi_{t->s}(x) = alpha_s mu + sqrt(c_s / c_t) (x - alpha_t mu)``, ``c = alpha^2 lam + beta^2``.
* :func:`riccati_flow` is the nonlinear 1-D flow of ``v = x^2``: ``Phi_{t->s}(x) = x/(1-(s-t)x)``.

:func:`symbolic_on_exact_flows` and :func:`numeric_on_random_exact_flow` check a claim that holds
for every exact flow on these flows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import sympy as sp

from . import _core
from ._core import MethodResult
from ._notation import THETA_MINUS, X, theta

__all__ = [
    "FLOW_SEED",
    "ExactFlow",
    "GaussianTeacher1D",
    "VectorFunction",
    "abstract",
    "gaussian_teacher_1d",
    "jvp",
    "numeric_on_random_exact_flow",
    "random_exact_flow",
    "random_rational",
    "random_smooth",
    "random_vector_function",
    "riccati_flow",
    "sg_gradient",
    "symbolic_on_exact_flows",
]


@dataclass(frozen=True)
class VectorFunction:
    """A function given by SymPy expressions in placeholder arguments.

    Attributes:
        params: the placeholder symbols, point coordinates first, then times / parameters.
        exprs: a column matrix of outputs in terms of ``params``.

    Calling it substitutes the arguments (a :class:`sympy.Matrix` counts as its entries) for the
    placeholders simultaneously and returns a column matrix.
    """

    params: tuple[sp.Symbol, ...]
    exprs: sp.Matrix

    def __call__(self, *args: sp.Basic | sp.MatrixBase) -> sp.Matrix:
        flat: list[sp.Basic] = []
        for a in args:
            flat.extend(list(a) if isinstance(a, sp.MatrixBase) else [sp.sympify(a)])
        if len(flat) != len(self.params):
            raise ValueError(f"expected {len(self.params)} scalar arguments, got {len(flat)}")
        return self.exprs.xreplace(dict(zip(self.params, flat, strict=True)))

    @property
    def out_dim(self) -> int:
        return self.exprs.shape[0]


def _placeholders(n: int) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Dummy(f"a{i}", real=True) for i in range(n))


def abstract(name: str, n_args: int, out_dim: int) -> VectorFunction:
    """An abstract vector function ``name_i(a_1, ..., a_n)`` of ``n_args`` scalar arguments.

    With ``out_dim = 1`` the single component is called ``name``.
    """
    params = _placeholders(n_args)
    if out_dim == 1:
        comps = [sp.Function(name, real=True)(*params)]
    else:
        comps = [sp.Function(f"{name}_{i + 1}", real=True)(*params) for i in range(out_dim)]
    return VectorFunction(params, sp.Matrix(comps))


def jvp(
    fn: VectorFunction,
    primals: Sequence[sp.Basic | sp.MatrixBase],
    tangents: Sequence[sp.Basic | sp.MatrixBase],
) -> sp.Matrix:
    """Forward-mode derivative ``d/de fn(primals + e * tangents)`` at ``e = 0`` (what
    ``torch.func.jvp`` returns as its second output)."""
    eps = sp.Dummy("eps", real=True)
    moved = [p + eps * tg for p, tg in zip(primals, tangents, strict=True)]
    return fn(*moved).diff(eps).subs(eps, 0).doit()


def sg_gradient(loss: sp.Expr) -> sp.Matrix:
    """``grad_theta loss`` with the stop-gradient copy ``theta-`` held constant, then
    ``theta- := theta``: exactly the semantics of ``sg`` in a per-sample gradient."""
    g = sp.Matrix([loss.diff(th) for th in theta])
    return g.xreplace(dict(zip(THETA_MINUS, theta, strict=True)))


# --------------------------------------------------------------------------- random functions


def random_rational(rng: np.random.Generator, *, num: int = 6, den: int = 6) -> sp.Rational:
    """A random nonzero rational ``p / q`` with ``|p| <= num``, ``1 <= q <= den``."""
    p = 0
    while p == 0:
        p = int(rng.integers(-num, num + 1))
    return sp.Rational(p, int(rng.integers(1, den + 1)))


def random_smooth(
    args: Sequence[sp.Symbol], rng: np.random.Generator, *, n_trig: int = 2
) -> sp.Expr:
    """A random smooth scalar function of ``args``: a quadratic polynomial (constant, every
    linear term, two random quadratic monomials) plus ``n_trig`` sines/cosines of random
    linear combinations, all with random rational coefficients of size O(1)."""
    args = list(args)
    expr = random_rational(rng)
    for a in args:
        expr += random_rational(rng) / 2 * a
    for _ in range(2):
        i, j = rng.integers(0, len(args), size=2)
        expr += random_rational(rng) / 4 * args[int(i)] * args[int(j)]
    for k in range(n_trig):
        phase = sum(random_rational(rng, num=3, den=2) * a for a in args) + random_rational(rng)
        trig = sp.sin if k % 2 == 0 else sp.cos
        expr += random_rational(rng) / 2 * trig(phase)
    return expr


def random_vector_function(
    n_args: int, out_dim: int, rng: np.random.Generator, *, n_trig: int = 1
) -> VectorFunction:
    """A :class:`VectorFunction` with ``out_dim`` independent :func:`random_smooth` components
    (one trigonometric term each by default: nonpolynomial, and small enough to differentiate
    and compile quickly)."""
    params = _placeholders(n_args)
    return VectorFunction(
        params, sp.Matrix([random_smooth(params, rng, n_trig=n_trig) for _ in range(out_dim)])
    )


# --------------------------------------------------------------------------- exact flows


@dataclass(frozen=True)
class ExactFlow:
    """An exact flow with closed-form map and velocity.

    Attributes:
        name: how the report names it.
        flow_map: ``Phi(x, t, s)``, the ODE solution at time ``s`` started from ``x`` at ``t``.
        velocity: ``v(x, t) = d/ds Phi(x, t, s)`` at ``s = t``.
    """

    name: str
    flow_map: VectorFunction
    velocity: VectorFunction

    @property
    def dim(self) -> int:
        return self.flow_map.out_dim

    def average_velocity(self) -> VectorFunction:
        """``u*(x, t, s) = (x - Phi(x, t, s)) / (t - s)`` (undefined at ``s = t``)."""
        p = self.flow_map.params
        x = sp.Matrix(p[: self.dim])
        t, s = p[self.dim], p[self.dim + 1]
        return VectorFunction(p, (x - self.flow_map.exprs) / (t - s))


def _random_quadratic(u: sp.Symbol, rng: np.random.Generator) -> sp.Expr:
    """A random quadratic ``c1 u + c2 u^2`` (small, so the flow's expressions stay small)."""
    return random_rational(rng) / 2 * u + random_rational(rng) / 4 * u**2


def _rotation(angle: sp.Expr) -> sp.Matrix:
    return sp.Matrix([[sp.cos(angle), -sp.sin(angle)], [sp.sin(angle), sp.cos(angle)]])


FLOW_SEED = 20250611
"""Seed of the random exact flow shared by the numeric checks (built once, then cached)."""


@lru_cache(maxsize=4)
def random_exact_flow(seed: int = FLOW_SEED) -> ExactFlow:
    """A random exact flow in d = 2 (cached per seed; the checks share :data:`FLOW_SEED`).

    Construction: ``y = psi(x) = (x1 + g(x2), x2)`` (a shear with a random smooth
    ``g(u) = c1 sin(u) + c2 u^2``: always a diffeomorphism, inverted in closed form); in ``y`` the
    affine flow ``y_s = A(s) A(t)^{-1} (y_t - b(t)) + b(s)`` with
    ``A(t) = R(w(t)) diag(e^{a1(t)}, e^{a2(t)})`` (``R`` a rotation by the random linear angle
    ``w``) and random quadratics ``a1, a2, b1, b2`` (kept small: every numeric check
    differentiates and compiles expressions built from this flow). Then
    ``Phi_{t->s} = psi^{-1} o (affine t->s) o psi`` is a flow (``Phi_{t->t} = id`` and the
    semigroup property hold exactly), ``v = d/ds Phi`` at ``s = t`` is nonlinear in x and
    time-dependent, trajectories are curved and ``J_x Phi`` is not symmetric.
    """
    rng = np.random.default_rng(seed)
    x1, x2, t, s = _placeholders(4)
    u = sp.Dummy("u", real=True)
    g = random_rational(rng) / 3 * sp.sin(u) + random_rational(rng) / 8 * u**2
    w = random_rational(rng) / 2 * u
    a1, a2, b1, b2 = (_random_quadratic(u, rng) for _ in range(4))

    def A_ratio(ss: sp.Expr, tt: sp.Expr) -> sp.Matrix:
        """``A(s) A(t)^{-1} = R(w_s) diag(e^{a_s - a_t}) R(-w_t)``."""
        scale = sp.diag(
            sp.exp(a1.subs(u, ss) - a1.subs(u, tt)), sp.exp(a2.subs(u, ss) - a2.subs(u, tt))
        )
        return _rotation(w.subs(u, ss)) * scale * _rotation(-w.subs(u, tt))

    def b(tt: sp.Expr) -> sp.Matrix:
        return sp.Matrix([b1.subs(u, tt), b2.subs(u, tt)])

    y = sp.Matrix([x1 + g.subs(u, x2), x2])
    y_s = A_ratio(s, t) * (y - b(t)) + b(s)
    phi = sp.Matrix([y_s[0] - g.subs(u, y_s[1]), y_s[1]])
    vel = phi.diff(s).subs(s, t)
    return ExactFlow(
        name="random sheared affine flow (d=2)",
        flow_map=VectorFunction((x1, x2, t, s), phi),
        velocity=VectorFunction((x1, x2, t), vel),
    )


@dataclass(frozen=True)
class GaussianTeacher1D:
    """1-D Gaussian data ``x0 ~ N(mu, lam)`` on the path ``x_t = alpha(t) x0 + beta(t) x1``,
    ``x1 ~ N(0, 1)`` independent.

    Attributes:
        alpha, beta: the schedules, callables on SymPy expressions (``sp.Function`` for abstract
            schedules, ``sp.Lambda`` for concrete ones).
        mu, lam: data mean and variance (symbols or numbers; ``lam > 0``).
    """

    alpha: Callable[[sp.Expr], sp.Expr]
    beta: Callable[[sp.Expr], sp.Expr]
    mu: sp.Expr
    lam: sp.Expr

    def _at(self, fn: Callable[[sp.Expr], sp.Expr], tt: sp.Expr, *, dot: bool) -> sp.Expr:
        u = sp.Dummy("u", real=True)
        e = fn(u)
        return (sp.diff(e, u) if dot else e).subs(u, tt)

    def variance(self, tt: sp.Expr) -> sp.Expr:
        """``c(t) = Var x_t = alpha^2 lam + beta^2``."""
        a, b = self._at(self.alpha, tt, dot=False), self._at(self.beta, tt, dot=False)
        return a**2 * self.lam + b**2

    def velocity(self, x: sp.Expr, tt: sp.Expr) -> sp.Expr:
        """Marginal velocity ``E[alpha' x0 + beta' x1 | x_t = x]`` by Gaussian conditioning:
        ``E[Y] + Cov(Y, x_t) / Var(x_t) (x - E[x_t])``."""
        a, b = self._at(self.alpha, tt, dot=False), self._at(self.beta, tt, dot=False)
        ad, bd = self._at(self.alpha, tt, dot=True), self._at(self.beta, tt, dot=True)
        mean_y, mean_x = ad * self.mu, a * self.mu
        cov = ad * a * self.lam + bd * b  # Cov(alpha' x0 + beta' x1, alpha x0 + beta x1)
        return mean_y + cov / self.variance(tt) * (x - mean_x)

    def flow_map(self, x: sp.Expr, tt: sp.Expr, ss: sp.Expr) -> sp.Expr:
        """``Phi_{t->s}(x) = alpha_s mu + sqrt(c_s / c_t) (x - alpha_t mu)``."""
        a_t = self._at(self.alpha, tt, dot=False)
        a_s = self._at(self.alpha, ss, dot=False)
        return a_s * self.mu + sp.sqrt(self.variance(ss) / self.variance(tt)) * (x - a_t * self.mu)

    def exact_flow(self) -> ExactFlow:
        x, t, s = _placeholders(3)
        return ExactFlow(
            name="1-D Gaussian teacher",
            flow_map=VectorFunction((x, t, s), sp.Matrix([self.flow_map(x, t, s)])),
            velocity=VectorFunction((x, t), sp.Matrix([self.velocity(x, t)])),
        )


def gaussian_teacher_1d(
    *, abstract_schedule: bool = True, alpha: sp.Lambda | None = None, beta: sp.Lambda | None = None
) -> GaussianTeacher1D:
    """The 1-D Gaussian teacher with symbolic ``mu`` and ``lam > 0``; schedules abstract
    (undefined functions ``alpha``, ``beta``) unless given."""
    mu = sp.Symbol("mu", real=True)
    lam = sp.Symbol("lambda", positive=True)
    if abstract_schedule:
        alpha = alpha or sp.Function("alpha", real=True)
        beta = beta or sp.Function("beta", real=True)
    if alpha is None or beta is None:
        raise ValueError("give both alpha and beta when abstract_schedule is False")
    return GaussianTeacher1D(alpha=alpha, beta=beta, mu=mu, lam=lam)


def riccati_flow() -> ExactFlow:
    """The flow of ``v(x, t) = x^2``: ``Phi_{t->s}(x) = x / (1 - (s - t) x)`` (where defined)."""
    x, t, s = _placeholders(3)
    return ExactFlow(
        name="Riccati flow v = x^2",
        flow_map=VectorFunction((x, t, s), sp.Matrix([x / (1 - (s - t) * x)])),
        velocity=VectorFunction((x, t), sp.Matrix([x**2])),
    )


def symbolic_on_exact_flows(
    residual: Callable[[ExactFlow, sp.Matrix], Any], *, start: float
) -> MethodResult:
    """Exact simplification of ``residual(flow, x)`` (``x`` a 1-D symbol) on two exact flows
    with symbolic parameters: the Riccati flow of ``v = x^2`` and the 1-D Gaussian teacher on an
    abstract path ``alpha(t), beta(t)``."""
    x = sp.Matrix([sp.Symbol("x", real=True)])
    return _core.symbolic_zero(
        [residual(riccati_flow(), x), residual(gaussian_teacher_1d().exact_flow(), x)],
        method="exact simplification on the Riccati flow and the Gaussian teacher (abstract path)",
        start=start,
    )


def numeric_on_random_exact_flow(
    residual: Callable[[ExactFlow], Any],
    times: Sequence[sp.Symbol],
    *,
    seed: int,
    ordered: bool = False,
    note: str = "",
    start: float,
) -> MethodResult:
    """``residual(flow)`` (free symbols ``X`` and ``times``) on :func:`random_exact_flow`, at the
    points :func:`~._core.flow_points` draws for ``seed`` (times decreasing when ``ordered``);
    ``note`` is appended to the method's name."""
    points = _core.flow_points(seed, n_times=len(times), ordered=ordered)
    names = (" > " if ordered else ", ").join(map(str, times))
    return _core.numeric_zero(
        residual(random_exact_flow()),
        [*X, *times],
        points,
        method=(
            f"numeric at {len(points)} random points (x, {names}), mpmath {_core.NUMERIC_DPS} "
            f"digits, random exact flow (d=2){note}"
        ),
        start=start,
    )
