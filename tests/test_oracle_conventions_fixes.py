"""Three oracle defects found on real code (issue 10, item 5), each reproduced with a correct
implementation written the way users write it, in every time convention, and each with a wrong
variant that must keep failing:

* the sCM gradient reference had the wrong sign where user time runs towards data the other way
  (``noise_at_0``): a correct loss failed with an exactly negated gradient;
* the stop-gradient check wrapped the target in ``torch.func.jvp``, where a target that takes its
  derivative with ``torch.autograd.functional.jvp`` cannot run; and a target whose only
  dependence on the parameters is a forward-mode tangent (``torch.no_grad`` instead of
  ``detach``) is harmless in reverse-mode training, so it is reported, not failed;
* the exact-map fixed point failed at 5e-7 when the exact network was differentiated by the
  double-backward route of ``torch.autograd.functional.jvp`` (reverse mode, finite differences
  of the Jacobian's columns instead of along the trajectory);
* a float32 TrigFlow angle at ``t = 1`` came back as ``t = 1.0000000437`` and the oracle rejected
  its own time.

Every implementation here uses the network ``N(x, tau, rho)`` (signature ``x_t_s``) predicting
the average velocity in the user's own time ``tau`` and points ``x_u``: ``f_u = x_u + (rho - tau)
N``. The consistency model maps to the data end of the user's time (``tau = 1`` for
``noise_at_0``, 0 otherwise).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd.functional import jvp as autograd_jvp

from flowmap_oracle.oracle import Implementation, OracleSettings, run_check
from flowmap_oracle.oracle.adapters import ConventionAdapter
from flowmap_oracle.oracle.context import exact_network

TIMES = ("noise_at_1", "noise_at_0", "edm_sigma", "trigflow_angle")
DATA_END = {"noise_at_1": 0.0, "noise_at_0": 1.0, "edm_sigma": 0.0, "trigflow_angle": 0.0}
# sign(d tau / dt): +1 where user time grows towards noise, -1 where it grows towards data
TOWARDS_NOISE = {"noise_at_1": 1.0, "noise_at_0": -1.0, "edm_sigma": 1.0, "trigflow_angle": 1.0}

SETTINGS = OracleSettings(max_examples=2)


def _c(a):
    return a[:, None]


def _interpolate(time: str, data, noise, tau):
    """The user's point ``x_u`` at user time ``tau``."""
    if time == "noise_at_1":
        return (1 - _c(tau)) * data + _c(tau) * noise
    if time == "noise_at_0":
        return _c(tau) * data + (1 - _c(tau)) * noise
    if time == "edm_sigma":
        return data + _c(tau) * noise
    return torch.cos(_c(tau)) * data + torch.sin(_c(tau)) * noise


def _total_derivative(fn, x, tau, v, api: str):
    """``(fn(x, tau), d fn / d tau)`` along ``dx / dtau = v`` with the named JVP API."""
    ones = torch.ones_like(tau)
    if api == "func":
        return torch.func.jvp(fn, (x, tau), (v, ones))
    if api == "autograd":
        return autograd_jvp(fn, (x, tau), (v, ones), create_graph=True)
    if api == "forward_ad":
        with fwAD.dual_level():
            out = fwAD.unpack_dual(fn(fwAD.make_dual(x, v), fwAD.make_dual(tau, ones)))
            return out.primal, out.tangent
    raise ValueError(api)


# -- sCM -----------------------------------------------------------------------------------------


def _consistency_map(net, time: str):
    def f(x, tau):
        end = torch.full_like(tau, DATA_END[time])
        return x + _c(end - tau) * net(x, tau, end)

    return f


def scm_target(time: str, api: str = "func"):
    """``d f / d tau``: the tangent of the consistency model along the ODE, detached."""

    def target(net, x, tau, v):
        _, g = _total_derivative(_consistency_map(net, time), x, tau, v, api)
        return g.detach()

    return target


def scm_loss(time: str, *, sign: float = 1.0):
    """The sCM surrogate ``1/2 ||f - sg(f - d)||^2`` with ``d`` the tangent towards noise: the
    discrete consistency loss ``||f(tau) - sg f(tau')||^2`` with ``tau'`` one step towards data
    has gradient ``(d_theta f)^T (f(tau) - f(tau'))``, i.e. ``+df/dtau`` where ``tau`` grows
    towards noise and ``-df/dtau`` where it grows towards data (``noise_at_0``). ``sign=-1``
    is the bug: the other convention's sign copied over."""

    def loss(net, data, noise, tau, velocity):
        x = _interpolate(time, data, noise, tau)
        f, g = _total_derivative(_consistency_map(net, time), x, tau, velocity(x, tau), "func")
        direction = sign * TOWARDS_NOISE[time] * g.detach()
        return 0.5 * (f - (f - direction).detach()).pow(2).sum(dim=1).mean()

    return loss


