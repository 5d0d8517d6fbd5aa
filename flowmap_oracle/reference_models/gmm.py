"""Gaussian-mixture data and the analytic teacher it induces on a probability path.

Data ``p_data = sum_k w_k N(mu_k, Sigma_k)``, noise ``x1 ~ N(0, I)`` independent, path
``x_t = alpha(t) x0 + beta(t) x1``. Each component stays Gaussian along the path:
``x_t | k ~ N(m_k, C_k)`` with ``m_k = alpha mu_k`` and ``C_k = alpha^2 Sigma_k + beta^2 I``
(MATH.md section 3). With ``Sigma_k = Q_k diag(lambda_k) Q_k^T``, ``C_k(t)`` has the same
eigenvectors for every t and eigenvalues ``c_k = alpha^2 lambda_k + beta^2``. In the eigenbasis,
``y_k = Q_k^T (x - m_k)`` and

* responsibilities ``gamma_k = softmax_k(log w_k - 1/2 sum_i (y_ki^2 / c_ki + log c_ki))``
  (log-sum-exp stable);
* velocity ``v = sum_k gamma_k v_k`` with ``v_k = alpha' mu_k + Q_k (g_k * y_k)``,
  ``g_k = c_k' / (2 c_k) = (alpha alpha' lambda_k + beta beta') / c_k``: the ``C_k^{-1}`` form
  ``v_k = m_k' + 1/2 C_k' C_k^{-1} (x - m_k)``, exact at t=0 and t=1 (the score/Tweedie form
  has a ``1/alpha`` factor and is never used for v);
* score ``-sum_k gamma_k Q_k (y_k / c_k)``; posterior means
  ``E[x0 | x] = sum_k gamma_k (mu_k + Q_k (alpha lambda_k / c_k * y_k))`` and
  ``E[x1 | x] = sum_k gamma_k Q_k (beta / c_k * y_k)``;
* acceleration along the flow ``a = dv/dt = J_x v v + d_t v`` in closed form (used for the exact
  time derivatives of the average velocity): with ``e_k = Q_k^T (v - alpha' mu_k)``,
  ``dlog N_k/dt = -sum_i (y e / c - g y^2 / c + g)``, ``gamma_k' = gamma_k (l_k' - sum_j gamma_j l_j')``,
  ``v_k' = alpha'' mu_k + Q_k (g_k' y_k + g_k e_k)``, ``g' = c''/(2c) - 2 g^2``, and
  ``a = sum_k gamma_k' v_k + gamma_k v_k'``;
* the directional derivative ``dv = D_x v dx + d_t v dt``
  (:meth:`~GaussianMixtureTeacher.velocity_jvp`, the right-hand side of the flow map's
  variational equations) by the same differentiation along ``(dx, dt)`` instead of ``(v, 1)``:
  ``e_k = Q_k^T (dx - dt alpha' mu_k)`` and every ``d/dt`` above times ``dt``; its ``x`` part is
  ``D_x v = sum_k gamma_k [1/2 C_k' C_k^{-1} + v_k (s_k - s_bar)^T]``.

Everything is finite for every real t at which ``alpha`` and ``beta`` do not vanish together
(the covariances are positive definite), in particular on ``[0, 1]`` and slightly beyond, where
adaptive solvers probe. Where it is not: (i) at a t with ``alpha = beta = 0`` (``C_k = 0``; every
built-in path and every validated :class:`~.paths.GeneralPath` excludes this on ``[0, 1]``);
(ii) for singular covariances (point masses), where ``v ~ (x - mu_k)/t`` blows up as t -> 0 on
paths with ``beta(0) = 0``; such mixtures, and numerically singular ones, are rejected at
construction. Nearly singular ones are accepted but make the flow stiff near t = 0 (MATH.md
section 3: ``sup_t |D_x v| ~ 1/(2 sqrt(lambda))``). The score/Tweedie form of v, which divides by
alpha and is NaN at t = 1, is never used. Three kernels compute these sums: ``isotropic`` (``Sigma_k = s_k I``: only
``(N, K)`` arrays and two small matrix products), ``diagonal`` (``Q_k = I``) and ``full`` (one
matrix product rotates ``x`` into all eigenbases at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .paths import LinearPath, PathCoefficients, ProbabilityPath, _as_column

__all__ = ["COVARIANCE_TYPES", "GaussianMixture", "GaussianMixtureTeacher", "VelocityJVP"]

COVARIANCE_TYPES = ("isotropic", "diagonal", "full")

# Tolerances of the parameter checks, keyed by dtype.
_WEIGHT_SUM_TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
_SYMMETRY_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
# A covariance with lambda_min <= _SINGULAR * eps * lambda_max is numerically singular: its
# teacher's ODE is stiff near t=0 (MATH.md section 3, hazard 3) and its inverse meaningless.
_SINGULAR = 1e3


def _as_float_tensor(name: str, a: Any) -> Tensor:
    """Tensors and arrays keep their floating dtype; Python numbers and lists become float64."""
    if isinstance(a, Tensor):
        t = a
    elif isinstance(a, np.ndarray):
        t = torch.from_numpy(a)
    else:
        try:
            t = torch.as_tensor(a, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be numeric, got {type(a).__name__}: {err}") from None
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    return t


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A validated Gaussian mixture ``sum_k w_k N(mu_k, Sigma_k)`` in ``d`` dimensions.

    Arguments:
        weights: shape ``(K,)``, positive, summing to one (to 1e-9 in float64).
        means: shape ``(K, d)``, finite.
        covariances: shape ``(K, d, d)``, symmetric positive definite and not numerically
            singular (``lambda_min > 1e3 eps lambda_max``).
        covariance_type: ``None`` (detect: ``"isotropic"`` when every ``Sigma_k`` is a multiple
            of I, ``"diagonal"`` when all are diagonal, else ``"full"``), or one of these names
            to force a more general kernel (``"full"`` is always allowed; tests use it to check
            the specialised kernels).

    Tensors and numpy arrays keep their floating dtype (all three must agree); Python lists
    become float64. Each invalid input raises ``ValueError``/``TypeError`` naming the problem.
    The eigendecomposition ``Sigma_k = Q_k diag(lambda_k) Q_k^T`` is computed once
    (``eigvals`` ``(K, d)``, ``eigvecs`` ``(K, d, d)``; the identity for diagonal types).
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    covariance_type: str | None = None
    eigvals: Tensor = field(init=False, repr=False)
    eigvecs: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = _as_float_tensor("weights", self.weights)
        mu = _as_float_tensor("means", self.means)
        cov = _as_float_tensor("covariances", self.covariances)
        if not (w.dtype == mu.dtype == cov.dtype):
            raise TypeError(
                f"weights, means and covariances must share one dtype, got {w.dtype}, "
                f"{mu.dtype}, {cov.dtype}"
            )
        if not (w.device == mu.device == cov.device):
            raise ValueError(
                f"weights, means and covariances must be on one device, got {w.device}, "
                f"{mu.device}, {cov.device}"
            )
        if w.ndim != 1 or w.shape[0] < 1:
            raise ValueError(f"weights must have shape (K,) with K >= 1, got {tuple(w.shape)}")
        if mu.ndim != 2 or mu.shape[0] != w.shape[0] or mu.shape[1] < 1:
            raise ValueError(
                f"means must have shape (K, d) = ({w.shape[0]}, d), got {tuple(mu.shape)}"
            )
        k, d = mu.shape
        if cov.shape != (k, d, d):
            raise ValueError(f"covariances must have shape {(k, d, d)}, got {tuple(cov.shape)}")
        for name, a in (("weights", w), ("means", mu), ("covariances", cov)):
            if not torch.isfinite(a).all():
                raise ValueError(f"{name} contain non-finite values")
        if (w <= 0).any():
            raise ValueError(f"weights must be positive, got {w.tolist()}")
        tol = _WEIGHT_SUM_TOL.get(w.dtype, 1e-3)
        if abs(float(w.sum()) - 1.0) > tol:
            raise ValueError(f"weights must sum to one, they sum to {float(w.sum())!r}")
        asym = (cov - cov.transpose(-1, -2)).abs().amax()
        scale = cov.abs().amax().clamp_min(1.0)
        if asym > _SYMMETRY_TOL.get(cov.dtype, 1e-3) * scale:
            raise ValueError(f"covariances must be symmetric (max asymmetry {float(asym):.3g})")

        diag = torch.diagonal(cov, dim1=-2, dim2=-1)
        is_diag = bool((cov - torch.diag_embed(diag)).abs().amax() == 0)
        is_iso = is_diag and bool((diag == diag[:, :1]).all())
        detected = "isotropic" if is_iso else ("diagonal" if is_diag else "full")
        kind = self.covariance_type or detected
        if kind not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {kind!r}")
        if COVARIANCE_TYPES.index(kind) < COVARIANCE_TYPES.index(detected):
            raise ValueError(
                f"covariance_type {kind!r} was requested but the covariances are {detected}"
            )
        if kind == "full":
            evals, evecs = torch.linalg.eigh(cov)
        else:
            evals = diag.clone()
            evecs = torch.eye(d, dtype=cov.dtype, device=cov.device).expand(k, d, d).clone()
        lmin, lmax = evals.amin(dim=1), evals.amax(dim=1)
        eps = torch.finfo(cov.dtype).eps
        bad = (lmin <= 0) | (lmin <= _SINGULAR * eps * lmax)
        if bad.any():
            i = int(bad.nonzero()[0])
            what = "not positive definite" if lmin[i] <= 0 else "numerically singular"
            raise ValueError(
                f"covariance {i} is {what} (eigenvalues from {float(lmin[i]):.3g} to "
                f"{float(lmax[i]):.3g})"
            )
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covariances", cov)
        object.__setattr__(self, "covariance_type", kind)
        object.__setattr__(self, "eigvals", evals)
        object.__setattr__(self, "eigvecs", evecs)

    @classmethod
    def isotropic(cls, *, weights: Any, means: Any, variances: Any) -> GaussianMixture:
        """Mixture with covariances ``variances[k] * I``; ``variances`` is a scalar or ``(K,)``."""
        means = _as_float_tensor("means", means)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        var = _as_float_tensor("variances", variances).to(means.dtype)
        if var.ndim > 1 or (var.ndim == 1 and var.shape[0] != k):
            raise ValueError(
                f"variances must be a scalar or have shape ({k},), got {tuple(var.shape)}"
            )
        if not (var > 0).all():
            raise ValueError(f"variances must be positive, got {var.tolist()}")
        var = var.expand(k)
        eye = torch.eye(d, dtype=means.dtype, device=means.device)
        return cls(weights=weights, means=means, covariances=var[:, None, None] * eye)

    @classmethod
    def diagonal(cls, *, weights: Any, means: Any, variances: Any) -> GaussianMixture:
        """Mixture with covariances ``diag(variances[k])``; ``variances`` has shape ``(K, d)``."""
        means = _as_float_tensor("means", means)
        var = _as_float_tensor("variances", variances).to(means.dtype)
        if var.shape != means.shape:
            raise ValueError(
                f"variances must have the shape of means {tuple(means.shape)}, got {tuple(var.shape)}"
            )
        if not (var > 0).all():
            raise ValueError("variances must be positive")
        return cls(weights=weights, means=means, covariances=torch.diag_embed(var))

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, *, dtype: torch.dtype | None = None, device: Any = None) -> GaussianMixture:
        """Return a copy with tensors moved to ``dtype`` / ``device`` (same covariance type)."""
        conv = dict(dtype=dtype, device=device)
        return GaussianMixture(
            weights=self.weights.to(**conv),
            means=self.means.to(**conv),
            covariances=self.covariances.to(**conv),
            covariance_type=self.covariance_type,
        )

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, shape ``(n, d)``: ``mu_k + Q_k diag(sqrt(lambda_k)) z``."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=self.dtype, device=self.device, generator=generator)
        z = z * self.eigvals.sqrt()[k]
        if self.covariance_type == "full":  # rotate component by component: O(n d^2) memory-free
            out = torch.empty_like(z)
            for j in range(self.n_components):
                sel = k == j
                out[sel] = z[sel] @ self.eigvecs[j].T
            z = out
        return self.means[k] + z

    def mean(self) -> Tensor:
        """Mixture mean ``sum_k w_k mu_k``."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Mixture covariance ``sum_k w_k (Sigma_k + (mu_k - m)(mu_k - m)^T)``."""
        dev = self.means - self.mean()
        second = self.covariances + dev[:, :, None] * dev[:, None, :]
        return torch.einsum("k,kij->ij", self.weights, second)


