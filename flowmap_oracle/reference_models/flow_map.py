"""Exact flow maps ``Phi_{t->s}`` of an analytic teacher's probability-flow ODE, and the ground
truth derived from them.

Definitions (MATH.md sections 0, 1 and 3), for a trajectory ``x_tau`` of ``dx/dtau = v(x, tau)``
through ``x`` at time ``t``:

* flow map ``Phi_{t->s}(x) = x_s`` (either direction; ``s < t`` is generative);
* average velocity ``F*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s) = 1/(t-s) int_s^t v(x_tau) dtau``,
  equal to ``v(x, t)`` at ``s = t``;
* its total time derivative along the trajectory with s fixed,
  ``D_t F* = J_x F* v + d_t F* = (v(x, t) - F*) / (t - s) = int_0^1 (1 - u) a(sigma(u)) du``, and
  its partial derivative in the end time,
  ``d_s F* = (F* - v(x_s, s)) / (t - s) = int_0^1 u a(sigma(u)) du``, where
  ``sigma(u) = t + u (s - t)`` and ``a = dv/dtau`` is the acceleration along the trajectory
  (:meth:`GaussianMixtureTeacher.acceleration`). Both limits at ``s = t`` are ``a(x, t) / 2``.
  The exact MeanFlow target is ``F_tgt = v - (t - s) D_t F*`` (equal to F*).

The integral forms have no cancellation near ``s = t``. Two ways to compute them:

* **One Gaussian component: closed form**, for any covariance and any path. With
  ``Sigma = Q diag(lambda) Q^T``, ``c(t) = alpha_t^2 lambda + beta_t^2``, ``y = Q^T (x - alpha_t mu)``
  and ``r = sqrt(c(s) / c(t))``: ``Phi_{t->s}(x) = alpha_s mu + Q (r y)`` (the symmetric-root
  formula; a Cholesky factor gives a different flow with the same marginals). Every other
  quantity is a divided difference (:class:`~.paths.DividedDifferences`):
  ``F* = alpha[t,s] mu + Q (c[t,s] / (c_t (1 + r)) y)``,
  ``D_t F* = alpha[t,t,s] mu + Q ((c[t,t,s] / (2 c_t) - c[t,s]^2 / (2 c_t^2 (1 + r)^2)) y)`` and
  ``d_s F* = alpha[t,s,s] mu + Q ((c[t,s,s] / (2 r c_t) - c[t,s]^2 / (2 r c_t^2 (1 + r)^2)) y)``,
  where ``c[t,s] = lambda (alpha_t + alpha_s) alpha[t,s] + (beta_t + beta_s) beta[t,s]`` and the
  second divided differences of ``c`` follow from those of alpha and beta by Leibniz's rule.
* **Mixtures: an adaptive ODE solve in float64** in the rescaled time ``u in [0, 1]``, with a
  per-sample ``(t, s)``. The state is ``I(u) = int_0^u v`` so that ``x(u) = x + (s - t) I(u)``
  and ``F* = I(1)`` without cancellation; with ``derivatives=True`` it also carries
  ``int_0^u (1 - u') a`` and ``int_0^u u' a`` (``D_t F*`` and ``d_s F*``; no finite differences
  of ODE solutions). The default solver is the batched per-sample DOP853 of :mod:`.ode`; any
  adaptive ``torchdiffeq`` method can be named instead (it shares one step size across the
  batch). torchdiffeq's solvers return the end point by a 4th-order *interpolation* inside the
  last step unless a step ends there; with dopri8's large steps that interpolation dominates
  (``anisotropic_gaussian``, t=1 -> 0, rtol = atol = 1e-11: 7e-8 off the closed form on 200
  points here, 1.6e-7 in the issue's measurement; 3.9e-12 once the last step is forced to end at
  the end point, and 4e-14 at rtol 1e-13), which is why we always pass ``step_t=[1]``.

**Shared variance: the exponential-integrator variable.** When every component is isotropic
with one variance ``lam`` (``ring8``, ``checkerboard``), ``c = alpha^2 lam + beta^2`` and
``g = c' / (2 c)`` do not depend on k, so ``v = g x + (alpha' - alpha g) m`` with the posterior
mean of the means ``m = E[mu_k | x_t] = sum_k gamma_k mu_k``. The linear part is integrated
exactly by ``u = x / sqrt(c)``, and in ``rho = alpha / sqrt(c)`` (the square root of a
signal-to-noise ratio, from 0 at pure noise to ``1 / sqrt(lam)`` at the data) the ODE loses its
explicit time: ``du/drho = m(u, rho)`` with ``gamma = softmax_k(log w_k + rho mu_k.u -
rho^2 |mu_k|^2 / 2)`` (since ``alpha' - alpha g = sqrt(c) rho'``). Any path works (``rho`` need
not be monotone: flows of one ODE compose). With ``I = int_0^1 m dtau`` over
``rho = rho_t + tau (rho_s - rho_t)``: ``x_s = r x + sqrt(c_s) (rho_s - rho_t) I`` and, with the
closed form's ``gain = c[t,s] / (c_t (1 + r))`` and ``sqrt(c_s) rho[t,s] = alpha[t,s] -
alpha_t gain``, ``F* = gain (x - alpha_t I) + alpha[t,s] I``, exact for one component and free
of cancellation near ``s = t``. The solver integrates ``u - u_t`` (so its tolerances apply to
``x / sqrt(c)``). Measured on ring8 (t = 1 -> 0, rtol = atol = 1e-9, 1e5 points, 1 thread):
312 velocity evaluations per point and max error 3.5e-10 against 287 and 4.9e-9 in the time
variable, in 26% less CPU time (1.13 s against 1.54 s, ``benchmarks/teachers_cpu_n1e5.json``);
at rtol 1e-12 the two agree to 5e-13
(``tests/test_reference_models_snr.py``); on checkerboard (72 components, 3000 points) 336
against 270 evaluations per point, max error 1.6e-9 against 7.3e-9, the same CPU time, and the
two references at rtol 1e-13 agree to 2e-13. On full64 (full covariances) the same idea with
``lam`` the smallest eigenvalue (its right-hand side ``E[x0 | x] + alpha lam score`` needs
``t(rho)``) measured no better than time on 300 points (325 evaluations for 2.4e-9 against
315 for 9.7e-10),
so other mixtures stay in time. Other log-SNR warps (``rho ~ sinh``, ``log(1 + rho)``)
measured worse. ``variable="time"`` keeps the time variable; derivatives and tangents always
use it.

Measured errors (rtol = atol = 1e-12 by default) are in ``tests/test_reference_models_flow_map.py``
and in the report's teachers section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torchdiffeq
from torch import Tensor

from .gmm import GaussianMixtureTeacher, _divide, _shifted_exp
from .ode import integrate
from .paths import DividedDifferences, PathCoefficients, _as_column

__all__ = ["ExactFlowMap", "FlowMapSolution", "NoiseDataCoupling"]

_TORCHDIFFEQ_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "heun3")
METHODS = ("auto", "closed_form", "dop853", *_TORCHDIFFEQ_ADAPTIVE)
VARIABLES = ("auto", "time")


@dataclass(frozen=True)
class FlowMapSolution:
    """Result of :meth:`ExactFlowMap.solve`.

    Attributes:
        x_s: ``Phi_{t->s}(x)``, shape ``(N, d)``.
        average_velocity: ``F*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s)`` (``v(x, t)`` at s=t).
        n_velocity_evals: teacher evaluations per sample, at most (0 for the closed form).
        method: ``"closed_form"`` or the ODE solver's name.
        error_estimate: per-sample estimate of ``|x_s - Phi_{t->s}(x)|``, shape ``(N,)``: the
            solver's summed local error estimates times ``|t - s|`` (an estimate, not a bound:
            the measured errors are in the tests and the report); zeros for the closed form,
            which is exact up to rounding.
        total_derivative: ``D_t F*(x, t, s)`` (``derivatives=True`` only), shape ``(N, d)``.
        end_time_derivative: ``d_s F*(x, t, s)`` (``derivatives=True`` only), shape ``(N, d)``.
        n_steps: accepted steps per sample (per-sample solver only).
        n_point_evals: teacher evaluations summed over samples.
        jacobian_vector_product: ``J_x F*(x, t, s) w`` for the tangent ``w`` of
            :meth:`ExactFlowMap.directional_derivative` (else ``None``).
    """

    x_s: Tensor
    average_velocity: Tensor
    n_velocity_evals: int
    method: str
    error_estimate: Tensor | None = None
    total_derivative: Tensor | None = None
    end_time_derivative: Tensor | None = None
    n_steps: Tensor | None = None
    n_point_evals: int = 0
    jacobian_vector_product: Tensor | None = None


@dataclass(frozen=True)
class NoiseDataCoupling:
    """Exact coupling of the teacher's probability-flow ODE (ReFlow's training pairs).

    Attributes:
        x0: points at t=0, shape ``(n, d)``.
        x1: points at t=1, ``x0 = Phi_{1->0}(x1)``, shape ``(n, d)``.
        source: ``"noise"`` (x1 ~ N(0, I) drawn, x0 mapped) or ``"data"`` (x0 drawn from the
            t=0 marginal, x1 mapped).
    """

    x0: Tensor
    x1: Tensor
    source: str


def _check_tolerances(**tolerances: float) -> None:
    """Require each named ODE tolerance (``rtol``, ``atol``) to be a number in ``(0, 1)``."""
    for name, val in tolerances.items():
        if not isinstance(val, (int, float)) or not (0 < val < 1):
            raise ValueError(f"{name} must be a number in (0, 1), got {val!r}")


@dataclass(frozen=True)
class _OneGaussian:
    """The closed-form flow map's time factors for a one-component teacher (module docstring):
    schedules ``ct``, ``cs`` at t and s, divided differences ``dd``, eigenvalues ``c_t`` of
    ``C(t)``, ``dc = c[t,s]``, ``r = sqrt(c_s / c_t)`` and ``gain = c[t,s] / (c_t (1 + r))``,
    the eigenvalues of ``J_x F*``."""

    ct: PathCoefficients
    cs: PathCoefficients
    dd: DividedDifferences
    c_t: Tensor
    dc: Tensor
    r: Tensor
    gain: Tensor

    @classmethod
    def at(cls, teacher: GaussianMixtureTeacher, t: Tensor, s: Tensor) -> _OneGaussian:
        path, lam = teacher.path, teacher.mixture.eigvals[0]
        ct, cs = path.schedule(t), path.schedule(s)
        dd = path.divided_differences(t, s)
        c_t = ct.alpha**2 * lam + ct.beta**2
        c_s = cs.alpha**2 * lam + cs.beta**2
        dc = lam * (ct.alpha + cs.alpha) * dd.alpha_ts + (ct.beta + cs.beta) * dd.beta_ts
        r = (c_s / c_t).sqrt()
        return cls(ct, cs, dd, c_t, dc, r, dc / (c_t * (1 + r)))


def _snr_prepare(taus: Tensor, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Stage values ``rho = rho_t + tau (rho_s - rho_t)`` and ``rho^2``, shape ``(S, m)``."""
    rho = torch.addcmul(params[1], taus, params[2])
    return rho, rho * rho


