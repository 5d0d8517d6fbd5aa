"""Bad input to the reference models gets an error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowmap_oracle.reference_models import (
    ExactFlowMap,
    GaussianMixture,
    GaussianMixtureTeacher,
    GeneralPath,
    LinearPath,
    LipmanPath,
    preset,
)

F64 = torch.float64


def _good():
    return dict(
        weights=torch.tensor([0.25, 0.75], dtype=F64),
        means=torch.zeros(2, 3, dtype=F64),
        covariances=torch.eye(3, dtype=F64).repeat(2, 1, 1),
    )


@pytest.mark.parametrize(
    ("change", "exc", "words"),
    [
        (
            dict(weights=torch.tensor([[0.5, 0.5]], dtype=F64)),
            ValueError,
            "weights must have shape",
        ),
        (dict(weights=torch.tensor([-0.25, 1.25], dtype=F64)), ValueError, "positive"),
        (dict(weights=torch.tensor([0.3, 0.3], dtype=F64)), ValueError, "sum to one"),
        (dict(means=torch.zeros(3, 3, dtype=F64)), ValueError, "means must have shape"),
        (
            dict(covariances=torch.eye(2, dtype=F64).repeat(2, 1, 1)),
            ValueError,
            "covariances must have shape",
        ),
        (
            dict(means=torch.tensor([[0.0, float("nan"), 0.0]] * 2, dtype=F64)),
            ValueError,
            "non-finite",
        ),
        (
            dict(
                covariances=torch.tensor([[1.0, 0.5, 0], [0.0, 1, 0], [0, 0, 1]], dtype=F64).repeat(
                    2, 1, 1
                )
            ),
            ValueError,
            "symmetric",
        ),
        (
            dict(covariances=-torch.eye(3, dtype=F64).repeat(2, 1, 1)),
            ValueError,
            "not positive definite",
        ),
        (
            dict(
                covariances=torch.diag(torch.tensor([1.0, 1.0, 1e-16], dtype=F64)).repeat(2, 1, 1)
            ),
            ValueError,
            "numerically singular",
        ),
        (
            dict(weights=torch.tensor([0.25, 0.75], dtype=torch.float32)),
            TypeError,
            "share one dtype",
        ),
        (dict(means=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "floating dtype"),
        (dict(covariance_type="spherical"), ValueError, "covariance_type must be one of"),
        (
            dict(
                covariance_type="isotropic",
                covariances=torch.diag(torch.tensor([1.0, 2, 3], dtype=F64)).repeat(2, 1, 1),
            ),
            ValueError,
            "are diagonal",
        ),
    ],
)
def test_mixture_rejects_bad_parameters(change, exc, words):
    with pytest.raises(exc, match=words):
        GaussianMixture(**{**_good(), **change})


def test_mixture_accepts_good_parameters_and_keeps_dtype():
    mix = GaussianMixture(**_good())
    assert mix.covariance_type == "isotropic" and mix.dtype == F64
    m32 = GaussianMixture(**{k: v.float() for k, v in _good().items()})
    assert m32.dtype == torch.float32
    # numpy arrays keep their dtype, Python lists become float64
    mnp = GaussianMixture(np.array([1.0]), np.zeros((1, 2)), np.eye(2)[None])
    assert mnp.dtype == F64
    assert (
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 2.0]]]).covariance_type
        == "diagonal"
    )


def test_constructors_name_their_arguments():
    with pytest.raises(ValueError, match="variances must be positive"):
        GaussianMixture.isotropic(weights=[1.0], means=[[0.0]], variances=0.0)
    with pytest.raises(ValueError, match="variances must be a scalar or have shape"):
        GaussianMixture.isotropic(
            weights=[0.5, 0.5], means=[[0.0], [1.0]], variances=[1.0, 1.0, 1.0]
        )
    with pytest.raises(ValueError, match="variances must have the shape of means"):
        GaussianMixture.diagonal(weights=[1.0], means=[[0.0, 0.0]], variances=[[1.0]])
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        GaussianMixture(**_good()).sample(-1)


def test_teacher_rejects_bad_points_and_times():
    teacher = preset("ring8")
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        teacher.velocity(torch.zeros(4, 3, dtype=F64), 0.5)
    with pytest.raises(TypeError, match="dtype"):
        teacher.velocity(x.float(), 0.5)
    with pytest.raises(ValueError, match="time has shape"):
        teacher.velocity(x, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        teacher.velocity(x, float("nan"))
    with pytest.raises(TypeError, match="less precise"):
        GaussianMixtureTeacher(teacher.mixture.to(dtype=torch.float32)).velocity(
            x.float(), torch.zeros(4, dtype=F64)
        )
    with pytest.raises(TypeError, match="mixture must be a GaussianMixture"):
        GaussianMixtureTeacher("ring8")
    with pytest.raises(TypeError, match="path must be a ProbabilityPath"):
        GaussianMixtureTeacher(teacher.mixture, "linear")


def test_flow_map_rejects_bad_configuration_and_times():
    teacher = preset("ring8")
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="unknown method"):
        ExactFlowMap(teacher, method="rk4")
    with pytest.raises(ValueError, match="rtol must be a number in"):
        ExactFlowMap(teacher, rtol=0.0)
    with pytest.raises(ValueError, match="single Gaussian component"):
        ExactFlowMap(teacher, method="closed_form")
    fm = ExactFlowMap(teacher)
    with pytest.raises(ValueError, match=r"s must lie in \[0, 1\]"):
        fm(x, 1.0, -0.1)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        fm(x, 1.5, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        fm(x, 1.0, float("inf"))
    with pytest.raises(TypeError, match="float64"):
        ExactFlowMap(GaussianMixtureTeacher(teacher.mixture.to(dtype=torch.float32)))(
            x.float(), 1.0, 0.0
        )
    with pytest.raises(ValueError, match="source must be"):
        fm.coupling(3, source="prior")
    with pytest.raises(TypeError, match="teacher must be a GaussianMixtureTeacher"):
        ExactFlowMap(teacher.mixture)


def test_paths_reject_bad_schedules():
    def one(t):
        return torch.ones_like(t)

    def zero(t):
        return torch.zeros_like(t)

    def lin_a(t):
        return 1 - t

    with pytest.raises(ValueError, match="alpha_dot does not match the derivative of alpha"):
        # the mutant: a wrong derivative (sign) is caught by the construction check
        GeneralPath(alpha_fn=lin_a, beta_fn=lambda t: t, alpha_dot_fn=one, beta_dot_fn=one)
    with pytest.raises(ValueError, match="noise must be at t=1"):
        GeneralPath(
            alpha_fn=lambda t: 1 - t / 2,
            beta_fn=lambda t: t,
            alpha_dot_fn=lambda t: -one(t) / 2,
            beta_dot_fn=one,
        )
    with pytest.raises(ValueError, match=r"alpha\(0\) must be > 0"):
        GeneralPath(alpha_fn=zero, beta_fn=lambda t: t, alpha_dot_fn=zero, beta_dot_fn=one)
    with pytest.raises(TypeError, match="needs a callable alpha_fn"):
        GeneralPath(alpha_fn=None, beta_fn=lambda t: t, alpha_dot_fn=one, beta_dot_fn=one)
    with pytest.raises(ValueError, match="not finite"):
        GeneralPath(
            alpha_fn=lambda t: (1 - t) / (t - 0.5),
            beta_fn=lambda t: t,
            alpha_dot_fn=one,
            beta_dot_fn=one,
        )
    with pytest.raises(ValueError, match="sigma_min must be a number in"):
        LipmanPath(sigma_min=1.0)
    assert LinearPath().name == "linear"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="known presets"):
        preset("moons")
