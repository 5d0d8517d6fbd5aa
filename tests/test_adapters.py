"""Convention adapters, tested both ways and against ground truth written independently here.

* round trips: ours -> user -> ours and user -> ours -> user are the identity for networks,
  points, velocities, times and targets;
* ground truth: the exact flow map of a non-isotropic Gaussian (closed form), carried into each
  convention *by this file's own path coefficients* (alpha_u, beta_u), must be what the adapted
  network's output produces under that convention's definition (average velocity, DDIM step with
  an x0 or epsilon prediction); the adapted velocity must be the time derivative of the user's
  path; a MeanFlow target derived in the user's own time must convert to ours.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from flowmap_oracle.objectives.meanflow import meanflow_target
from flowmap_oracle.oracle.adapters import (
    PREDICTIONS,
    TIMES,
    ConventionAdapter,
    ConventionError,
    Conventions,
)
from flowmap_oracle.oracle.networks import RandomNetwork
from flowmap_oracle.reference_models import ExactFlowMap, preset

D = torch.float64

SIGNATURES = ("x_t_s", "x_s_t", "x_t_dt")
COMBOS = list(itertools.product(TIMES, SIGNATURES, PREDICTIONS))


# -- the user's path, written independently of the adapters ---------------------------------


def user_path(time: str, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_u, beta_u)`` with ``x_u = alpha_u x0 + beta_u x1`` at user time ``tau``."""
    if time == "noise_at_1":
        return 1 - tau, tau
    if time == "noise_at_0":
        return tau, 1 - tau
    if time == "edm_sigma":
        return torch.ones_like(tau), tau
    return torch.cos(tau), torch.sin(tau)


