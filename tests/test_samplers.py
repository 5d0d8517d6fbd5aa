"""Samplers: with the exact teacher map (closed form, 3-D anisotropic Gaussian, a curved flow)
the deterministic samplers reproduce Phi_{1->0} and gamma-sampling draws the data law."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowmap_oracle.experiments.models import MLPFlowMap, TeacherFlowMap
from flowmap_oracle.experiments.samplers import (
    ddim_sampler,
    euler_sampler,
    gamma_sampler,
    multi_step,
    one_step,
)
from flowmap_oracle.reference_models import ExactFlowMap, preset

TEACHER = preset("anisotropic_gaussian")
EXACT = ExactFlowMap(TEACHER)
MODEL = TeacherFlowMap(EXACT)
TIMES = (1.0, 0.7, 0.4, 0.15, 0.0)
TOL = dict(rtol=0, atol=1e-12)  # closed-form maps composed in float64


@pytest.fixture(scope="module")
def noise():
    return torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def target(noise):
    return EXACT(noise, 1.0, 0.0)


def test_one_step_and_composition_reproduce_the_exact_map(noise, target):
    torch.testing.assert_close(one_step(MODEL, noise), target, **TOL)
    torch.testing.assert_close(multi_step(MODEL, noise, TIMES), target, **TOL)


def test_ddim_traversal_through_x0_is_exact_with_flow_maps_only(noise, target):
    torch.testing.assert_close(ddim_sampler(MODEL, noise, TIMES), target, **TOL)
    # DDIM's own re-noising along the conditional path leaves the curved trajectory ...
    off = ddim_sampler(MODEL, noise, TIMES, renoise="conditional")
    assert (off - target).abs().max() > 1e-3
    # ... except with a single step, where there is nothing to re-noise.
    one = ddim_sampler(MODEL, noise, (1.0, 0.0), renoise="conditional")
    torch.testing.assert_close(one, target, **TOL)


def test_gamma_zero_is_the_deterministic_composition(noise, target):
    torch.testing.assert_close(gamma_sampler(MODEL, noise, TIMES, gamma=0.0), target, **TOL)


def _gamma_without_signal_scaling(x, times, gamma, gen):
    """Mutant: re-noises in the variance-exploding variable without the (1 - s) factor."""
    flow = MODEL.flow
    n = len(x)

    def full(v):
        return torch.full((n,), v, dtype=x.dtype)

    for a, b in itertools.pairwise(times):
        if b == 0.0:
            return flow(x, full(a), full(b))
        sigma = b / (1 - b)
        st = math.sqrt(1 - gamma**2) * sigma
        st = st / (1 + st)
        x = flow(x, full(a), full(st)) + gamma * sigma * torch.randn(
            x.shape, generator=gen, dtype=x.dtype
        )
    return x


def _moments_match(samples):
    # 8000 samples: standard errors of the mean <= sqrt(2.5 / 8e3) = 0.018, of covariance
    # entries <= ~0.04; the bounds are about 4 standard errors.
    mean_ok = torch.allclose(samples.mean(0), TEACHER.mixture.means[0], rtol=0, atol=0.07)
    cov_ok = torch.allclose(samples.T.cov(), TEACHER.mixture.covariances[0], rtol=0, atol=0.16)
    return mean_ok and cov_ok


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_gamma_sampling_with_the_exact_map_draws_the_data_law(gamma):
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(8000, 3, generator=gen, dtype=torch.float64)
    samples = gamma_sampler(MODEL, x1, TIMES, gamma=gamma, generator=gen)
    assert _moments_match(samples)
    # gamma > 0 is stochastic: samples are no longer the deterministic images
    assert (samples - EXACT(x1, 1.0, 0.0)).abs().mean() > 0.05
    assert not _moments_match(_gamma_without_signal_scaling(x1, TIMES, gamma, gen))


def test_euler_steps_of_the_exact_velocity_converge_at_first_order(noise, target):
    errors = [float((euler_sampler(MODEL, noise, n) - target).abs().max()) for n in (8, 64)]
    assert 5 < errors[0] / errors[1] < 12, errors  # first order: 8x more steps, ~8x smaller


def test_samplers_run_on_a_network_and_reject_bad_schedules(noise):
    torch.manual_seed(0)
    net = MLPFlowMap(3, hidden=16, depth=1)
    assert multi_step(net, noise, TIMES).shape == noise.shape
    with pytest.raises(ValueError, match="strictly decreasing"):
        multi_step(net, noise, (1.0, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="from 1 to 0"):
        multi_step(net, noise, (0.9, 0.0))
    with pytest.raises(ValueError, match="gamma"):
        gamma_sampler(net, noise, TIMES, gamma=1.5)
    with pytest.raises(ValueError, match="renoise"):
        ddim_sampler(net, noise, TIMES, renoise="ddpm")
    with pytest.raises(ValueError, match="shape"):
        one_step(net, noise[0])
