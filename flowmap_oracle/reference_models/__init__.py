"""Analytic teachers: Gaussian mixtures on probability paths, with exact flow maps.

Imports only numpy, scipy, torch, torchdiffeq (and jax with diffrax, optionally, in
:mod:`.jax_backend`); knows nothing of the layers built on it.
"""

from .exact_network import ExactAverageVelocity
from .flow_map import ExactFlowMap, FlowMapSolution, NoiseDataCoupling
from .gmm import COVARIANCE_TYPES, GaussianMixture, GaussianMixtureTeacher, VelocityJVP
from .paths import (
    DividedDifferences,
    GeneralPath,
    LinearPath,
    LipmanPath,
    PathCoefficients,
    ProbabilityPath,
    TrigPath,
)
from .presets import PRESETS, preset

__all__ = [
    "COVARIANCE_TYPES",
    "PRESETS",
    "DividedDifferences",
    "ExactAverageVelocity",
    "ExactFlowMap",
    "FlowMapSolution",
    "GaussianMixture",
    "GaussianMixtureTeacher",
    "GeneralPath",
    "LinearPath",
    "LipmanPath",
    "NoiseDataCoupling",
    "PathCoefficients",
    "ProbabilityPath",
    "TrigPath",
    "VelocityJVP",
    "preset",
]