def ours_of(time: str, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our ``t`` and the scale ``a`` with ``x_u = a x_t``: the path is a multiple of ours."""
    alpha, beta = user_path(time, tau)
    return beta / (alpha + beta), alpha + beta


def user_tau(time: str, t: torch.Tensor) -> torch.Tensor:
    """Invert :func:`ours_of` by bisection (no adapter formula involved)."""
    lo, hi = {
        "noise_at_1": (0.0, 1.0),
        "noise_at_0": (0.0, 1.0),
        "edm_sigma": (0.0, 1e3),
        "trigflow_angle": (0.0, math.pi / 2),
    }[time]
    lo, hi = torch.full_like(t, lo), torch.full_like(t, hi)
    increasing = time != "noise_at_0"
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = ours_of(time, mid)[0] > t
        go_low = above if increasing else ~above
        hi, lo = torch.where(go_low, mid, hi), torch.where(go_low, lo, mid)
    return 0.5 * (lo + hi)


def inputs(adapter: ConventionAdapter, n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = adapter.start_domain
    s_lo, s_hi = adapter.time_domain[0], min(hi, adapter.time_domain[1])
    t = lo + (hi - lo) * torch.rand(n, generator=g, dtype=D)
    s = s_lo + (s_hi - s_lo) * torch.rand(n, generator=g, dtype=D)
    s[0] = t[0]  # the diagonal
    s[1] = torch.clamp(t[1] + 0.3, max=hi)  # a backward step
    x = torch.randn(n, 3, generator=g, dtype=D)
    return x, t, s


TEACHER = preset("anisotropic_gaussian")
EXACT = ExactFlowMap(TEACHER)  # closed form, differentiable by autograd


def exact_F(x, t, s):
    return EXACT.average_velocity(x, t, s)


# -- conventions ---------------------------------------------------------------------------------


def test_unknown_keys_and_values_are_errors():
    with pytest.raises(ConventionError, match="unknown convention key"):
        Conventions.from_mapping({"time": "noise_at_1", "predicton": "x0"})
    with pytest.raises(ConventionError, match="unknown time convention 'noise_at_2'"):
        Conventions(time="noise_at_2")
    with pytest.raises(ConventionError, match="unknown prediction convention"):
        Conventions(prediction="velocity_squared")
    with pytest.raises(ConventionError, match="needs shortcut_levels"):
        Conventions(signature="shortcut_log2")
    with pytest.raises(ConventionError, match="only meaningful"):
        Conventions(shortcut_levels=3)
    with pytest.raises(ConventionError, match="cannot be combined"):
        Conventions(time="edm_sigma", signature="shortcut_log2", shortcut_levels=4)
    with pytest.raises(ConventionError, match="must be a mapping"):
        Conventions.from_mapping(["time", "noise_at_1"])
    assert Conventions.from_mapping({}) == Conventions()


# -- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("time", TIMES)
def test_time_maps_match_the_independent_path(time):
    ad = ConventionAdapter({"time": time})
    o = ad._torch_ops
    lo, hi = ad.time_domain
    t = torch.linspace(lo, hi, 41, dtype=D)
    tau = ad.time_to_user(t, ops=o)
    torch.testing.assert_close(tau, user_tau(time, t), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ad.time_to_ours(tau, ops=o), t, atol=1e-12, rtol=1e-12)
    _, a_ind = ours_of(time, tau)
    torch.testing.assert_close(ad._time.scale(o, t), a_ind, atol=1e-12, rtol=1e-12)
    # slope and scale quotient: difference quotients away from the diagonal, derivatives on it
    s = torch.flip(t, [0])
    off = (t - s).abs() > 1e-3
    slope = ad._time.slope(o, t, s)
    quotient = (ad.time_to_user(t, ops=o) - ad.time_to_user(s, ops=o)) / (t - s)
    torch.testing.assert_close(slope[off], quotient[off], atol=1e-10, rtol=1e-10)
    a = ad._time.scale
    sq = ad._time.scale_quotient(o, t, s)
    torch.testing.assert_close(
        sq[off], ((1 - a(o, t) / a(o, s)) / (t - s))[off], atol=1e-10, rtol=1e-10
    )
    h = 1e-6
    tm = t.clamp(lo + h, hi - h)
    fd = (ad.time_to_user(tm + h, ops=o) - ad.time_to_user(tm - h, ops=o)) / (2 * h)
    torch.testing.assert_close(ad._time.slope(o, tm, tm), fd, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ad._time.dtau(o, tm), fd, atol=1e-6, rtol=1e-6)
    fd_a = (a(o, tm + h) - a(o, tm - h)) / (2 * h)
    torch.testing.assert_close(ad._time.dscale(o, tm), fd_a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        ad._time.scale_quotient(o, tm, tm), -fd_a / a(o, tm), atol=1e-6, rtol=1e-6
    )


# -- networks, both ways, and ground truth --------------------------------------------------------


@pytest.mark.parametrize(("time", "signature", "prediction"), COMBOS)
def test_network_round_trips_both_ways(time, signature, prediction):
    ad = ConventionAdapter({"time": time, "signature": signature, "prediction": prediction})
    x, t, s = inputs(ad)
    F = RandomNetwork(3, seed=1)
    round_trip = ad.network_to_ours(ad.network_to_user(F))
    torch.testing.assert_close(round_trip(x, t, s), F(x, t, s), atol=1e-10, rtol=1e-10)
    # user -> ours -> user: a network in the user's variables comes back unchanged
    N = RandomNetwork(3, seed=2)
    back = ad.network_to_user(ad.network_to_ours(N))
    o = ad._torch_ops
    tau, rho = ad.time_to_user(t, ops=o), ad.time_to_user(s, ops=o)
    a1, a2 = ad.encode_times(tau, rho, ops=o)
    x_u = ad.points_to_user(x, t, ops=o)
    torch.testing.assert_close(back(x_u, a1, a2), N(x_u, a1, a2), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("time", "signature", "prediction"), COMBOS)
def test_adapted_exact_map_obeys_the_users_definition(time, signature, prediction):
    ad = ConventionAdapter({"time": time, "signature": signature, "prediction": prediction})
    x, t, s = inputs(ad, seed=3)
    net = ad.network_to_user(exact_F)
    tau, rho = user_tau(time, t), user_tau(time, s)
    _, a_t = ours_of(time, tau)
    _, a_s = ours_of(time, rho)
    x_u = a_t[:, None] * x
    expected = a_s[:, None] * EXACT(x, t, s)  # the exact map carried into the user's coordinates
    N = net(x_u, *_encode(signature, tau, rho))
    al_t, be_t = user_path(time, tau)
    al_s, be_s = user_path(time, rho)
    if prediction == "average_velocity":
        got = x_u + (rho - tau)[:, None] * N
    elif prediction == "x0":
        eps = (x_u - al_t[:, None] * N) / be_t[:, None]
        got = al_s[:, None] * N + be_s[:, None] * eps
    else:
        x0 = (x_u - be_t[:, None] * N) / al_t[:, None]
        got = al_s[:, None] * x0 + be_s[:, None] * N
    torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-8)


def _encode(signature, tau, rho):
    return {"x_t_s": (tau, rho), "x_s_t": (rho, tau), "x_t_dt": (tau, tau - rho)}[signature]


@pytest.mark.parametrize("time", TIMES)
def test_velocity_is_the_time_derivative_of_the_users_path(time):
    ad = ConventionAdapter({"time": time})
    o = ad._torch_ops
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(9, 3, generator=g, dtype=D), torch.randn(9, 3, generator=g, dtype=D)
    lo, hi = ad.time_domain
    t = lo + 0.05 + (hi - lo - 0.1) * torch.rand(9, generator=g, dtype=D)
    x = (1 - t)[:, None] * x0 + t[:, None] * x1
    v_u = ad.velocity_to_user(x1 - x0, x, t, ops=o)
    tau, h = user_tau(time, t), 1e-6

    def path(tt):
        al, be = user_path(time, tt)
        return al[:, None] * x0 + be[:, None] * x1

    fd = (path(tau + h) - path(tau - h)) / (2 * h)
    torch.testing.assert_close(v_u, fd, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        ad.velocity_to_ours(v_u, x, t, ops=o), x1 - x0, atol=1e-12, rtol=1e-12
    )
    field = ad.velocity_field_to_user(lambda y, tt: y * 0 + x1 - x0)
    torch.testing.assert_close(
        field(ad.points_to_user(x, t, ops=o), tau), v_u, atol=1e-8, rtol=1e-8
    )


@pytest.mark.parametrize(("time", "signature"), list(itertools.product(TIMES, SIGNATURES)))
def test_meanflow_target_in_the_users_own_time_converts_to_ours(time, signature):
    """A MeanFlow target derived in the user's time (u = v_u - (tau - rho) D_tau u) maps to
    ours with the time-derivative factor w = tau'(t) / slope(t, s)."""
    ad = ConventionAdapter({"time": time, "signature": signature})
    o = ad._torch_ops
    teacher = preset("ring8")
    x, t, s = inputs(ad, seed=5)
    x = x[:, :2] * 1.5
    N = RandomNetwork(2, seed=6)  # a network in the user's variables
    F = ad.network_to_ours(N)
    v = teacher.velocity(x, t)
    _, expected = meanflow_target(F, x, t, s, v)
    tau, rho = ad.time_to_user(t, ops=o), ad.time_to_user(s, ops=o)
    x_u, v_u = ad.points_to_user(x, t, ops=o), ad.velocity_to_user(v, x, t, ops=o)

    def u(xx, a, b):
        return N(xx, *ad.encode_times(a, b, ops=o))

    out, du = torch.func.jvp(u, (x_u, tau, rho), (v_u, torch.ones_like(tau), torch.zeros_like(rho)))
    N_tgt = v_u - (tau - rho)[:, None] * du
    got = ad.target_to_ours(N_tgt, out, x, t, s, "time_derivative")
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)
    # and back
    back = ad.target_to_user(expected, F(x, t, s), x, t, s, "time_derivative")
    torch.testing.assert_close(back, N_tgt, atol=1e-9, rtol=1e-9)
    # a value target maps like the output, in both directions
    value = ad.target_to_ours(N_tgt, out, x, t, s, "value")
    torch.testing.assert_close(ad.target_to_user(value, F(x, t, s), x, t, s, "value"), N_tgt)


