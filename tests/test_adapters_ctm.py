"""Two-time EDM preconditioning (``preconditioning="ctm"``, Kim et al. 2023).

Ground truth is written here from the paper, independently of the adapters: CTM's network is
``g(x_t, t, s) = (s / t) x_t + (1 - s / t) G(x_t, t, s)`` in sigma units, with
``G = c_skip(t) x_t + c_out(t) raw(c_in(t) x_t, c(t), c(s))`` and EDM's coefficients. The raw
network the oracle hands over, wrapped this way, must be the exact flow map of a Gaussian teacher
in the user's units, at random ``(t, s)`` and at both ends of the range, in float64 and float32.
"""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.oracle.adapters import ConventionAdapter, ConventionError, Conventions
from flowmap_oracle.oracle.networks import RandomNetwork
from flowmap_oracle.reference_models import ExactFlowMap, preset

EXACT = ExactFlowMap(preset("anisotropic_gaussian"))  # closed form in d = 3


def exact_F(x, t, s):
    return EXACT.average_velocity(x, t, s)


def paper_g(raw, x_u, sigma_t, sigma_s, sd: float, scale: float, order: str):
    """CTM's g_theta in the user's sigma units, as the paper and its code write it."""
    c_in = 1 / torch.sqrt(sigma_t**2 + sd**2)
    c_skip = sd**2 / (sigma_t**2 + sd**2)
    c_out = sigma_t * sd * c_in
    c_t, c_s = scale * 0.25 * torch.log(sigma_t), scale * 0.25 * torch.log(sigma_s)
    args = (c_t, c_s) if order == "x_t_s" else (c_s, c_t)
    G = c_skip[:, None] * x_u + c_out[:, None] * raw(c_in[:, None] * x_u, *args)
    ratio = (sigma_s / sigma_t)[:, None]
    return ratio * x_u + (1 - ratio) * G


def draw(n: int, seed: int, dtype=torch.float64):
    """Our times spanning the range: t from 1e-3 (sigma = 5e-4 sd) to 0.995 (sigma = 199 sd);
    s uniform below t, with s = 0 and s = t among the rows."""
    g = torch.Generator().manual_seed(seed)
    t = torch.cat(
        [
            torch.tensor([1e-3, 0.995, 0.995, 1e-3, 0.5], dtype=torch.float64),
            0.001 + 0.994 * torch.rand(n - 5, generator=g, dtype=torch.float64),
        ]
    )
    s = t * torch.rand(n, generator=g, dtype=torch.float64)
    s[1], s[3], s[4] = 0.0, t[3], t[4]
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, t, s


CASES = [
    (order, sd, scale, dtype)
    for order in ("x_t_s", "x_s_t")
    for sd in (0.5, 1.0)
    for scale in (1.0, 1000.0)
    for dtype in ("float64", "float32")
]


def _adapter(order: str, sd: float, scale: float, dtype: str) -> ConventionAdapter:
    return ConventionAdapter(
        {
            "time": "edm_sigma",
            "signature": order,
            "prediction": "x0",
            "preconditioning": "ctm",
            "sigma_data": sd,
            "time_input_scale": scale,
            "dtype": dtype,
        }
    )


@pytest.mark.parametrize(("order", "sd", "scale", "dtype"), CASES)
def test_raw_network_wrapped_as_in_the_paper_is_the_exact_map(order, sd, scale, dtype):
    ad = _adapter(order, sd, scale, dtype)
    x, t, s = draw(64, seed=1)
    s = torch.where(s == 0, torch.full_like(s, 1e-4), s)  # log(0): the paper's g reads c(s)
    sigma_t, sigma_s = sd * t / (1 - t), sd * s / (1 - s)
    x_u = (sd / (1 - t))[:, None] * x  # x_u = sd y + sigma n on our path
    udt = ad.user_dtype
    raw = ad.network_to_user(exact_F)
    got = paper_g(raw, x_u.to(udt), sigma_t.to(udt), sigma_s.to(udt), sd, scale, order)
    expected = (sd / (1 - s))[:, None] * EXACT(x, t, s)
    # float64: rounding only; float32: the user's arithmetic on sigmas up to 199 sd.
    tol = 1e-9 if dtype == "float64" else 2e-5
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize(("order", "sd", "scale", "dtype"), CASES)
def test_round_trips_both_ways_at_both_ends(order, sd, scale, dtype):
    ad = _adapter(order, sd, scale, dtype)
    o = ad.torch_ops
    x, t, s = draw(64, seed=2)
    tol = 1e-9 if dtype == "float64" else 1e-5
    F = RandomNetwork(3, seed=3)
    torch.testing.assert_close(
        ad.network_to_ours(ad.network_to_user(F))(x, t, s).double(), F(x, t, s), atol=tol, rtol=tol
    )
    # the raw call's inputs decode back to our (x, t, s), s = 0 included (c(0) = -inf)
    tau, rho = ad.time_to_user(t, ops=o), ad.time_to_user(s, ops=o)
    c_in = ad.preconditioning_coefficients(tau, ops=o)[2]
    y = c_in[:, None] * ad.points_to_user(x, t, ops=o)
    args = ad.encode_times(tau, rho, ops=o)
    xx, tt, ss = ad.inputs_to_ours(y, *args, ops=o)
    torch.testing.assert_close((xx, tt, ss), (x, t, s), atol=1e-9, rtol=1e-9)
    assert bool(torch.isneginf(args[0 if order == "x_s_t" else 1][1]))
    # user -> ours -> user on a raw network of both times (away from s = 0, where c = -inf)
    R = RandomNetwork(3, seed=4)
    keep = s > 0
    back = ad.network_to_user(ad.network_to_ours(R))
    yk, a1, a2 = y[keep], args[0][keep], args[1][keep]
    torch.testing.assert_close(
        back(yk.to(ad.user_dtype), a1.to(ad.user_dtype), a2.to(ad.user_dtype)).double(),
        R(yk, a1, a2),
        atol=tol,
        rtol=tol,
    )


