"""Gaussian-mixture data and the analytic teacher it induces on a probability path.

Data ``p_data = sum_k w_k N(mu_k, Sigma_k)``, noise ``x1 ~ N(0, I)`` independent, path
``x_t = alpha(t) x0 + beta(t) x1``. Each component stays Gaussian along the path:
``x_t | k ~ N(m_k, C_k)`` with ``m_k = alpha mu_k`` and ``C_k = alpha^2 Sigma_k + beta^2 I``.

Everything is computed in the eigenbasis of each ``Sigma_k = Q_k diag(lambda_k) Q_k^T``, which
``C_k(t)`` shares for every t (the noise is isotropic). The marginal velocity uses the
``C_k^{-1}`` form ``v_k = m_k' + 1/2 C_k' C_k^{-1} (x - m_k)`` (MATH.md section 3), which is exact
at t=0 and t=1; the score/Tweedie form has a 1/alpha factor and is not used for v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .paths import LinearPath, ProbabilityPath, _as_column

__all__ = ["GaussianMixture", "GaussianMixtureTeacher"]


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A validated Gaussian mixture ``sum_k w_k N(mu_k, Sigma_k)`` in ``d`` dimensions.

    Arguments:
        weights: shape ``(K,)``, positive, summing to one (to 1e-9 relative).
        means: shape ``(K, d)``, finite.
        covariances: shape ``(K, d, d)``, symmetric positive definite.

    The eigendecomposition of each covariance is computed once (``eigvals`` ``(K, d)``,
    ``eigvecs`` ``(K, d, d)``). Use :meth:`isotropic` or :meth:`diagonal` for simpler inputs.
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    eigvals: Tensor = field(init=False, repr=False)
    eigvecs: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights)
        mu = torch.as_tensor(self.means)
        cov = torch.as_tensor(self.covariances)
        dtype = torch.promote_types(torch.promote_types(w.dtype, mu.dtype), cov.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float64
        w, mu, cov = (a.to(dtype) for a in (w, mu, cov))
        if w.ndim != 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(w.shape)}")
        if mu.ndim != 2 or mu.shape[0] != w.shape[0]:
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
        if abs(float(w.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to one, they sum to {float(w.sum())!r}")
        asym = (cov - cov.transpose(-1, -2)).abs().amax()
        scale = cov.abs().amax().clamp_min(1.0)
        if asym > 1e-12 * scale:
            raise ValueError(f"covariances must be symmetric (max asymmetry {float(asym):.3g})")
        evals, evecs = torch.linalg.eigh(cov)
        if (evals <= 0).any():
            bad = int((evals <= 0).any(dim=1).nonzero()[0])
            raise ValueError(
                f"covariance {bad} is not positive definite "
                f"(smallest eigenvalue {float(evals[bad].min()):.3g})"
            )
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covariances", cov)
        object.__setattr__(self, "eigvals", evals)
        object.__setattr__(self, "eigvecs", evecs)

    @classmethod
    def isotropic(
        cls, *, weights: Tensor, means: Tensor, variances: Tensor | float
    ) -> GaussianMixture:
        """Mixture with covariances ``variances[k] * I``."""
        means = torch.as_tensor(means, dtype=torch.float64)
        k, d = means.shape
        var = torch.as_tensor(variances, dtype=means.dtype).expand(k)
        eye = torch.eye(d, dtype=means.dtype)
        return cls(weights=weights, means=means, covariances=var[:, None, None] * eye)

    @classmethod
    def diagonal(cls, *, weights: Tensor, means: Tensor, variances: Tensor) -> GaussianMixture:
        """Mixture with covariances ``diag(variances[k])``; ``variances`` has shape ``(K, d)``."""
        means = torch.as_tensor(means, dtype=torch.float64)
        var = torch.as_tensor(variances, dtype=means.dtype)
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

    def to(self, *, dtype: torch.dtype | None = None, device=None) -> GaussianMixture:
        """Return a copy with tensors moved to ``dtype`` / ``device``."""
        conv = dict(dtype=dtype, device=device)
        return GaussianMixture(
            weights=self.weights.to(**conv),
            means=self.means.to(**conv),
            covariances=self.covariances.to(**conv),
        )

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, shape ``(n, d)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(
            n, self.dim, dtype=self.dtype, device=self.means.device, generator=generator
        )
        root = self.eigvecs * self.eigvals.sqrt()[:, None, :]  # Q diag(sqrt(lambda))
        return self.means[k] + torch.einsum("nij,nj->ni", root[k], z)

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        m = self.mean()
        dev = self.means - m
        second = self.covariances + dev[:, :, None] * dev[:, None, :]
        return torch.einsum("k,kij->ij", self.weights, second)


@dataclass(frozen=True, eq=False)
class _ComponentTerms:
    """Per-component quantities at (x, t) in each component's eigenbasis."""

    log_w: Tensor  # (N, K) log(w_k N(x; m_k, C_k))
    y: Tensor  # (N, K, d) Q_k^T (x - m_k)
    c: Tensor  # (N or 1, K, d) eigenvalues of C_k(t)
    alpha: Tensor
    beta: Tensor
    alpha_dot: Tensor
    beta_dot: Tensor

    @property
    def resp(self) -> Tensor:
        """Responsibilities ``gamma_k(x, t)``, shape ``(N, K)``."""
        return torch.softmax(self.log_w, dim=1)