# -- the log2 step index -----------------------------------------------------------------------


@pytest.mark.parametrize("time", ["noise_at_1", "noise_at_0"])
def test_shortcut_levels_both_ways_and_errors(time):
    ad = ConventionAdapter({"time": time, "signature": "shortcut_log2", "shortcut_levels": 5})
    o = ad._torch_ops
    t = torch.tensor([1.0, 0.75, 0.6, 0.5], dtype=D)
    s = torch.tensor([0.0, 0.5, 0.6, 0.5 - 2.0**-4], dtype=D)
    tau, rho = ad.time_to_user(t, ops=o), ad.time_to_user(s, ops=o)
    a1, k = ad.encode_times(tau, rho, ops=o)
    assert k.tolist() == [0.0, 2.0, 5.0, 4.0]
    _, rho2 = ad.decode_times(a1, k, ops=o)
    torch.testing.assert_close(rho2, rho)
    F = RandomNetwork(2, seed=7)
    x = torch.randn(4, 2, dtype=D)
    torch.testing.assert_close(ad.network_to_ours(ad.network_to_user(F))(x, t, s), F(x, t, s))
    with pytest.raises(ConventionError, match="cannot express the step"):
        ad.encode_times(tau, ad.time_to_user(t - 0.3, ops=o), ops=o)
    with pytest.raises(ConventionError, match="only generative steps"):
        ad.encode_times(tau, ad.time_to_user(torch.clamp(t + 0.25, max=1.0), ops=o), ops=o)
    with pytest.raises(ConventionError, match="integer in"):
        ad.decode_times(a1, torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=D), ops=o)


