"""Analytic teachers: Gaussian mixtures on probability paths, with exact flow maps.

Imports only numpy, scipy, torch, torchdiffeq (and jax, optionally); knows nothing of
``numerics`` or ``reports``.
"""

from .flow_map import ExactFlowMap, FlowMapSolution
from .gmm import GaussianMixture, GaussianMixtureTeacher
from .paths import LinearPath, ProbabilityPath
from .presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "ExactFlowMap",
    "FlowMapSolution",
    "GaussianMixture",
    "GaussianMixtureTeacher",
    "LinearPath",
    "ProbabilityPath",
    "preset",
]