def test_output_gain_is_the_raw_outputs():
    """dF / d raw = k c_out(t): a bump of the raw output moves our F by the gain."""
    ad = _adapter("x_t_s", 0.5, 1.0, "float64")
    x, t, s = draw(32, seed=5)
    s = s.clamp_min(1e-4)  # a random raw network is not finite at c(0) = -inf
    R = RandomNetwork(3, seed=6)
    eps = 1e-6
    base = ad.network_to_ours(R)(x, t, s)
    bumped = ad.network_to_ours(lambda y, a, b: R(y, a, b) + eps)(x, t, s)
    gain = ad.output_gain(t, s, ops=ad.torch_ops)
    torch.testing.assert_close(
        (bumped - base) / eps, gain[:, None].expand(-1, 3), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "bug",
    ["ratio_inverted", "coefficients_at_s", "times_swapped"],
)
def test_a_wrong_wrapper_is_not_the_exact_map(bug):
    """The ground-truth comparison above can fail: wrappers with CTM bugs seen in practice miss
    the exact map by far more than its tolerance."""
    sd = 0.5
    ad = _adapter("x_t_s", sd, 1.0, "float64")
    x, t, s = draw(64, seed=7)
    s = 0.5 * t
    sigma_t, sigma_s = sd * t / (1 - t), sd * s / (1 - s)
    x_u = (sd / (1 - t))[:, None] * x
    raw = ad.network_to_user(exact_F)
    if bug == "ratio_inverted":
        got = paper_g(raw, x_u, sigma_t, sigma_s, sd, 1.0, "x_t_s")
        ratio = (sigma_s / sigma_t)[:, None]
        G = (got - ratio * x_u) / (1 - ratio)
        got = (1 / ratio) * x_u + (1 - 1 / ratio) * G
    elif bug == "coefficients_at_s":
        c_in = 1 / torch.sqrt(sigma_s**2 + sd**2)
        G = (sd**2 * c_in**2)[:, None] * x_u + (sigma_s * sd * c_in)[:, None] * raw(
            c_in[:, None] * x_u, torch.log(sigma_t) / 4, torch.log(sigma_s) / 4
        )
        ratio = (sigma_s / sigma_t)[:, None]
        got = ratio * x_u + (1 - ratio) * G
    else:
        got = paper_g(raw, x_u, sigma_t, sigma_s, sd, 1.0, "x_s_t")
    expected = (sd / (1 - s))[:, None] * EXACT(x, t, s)
    assert float((got - expected).abs().max()) > 1e-3


def test_ctm_preconditioning_is_declared_consistently():
    ctm = {"time": "edm_sigma", "signature": "x_t_s", "prediction": "x0", "preconditioning": "ctm"}
    c = Conventions(**ctm, sigma_data=0.5)
    assert c.resolved_time_input == "log_time/4"
    assert Conventions.from_mapping(c.as_dict()) == c
    assert Conventions(**ctm, time_input="time", time_input_scale=1000.0).time_input == "time"
    with pytest.raises(ConventionError, match="declare signature 'x_t_s'"):
        Conventions(**{**ctm, "signature": "x_t"})
    with pytest.raises(ConventionError, match="declare signature 'x_t_s'"):
        Conventions(**{**ctm, "signature": "x_t_dt"})
    with pytest.raises(ConventionError, match="prediction 'x0'"):
        Conventions(**{**ctm, "prediction": "average_velocity"})
    with pytest.raises(ConventionError, match="written in time 'edm_sigma'"):
        Conventions(**{**ctm, "time": "noise_at_1"})
    with pytest.raises(ConventionError, match="only meaningful with preconditioning 'consistency'"):
        Conventions(**ctm, sigma_min=0.002)
    with pytest.raises(ConventionError, match="describe a single-time network"):
        Conventions(time="edm_sigma", signature="x_t_s", prediction="x0", time_input_scale=1000.0)


def test_jax_round_trip():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    ad = ConventionAdapter(
        {
            "time": "edm_sigma",
            "signature": "x_t_s",
            "prediction": "x0",
            "preconditioning": "ctm",
            "sigma_data": 0.5,
            "framework": "jax",
            "dtype": "float32",
        }
    )
    x, t, s = draw(32, seed=8)
    t = t.clamp(0.01, 0.98)
    net = RandomNetwork(3, seed=9)
    params = net.jax_params("float32")
    user = ad.network_to_user(lambda a, b, c: RandomNetwork.jax_apply(params, a, b, c))
    back = ad.network_to_ours(user)
    got = back(*(jnp.asarray(a.numpy(), dtype="float32") for a in (x, t, s)))
    got = ad.array_to_ours(got, name="F", shape=tuple(x.shape))
    torch.testing.assert_close(got, net(x, t, s), atol=2e-4, rtol=2e-4)