# -- arrays ---------------------------------------------------------------------------------------


def test_arrays_are_checked_not_coerced():
    ad = ConventionAdapter({"dtype": "float32"})
    a = ad.array_to_user(torch.ones(3, 2, dtype=D))
    assert a.dtype == torch.float32
    with pytest.raises(TypeError, match="expected dtype float32 as declared"):
        ad.array_to_ours(torch.ones(3, 2, dtype=D), name="y")
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        ad.array_to_ours(np.ones((3, 2), dtype=np.float32), name="y")
    with pytest.raises(ValueError, match=r"expected shape \(3, 2\)"):
        ad.array_to_ours(torch.ones(2, 3, dtype=torch.float32), name="y", shape=(3, 2))
    bad = torch.ones(3, 2, dtype=torch.float32)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite value inf at index \(2, 1\)"):
        ad.array_to_ours(bad, name="y")


def test_jax_networks_and_arrays_both_ways():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    ad = ConventionAdapter(
        {"time": "trigflow_angle", "signature": "x_t_dt", "framework": "jax", "dtype": "float32"}
    )
    x, t, s = inputs(ad, seed=8)
    net = RandomNetwork(3, seed=9)
    params = net.jax_params("float32")
    user = ad.network_to_user(lambda a, b, c: RandomNetwork.jax_apply(params, a, b, c))
    back = ad.network_to_ours(user)
    got = back(*(jnp.asarray(a.numpy(), dtype="float32") for a in (x, t, s)))
    got = ad.array_to_ours(got, name="F", shape=tuple(x.shape))
    torch.testing.assert_close(got, net(x, t, s), atol=2e-4, rtol=2e-4)
    with pytest.raises(TypeError, match=r"expected a jax\.Array"):
        ad.array_to_ours(torch.ones(2, 2), name="y")
    with pytest.raises(TypeError, match="expected dtype float32"):
        ad.array_to_ours(jnp.ones((2, 2), dtype="int32"), name="y")
    if not jax.config.jax_enable_x64:
        with pytest.raises(ConventionError, match="jax_enable_x64"):
            ConventionAdapter({"framework": "jax", "dtype": "float64"}).array_to_user(torch.ones(2))


# -- single-time networks, sigma_data and preconditioning ------------------------------------------


def unit_path(time: str, tau: torch.Tensor, sd: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_u, beta_u)`` with the user's point ``x_u = alpha_u y + beta_u n`` for our data
    ``y`` and standard normal ``n``, when the user's data are ``sd y`` (sigma_data): EDM adds
    unscaled noise ``sigma n`` to ``sd y``; TrigFlow and the linear paths scale noise too."""
    if time == "edm_sigma":
        return torch.full_like(tau, sd), tau
    alpha, beta = user_path(time, tau)
    return sd * alpha, sd * beta


def unit_tau(time: str, t: torch.Tensor, sd: float) -> torch.Tensor:
    """The user's time at our ``t`` (EDM's sigma is in the data's units)."""
    return sd * user_tau(time, t) if time == "edm_sigma" else user_tau(time, t)


def paper_preconditioning(kind: str, tau, sd: float, sigma_min: float = 0.0):
    """``(c_skip, c_out, c_in)`` as the papers write them: EDM (Karras et al. 2022, Table 1),
    consistency models (Song et al. 2023, appendix C), TrigFlow (Lu & Song 2024)."""
    if kind == "trigflow":
        return torch.cos(tau), -sd * torch.sin(tau), torch.full_like(tau, 1 / sd)
    c_in = 1 / torch.sqrt(tau**2 + sd**2)
    if kind == "edm":
        return sd**2 / (tau**2 + sd**2), tau * sd * c_in, c_in
    return (
        sd**2 / ((tau - sigma_min) ** 2 + sd**2),
        (tau - sigma_min) * sd / torch.sqrt(sd**2 + tau**2),
        c_in,
    )


