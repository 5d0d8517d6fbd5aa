"""Probability paths: schedules, derivatives, divided differences, the Lipman path in our
convention, general paths from callables and from SymPy."""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from helpers import general_path

from flowmap_oracle.reference_models import GeneralPath, LinearPath, LipmanPath, TrigPath

F64 = torch.float64
# float64 tolerances: closed forms ~1e-15; autodiff of the same formulas likewise.
TOL = {F64: 1e-13}


def _callable_path() -> GeneralPath:
    # alpha = (1 - t)^2, beta = t (second derivatives left to autodiff)
    return GeneralPath(
        alpha_fn=lambda t: (1 - t) ** 2,
        beta_fn=lambda t: t,
        alpha_dot_fn=lambda t: -2 * (1 - t),
        beta_dot_fn=torch.ones_like,
        name="callable",
    )


PATHS = {
    "linear": LinearPath,
    "trig": TrigPath,
    "lipman": lambda: LipmanPath(sigma_min=0.05),
    "sympy": general_path,  # alpha = cos^2(pi t/2), beta = sin(pi t/2)
    "callable": _callable_path,
}


@pytest.fixture(params=sorted(PATHS))
def path(request):
    return PATHS[request.param]()


def test_derivatives_match_autodiff_of_the_schedules(path):
    t = torch.linspace(-0.01, 1.01, 57, dtype=F64)  # slightly outside [0, 1] too
    c = path.schedule(t)
    ones = torch.ones_like(t)
    for f, df in (
        ("alpha", "alpha_dot"),
        ("beta", "beta_dot"),
        ("alpha_dot", "alpha_ddot"),
        ("beta_dot", "beta_ddot"),
    ):
        fn = lambda tt, f=f: getattr(path.schedule(tt), f)  # noqa: E731
        _, auto = torch.func.jvp(fn, (t,), (ones,))
        torch.testing.assert_close(getattr(c, df), auto, rtol=0, atol=TOL[F64])
    for key in ("alpha", "beta", "alpha_dot", "beta_dot", "alpha_ddot", "beta_ddot"):
        assert getattr(c, key).shape == t.shape
        assert torch.isfinite(getattr(c, key)).all()


def test_endpoints_put_noise_at_one(path):
    c = path.schedule(torch.tensor([0.0, 1.0], dtype=F64))
    assert float(c.alpha[0]) > 0
    assert abs(float(c.alpha[1])) < 1e-15 and abs(float(c.beta[1]) - 1) < 1e-15


def test_divided_differences_match_difference_quotients_and_limits(path):
    t = torch.tensor([0.9, 0.1, 0.7, 0.35, 1.0], dtype=F64)
    s = torch.tensor([0.2, 0.8, 0.7, 0.35 + 1e-9, 0.0], dtype=F64)
    dd = path.divided_differences(t, s)
    ct, cs = path.schedule(t), path.schedule(s)
    far = (t - s).abs() > 0.1
    for f in ("alpha", "beta"):
        ft, fs = getattr(ct, f), getattr(cs, f)
        dt_, ds_ = getattr(ct, f + "_dot"), getattr(cs, f + "_dot")
        q = (ft - fs) / (t - s)
        torch.testing.assert_close(getattr(dd, f + "_ts")[far], q[far], rtol=0, atol=1e-13)
        torch.testing.assert_close(
            getattr(dd, f + "_tts")[far], ((dt_ - q) / (t - s))[far], rtol=0, atol=1e-12
        )
        torch.testing.assert_close(
            getattr(dd, f + "_tss")[far], ((q - ds_) / (t - s))[far], rtol=0, atol=1e-12
        )
        # limits on (and next to) the diagonal: f'(t) and f''(t) / 2, no cancellation
        near = ~far
        torch.testing.assert_close(getattr(dd, f + "_ts")[near], dt_[near], rtol=0, atol=1e-8)
        half = getattr(ct, f + "_ddot")[near] / 2
        torch.testing.assert_close(getattr(dd, f + "_tts")[near], half, rtol=0, atol=1e-8)
        torch.testing.assert_close(getattr(dd, f + "_tss")[near], half, rtol=0, atol=1e-8)


def test_lipman_path_is_in_our_convention():
    """MATH.md section 2: N((1-t) x0, (sigma + (1-sigma) t)^2 I) with conditional field
    ((1-sigma) x - x0) / (sigma + (1-sigma) t); the seed's denominator 1 - sigma + sigma t is the
    wrong twin and must not match."""
    sig = 0.1
    path = LipmanPath(sigma_min=sig)
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 50, 3, dtype=F64, generator=gen)
    t = torch.rand(50, dtype=F64, generator=gen) * 0.98 + 0.01
    xt = path.interpolate(x0, x1, t)
    torch.testing.assert_close(xt, (1 - t)[:, None] * x0 + (sig + (1 - sig) * t)[:, None] * x1)
    u = path.conditional_velocity(x0, x1, t)
    derived = ((1 - sig) * xt - x0) / (sig + (1 - sig) * t)[:, None]
    torch.testing.assert_close(u, derived, rtol=0, atol=TOL[F64] * 10)
    seed_wrong = ((1 - sig) * xt - x0) / (1 - sig + sig * t)[:, None]
    assert float((u - seed_wrong).abs().max()) > 1e-2


def test_trig_path_is_variance_preserving_and_matches_sympy():
    t = torch.linspace(0, 1, 11, dtype=F64)
    c = TrigPath().schedule(t)
    torch.testing.assert_close(c.alpha**2 + c.beta**2, torch.ones_like(t))
    ts = sympy.Symbol("t")
    g = GeneralPath.from_sympy(sympy.cos(sympy.pi * ts / 2), sympy.sin(sympy.pi * ts / 2), ts)
    cg = g.schedule(t)
    for key in ("alpha", "beta", "alpha_dot", "beta_dot", "alpha_ddot", "beta_ddot"):
        torch.testing.assert_close(getattr(cg, key), getattr(c, key), rtol=0, atol=TOL[F64])


def test_general_path_second_derivatives_by_autodiff_match_explicit():
    t = torch.linspace(0, 1, 9, dtype=F64)
    c = _callable_path().schedule(t)
    torch.testing.assert_close(c.alpha_ddot, torch.full_like(t, 2.0))
    torch.testing.assert_close(c.beta_ddot, torch.zeros_like(t))


def test_general_path_without_jax_functions_says_so():
    with pytest.raises(ValueError, match="no jax_functions"):
        _callable_path().schedule(torch.zeros(1, dtype=F64), xp=math)
