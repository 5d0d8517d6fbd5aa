"""Named teachers shared by tests, benchmarks and reports.

=========================  ====  =====  =============  =============================================
name                       d     K      covariances    what it is for
=========================  ====  =====  =============  =============================================
``ring8``                  2     8      isotropic      curved multi-modal flow (dF/dt checks, bench)
``checkerboard``           2     72     isotropic      many components, sharp mode boundaries
``anisotropic_gaussian``   3     1      full           closed-form flow map (cond 50)
``anisotropic10``          10    6      diagonal       anisotropic mixture (variances 0.01 .. 1)
``full64``                 64    4      full           high dimension, random full covariances
=========================  ====  =====  =============  =============================================

Every preset is deterministic (fixed seeds); :func:`preset` puts it on a path (linear by
default).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .gmm import GaussianMixture, GaussianMixtureTeacher
from .paths import LinearPath, ProbabilityPath

__all__ = [
    "PRESETS",
    "anisotropic10",
    "anisotropic_gaussian",
    "checkerboard",
    "full64",
    "preset",
    "ring8",
]


def ring8(*, radius: float = 2.0, std: float = 0.25) -> GaussianMixture:
    """Eight isotropic Gaussians of standard deviation ``std`` evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture.isotropic(
        weights=torch.full((8,), 1 / 8, dtype=torch.float64), means=means, variances=std**2
    )


def checkerboard(
    *, squares: int = 4, per_side: int = 3, half_width: float = 2.0
) -> GaussianMixture:
    """A ``squares x squares`` checkerboard on ``[-half_width, half_width]^2``: each of the
    ``squares^2 / 2`` dark squares is covered by a ``per_side x per_side`` grid of isotropic
    Gaussians (standard deviation a third of their spacing), equal weights; 72 components by
    default."""
    side = 2 * half_width / squares
    spacing = side / per_side
    offsets = (torch.arange(per_side, dtype=torch.float64) + 0.5) * spacing
    means = []
    for i in range(squares):
        for j in range(squares):
            if (i + j) % 2:
                continue
            x0, y0 = -half_width + i * side, -half_width + j * side
            gx, gy = torch.meshgrid(x0 + offsets, y0 + offsets, indexing="ij")
            means.append(torch.stack([gx.flatten(), gy.flatten()], dim=1))
    mu = torch.cat(means)
    k = mu.shape[0]
    return GaussianMixture.isotropic(
        weights=torch.full((k,), 1 / k, dtype=torch.float64),
        means=mu,
        variances=(spacing / 3) ** 2,
    )


def anisotropic_gaussian() -> GaussianMixture:
    """One non-isotropic 3-D Gaussian (condition number 50), for closed-form flow-map checks."""
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 0.3, -0.2], [0.1, 1.0, 0.4], [-0.5, 0.2, 1.0]]))
    q = q.to(torch.float64)
    cov = q @ torch.diag(torch.tensor([2.5, 0.4, 0.05], dtype=torch.float64)) @ q.T
    cov = 0.5 * (cov + cov.T)
    return GaussianMixture(
        weights=torch.ones(1, dtype=torch.float64),
        means=torch.tensor([[0.7, -1.2, 0.3]], dtype=torch.float64),
        covariances=cov[None],
    )


def anisotropic10(*, n_components: int = 6, seed: int = 10) -> GaussianMixture:
    """A 10-D mixture of axis-aligned Gaussians: per component the variances span 0.01 to 1
    (log-spaced, shuffled per component), means with norm about 3, unequal weights."""
    gen = torch.Generator().manual_seed(seed)
    d = 10
    base = torch.logspace(-2, 0, d, dtype=torch.float64)
    var = torch.stack([base[torch.randperm(d, generator=gen)] for _ in range(n_components)])
    means = torch.randn(n_components, d, generator=gen, dtype=torch.float64)
    means = 3.0 * means / means.norm(dim=1, keepdim=True)
    w = torch.rand(n_components, generator=gen, dtype=torch.float64) + 0.5
    return GaussianMixture.diagonal(weights=w / w.sum(), means=means, variances=var)


def full64(*, n_components: int = 4, seed: int = 64) -> GaussianMixture:
    """A 64-D mixture with full covariances ``Q_k diag(lambda) Q_k^T`` (random rotations,
    eigenvalues log-spaced from 0.05 to 2), means with norm about 4, equal weights."""
    gen = torch.Generator().manual_seed(seed)
    d = 64
    lam = torch.logspace(math.log10(0.05), math.log10(2.0), d, dtype=torch.float64)
    covs = []
    for _ in range(n_components):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        cov = (q * lam) @ q.T
        covs.append(0.5 * (cov + cov.T))
    means = torch.randn(n_components, d, generator=gen, dtype=torch.float64)
    means = 4.0 * means / means.norm(dim=1, keepdim=True)
    return GaussianMixture(
        weights=torch.full((n_components,), 1 / n_components, dtype=torch.float64),
        means=means,
        covariances=torch.stack(covs),
    )


PRESETS: dict[str, Callable[[], GaussianMixture]] = {
    "ring8": ring8,
    "checkerboard": checkerboard,
    "anisotropic_gaussian": anisotropic_gaussian,
    "anisotropic10": anisotropic10,
    "full64": full64,
}


def preset(name: str, *, path: ProbabilityPath | None = None) -> GaussianMixtureTeacher:
    """Return the named preset as a teacher on ``path`` (default :class:`LinearPath`)."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
    return GaussianMixtureTeacher(factory(), LinearPath() if path is None else path)