def _snr_rhs(cache: dict[str, Any]) -> Any:
    """The right-hand side ``(rho_s - rho_t) E[mu_k | x]`` of the shared-variance ODE (module
    docstring) for the state ``u - u0`` at stage ``j``; ``params = (u0, rho_t, rho_s - rho_t)``,
    samples along the last axis: ``softmax_k(log w_k + rho mu_k.u - rho^2 |mu_k|^2 / 2) @ mu``
    with one product for the logits (``aug = [mu_k, -|mu_k|^2 / 2]``) and one for the mean."""
    log_w, means_t = cache["log_w_col"], cache["means_t"]
    aug = torch.cat([means_t.T, -0.5 * cache["mu_sq"][:, None]], dim=1)

    def rhs(state: Tensor, pre: tuple[Tensor, Tensor], j: int, params: tuple[Tensor, ...]):
        rho, rho2 = pre[0][j : j + 1], pre[1][j : j + 1]
        logits = torch.addmm(log_w, aug, torch.cat([(params[0] + state) * rho, rho2]))
        e = _shifted_exp(logits, 0, overwrite=True)
        return _divide(means_t @ e, e.sum(dim=0, keepdim=True) / params[2])

    return rhs


@dataclass(frozen=True, eq=False)
class ExactFlowMap:
    """The exact flow map of a :class:`GaussianMixtureTeacher` (formulas in the module docstring).

    Arguments:
        teacher: the analytic teacher whose marginal velocity defines the ODE.
        method: ``"auto"`` (closed form for one component, ``"dop853"`` otherwise),
            ``"closed_form"``, ``"dop853"`` (batched per-sample DOP853 of :mod:`.ode`) or an
            adaptive torchdiffeq solver (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ...).
        rtol, atol: per-step tolerances of the ODE solve (ignored by the closed form).
        max_steps: step limit per sample of the per-sample solver.
        variable: ``"auto"`` (the exponential-integrator variable of the module docstring for
            shared-variance isotropic mixtures with ``"dop853"``, else the time) or ``"time"``.
        chunk_size: the per-sample solver integrates at most this many samples at once, which
            bounds its memory without changing the result; default 16384 on CPU (measured on
            ring8, n = 1e5: same time as one batch, resident-set peak 66 MiB instead of
            230 MiB) and 2^20 on GPUs.
    """

    teacher: GaussianMixtureTeacher
    method: str = "auto"
    rtol: float = 1e-12
    atol: float = 1e-12
    max_steps: int = 20_000
    chunk_size: int | None = None
    variable: str = "auto"
    _closed_form: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, GaussianMixtureTeacher):
            raise TypeError(
                f"teacher must be a GaussianMixtureTeacher, got {type(self.teacher).__name__}"
            )
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        _check_tolerances(rtol=self.rtol, atol=self.atol)
        if self.variable not in VARIABLES:
            raise ValueError(f"unknown variable {self.variable!r}; choose one of {VARIABLES}")
        for name in ("max_steps", "chunk_size"):
            val = getattr(self, name)
            if name == "chunk_size" and val is None:
                continue
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        single = self.teacher.mixture.n_components == 1
        if self.method == "closed_form" and not single:
            raise ValueError(
                "the closed-form flow map exists only for a single Gaussian component; "
                f"this teacher has {self.teacher.mixture.n_components}"
            )
        object.__setattr__(
            self, "_closed_form", self.method == "closed_form" or (self.method == "auto" and single)
        )

    @property
    def solver(self) -> str:
        """The method actually used: ``"closed_form"``, ``"dop853"`` or a torchdiffeq name."""
        if self._closed_form:
            return "closed_form"
        return "dop853" if self.method == "auto" else self.method

    def _uses_snr(self) -> bool:
        """Whether plain solves (no derivatives, no tangent) use the exponential-integrator
        variable of the module docstring."""
        return (
            self.solver == "dop853"
            and self.variable == "auto"
            and "shared_var" in self.teacher._cache
        )

    # ------------------------------------------------------------------------------------------
    def __call__(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Return ``Phi_{t->s}(x)``."""
        return self.solve(x, t, s).x_s

    def average_velocity(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Return ``F*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s)``, equal to ``v(x, t)`` at s=t."""
        return self.solve(x, t, s).average_velocity

    def total_derivative(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Return ``D_t F*(x, t, s) = J_x F* v + d_t F*`` (s fixed), shape ``(N, d)``."""
        sol = self.solve(x, t, s, derivatives=True)
        assert sol.total_derivative is not None  # filled by derivatives=True
        return sol.total_derivative

    def directional_derivative(
        self,
        x: Tensor,
        t: Tensor | float,
        s: Tensor | float,
        *,
        dx: Tensor,
        dt: Tensor | float = 0.0,
        ds: Tensor | float = 0.0,
    ) -> Tensor:
        """Return ``J_x F* dx + d_t F* dt + d_s F* ds`` at ``(x, t, s)``, shape ``(N, d)``.

        With ``d_t F* = D_t F* - J_x F* v(x, t)`` this is
        ``J_x F* (dx - dt v) + dt D_t F* + ds d_s F*``. ``J_x F* w = int_0^1 J_x v(x(u)) W(u) du``
        comes from the variational equation ``dW/du = (s - t) J_x v W``, ``W(0) = w``, solved
        with the flow (``J_x v W`` in closed form,
        :meth:`GaussianMixtureTeacher.velocity_jvp`); for one
        Gaussian ``J_x F* = Q diag(c[t,s] / (c_t (1 + r))) Q^T`` in closed form. No finite
        differences. ``dx`` has the shape of ``x``; ``dt``, ``ds`` are scalars or ``(N,)``.
        """
        tc, sc = self._check_times(x, t, s)
        if not isinstance(dx, Tensor) or dx.shape != x.shape or dx.dtype != x.dtype:
            raise ValueError(f"dx must be a tensor of the shape and dtype of x {tuple(x.shape)}")
        n = x.shape[0]
        tc, sc = torch.broadcast_to(tc, (n, 1)), torch.broadcast_to(sc, (n, 1))
        dtc, dsc = _as_column(dt, x), _as_column(ds, x)
        w = dx - dtc * self.teacher._velocity(x, tc)
        if self._closed_form:
            sol = self._solve_closed_form(x, tc, sc, True)
            jw = self._closed_form_jacobian(tc, sc, w)
        else:
            if x.dtype != torch.float64:
                raise TypeError(f"the exact ODE flow map runs in float64; got x of dtype {x.dtype}")
            sol = self._solve_ode(x, tc, sc, True, tangent=w)
            assert sol.jacobian_vector_product is not None  # filled when a tangent is passed
            jw = sol.jacobian_vector_product
        # both filled by derivatives=True
        assert sol.total_derivative is not None and sol.end_time_derivative is not None
        return jw + dtc * sol.total_derivative + dsc * sol.end_time_derivative

    def jacobian_vector_product(
        self, x: Tensor, t: Tensor | float, s: Tensor | float, *, dx: Tensor
    ) -> Tensor:
        """Return ``J_x F*(x, t, s) dx``, shape ``(N, d)``: the variational equation
        ``dW/du = (s - t) J_x v W`` solved with the flow (without the time derivatives that
        :meth:`directional_derivative` also carries), or the closed form for one Gaussian."""
        tc, sc = self._check_times(x, t, s)
        if not isinstance(dx, Tensor) or dx.shape != x.shape or dx.dtype != x.dtype:
            raise ValueError(f"dx must be a tensor of the shape and dtype of x {tuple(x.shape)}")
        n = x.shape[0]
        tc, sc = torch.broadcast_to(tc, (n, 1)), torch.broadcast_to(sc, (n, 1))
        if self._closed_form:
            return self._closed_form_jacobian(tc, sc, dx)
        if x.dtype != torch.float64:
            raise TypeError(f"the exact ODE flow map runs in float64; got x of dtype {x.dtype}")
        jw = self._solve_ode(x, tc, sc, False, tangent=dx).jacobian_vector_product
        assert jw is not None  # filled when a tangent is passed
        return jw

    def _closed_form_jacobian(self, t: Tensor, s: Tensor, w: Tensor) -> Tensor:
        """``J_x F* w`` for one Gaussian: ``Q diag(c[t,s] / (c_t (1 + r))) Q^T w``."""
        q = self.teacher.mixture.eigvecs[0]
        return ((w @ q) * _OneGaussian.at(self.teacher, t, s).gain) @ q.T

    def meanflow_target(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Return the exact MeanFlow target ``F_tgt = v(x, t) - (t - s) D_t F*(x, t, s)`` with the
        teacher's marginal velocity (equal to ``F*`` up to the solver error)."""
        sol = self.solve(x, t, s, derivatives=True)
        assert sol.total_derivative is not None  # filled by derivatives=True
        tc, sc = _as_column(t, x), _as_column(s, x)
        return self.teacher.velocity(x, t) - (tc - sc) * sol.total_derivative

    def solve(
        self, x: Tensor, t: Tensor | float, s: Tensor | float, *, derivatives: bool = False
    ) -> FlowMapSolution:
        """Map ``x`` at time ``t`` to time ``s`` along the teacher's ODE (either direction).

        Arguments:
            x: points, shape ``(N, d)``, dtype and device of the teacher (float64 for ODEs).
            t, s: start and end times in ``[0, 1]``: scalars or shape ``(N,)``.
            derivatives: also return ``D_t F*`` and ``d_s F*``.
        """
        tc, sc = self._check_times(x, t, s)
        n = x.shape[0]
        tc, sc = torch.broadcast_to(tc, (n, 1)), torch.broadcast_to(sc, (n, 1))
        if self._closed_form:
            return self._solve_closed_form(x, tc, sc, derivatives)
        if x.dtype != torch.float64:
            raise TypeError(f"the exact ODE flow map runs in float64; got x of dtype {x.dtype}")
        return self._solve_ode(x, tc, sc, derivatives)

    def trajectory(self, x: Tensor, t: Tensor | float, times: Tensor) -> Tensor:
        """Return ``Phi_{t->times[j]}(x)`` for every j, shape ``(T, N, d)``.

        ``times`` is a 1-D tensor of times in ``[0, 1]`` (any order); the solution is continued
        from one time to the next (semigroup property), so no interpolation is involved.
        """
        times = torch.as_tensor(times, dtype=x.dtype, device=x.device)
        if times.ndim != 1 or times.numel() == 0:
            raise ValueError(
                f"times must be a non-empty 1-D tensor, got shape {tuple(times.shape)}"
            )
        out, cur, cur_t = [], x, t
        for tj in times:
            cur = self.solve(cur, cur_t, tj).x_s
            cur_t = tj
            out.append(cur)
        return torch.stack(out)

    def coupling(
        self, n: int, *, source: str = "noise", generator: torch.Generator | None = None
    ) -> NoiseDataCoupling:
        """Draw ``n`` exact noise-data pairs ``(x0, x1)`` with ``x0 = Phi_{1->0}(x1)``.

        ``source="noise"`` draws ``x1 ~ N(0, I)`` and maps it to t=0; ``source="data"`` draws
        ``x0`` from the t=0 marginal ``alpha(0) x_data + beta(0) z`` and maps it to t=1.
        """
        teacher = self.teacher
        mix = teacher.mixture
        if source == "noise":
            x1 = torch.randn(n, mix.dim, dtype=mix.dtype, device=mix.device, generator=generator)
            return NoiseDataCoupling(self(x1, 1.0, 0.0), x1, source)
        if source == "data":
            x_data = mix.sample(n, generator=generator)
            z = torch.randn(x_data.shape, dtype=mix.dtype, device=mix.device, generator=generator)
            x0 = teacher.path.interpolate(x_data, z, 0.0)
            return NoiseDataCoupling(x0, self(x0, 0.0, 1.0), source)
        raise ValueError(f"source must be 'noise' or 'data', got {source!r}")

    # ------------------------------------------------------------------------------------------
    def _check_times(
        self, x: Tensor, t: Tensor | float, s: Tensor | float
    ) -> tuple[Tensor, Tensor]:
        tc = self.teacher._check(x, t)
        sc = _as_column(s, x)
        for name, a in (("t", tc), ("s", sc)):
            if not torch.isfinite(a).all():
                raise ValueError(f"{name} contains non-finite values")
            if bool(((a < 0) | (a > 1)).any()):
                bad = float(a[(a < 0) | (a > 1)].flatten()[0])
                raise ValueError(f"{name} must lie in [0, 1]; got {name}={bad!r}")
        return tc, sc

    def _solve_closed_form(
        self, x: Tensor, t: Tensor, s: Tensor, derivatives: bool
    ) -> FlowMapSolution:
        mix = self.teacher.mixture
        mu, lam, q = mix.means[0], mix.eigvals[0], mix.eigvecs[0]
        g = _OneGaussian.at(self.teacher, t, s)
        ct, cs, dd, c_t, dc, r = g.ct, g.cs, g.dd, g.c_t, g.dc, g.r
        y = (x - ct.alpha * mu) @ q  # eigen-coordinates of x - alpha_t mu
        x_s = cs.alpha * mu + (r * y) @ q.T
        avg = dd.alpha_ts * mu + (g.gain * y) @ q.T
        zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if not derivatives:
            return FlowMapSolution(x_s, avg, 0, "closed_form", zero)

        def sq_tts(f_t, f_s, fdot_t, f_ts, f_tts):  # (f^2)[t,t,s] by Leibniz's rule
            return f_t * f_tts + fdot_t * f_ts + f_tts * f_s

        def sq_tss(f_t, f_s, fdot_s, f_ts, f_tss):  # (f^2)[t,s,s]
            return f_t * f_tss + f_ts * fdot_s + f_tss * f_s

        c_tts = lam * sq_tts(ct.alpha, cs.alpha, ct.alpha_dot, dd.alpha_ts, dd.alpha_tts) + sq_tts(
            ct.beta, cs.beta, ct.beta_dot, dd.beta_ts, dd.beta_tts
        )
        c_tss = lam * sq_tss(ct.alpha, cs.alpha, cs.alpha_dot, dd.alpha_ts, dd.alpha_tss) + sq_tss(
            ct.beta, cs.beta, cs.beta_dot, dd.beta_ts, dd.beta_tss
        )
        common = dc**2 / (2 * c_t**2 * (1 + r) ** 2)
        h_tts = c_tts / (2 * c_t) - common
        h_tss = (c_tss / (2 * c_t) - common) / r
        d_t = dd.alpha_tts * mu + (h_tts * y) @ q.T
        d_s = dd.alpha_tss * mu + (h_tss * y) @ q.T
        return FlowMapSolution(x_s, avg, 0, "closed_form", zero, d_t, d_s)

    def _solve_ode(
        self, x: Tensor, t: Tensor, s: Tensor, derivatives: bool, tangent: Tensor | None = None
    ) -> FlowMapSolution:
        teacher = self.teacher
        n, d = x.shape
        span = s - t
        method = self.solver
        if not derivatives and tangent is None and self._uses_snr():
            return self._solve_snr(x, t, s)
        # state: [int v, (int (1-u) a, int u a) when derivatives, M when a tangent is given]
        times = derivatives
        derivatives = derivatives or tangent is not None
        m_at = 3 * d if times else d

        # Per-sample solver layout: samples along the last axis (see .ode).
        def prepare(taus: Tensor, params: tuple[Tensor, ...]) -> tuple:
            t0, sp = params[1], params[2]
            sigma = torch.addcmul(t0, taus, sp)  # (S, m) stage times in the teacher's time
            if derivatives:
                return (taus, sigma)
            return teacher._prepare_velocity(sigma)

        def rhs(state: Tensor, pre: tuple, j: int, params: tuple[Tensor, ...]) -> Tensor:
            x0, sp = params[0], params[2]
            if not derivatives:
                return teacher._velocity_prepared(torch.addcmul(x0, sp, state), pre, j)
            taus, sigma = pre
            tau = taus[j][:, None]
            sig = sigma[j][:, None]
            xt = torch.addcmul(x0, sp, state[:d]).T
            if tangent is None:
                v, acc = teacher._velocity_and_acceleration(xt, sig)
                return torch.cat([v, (1 - tau) * acc, tau * acc], dim=1).T
            # variational equation: W(u) = w + (s - t) M(u), M' = J_x v W (closed form)
            w = torch.addcmul(params[3], sp, state[m_at:]).T
            if not times:
                v, jw = teacher._velocity_and_jvp(xt, sig, w)
                return torch.cat([v, jw], dim=1).T
            v, acc, jw = teacher._velocity_acceleration_jvp(xt, sig, w)
            return torch.cat([v, (1 - tau) * acc, tau * acc, jw], dim=1).T

        width = m_at + (d if tangent is not None else 0)
        y0 = torch.zeros(n, width, dtype=x.dtype, device=x.device)
        moving = (span != 0).squeeze(1)
        state = torch.empty_like(y0)
        err = torch.zeros(n, dtype=x.dtype, device=x.device)
        # err, filled in place; None where torchdiffeq ran (it has no per-sample estimate)
        error_estimate: Tensor | None = err
        steps = torch.zeros(n, dtype=torch.long, device=x.device)
        evals, points = 0, 0
        # s == t: F* = v and D_t F* = d_s F* = a / 2 exactly; no ODE needed.
        still = ~moving
        if bool(still.any()):
            if derivatives:
                if tangent is None:
                    v, acc = teacher._velocity_and_acceleration(x[still], t[still])
                    parts = [v, acc / 2, acc / 2]
                elif not times:  # J_x F* = J_x v on the diagonal
                    parts = list(teacher._velocity_and_jvp(x[still], t[still], tangent[still]))
                else:
                    v, acc, jvw = teacher._velocity_acceleration_jvp(
                        x[still], t[still], tangent[still]
                    )
                    parts = [v, acc / 2, acc / 2, jvw]
                state[still] = torch.cat(parts, dim=1)
            else:
                state[still] = teacher._velocity(x[still], t[still])
            evals, points = 1, int(still.sum())
        if bool(moving.any()):
            if method == "dop853":
                index = moving.nonzero().squeeze(1)
                size = self.chunk_size or (2**20 if x.device.type == "cuda" else 16384)
                for chunk in index.split(size):
                    sub: tuple[Tensor, ...] = (x[chunk].T, t[chunk].T, span[chunk].T)
                    if tangent is not None:
                        sub = (*sub, tangent[chunk].T)
                    sol = integrate(
                        rhs,
                        y0[chunk].T,
                        sub,
                        prepare=prepare,
                        rtol=self.rtol,
                        atol=self.atol,
                        error_dims=d,
                        max_steps=self.max_steps,
                    )
                    state[chunk] = sol.y.T
                    err[chunk] = sol.local_error_sum * span[chunk, 0].abs()
                    steps[chunk] = sol.n_steps
                    evals, points = max(evals, sol.n_rhs_calls), points + sol.n_point_evals
            else:
                params: tuple[Tensor, ...] = (x[moving].T, t[moving].T, span[moving].T)
                if tangent is not None:
                    params = (*params, tangent[moving].T)
                counter = [0]

                def f(tau: Tensor, y: Tensor) -> Tensor:
                    counter[0] += 1
                    taus = torch.broadcast_to(tau, (1, y.shape[0]))
                    return rhs(y.T, prepare(taus, params), 0, params).T

                one = torch.ones(1, dtype=x.dtype, device=x.device)
                grid = torch.cat([0 * one, one])
                # step_t=[1]: the last step ends at u = 1, so the result is not interpolated.
                out = torchdiffeq.odeint(
                    f,
                    y0[moving],
                    grid,
                    rtol=self.rtol,
                    atol=self.atol,
                    method=method,
                    options={"step_t": one},
                )[-1]
                state[moving] = out
                m = int(moving.sum())
                evals, points = max(evals, counter[0]), points + counter[0] * m
                error_estimate = None
        avg = state[:, :d]
        return FlowMapSolution(
            x_s=x + span * avg,
            average_velocity=avg,
            n_velocity_evals=evals,
            method=method,
            error_estimate=error_estimate,
            total_derivative=state[:, d : 2 * d] if times else None,
            end_time_derivative=state[:, 2 * d : 3 * d] if times else None,
            n_steps=steps if method == "dop853" else None,
            n_point_evals=points,
            jacobian_vector_product=state[:, m_at:] if tangent is not None else None,
        )

    def _solve_snr(self, x: Tensor, t: Tensor, s: Tensor) -> FlowMapSolution:
        """``Phi_{t->s}`` of a mixture of isotropic components with one shared variance, solved
        in the exponential-integrator form (module docstring, "shared variance")."""
        teacher = self.teacher
        cache = teacher._cache
        n = x.shape[0]
        g = _OneGaussian.at(teacher, t, s)
        c_t, gain = g.c_t[:, :1], g.gain[:, :1]
        c_s = g.cs.alpha**2 * cache["shared_var"] + g.cs.beta**2
        rho_t, rho_s = g.ct.alpha / c_t.sqrt(), g.cs.alpha / c_s.sqrt()
        d_rho = rho_s - rho_t  # (n, 1)
        factor = torch.addcmul(g.dd.alpha_ts, g.ct.alpha, gain, value=-1.0)  # sqrt(c_s) rho[t,s]
        moving = ((s - t) != 0).squeeze(1)
        state = torch.empty_like(x)
        err = torch.zeros(n, dtype=x.dtype, device=x.device)
        steps = torch.zeros(n, dtype=torch.long, device=x.device)
        evals, points = 0, 0
        still = ~moving
        if bool(still.any()):  # s == t: F* = v(x, t)
            state[still] = teacher._velocity(x[still], t[still])
            evals, points = 1, int(still.sum())
        rhs, prepare = _snr_rhs(cache), _snr_prepare
        if bool(moving.any()):
            index = moving.nonzero().squeeze(1)
            u0 = x / c_t.sqrt()
            size = self.chunk_size or (2**20 if x.device.type == "cuda" else 16384)
            for chunk in index.split(size):
                # contiguous (d, m) rows: strided views are several times slower here
                sub = tuple(a[chunk].T.contiguous() for a in (u0, rho_t, d_rho))
                sol = integrate(
                    rhs,
                    torch.zeros_like(sub[0]),
                    sub,
                    prepare=prepare,
                    rtol=self.rtol,
                    atol=self.atol,
                    max_steps=self.max_steps,
                )
                integral = sol.y.T / d_rho[chunk]  # int_0^1 E[mu_k | x] dtau
                state[chunk] = gain[chunk] * x[chunk] + factor[chunk] * integral
                err[chunk] = sol.local_error_sum * c_s[chunk, 0].sqrt()
                steps[chunk] = sol.n_steps
                evals, points = max(evals, sol.n_rhs_calls), points + sol.n_point_evals
        return FlowMapSolution(
            x_s=x + (s - t) * state,
            average_velocity=state,
            n_velocity_evals=evals,
            method="dop853",
            error_estimate=err,
            n_steps=steps,
            n_point_evals=points,
        )