def _scm_implementation(time: str, *, sign: float = 1.0, api: str = "func") -> Implementation:
    return Implementation(
        name=f"sCM, {time}, {api}",
        conventions={"time": time},
        targets={"scm": scm_target(time, api)},
        losses={"scm": scm_loss(time, sign=sign)},
    )


SCM_CHECKS = (
    "scm.target.random_network",
    "scm.target.exact_map_zero",
    "scm.target.stop_gradient",
    "scm.loss.gradient",
)


@pytest.mark.parametrize("time", TIMES)
def test_a_correct_scm_passes_in_every_time_convention(time):
    impl = _scm_implementation(time)
    for name in SCM_CHECKS:
        result = run_check(name, impl, SETTINGS)
        assert result.status == "pass", result.report()


@pytest.mark.parametrize("time", TIMES)
def test_an_scm_loss_with_the_tangent_sign_of_the_other_direction_fails_negated(time):
    # In noise_at_0 this is the noise_at_1 code copied over: +df/dtau.
    result = run_check("scm.loss.gradient", _scm_implementation(time, sign=-1.0), SETTINGS)
    assert result.status == "fail", result.report()
    assert result.message.startswith("exactly negated"), result.message


# -- MeanFlow / FACM targets with every JVP API ---------------------------------------------------


def meanflow_target(api: str, *, detach: str = "detach"):
    """``N_tgt = v - (tau - rho) dN/dtau`` (rho held fixed) in the user's time.

    ``detach``: ``"detach"`` (correct), ``"none"`` (the target keeps its graph: a bug),
    ``"no_grad"`` (the whole target computed under ``torch.no_grad()``, returned undetached:
    stops reverse mode only), ``"no_grad_jvp_only"`` (only the JVP under ``torch.no_grad()``).
    """

    def target(net, x, tau, rho, v):
        def u(x_, tau_):
            return net(x_, tau_, rho)

        if detach == "no_grad":
            with torch.no_grad():
                _, du = _total_derivative(u, x, tau, v, api)
                return v - _c(tau - rho) * du
        if detach == "no_grad_jvp_only":
            with torch.no_grad():
                _, du = _total_derivative(u, x, tau, v, api)
            return v - _c(tau - rho) * du
        _, du = _total_derivative(u, x, tau, v, api)
        out = v - _c(tau - rho) * du
        return out.detach() if detach == "detach" else out

    return target


def facm_target(time: str, api: str):
    """The MeanFlow target at the data end (FACM's consistency part)."""
    mf = meanflow_target(api)

    def target(net, x, tau, v):
        return mf(net, x, tau, torch.full_like(tau, DATA_END[time]), v)

    return target


def _target_implementation(time: str, api: str, *, dtype: str = "float64", detach="detach"):
    return Implementation(
        name=f"MeanFlow target, {time}, {api}, {dtype}",
        conventions={"time": time, "dtype": dtype},
        targets={
            "meanflow": meanflow_target(api, detach=detach),
            "facm": facm_target(time, api),
            "scm": scm_target(time, api),
        },
    )


TARGET_CHECKS = (
    "meanflow.target.random_network",
    "meanflow.target.exact_map_fixed_point",
    "meanflow.target.stop_gradient",
    "facm.target.exact_map_fixed_point",
    "scm.target.exact_map_zero",
    "scm.target.stop_gradient",
)


@pytest.mark.parametrize("api", ["autograd", "forward_ad"])
@pytest.mark.parametrize("time", TIMES)
def test_targets_pass_whichever_jvp_api_computes_them(time, api):
    impl = _target_implementation(time, api)
    for name in TARGET_CHECKS:
        result = run_check(name, impl, SETTINGS)
        assert result.status == "pass", result.report()


@pytest.mark.parametrize("api", ["func", "autograd"])
def test_a_target_that_keeps_its_graph_fails_the_stop_gradient_check(api):
    impl = _target_implementation("noise_at_0", api, detach="none")
    result = run_check("meanflow.target.stop_gradient", impl, SETTINGS)
    assert result.status == "fail", result.report()
    assert "reverse-mode gradient" in result.message, result.message