SINGLE = [
    (time, prediction, sd)
    for time in TIMES
    for prediction in PREDICTIONS
    for sd in (1.0, 0.5)
    if not (prediction == "epsilon" and sd != 1.0)
]


def _single_inputs(ad: ConventionAdapter, seed: int):
    x, t, _ = inputs(ad, seed=seed)
    s = t.clone() if ad.single_time_end == "diagonal" else torch.zeros_like(t)
    return x, t, s


@pytest.mark.parametrize(("time", "prediction", "sd"), SINGLE)
def test_single_time_networks_round_trip_both_ways(time, prediction, sd):
    ad = ConventionAdapter(
        {"time": time, "signature": "x_t", "prediction": prediction, "sigma_data": sd}
    )
    assert ad.n_time_args == 1
    assert ad.single_time_end == ("diagonal" if prediction == "average_velocity" else "data")
    x, t, s = _single_inputs(ad, seed=11)
    F = RandomNetwork(3, seed=12)
    torch.testing.assert_close(
        ad.network_to_ours(ad.network_to_user(F))(x, t, s), F(x, t, s), atol=1e-9, rtol=1e-9
    )
    N = RandomNetwork(3, seed=13)
    back = ad.network_to_user(ad.network_to_ours(lambda a, b: N(a, b, b)))
    o = ad._torch_ops
    (a1,) = ad.encode_times(ad.time_to_user(t, ops=o), ad.time_to_user(s, ops=o), ops=o)
    x_u = ad.points_to_user(x, t, ops=o)
    torch.testing.assert_close(back(x_u, a1), N(x_u, a1, a1), atol=1e-9, rtol=1e-9)
    # the call's inputs decode back to ours
    xx, tt, ss = ad.inputs_to_ours(x_u, a1, ops=o)
    torch.testing.assert_close((xx, tt, ss), (x, t, s), atol=1e-10, rtol=1e-10)
    with pytest.raises(ConventionError, match="single-time network"):
        ad.encode_times(ad.time_to_user(t, ops=o), ad.time_to_user(0.5 * (t + s) + 0.01, ops=o))


@pytest.mark.parametrize(("time", "prediction", "sd"), SINGLE)
def test_single_time_exact_network_obeys_the_users_definition(time, prediction, sd):
    """Ground truth in the user's units: the velocity d x_u / d tau along the exact flow, or
    the exact map to the data end (directly, or through the noise prediction)."""
    ad = ConventionAdapter(
        {"time": time, "signature": "x_t", "prediction": prediction, "sigma_data": sd}
    )
    x, t, _ = _single_inputs(ad, seed=14)
    tau = unit_tau(time, t, sd)
    al, be = unit_path(time, tau, sd)
    a_t = al + be  # x_u = a_t x on our path
    x_u = a_t[:, None] * x
    N = ad.network_to_user(exact_F)(x_u, tau)
    if prediction == "average_velocity":
        h = 1e-6
        ends = []
        for sign in (1.0, -1.0):
            tt = t + sign * h
            taus = unit_tau(time, tt, sd)
            a_s = sum(unit_path(time, taus, sd))
            ends.append((a_s[:, None] * EXACT(x, t, tt), taus))
        expected = (ends[0][0] - ends[1][0]) / (ends[0][1] - ends[1][1])[:, None]
        torch.testing.assert_close(N, expected, atol=1e-5, rtol=1e-5)
        return
    data_end = sd * EXACT(x, t, torch.zeros_like(t))
    got = N if prediction == "x0" else (x_u - be[:, None] * N) / al[:, None]
    torch.testing.assert_close(got, data_end, atol=1e-8, rtol=1e-8)


PRECONDITIONED = [
    ({"time": "edm_sigma", "preconditioning": "edm"}, "edm", 0.0),
    ({"time": "edm_sigma", "preconditioning": "edm", "time_input_scale": 1000.0}, "edm", 0.0),
    (
        {"time": "edm_sigma", "preconditioning": "consistency", "sigma_min": 0.002},
        "consistency",
        0.002,
    ),
    ({"time": "trigflow_angle", "preconditioning": "trigflow"}, "trigflow", 0.0),
    (
        {"time": "trigflow_angle", "preconditioning": "trigflow", "time_input": "time"},
        "trigflow",
        0.0,
    ),
]


