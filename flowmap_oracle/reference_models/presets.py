"""Named teachers shared by tests, benchmarks and reports."""

from __future__ import annotations

import math

import torch

from .gmm import GaussianMixture, GaussianMixtureTeacher
from .paths import LinearPath

__all__ = ["PRESETS", "preset", "ring8"]


def ring8(*, radius: float = 2.0, std: float = 0.25) -> GaussianMixture:
    """Eight isotropic Gaussians of standard deviation ``std`` evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture.isotropic(
        weights=torch.full((8,), 1 / 8, dtype=torch.float64), means=means, variances=std**2
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


PRESETS = {
    "ring8": ring8,
    "anisotropic_gaussian": anisotropic_gaussian,
}


def preset(name: str) -> GaussianMixtureTeacher:
    """Return the named preset as a teacher on the linear path."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
    return GaussianMixtureTeacher(factory(), LinearPath())