class VelocityJVP(NamedTuple):
    """Result of :meth:`GaussianMixtureTeacher.velocity_jvp` (unpacks as ``v, dv``).

    Attributes:
        velocity: ``v(x, t)``, shape ``(N, d)``.
        jvp: ``D_x v(x, t) dx + d_t v(x, t) dt``, shape ``(N, d)``.
    """

    velocity: Tensor
    jvp: Tensor


@dataclass(frozen=True, eq=False)
class _Terms:
    """Per-component quantities at (x, t); ``y`` is ``None`` for the isotropic kernel, whose
    ``y_k = x - alpha mu_k`` is never materialised."""

    coef: PathCoefficients  # shapes (N, 1) or () [isotropic] / (N, 1, 1) or () [dense]
    c: Tensor  # eigenvalues of C_k: (N|1, K) isotropic, (N|1, K, d) dense
    g: Tensor  # c' / (2 c), same shape as c
    sq: Tensor  # (N, K) sum_i y_ki^2
    y: Tensor | None  # (N, K, d) eigen-coordinates (dense kernels)
    log_w: Tensor  # (N, K) log(w_k N(x; m_k, C_k)) without the -d/2 log(2 pi)
    gamma: Tensor  # (N, K) responsibilities


@dataclass(frozen=True, eq=False)
class GaussianMixtureTeacher:
    """Closed-form marginal quantities of a Gaussian mixture carried along a probability path.

    Arguments:
        mixture: the data distribution at t=0.
        path: the probability path (default :class:`LinearPath`).

    All public methods take points ``x`` of shape ``(N, d)`` (dtype and device of the mixture)
    and times ``t`` that are scalars or of shape ``(N,)``; the formulas are in the module
    docstring. They are finite for every t in ``[0, 1]`` and slightly beyond.
    """

    mixture: GaussianMixture
    path: ProbabilityPath = field(default_factory=LinearPath)
    _cache: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(self.mixture).__name__}")
        if not isinstance(self.path, ProbabilityPath):
            raise TypeError(f"path must be a ProbabilityPath, got {type(self.path).__name__}")
        mix = self.mixture
        k, d = mix.n_components, mix.dim
        cache: dict[str, Tensor] = {
            "log_w": mix.weights.log(),
            "mu_sq": (mix.means**2).sum(1),
        }
        if mix.covariance_type == "isotropic":
            cache["lam"] = mix.eigvals[:, 0]
            if bool((cache["lam"] == cache["lam"][0]).all()):
                # One shared variance: the responsibilities' logits are affine in x (the terms
                # common to all components cancel in the softmax): one matrix product.
                cache["shared_var"] = cache["lam"][0]
                cache["means_t"] = mix.means.T.contiguous()
                cache["log_w_col"] = cache["log_w"][:, None]
                cache["means_aug"] = torch.cat([mix.means, cache["mu_sq"][:, None]], dim=1)
        else:
            cache["lam"] = mix.eigvals
        if mix.covariance_type == "full":
            q = mix.eigvecs
            cache["q_flat"] = q.permute(1, 0, 2).reshape(d, k * d)  # x @ q_flat -> Q_k^T x
            cache["q_flat_t"] = q.transpose(1, 2).reshape(k * d, d)  # z @ q_flat_t -> sum Q_k z_k
            cache["mu_rot"] = torch.einsum("kji,kj->ki", q, mix.means)  # Q_k^T mu_k
        object.__setattr__(self, "_cache", cache)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    # ------------------------------------------------------------------------------------------
    # input checks
    def _check(self, x: Tensor, t: Tensor | float) -> Tensor:
        mix = self.mixture
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != mix.dim:
            raise ValueError(f"x must have shape (N, {mix.dim}), got {tuple(x.shape)}")
        if x.dtype != mix.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the teacher uses {mix.dtype}")
        if x.device != mix.device:
            raise ValueError(f"x is on {x.device}, the teacher on {mix.device}")
        tc = _as_column(t, x)
        if not torch.isfinite(tc).all():
            raise ValueError("t contains non-finite values")
        return tc

    # ------------------------------------------------------------------------------------------
    # kernels (no input checks; t_col is () or (N, 1))
    @property
    def _iso(self) -> bool:
        return self.mixture.covariance_type == "isotropic"

    def _rotate(self, x: Tensor, shift: Tensor) -> Tensor:
        """``Q_k^T (x - shift mu_k)`` for every k, shape ``(N, K, d)`` (dense kernels)."""
        mix, cache = self.mixture, self._cache
        if mix.covariance_type == "diagonal":
            return x[:, None, :] - shift * mix.means
        n, k, d = x.shape[0], mix.n_components, mix.dim
        return (x @ cache["q_flat"]).view(n, k, d) - shift * cache["mu_rot"]

    def _combine(self, h: Tensor, x: Tensor, shift: Tensor, z: Tensor | None) -> Tensor:
        """``sum_k Q_k (h_k * z_k)`` where ``z_k = Q_k^T (x - shift mu_k)``.

        Isotropic kernel: ``h`` is ``(N, K)`` and ``z`` is never formed. Dense kernels: ``h`` is
        ``(N, K, d)`` and ``z`` the rotated ``(N, K, d)`` array, or ``None`` when ``h`` already
        holds the products.
        """
        mix = self.mixture
        if self._iso:
            return h.sum(1, keepdim=True) * x - shift * (h @ mix.means)
        hz = h if z is None else h * z
        if mix.covariance_type == "diagonal":
            return hz.sum(1)
        return hz.reshape(x.shape[0], -1) @ self._cache["q_flat_t"]

    def _terms(self, x: Tensor, t_col: Tensor) -> _Terms:
        mix, cache = self.mixture, self._cache
        if self._iso:
            coef = self.path.schedule(t_col)
            a, b = coef.alpha, coef.beta
            lam = cache["lam"]
            c = a * a * lam + b * b
            g = (a * coef.alpha_dot * lam + b * coef.beta_dot) / c
            xm = x @ mix.means.T
            sq = (x * x).sum(1, keepdim=True) - 2 * a * xm + (a * a) * cache["mu_sq"]
            log_w = cache["log_w"] - 0.5 * (sq / c + mix.dim * c.log())
            y = None
        else:
            tk = t_col[..., None] if t_col.ndim else t_col
            coef = self.path.schedule(tk)
            a, b = coef.alpha, coef.beta
            lam = cache["lam"]
            c = a * a * lam + b * b
            g = (a * coef.alpha_dot * lam + b * coef.beta_dot) / c
            y = self._rotate(x, a)
            y2 = y * y
            sq = y2.sum(-1)
            log_w = cache["log_w"] - 0.5 * ((y2 / c).sum(-1) + c.log().sum(-1))
        gamma = _softmax(log_w)
        return _Terms(coef, c, g, sq, y, log_w, gamma)

    def _mean_term(self, coef_value: Tensor, gamma: Tensor) -> Tensor:
        """``coef * (gamma @ mu)`` with the coefficient reshaped to ``(N, 1)``."""
        if coef_value.ndim == 3:
            coef_value = coef_value[..., 0]
        return coef_value * (gamma @ self.mixture.means)

    def _velocity(self, x: Tensor, t_col: Tensor) -> Tensor:
        if "shared_var" in self._cache:
            return self._velocity_shared_var(x, t_col)
        p = self._terms(x, t_col)
        return self._velocity_from(p, x)

    def _velocity_shared_var(self, x: Tensor, t_col: Tensor) -> Tensor:
        """Isotropic components with one variance ``lam``: ``c`` and ``g`` do not depend on k,
        so ``v = g x + (alpha' - alpha g) (gamma @ mu)``; the fastest kernel (benchmarks)."""
        times = t_col.reshape(1, -1).expand(1, x.shape[0])
        return self._velocity_prepared(x.T, self._prepare_velocity(times), 0).T.contiguous()

    def _prepare_velocity(self, times: Tensor) -> tuple:
        """Time-only factors of the velocity at ``times`` of shape ``(S, N)`` (the S stage
        times of an ODE step at once); used with :meth:`_velocity_prepared`."""
        cache = self._cache
        if "shared_var" not in cache:
            return ("generic", times)
        cf = self.path.schedule(times)
        a, b = cf.alpha, cf.beta
        lam = cache["shared_var"]
        c = a * a * lam + b * b
        g = (a * cf.alpha_dot * lam + b * cf.beta_dot) / c
        ac = a / c
        return ("shared", ac, -0.5 * a * ac, g, cf.alpha_dot - a * g)

    def _velocity_prepared(self, x_t: Tensor, prep: tuple, j: int) -> Tensor:
        """``v`` at the points ``x_t`` of shape ``(d, N)`` (samples along the last axis) and the
        times ``times[j]`` of :meth:`_prepare_velocity`; returns ``(d, N)``."""
        if prep[0] == "generic":
            return self._velocity(x_t.T, prep[1][j][:, None]).T
        _, ac, quad, g, w = prep
        cache = self._cache
        r = slice(j, j + 1)
        # logits_k = (a/c) mu_k.x - a^2/(2c) |mu_k|^2 + log w_k (terms common to all k cancel),
        # one product [mu_k, |mu_k|^2] @ [x a/c; -a^2/(2c)]; the softmax's normalisation is
        # applied after the product with the means (d rows instead of K).
        feats = torch.cat([x_t * ac[r], quad[r]])
        logits = torch.addmm(cache["log_w_col"], cache["means_aug"], feats)
        e = _shifted_exp(logits, 0, overwrite=True)
        mean = _divide(cache["means_t"] @ e, e.sum(dim=0, keepdim=True))
        return torch.addcmul(g[r] * x_t, w[r], mean)

    def _velocity_from(self, p: _Terms, x: Tensor) -> Tensor:
        h = p.gamma * p.g if self._iso else p.gamma[..., None] * p.g
        return self._mean_term(p.coef.alpha_dot, p.gamma) + self._combine(h, x, p.coef.alpha, p.y)

    def _velocity_and_acceleration(self, x: Tensor, t_col: Tensor) -> tuple[Tensor, Tensor]:
        p = self._terms(x, t_col)
        v = self._velocity_from(p, x)
        return v, self._tangent_from(p, x, v, 1.0)

    def _velocity_acceleration_jvp(
        self, x: Tensor, t_col: Tensor, dx: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(v, a, J_x v dx)`` sharing one evaluation of the per-component terms (the right-hand
        side of the flow map's variational equations)."""
        p = self._terms(x, t_col)
        v = self._velocity_from(p, x)
        return v, self._tangent_from(p, x, v, 1.0), self._tangent_from(p, x, dx, None)

    def _velocity_and_jvp(self, x: Tensor, t_col: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """``(v, D_x v dx)`` sharing one evaluation of the per-component terms (the right-hand
        side of the variational equations without the time derivatives)."""
        p = self._terms(x, t_col)
        return self._velocity_from(p, x), self._tangent_from(p, x, dx, None)

    def _tangent_from(self, p: _Terms, x: Tensor, dx: Tensor, dt: Tensor | float | None) -> Tensor:
        """``D_x v dx + d_t v dt`` from the terms ``p`` at ``(x, t)``; ``dt`` is ``None`` (zero:
        the time terms are skipped), a number, or a column ``(N, 1)``.

        Differentiating the module docstring's sums along ``(dx, dt)``: ``e_k = Q_k^T (dx -
        dt alpha' mu_k)`` (the tangent of ``y_k``), ``dl_k = -sum_i y e / c + dt sum_i (g y^2 / c
        - g)``, ``dgamma_k = gamma_k (dl_k - sum_j gamma_j dl_j)``, ``dv_k = dt alpha'' mu_k +
        Q_k (dt g' y_k + g e_k)`` and ``dv = sum_k dgamma_k v_k + gamma_k dv_k``; the ``x`` part
        is MATH.md section 3's ``D_x v = sum_k gamma_k [1/2 C_k' C_k^{-1} + v_k (s_k - s_bar)^T]``
        applied to ``dx``. With ``(dx, dt) = (v, 1)`` it is the acceleration.
        """
        mix = self.mixture
        cf, c, g, gamma = p.coef, p.c, p.g, p.gamma
        if isinstance(dt, Tensor) and not self._iso and dt.ndim:
            dt = dt[..., None]  # (N, 1) -> (N, 1, 1) against the dense kernels' (N, K, d)
        if dt is not None:
            lam = self._cache["lam"]
            # g' = c''/(2c) - 2 g^2 with c''/2 = (alpha'^2 + alpha alpha'') lam + beta'^2 + beta beta''
            g_dot = (
                (cf.alpha_dot**2 + cf.alpha * cf.alpha_ddot) * lam
                + cf.beta_dot**2
                + cf.beta * cf.beta_ddot
            ) / c - 2 * g * g
            g_dot = g_dot * dt
            shift = cf.alpha_dot * dt
        else:
            shift = 0.0
        if self._iso:
            a = cf.alpha
            ye = (x * dx).sum(1, keepdim=True) - a * (dx @ mix.means.T)
            l_dot = -ye / c
            if dt is not None:
                xm = x @ mix.means.T
                ye_t = -shift * xm + a * shift * self._cache["mu_sq"]
                l_dot = l_dot - ye_t / c + dt * (g * p.sq / c - mix.dim * g)
            gam_dot = gamma * (l_dot - (gamma * l_dot).sum(1, keepdim=True))
            h = gam_dot * g + gamma * g_dot if dt is not None else gam_dot * g
            out = self._combine(h, x, a, None) + self._combine(gamma * g, dx, shift, None)
        else:
            e = self._rotate(dx, shift)
            y = p.y
            assert y is not None  # materialised for the dense kernels
            l_dot = -(y * e / c).sum(-1)
            if dt is not None:
                dt_k = dt[..., 0] if isinstance(dt, Tensor) and dt.ndim else dt
                l_dot = l_dot + dt_k * ((g * y * y / c).sum(-1) - g.sum(-1))
            gam_dot = gamma * (l_dot - (gamma * l_dot).sum(1, keepdim=True))
            hy = (
                gam_dot[..., None] * g + gamma[..., None] * g_dot
                if dt is not None
                else gam_dot[..., None] * g
            )
            h = hy * y + gamma[..., None] * g * e
            out = self._combine(h, x, cf.alpha, None)
        out = out + self._mean_term(cf.alpha_dot, gam_dot)
        if dt is not None:
            out = out + self._mean_term(cf.alpha_ddot * dt, gamma)
        return out

    # ------------------------------------------------------------------------------------------
    # public closed forms
    def responsibilities(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior component probabilities ``gamma_k(x, t)``, shape ``(N, K)``."""
        return self._terms(x, self._check(x, t)).gamma

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal log-density ``log p_t(x)`` (log-sum-exp), shape ``(N,)``."""
        p = self._terms(x, self._check(x, t))
        return torch.logsumexp(p.log_w, dim=1) - 0.5 * self.dim * math.log(2 * math.pi)

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal velocity ``v(x, t) = E[alpha' x0 + beta' x1 | x_t = x]``, shape ``(N, d)``."""
        return self._velocity(x, self._check(x, t))

    def acceleration(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Acceleration along the flow ``dv/dt = J_x v(x, t) v(x, t) + d_t v(x, t)`` in closed
        form, shape ``(N, d)``."""
        return self._velocity_and_acceleration(x, self._check(x, t))[1]

    def velocity_jvp(
        self, x: Tensor, t: Tensor | float, *, dx: Tensor, dt: Tensor | float = 0.0
    ) -> VelocityJVP:
        """Velocity and its directional derivative ``dv = D_x v(x, t) dx + d_t v(x, t) dt`` in
        closed form (what ``torch.func.jvp(teacher.velocity, (x, t), (dx, dt))`` returns, without
        autodiff).

        ``D_x v = sum_k gamma_k [1/2 C_k' C_k^{-1} + v_k (s_k - s_bar)^T]`` with
        ``s_k = -C_k^{-1}(x - m_k)`` and ``s_bar = sum_j gamma_j s_j`` (MATH.md section 3), and
        ``d_t v`` by differentiating ``gamma_k``, ``g_k`` and ``alpha' mu_k`` in t (see
        :meth:`_tangent_from`). ``dx`` has the shape, dtype and device of ``x``; ``dt`` is a
        number or has shape ``(N,)``. Returns :class:`VelocityJVP` ``(velocity, jvp)``, both
        ``(N, d)``, which unpacks as ``v, dv``.
        """
        tc = self._check(x, t)
        if not isinstance(dx, Tensor):
            raise TypeError(f"dx must be a torch.Tensor, got {type(dx).__name__}")
        if dx.shape != x.shape or dx.dtype != x.dtype or dx.device != x.device:
            raise ValueError(
                f"dx must have the shape, dtype and device of x {tuple(x.shape)}, {x.dtype}, "
                f"{x.device}; got {tuple(dx.shape)}, {dx.dtype}, {dx.device}"
            )
        dtc = _as_column(dt, x)
        if not torch.isfinite(dtc).all():
            raise ValueError("dt contains non-finite values")
        p = self._terms(x, tc)
        v = self._velocity_from(p, x)
        return VelocityJVP(v, self._tangent_from(p, x, dx, dtc))

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Score ``grad log p_t(x) = -sum_k gamma_k C_k^{-1}(x - m_k)``, shape ``(N, d)``."""
        p = self._terms(x, self._check(x, t))
        h = p.gamma / p.c if self._iso else p.gamma[..., None] / p.c
        return -self._combine(h, x, p.coef.alpha, p.y)

    def posterior_mean_x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x0 | x_t = x] = sum_k gamma_k (mu_k + alpha Sigma_k C_k^{-1}(x - m_k))``."""
        p = self._terms(x, self._check(x, t))
        lam = self._cache["lam"]
        gain = p.coef.alpha * lam / p.c
        h = p.gamma * gain if self._iso else p.gamma[..., None] * gain
        return p.gamma @ self.mixture.means + self._combine(h, x, p.coef.alpha, p.y)

    def posterior_mean_x1(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x1 | x_t = x] = sum_k gamma_k beta C_k^{-1}(x - m_k)``."""
        p = self._terms(x, self._check(x, t))
        gain = p.coef.beta / p.c
        h = p.gamma * gain if self._iso else p.gamma[..., None] * gain
        return self._combine(h, x, p.coef.alpha, p.y)

    def sample_path(
        self, n: int, t: Tensor | float, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``(x0, x1, x_t)`` with ``x0 ~ p_data``, ``x1 ~ N(0, I)``, ``x_t`` on the path."""
        x0 = self.mixture.sample(n, generator=generator)
        x1 = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        return x0, x1, self.path.interpolate(x0, x1, t)


def _records_grad(a: Tensor) -> bool:
    """Whether reverse-mode autograd records operations on ``a`` (then no in-place ops)."""
    return torch.is_grad_enabled() and a.requires_grad


def _shifted_exp(logits: Tensor, dim: int, *, overwrite: bool) -> Tensor:
    """Softmax numerators ``exp(l - max_dim l)`` along ``dim``.

    Without autograd recording, the work is done in place (no new array of the logits' size;
    out of place is several times slower on CPU): in ``logits`` itself when ``overwrite`` (the
    caller's temporary), else in one new array. ``exp`` of shifted logits below about -708
    (subnormal or zero results) is 60-230x slower per element on x86 CPUs, but such logits are
    rare (none on ring8, under 0.2% on checkerboard, measured): clamping them at -700 left every
    float64 result unchanged and cost more than it saved (measured on the ring8, checkerboard,
    anisotropic10 and full64 presets).
    """
    shift = logits.amax(dim=dim, keepdim=True)
    if _records_grad(logits):
        return (logits - shift).exp()
    shifted = logits.sub_(shift) if overwrite else logits - shift
    return shifted.exp_()


def _divide(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, in place in ``num`` (a temporary) unless autograd records it."""
    return num / den if _records_grad(num) or _records_grad(den) else num.div_(den)


def _softmax(logits: Tensor, dim: int = 1) -> Tensor:
    """Max-shifted softmax along ``dim`` (faster than ``torch.softmax`` for few components on
    CPU); ``logits`` is left unchanged."""
    e = _shifted_exp(logits, dim, overwrite=False)
    return _divide(e, e.sum(dim=dim, keepdim=True))
