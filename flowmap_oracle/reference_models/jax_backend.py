"""JAX backend of the analytic teachers and their exact flow maps (optional: ``pip install
flowmap-oracle[jax]``).

:class:`JaxTeacher` evaluates the same closed forms as
:class:`~flowmap_oracle.reference_models.GaussianMixtureTeacher` (module docstring of ``gmm``)
in ``jax.numpy``, one generic eigenbasis kernel for every covariance type, always in float64.
:class:`JaxFlowMap` solves the same augmented ODE as
:class:`~flowmap_oracle.reference_models.ExactFlowMap` in the rescaled time ``u in [0, 1]``
(state ``int_0^u v``, and with ``derivatives=True`` also ``int_0^u (1-u') a`` and
``int_0^u u' a``) with ``diffrax`` (Dopri8 by default, PID step-size control), vectorised with
``jax.vmap`` so that every sample has its own step size. The acceleration ``a = J_x v v + d_t v``
is taken here by ``jax.jvp`` through the closed-form velocity, independently of the hand-derived
formula the torch backend uses, so the two backends check each other (tests: agreement to 1e-9
in float64).

Importing this module never fails; constructing a JAX object without JAX installed raises
``ImportError`` naming the extra to install. Float64 is enabled only inside these objects'
calls (``jax.enable_x64``), never globally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .flow_map import _check_tolerances
from .gmm import GaussianMixtureTeacher

try:  # optional dependency
    import diffrax
    import jax
    import jax.numpy as jnp

    HAS_JAX = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAS_JAX = False

__all__ = ["HAS_JAX", "JaxFlowMap", "JaxFlowMapSolution", "JaxTeacher"]


def _require_jax() -> None:
    if not HAS_JAX:
        raise ImportError(
            "the JAX backend needs jax and diffrax: install the 'jax' extra "
            "(pip install 'flowmap-oracle[jax]')"
        )


def _x64():
    return jax.enable_x64(True)


@dataclass(frozen=True, eq=False)
class JaxTeacher:
    """The closed forms of a :class:`GaussianMixtureTeacher` in ``jax.numpy`` (float64).

    Arguments:
        teacher: the torch teacher whose mixture and path are copied.

    Methods take ``x`` of shape ``(N, d)`` (numpy or JAX arrays) and ``t`` a scalar or of shape
    ``(N,)``; they return JAX float64 arrays.
    """

    teacher: GaussianMixtureTeacher
    _arrays: dict = field(init=False, repr=False)
    _jitted: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        _require_jax()
        if not isinstance(self.teacher, GaussianMixtureTeacher):
            raise TypeError(
                f"teacher must be a GaussianMixtureTeacher, got {type(self.teacher).__name__}"
            )
        mix = self.teacher.mixture
        # fail early (with the path's own message) if the path has no JAX functions
        self.teacher.path.schedule(np.zeros(1), jnp)
        with _x64():
            q = jnp.asarray(mix.eigvecs.detach().cpu().double().numpy())
            mu = jnp.asarray(mix.means.detach().cpu().double().numpy())
            arrays = {
                "mu": mu,
                "lam": jnp.asarray(mix.eigvals.detach().cpu().double().numpy()),
                "q": q,
                "mu_rot": jnp.einsum("kji,kj->ki", q, mu),
                "log_w": jnp.log(jnp.asarray(mix.weights.detach().cpu().double().numpy())),
            }
        object.__setattr__(self, "_arrays", arrays)

    @property
    def dim(self) -> int:
        return self.teacher.dim

    # per-sample kernels: x of shape (d,), t scalar ---------------------------------------------
    def _parts(self, x: Any, t: Any) -> tuple:
        a_ = self._arrays
        cf = self.teacher.path.schedule(t, jnp)
        a, b = cf.alpha, cf.beta
        c = a * a * a_["lam"] + b * b  # (K, d)
        y = jnp.einsum("kji,j->ki", a_["q"], x) - a * a_["mu_rot"]  # Q_k^T (x - alpha mu_k)
        log_w = a_["log_w"] - 0.5 * (jnp.sum(y * y / c, -1) + jnp.sum(jnp.log(c), -1))
        return cf, c, y, log_w, jax.nn.softmax(log_w)

    def _combine(self, gamma: Any, h: Any) -> Any:
        """``sum_k gamma_k Q_k h_k``."""
        return jnp.einsum("k,kij,kj->i", gamma, self._arrays["q"], h)

    def velocity_one(self, x: Any, t: Any) -> Any:
        """``v(x, t)`` for one point ``x`` of shape ``(d,)`` and a scalar ``t`` (traceable)."""
        cf, c, y, _, gamma = self._parts(x, t)
        g = (cf.alpha * cf.alpha_dot * self._arrays["lam"] + cf.beta * cf.beta_dot) / c
        return cf.alpha_dot * (gamma @ self._arrays["mu"]) + self._combine(gamma, g * y)

    def acceleration_one(self, x: Any, t: Any) -> tuple[Any, Any]:
        """``(v, J_x v v + d_t v)`` at one point, by ``jax.jvp`` of :meth:`velocity_one`."""
        v = self.velocity_one(x, t)
        _, acc = jax.jvp(self.velocity_one, (x, t), (v, jnp.ones_like(t)))
        return v, acc

    # batched public methods --------------------------------------------------------------------
    def _batched(self, fn: Any, x: Any, t: Any) -> Any:
        with _x64():
            x = jnp.asarray(x, dtype=jnp.float64)
            if x.ndim != 2 or x.shape[1] != self.dim:
                raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
            t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.float64), (x.shape[0],))
            key = fn.__name__
            if key not in self._jitted:
                self._jitted[key] = jax.jit(jax.vmap(fn))
            return self._jitted[key](x, t)

    def velocity(self, x: Any, t: Any) -> Any:
        """Marginal velocity, shape ``(N, d)``."""
        return self._batched(self.velocity_one, x, t)

    def acceleration(self, x: Any, t: Any) -> Any:
        """``J_x v v + d_t v`` by forward-mode autodiff, shape ``(N, d)``."""

        def acceleration(x: Any, t: Any) -> Any:
            return self.acceleration_one(x, t)[1]

        return self._batched(acceleration, x, t)

    def score(self, x: Any, t: Any) -> Any:
        """``grad log p_t(x) = -sum_k gamma_k C_k^{-1} (x - m_k)``, shape ``(N, d)``."""

        def score(x: Any, t: Any) -> Any:
            _, c, y, _, gamma = self._parts(x, t)
            return -self._combine(gamma, y / c)

        return self._batched(score, x, t)

    def log_prob(self, x: Any, t: Any) -> Any:
        """``log p_t(x)``, shape ``(N,)``."""

        def log_prob(x: Any, t: Any) -> Any:
            _, _, _, log_w, _ = self._parts(x, t)
            return jax.scipy.special.logsumexp(log_w) - 0.5 * self.dim * math.log(2 * math.pi)

        return self._batched(log_prob, x, t)

    def posterior_mean_x0(self, x: Any, t: Any) -> Any:
        """``E[x0 | x_t = x]``, shape ``(N, d)``."""

        def posterior_mean_x0(x: Any, t: Any) -> Any:
            cf, c, y, _, gamma = self._parts(x, t)
            gain = cf.alpha * self._arrays["lam"] / c
            return gamma @ self._arrays["mu"] + self._combine(gamma, gain * y)

        return self._batched(posterior_mean_x0, x, t)

    def posterior_mean_x1(self, x: Any, t: Any) -> Any:
        """``E[x1 | x_t = x]``, shape ``(N, d)``."""

        def posterior_mean_x1(x: Any, t: Any) -> Any:
            cf, c, y, _, gamma = self._parts(x, t)
            return self._combine(gamma, cf.beta / c * y)

        return self._batched(posterior_mean_x1, x, t)


@dataclass(frozen=True)
class JaxFlowMapSolution:
    """Result of :meth:`JaxFlowMap.solve` (JAX float64 arrays).

    Attributes:
        x_s: ``Phi_{t->s}(x)``, shape ``(N, d)``.
        average_velocity: ``F*(x, t, s)``, shape ``(N, d)``.
        total_derivative: ``D_t F*`` (``derivatives=True`` only).
        end_time_derivative: ``d_s F*`` (``derivatives=True`` only).
        n_steps: accepted steps per sample, shape ``(N,)``.
    """

    x_s: Any
    average_velocity: Any
    total_derivative: Any
    end_time_derivative: Any
    n_steps: Any


_SOLVERS = ("dopri8", "dopri5", "tsit5")


@dataclass(frozen=True, eq=False)
class JaxFlowMap:
    """Exact flow map in JAX (``diffrax``), per-sample step sizes by ``jax.vmap``.

    Arguments:
        teacher: a :class:`GaussianMixtureTeacher` (or a :class:`JaxTeacher`).
        solver: ``"dopri8"`` (default), ``"dopri5"`` or ``"tsit5"``.
        rtol, atol: tolerances of diffrax's ``PIDController``.
        max_steps: diffrax's step limit per sample.
    """

    teacher: Any
    solver: str = "dopri8"
    rtol: float = 1e-12
    atol: float = 1e-12
    max_steps: int = 100_000
    _jt: JaxTeacher = field(init=False, repr=False)
    _compiled: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        _require_jax()
        jt = self.teacher if isinstance(self.teacher, JaxTeacher) else JaxTeacher(self.teacher)
        object.__setattr__(self, "_jt", jt)
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        _check_tolerances(rtol=self.rtol, atol=self.atol)

    def _solver(self) -> Any:
        return {"dopri8": diffrax.Dopri8, "dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}[
            self.solver
        ]()

    def _build(self, derivatives: bool) -> Any:
        jt = self._jt

        def one(x: Any, t: Any, s: Any) -> tuple:
            span = s - t
            d = x.shape[0]

            def f(u: Any, state: Any, args: Any) -> Any:
                xt = x + span * state[:d]
                sigma = t + u * span
                if not derivatives:
                    return jt.velocity_one(xt, sigma)
                v, acc = jt.acceleration_one(xt, sigma)
                return jnp.concatenate([v, (1 - u) * acc, u * acc])

            width = 3 * d if derivatives else d
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(f),
                self._solver(),
                t0=0.0,
                t1=1.0,
                dt0=None,
                y0=jnp.zeros(width, dtype=x.dtype),
                stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
                saveat=diffrax.SaveAt(t1=True),
                max_steps=self.max_steps,
            )
            return sol.ys[0], sol.stats["num_accepted_steps"]

        return jax.jit(jax.vmap(one))

    def solve(self, x: Any, t: Any, s: Any, *, derivatives: bool = False) -> JaxFlowMapSolution:
        """Map ``x`` (``(N, d)``) at times ``t`` to ``s`` (scalars or ``(N,)`` in ``[0, 1]``)."""
        with _x64():
            x = jnp.asarray(x, dtype=jnp.float64)
            if x.ndim != 2 or x.shape[1] != self._jt.dim:
                raise ValueError(f"x must have shape (N, {self._jt.dim}), got {tuple(x.shape)}")
            n, d = x.shape
            tt = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.float64), (n,))
            ss = jnp.broadcast_to(jnp.asarray(s, dtype=jnp.float64), (n,))
            for name, a in (("t", tt), ("s", ss)):
                arr = np.asarray(a)
                if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
                    raise ValueError(f"{name} must be finite and lie in [0, 1]")
            if derivatives not in self._compiled:
                self._compiled[derivatives] = self._build(derivatives)
            state, steps = self._compiled[derivatives](x, tt, ss)
            avg = state[:, :d]
            x_s = x + (ss - tt)[:, None] * avg
            if derivatives:
                return JaxFlowMapSolution(x_s, avg, state[:, d : 2 * d], state[:, 2 * d :], steps)
            return JaxFlowMapSolution(x_s, avg, None, None, steps)

    def __call__(self, x: Any, t: Any, s: Any) -> Any:
        """``Phi_{t->s}(x)``."""
        return self.solve(x, t, s).x_s

    def average_velocity(self, x: Any, t: Any, s: Any) -> Any:
        """``F*(x, t, s)``."""
        return self.solve(x, t, s).average_velocity