def test_no_grad_around_an_autograd_jvp_with_create_graph_does_not_stop_the_gradient():
    # torch.autograd.functional.jvp turns gradient recording back on inside (create_graph=True
    # needs it): the derivative keeps its graph and the target built outside the block leaks it.
    impl = _target_implementation("edm_sigma", "autograd", detach="no_grad_jvp_only")
    result = run_check("meanflow.target.stop_gradient", impl, SETTINGS)
    assert result.status == "fail", result.report()
    assert "reverse-mode gradient" in result.message, result.message


@pytest.mark.parametrize("time", TIMES)
def test_a_no_grad_target_is_reported_as_harmless_in_reverse_mode_not_failed(time):
    # torch.no_grad() stops reverse-mode gradients; a forward-mode tangent in the parameters
    # still sees the target move. Training differentiates in reverse mode: say so, do not fail.
    impl = _target_implementation(time, "func", detach="no_grad")
    result = run_check("meanflow.target.stop_gradient", impl, SETTINGS)
    assert result.status == "pass", result.report()
    assert "harmless in reverse-mode training" in result.message, result.message
    assert "forward-mode tangent" in result.message, result.message


def test_a_detached_target_passes_without_a_note():
    result = run_check(
        "meanflow.target.stop_gradient", _target_implementation("noise_at_1", "func"), SETTINGS
    )
    assert result.status == "pass" and "note" not in result.message, result.message


def test_a_target_built_with_forward_ad_says_the_forward_probe_could_not_run():
    # torch.autograd.forward_ad does not nest with another forward-mode transform; reverse mode
    # (what training uses) is still checked, and the result says what was not.
    impl = _target_implementation("trigflow_angle", "forward_ad")
    result = run_check("meanflow.target.stop_gradient", impl, SETTINGS)
    assert result.status == "pass", result.report()
    assert "forward mode not probed" in result.message, result.message


# -- the exact network in reverse mode ------------------------------------------------------------


def test_the_exact_network_differentiated_by_double_backward_matches_forward_mode():
    # The inputs of meanflow.target.exact_map_fixed_point's corner case (t, s) = (1, 0).
    exact = exact_network("ring8")
    g = torch.Generator().manual_seed(0)
    data = exact.teacher.mixture.sample(16, generator=g)
    noise = torch.randn(data.shape, generator=g, dtype=data.dtype)
    for t0, s0 in ((1.0, 0.0), (0.7, 0.2), (0.5, 0.5)):
        t = torch.full((16,), t0, dtype=torch.float64)
        s = torch.full((16,), s0, dtype=torch.float64)
        x = (1 - _c(t)) * data + _c(t) * noise
        v = exact.velocity(x, t)
        tangents = (v, torch.ones_like(t), torch.zeros_like(s))
        _, forward = torch.func.jvp(exact, (x, t, s), tangents)
        _, reverse = autograd_jvp(exact, (x, t, s), tangents)
        # measured: 0 (the same differences along the same direction); 5.3e-7 before the fix
        assert float((forward - reverse).abs().max()) <= 1e-12, (t0, s0)


# -- TrigFlow in float32 at t = 1 -----------------------------------------------------------------


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_trigflow_angle_of_t_1_comes_back_as_t_1(framework, dtype):
    if framework == "jax":
        pytest.importorskip("jax")
        import jax

        if dtype == "float64" and not jax.config.read("jax_enable_x64"):
            pytest.skip("JAX float64 needs jax_enable_x64")
    ad = ConventionAdapter({"time": "trigflow_angle", "dtype": dtype, "framework": framework})
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    theta = ad.array_to_user(ad.time_to_user(t, ops=ad.torch_ops))
    back = ad.array_to_ours(ad.time_to_ours(theta), name="t")
    assert back[0] == 0.0 and back[2] == 1.0, back
    assert abs(float(back[1]) - 0.25) < 1e-6


@pytest.mark.parametrize("time", TIMES)
def test_targets_at_the_ends_pass_in_float32_in_every_time_convention(time):
    # float64 runs in the tests above and in tests/test_oracle.py
    impl = _target_implementation(time, "func", dtype="float32")
    for name in (*TARGET_CHECKS, "meanflow.target.conditional_velocity"):
        result = run_check(name, impl, SETTINGS)
        assert result.status == "pass", result.report()