@pytest.mark.parametrize(("declared", "kind", "sigma_min"), PRECONDITIONED)
@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_preconditioned_raw_network_against_the_papers(declared, kind, sigma_min, sd):
    """The raw network the oracle hands over, wrapped by the papers' own c_skip, c_out, c_in
    and c_noise, is the exact consistency function in the user's units; both directions."""
    conv = {**declared, "signature": "x_t", "prediction": "x0", "sigma_data": sd}
    ad = ConventionAdapter(conv)
    time = conv["time"]
    x, t, _ = _single_inputs(ad, seed=15)
    t = t.clamp(0.05, 0.95)
    s = torch.zeros_like(t)
    tau = unit_tau(time, t, sd)
    al, be = unit_path(time, tau, sd)
    x_u = (al + be)[:, None] * x
    scale = conv.get("time_input_scale", 1.0)
    c_noise = scale * (tau if kind == "trigflow" else torch.log(tau) / 4)
    c_skip, c_out, c_in = paper_preconditioning(kind, tau, sd, sigma_min)
    raw = ad.network_to_user(exact_F)
    D = c_skip[:, None] * x_u + c_out[:, None] * raw(c_in[:, None] * x_u, c_noise)
    torch.testing.assert_close(D, sd * EXACT(x, t, s), atol=1e-9, rtol=1e-9)
    # the raw call decodes back to our point and time
    xx, tt, ss = ad.inputs_to_ours(c_in[:, None] * x_u, c_noise, ops=ad._torch_ops)
    torch.testing.assert_close((xx, tt, ss), (x, t, s), atol=1e-9, rtol=1e-9)
    # both directions
    F = RandomNetwork(3, seed=16)
    torch.testing.assert_close(
        ad.network_to_ours(ad.network_to_user(F))(x, t, s), F(x, t, s), atol=1e-9, rtol=1e-9
    )
    R = RandomNetwork(3, seed=17)
    back = ad.network_to_user(ad.network_to_ours(lambda a, b: R(a, b, b)))
    y = c_in[:, None] * x_u
    torch.testing.assert_close(back(y, c_noise), R(y, c_noise, c_noise), atol=1e-9, rtol=1e-9)
    # the gain of the raw output: dF / d raw = k c_out
    gain = ad.output_gain(t, s, ops=ad._torch_ops)
    eps = 1e-6
    bumped = ad.network_to_ours(lambda a, b: R(a, b, b) + eps)(x, t, s)
    torch.testing.assert_close(
        (bumped - ad.network_to_ours(lambda a, b: R(a, b, b))(x, t, s)) / eps,
        gain[:, None].expand(-1, 3),
        atol=1e-5,
        rtol=1e-5,
    )


def test_preconditioning_and_units_are_declared_consistently():
    edm = {"time": "edm_sigma", "signature": "x_t", "prediction": "x0"}
    with pytest.raises(ConventionError, match="written in time 'trigflow_angle'"):
        Conventions(**{**edm, "preconditioning": "trigflow"})
    with pytest.raises(ConventionError, match="declare signature 'x_t' and prediction 'x0'"):
        Conventions(**{**edm, "prediction": "epsilon", "preconditioning": "edm"})
    with pytest.raises(ConventionError, match="needs sigma_min"):
        Conventions(**edm, preconditioning="consistency")
    with pytest.raises(ConventionError, match="only meaningful with preconditioning"):
        Conventions(**edm, preconditioning="edm", sigma_min=0.002)
    with pytest.raises(ConventionError, match="unknown preconditioning convention"):
        Conventions(**edm, preconditioning="karras")
    with pytest.raises(ConventionError, match="ambiguous"):
        Conventions(prediction="epsilon", sigma_data=0.5)
    with pytest.raises(ConventionError, match="finite positive"):
        Conventions(sigma_data=0.0)
    with pytest.raises(ConventionError, match="describe a single-time network"):
        Conventions(time_input="log_time/4")
    with pytest.raises(ConventionError, match="unknown time_input"):
        Conventions(signature="x_t", time_input="sigma")
    c = Conventions(**edm, preconditioning="edm", sigma_data=0.5)
    assert c.resolved_time_input == "log_time/4"
    assert c.as_dict()["preconditioning"] == "edm" and "sigma_min" not in c.as_dict()
    assert Conventions.from_mapping(c.as_dict()) == c
    assert "preconditioning" not in Conventions().as_dict()