@dataclass(frozen=True, eq=False)
class GaussianMixtureTeacher:
    """Closed-form marginal quantities of a Gaussian mixture carried along a probability path.

    Arguments:
        mixture: the data distribution at t=0.
        path: the probability path (default :class:`LinearPath`).

    All methods take points ``x`` of shape ``(N, d)`` and times ``t`` that are scalars or of
    shape ``(N,)``; they are finite for every t in ``[0, 1]`` (and slightly beyond) because all
    covariances are positive definite.
    """

    mixture: GaussianMixture
    path: ProbabilityPath = field(default_factory=LinearPath)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def _terms(self, x: Tensor, t: Tensor | float) -> _ComponentTerms:
        mix = self.mixture
        if x.ndim != 2 or x.shape[1] != mix.dim:
            raise ValueError(f"x must have shape (N, {mix.dim}), got {tuple(x.shape)}")
        if x.dtype != mix.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the teacher uses {mix.dtype}")
        tc = _as_column(t, x)  # () or (N, 1)
        tk = tc[..., None] if tc.ndim else tc  # broadcast against (N, K, d)
        a, b = self.path.alpha(tk), self.path.beta(tk)
        ad, bd = self.path.alpha_dot(tk), self.path.beta_dot(tk)
        c = a**2 * mix.eigvals[None] + b**2  # (N|1, K, d)
        diff = x[:, None, :] - a * mix.means[None]  # (N, K, d)
        y = torch.einsum("kji,nkj->nki", mix.eigvecs, diff)
        log_n = -0.5 * ((y**2 / c).sum(-1) + c.log().sum(-1) + mix.dim * math.log(2 * math.pi))
        return _ComponentTerms(log_n + mix.weights.log()[None], y, c, a, b, ad, bd)

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal log-density ``log p_t(x)``, shape ``(N,)``."""
        return torch.logsumexp(self._terms(x, t).log_w, dim=1)

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal velocity ``v(x, t) = E[alpha' x0 + beta' x1 | x_t = x]``, shape ``(N, d)``."""
        p = self._terms(x, t)
        resp = p.resp
        mix = self.mixture
        gain = (p.alpha * p.alpha_dot * mix.eigvals[None] + p.beta * p.beta_dot) / p.c
        vk_eig = gain * p.y  # 1/2 C' C^{-1} (x - m_k) in the eigenbasis
        vk = torch.einsum("kij,nkj->nki", mix.eigvecs, vk_eig)
        vk = vk + p.alpha_dot * mix.means[None]
        return torch.einsum("nk,nki->ni", resp, vk)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Score ``grad log p_t(x) = -sum_k gamma_k C_k^{-1}(x - m_k)``, shape ``(N, d)``."""
        p = self._terms(x, t)
        resp = p.resp
        sk = torch.einsum("kij,nkj->nki", self.mixture.eigvecs, p.y / p.c)
        return -torch.einsum("nk,nki->ni", resp, sk)

    def posterior_mean_x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x0 | x_t = x] = sum_k gamma_k (mu_k + alpha Sigma_k C_k^{-1}(x - m_k))``."""
        p = self._terms(x, t)
        resp = p.resp
        mix = self.mixture
        ek = torch.einsum("kij,nkj->nki", mix.eigvecs, p.alpha * mix.eigvals[None] / p.c * p.y)
        return torch.einsum("nk,nki->ni", resp, ek + mix.means[None])

    def posterior_mean_x1(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x1 | x_t = x] = sum_k gamma_k beta C_k^{-1}(x - m_k)``."""
        p = self._terms(x, t)
        resp = p.resp
        ek = torch.einsum("kij,nkj->nki", self.mixture.eigvecs, p.beta / p.c * p.y)
        return torch.einsum("nk,nki->ni", resp, ek)

    def sample_path(
        self, n: int, t: Tensor | float, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``(x0, x1, x_t)`` with ``x0 ~ p_data``, ``x1 ~ N(0, I)``."""
        x0 = self.mixture.sample(n, generator=generator)
        x1 = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        return x0, x1, self.path.interpolate(x0, x1, t)