def trigflow_meanflow_as_shipped(model, x):
    """MeanFlow in TrigFlow time as training code writes it, a quarter of the batch at the noise
    end theta = pi / 2 (in float32 that angle lies above pi / 2)."""
    n = x.shape[0]
    theta = (math.pi / 2) * torch.rand(n, dtype=x.dtype)
    theta[: n // 4] = math.pi / 2
    rho = theta * torch.rand(n, dtype=x.dtype)
    e = torch.randn_like(x)
    z = torch.cos(_c(theta)) * x + torch.sin(_c(theta)) * e
    v = torch.cos(_c(theta)) * e - torch.sin(_c(theta)) * x
    u, du = torch.func.jvp(
        lambda z_, th: model(z_, th, rho), (z, theta), (v, torch.ones_like(theta))
    )
    return (u - (v - _c(theta - rho) * du).detach()).pow(2).sum(dim=1).mean()


def test_a_float32_trigflow_loss_as_shipped_that_reaches_the_noise_end_passes():
    # The instrumented network read theta = fl32(pi / 2) as t = 1.0000000437 and the exact map
    # refused it (an internal error of the oracle); it is t = 1.
    from flowmap_oracle.oracle.runner import run_shipped
    from flowmap_oracle.oracle.shipped import ShippedLoss

    impl = Implementation(
        name="TrigFlow MeanFlow as shipped, float32",
        conventions={"time": "trigflow_angle", "dtype": "float32"},
        shipped_losses={"meanflow": ShippedLoss(trigflow_meanflow_as_shipped)},
    )
    torch.manual_seed(0)
    results = run_shipped(impl)
    undeclared = "meanflow.shipped.value"  # skipped: the loss declares no extras
    assert results and all(
        r.status == "pass" or (r.check == undeclared and r.status == "skip") for r in results
    ), [r.report() for r in results]
    times = next(r for r in results if r.check == "meanflow.shipped.times")
    assert "t in [" in times.message and ", 1]" in times.message, times.message


def test_a_trigflow_target_that_steps_past_the_noise_end_is_still_rejected():
    # A forward difference in the angle with step 1e-3 evaluates the network beyond pi / 2 at
    # t = 1: a real bug (a time outside the path), which rounding tolerance must not hide.
    def target(net, x, tau, rho, v):
        h = 1e-3
        du = (net(x + h * v, tau + h, rho) - net(x, tau, rho)) / h
        return (v - _c(tau - rho) * du).detach()

    impl = Implementation(
        name="TrigFlow forward difference",
        conventions={"time": "trigflow_angle", "dtype": "float32"},
        targets={"meanflow": target},
    )
    result = run_check("meanflow.target.exact_map_fixed_point", impl, SETTINGS)
    assert result.status == "fail", result.report()
    assert "must lie in [0, 1]" in result.message, result.message
    assert math.isclose(result.case.t, 1.0), result.case


def test_float32_tolerances_scale_only_with_the_conversion_gain_and_still_catch_a_sign_error():
    from flowmap_oracle.oracle.context import CheckContext

    t = torch.tensor([0.5, 0.98], dtype=torch.float64)
    s = torch.tensor([0.25, 0.5], dtype=torch.float64)
    edm32 = CheckContext(
        Implementation("g", conventions={"time": "edm_sigma", "dtype": "float32"}), SETTINGS
    )
    gain = edm32.rounding_gain(t, s)
    assert gain is not None and float(gain[1]) > 100 * float(gain[0]) and float(gain.min()) >= 1
    linear32 = CheckContext(Implementation("g", conventions={"dtype": "float32"}), SETTINGS)
    torch.testing.assert_close(linear32.rounding_gain(t, s), torch.ones(2, dtype=torch.float64))
    assert (
        CheckContext(
            Implementation("g", conventions={"time": "edm_sigma"}), SETTINGS
        ).rounding_gain(t, s)
        is None
    )

    def wrong_sign(net, x, tau, rho, v):  # v + (tau - rho) dN/dtau: the sign error
        _, du = _total_derivative(lambda x_, tau_: net(x_, tau_, rho), x, tau, v, "func")
        return (v + _c(tau - rho) * du).detach()

    impl = Implementation(
        "sign error, EDM float32",
        conventions={"time": "edm_sigma", "dtype": "float32"},
        targets={"meanflow": wrong_sign},
    )
    assert run_check("meanflow.target.random_network", impl, SETTINGS).status == "fail"
