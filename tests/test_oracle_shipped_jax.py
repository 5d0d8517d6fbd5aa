"""JAX losses and samplers as they ship: the exact network in jax.numpy, the instrumented
network's records (jitted or not), the checks of ``shipped.py`` run on the JAX harness, the
example and its bugs, and the user's own exception when their loss raises.

Each check is shown to pass correct code and to fail a variant with a bug seen in practice.
"""

from __future__ import annotations

import inspect
import traceback

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
jnp = jax.numpy

from flowmap_oracle.oracle.adapters import ConventionError, Conventions  # noqa: E402
from flowmap_oracle.oracle.context import user_frames  # noqa: E402
from flowmap_oracle.oracle.shipped import (  # noqa: E402
    N_FIELDS,
    ShippedLoss,
    ShippedSampler,
    _Harness,
    check_alignment,
    check_stationarity,
    check_times,
    teacher_for_shape,
)
from flowmap_oracle.oracle.shipped_jax import (  # noqa: E402
    JaxGaussianFlow,
    JaxHarness,
    check_jax_sampler,
)
from flowmap_oracle.reference_models import ExactAverageVelocity, ExactFlowMap  # noqa: E402

F32 = Conventions(framework="jax", dtype="float32")


def _points(teacher, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, teacher.dim, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return x, t


# -- the exact network in jax.numpy ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["linear", "trig"])
def test_the_jax_exact_map_matches_the_torch_one_and_its_derivative_on_and_off_the_diagonal(path):
    teacher = teacher_for_shape((3,), path)
    flow, exact = JaxGaussianFlow(teacher), ExactFlowMap(teacher)
    x, t = _points(teacher, 80)
    gaps = torch.tensor([0.0, 1e-9, 1e-6, 1e-3, 0.3]).double().repeat(16)
    s = (t - gaps).clamp_min(0.0)
    v = teacher.velocity(x, t)
    with jax.enable_x64(True):
        xj, tj, sj, vj = (jnp.asarray(a.numpy()) for a in (x, t, s, v))
        F = np.asarray(flow.average_velocity(xj, tj, sj))
        _, dF = jax.jvp(flow.average_velocity, (xj, tj, sj), (vj, jnp.ones_like(tj), 0 * sj))

        def along(eps):  # F* moved along the trajectory direction (v, 1, 0)
            return flow.average_velocity(xj + eps * vj, tj + eps, sj)

        h = 1e-3  # fourth-order central difference
        fd = (8 * (along(h) - along(-h)) - (along(2 * h) - along(-2 * h))) / (12 * h)
        vel = np.asarray(flow.velocity(xj, tj))
    np.testing.assert_allclose(F, exact.average_velocity(x, t, s).numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(vel, v.numpy(), rtol=0, atol=1e-13)
    total = exact.directional_derivative(x, t, s, dx=v, dt=1.0).numpy()
    np.testing.assert_allclose(np.asarray(dF), total, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(fd), total, rtol=1e-6, atol=1e-9 * np.abs(total).max())


def test_float32_has_no_cancellation_near_the_diagonal_where_the_difference_quotient_has():
    teacher = teacher_for_shape((3,))
    flow = JaxGaussianFlow(teacher)
    x, t = _points(teacher, 64, seed=1)
    t = 0.2 + 0.7 * t
    s = t - torch.tensor([0.0, 1e-6, 1e-4, 1e-2]).double().repeat(16)
    ref = ExactAverageVelocity(teacher)(x, t, s).numpy()
    xj, tj, sj = (jnp.asarray(a.numpy(), dtype="float32") for a in (x, t, s))
    F = np.asarray(flow.average_velocity(xj, tj, sj))
    assert F.dtype == np.float32
    assert np.abs(F - ref).max() < 2e-5 * np.abs(ref).max()
    # the quotient (x - Phi_{t->s}(x)) / (t - s) in float32 loses digits at s near t
    off = np.asarray(sj != tj)
    x_s = xj + (sj - tj)[:, None] * jnp.asarray(ref, dtype="float32")
    naive = np.asarray((xj - x_s) / (tj - sj)[:, None])
    assert np.abs(naive[off] - ref[off]).max() > 1e-2 * np.abs(ref).max()


def test_the_jax_network_is_the_torch_network_with_the_same_perturbation_fields():
    with jax.enable_x64(True):
        h = JaxHarness.build(Conventions(framework="jax"), (3,))
        net = h.net
        x, t = _points(h.teacher, 32, seed=2)
        s = t * torch.rand(32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        theta = torch.tensor([0.3, -0.2, 0.5, 0.7], dtype=torch.float64)
        net.theta = theta
        got = net.ours_jax(*(jnp.asarray(a.numpy()) for a in (theta, x, t, s)))
        torch.testing.assert_close(torch.from_numpy(np.array(got)), net.ours(x, t, s))
        for k in range(N_FIELDS):  # each field separately, so none can hide behind another
            e = torch.zeros(N_FIELDS, dtype=torch.float64)
            e[k] = 1.0
            net.theta = e
            one = net.ours_jax(*(jnp.asarray(a.numpy()) for a in (e, x, t, s)))
            base = net.exact(x, t, s)
            torch.testing.assert_close(
                torch.from_numpy(np.array(one)) - base, net.fields[k](x, t, s)
            )


# -- the instrumented network --------------------------------------------------------------------


def _square_loss(apply):
    def loss_fn(params, x, key):
        tau = jax.random.uniform(key, (x.shape[0],), dtype=x.dtype)
        return jnp.sum(apply(params, x, tau, 0.8 * tau) ** 2)

    return loss_fn


@pytest.mark.parametrize("jit", [False, True])
def test_calls_are_recorded_concretely_in_our_convention_with_their_output_gradients(jit):
    # noise at 0 and a network taking (x, t, t - s): the user's (tau, 0.8 tau) is our
    # (1 - tau, 1 - 0.8 tau)
    conv = Conventions(time="noise_at_0", signature="x_t_dt", framework="jax", dtype="float32")
    make = (lambda apply: jax.jit(_square_loss(apply))) if jit else _square_loss
    h = JaxHarness.build(conv, (2, 2))
    h.net.reset()
    theta = torch.full((N_FIELDS,), 0.05, dtype=torch.float64)
    _, value = h.gradient(ShippedLoss(make), theta, batch_size=8)
    (call,) = h.net.calls
    key = jax.random.split(jax.random.PRNGKey(0))[1]  # the harness's first key
    tau_j = jax.random.uniform(key, (8,))
    tau, dt = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (tau_j, 0.8 * tau_j))
    torch.testing.assert_close(call.t, 1 - tau)
    torch.testing.assert_close(call.s, 1 - (tau - dt))
    # d sum(out^2) / d out = 2 out, and the outputs are F_theta in the user's units
    x = h.last_data.reshape(8, -1).double()
    N_user = -h.net.ours(x, call.t, call.s)  # noise at 0: the user's velocity is -F
    torch.testing.assert_close(call.output_grad, 2 * N_user, rtol=1e-4, atol=1e-4)
    assert value == pytest.approx(float((N_user**2).sum()), rel=1e-4)


def test_outputs_under_jax_jvp_get_their_gradients_and_per_sample_calls_are_refused():
    def jvp_loss(apply):
        def loss_fn(params, x, key):
            t = jax.random.uniform(key, (x.shape[0],))
            u, du = jax.jvp(lambda t: apply(params, x, t, t), (t,), (jnp.ones_like(t),))
            return jnp.mean((u - jax.lax.stop_gradient(du)) ** 2)

        return loss_fn

    h = JaxHarness.build(F32, None)
    h.gradient(ShippedLoss(jvp_loss), torch.zeros(N_FIELDS, dtype=torch.float64))
    (call,) = h.net.calls
    assert call.transformed and call.output_grad is not None and call.output_grad.abs().max() > 0

    def per_sample(apply):
        def loss_fn(params, x, key):
            return jnp.mean(jax.vmap(lambda xi: apply(params, xi, 0.5, 0.5))(x) ** 2)

        return loss_fn

    with pytest.raises(ValueError, match=r"not per sample under jax\.vmap"):
        h.gradient(ShippedLoss(per_sample), torch.zeros(N_FIELDS, dtype=torch.float64))


CONVENTIONS = [
    {"time": "edm_sigma", "prediction": "x0"},
    {"time": "trigflow_angle", "signature": "x_s_t"},
    {"time": "noise_at_0", "signature": "x_t_dt", "prediction": "average_velocity"},
    {"prediction": "epsilon", "signature": "x_t_s"},
]


def test_in_every_declared_convention_the_jax_network_is_the_torch_harness_network():
    """Same outputs in the user's units and the same recorded (x, t, s) as the torch harness's
    network, for time variables, signatures and predictions (float64)."""
    g = torch.Generator().manual_seed(5)
    for declared in CONVENTIONS:
        th = _Harness.build(Conventions(**declared), (2,))
        with jax.enable_x64(True):
            jh = JaxHarness.build(Conventions(framework="jax", **declared), (2,))
            a = th.net.adapter
            t = 0.1 + 0.8 * torch.rand(6, generator=g, dtype=torch.float64)
            s = t * torch.rand(6, generator=g, dtype=torch.float64)
            x = torch.randn(6, 2, generator=g, dtype=torch.float64)
            o = a.torch_ops
            args = a.encode_times(a.time_to_user(t, ops=o), a.time_to_user(s, ops=o), ops=o)
            x_u = a.points_to_user(x, t, ops=o)
            theta = torch.tensor([0.02, -0.03, 0.04, 0.05], dtype=torch.float64)
            with torch.no_grad():
                th.net.theta.copy_(theta)
                want = th.net(x_u, *args)
            params = {"theta": jnp.asarray(theta.numpy()), "probes": ()}
            jh.net._start()
            got = jh.net.apply(params, *(jnp.asarray(v.numpy()) for v in (x_u, *args)))
            jax.effects_barrier()
            (rec,) = jh.net._records(jh.net._all, None)
        torch.testing.assert_close(torch.from_numpy(np.array(got)), want, msg=str(declared))
        for ours, theirs in ((rec.t, t), (rec.s, s), (rec.x, x)):
            torch.testing.assert_close(ours, theirs, msg=str(declared))


def test_losses_that_do_not_follow_the_protocol_fail_with_one_clear_message():
    h = JaxHarness.build(F32, None)

    def drifting(apply):  # draws outside the key: a second run makes another call
        runs = []

        def loss_fn(params, x, key):
            runs.append(1)
            out = [apply(params, x, 0.5, 0.25) for _ in runs]
            return sum(jnp.mean(u**2) for u in out)

        return loss_fn

    res = check_times("meanflow", ShippedLoss(drifting), h)
    assert res.status == "fail" and "differently on two runs with the same key" in res.message

    def detached(apply):
        return lambda params, x, key: jnp.mean(jax.lax.stop_gradient(apply(params, x, 0.5, 0.25)))

    res = check_alignment("meanflow", ShippedLoss(detached), h)
    assert res.status == "fail" and "jax.lax.stop_gradient" in res.message


def test_float64_needs_x64_and_the_harness_needs_a_jax_declaration():
    if not jax.config.read("jax_enable_x64"):
        with pytest.raises(ConventionError, match="jax_enable_x64"):
            JaxHarness.build(Conventions(framework="jax", dtype="float64"), None)
    with pytest.raises(ValueError, match="framework 'jax'"):
        JaxHarness.build(Conventions(), None)


# -- the checks of shipped.py on the JAX harness --------------------------------------------------


def _distilled(apply, teacher, sign=1.0):
    """MeanFlow distillation from the teacher's velocity (pointwise fixed point), float64."""

    def loss_fn(params, x, key):
        k1, k2, k3 = jax.random.split(key, 3)
        t = jax.random.uniform(k1, (x.shape[0],), dtype=x.dtype)
        r = t * jax.random.uniform(k2, (x.shape[0],), dtype=x.dtype)
        z = (1 - t[:, None]) * x + t[:, None] * jax.random.normal(k3, x.shape, dtype=x.dtype)
        v = teacher(z, t)
        u, dudt = jax.jvp(lambda z, t: apply(params, z, t, r), (z, t), (v, jnp.ones_like(t)))
        target = jax.lax.stop_gradient(v - sign * (t - r)[:, None] * dudt)
        return jnp.mean(jnp.sum((u - target) ** 2, axis=1))

    return loss_fn


def test_distillation_with_the_teacher_velocity_is_stationary_pointwise_and_a_sign_error_is_not():
    with jax.enable_x64(True):
        h = JaxHarness.build(Conventions(framework="jax"), None)
        good = ShippedLoss(_distilled, velocity="teacher")
        res = check_stationarity("meanflow", good, h)
        assert res.status == "pass", res.message
        assert check_alignment("meanflow", good, h).status == "pass"
        bad = ShippedLoss(lambda a, te: _distilled(a, te, sign=-1.0), velocity="teacher")
        res = check_stationarity("meanflow", bad, h)
        assert res.status == "fail" and "not a fixed point" in res.message


def _flow_matching(apply, *, t_max=1.0, target_sign=1.0):
    """Flow matching in Lipman's convention (data at t = 1) with a velocity network (x, t)."""

    def loss_fn(params, x1, key):
        k_t, k_e = jax.random.split(key)
        t = t_max * jax.random.uniform(k_t, (x1.shape[0],), dtype=x1.dtype)
        x0 = jax.random.normal(k_e, x1.shape, dtype=x1.dtype)
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        return jnp.mean((apply(params, xt, t) - target_sign * (x1 - x0)) ** 2)

    return loss_fn


def test_a_single_time_velocity_network_in_lipmans_convention_with_a_declared_time_range():
    conv = Conventions(time="noise_at_0", signature="x_t", framework="jax", dtype="float32")
    h = JaxHarness.build(conv, (2,))
    good = ShippedLoss(_flow_matching, time_range=(0.0, 1.0))
    assert check_times("flow_matching", good, h).status == "pass"
    assert check_alignment("flow_matching", good, h).status == "pass"
    flipped = ShippedLoss(lambda a: _flow_matching(a, target_sign=-1.0))  # x0 - x1 as target
    res = check_alignment("flow_matching", flipped, h)
    assert res.status == "fail" and "not along the reference residual" in res.message
    # times up to 1 where the loss declares (and e.g. asserts) t <= 0.5
    narrow = ShippedLoss(_flow_matching, time_range=(0.0, 0.5))
    res = check_times("flow_matching", narrow, h)
    assert res.status == "fail" and "outside the declared time_range" in res.message
    inside = ShippedLoss(lambda a: _flow_matching(a, t_max=0.5), time_range=(0.0, 0.5))
    assert check_times("flow_matching", inside, h).status == "pass"


# -- the example, as it ships -------------------------------------------------------------------


def _run_example(factory):
    from examples import jax_meanflow_shipped as mod

    impl = getattr(mod, factory)()
    (shipped,) = impl.shipped_losses.values()
    h = JaxHarness.build(impl.conventions, shipped.data_shape)
    results = [check_times("meanflow", shipped, h), check_alignment("meanflow", shipped, h)]
    results.append(check_stationarity("meanflow", shipped, h, repeats=16))
    results += [check_jax_sampler(n, s, impl.conventions) for n, s in impl.samplers.items()]
    return {r.check: r for r in results}


def test_the_jax_example_passes_every_check_as_shipped():
    results = _run_example("implementation")
    assert set(results) == {
        "meanflow.shipped.times",
        "meanflow.shipped.alignment",
        "meanflow.shipped.stationarity",
        "sampler.two_step.exact_map",
    }
    assert all(r.status == "pass" for r in results.values()), [
        (r.check, r.message) for r in results.values() if r.status != "pass"
    ]


def test_the_jax_examples_bugs_are_caught_by_exactly_the_intended_checks():
    # the JVP tangent on r instead of t; a sampler stepping by 1 when it asked for 0.5
    results = _run_example("wrong_implementation")
    failed = {name for name, r in results.items() if r.status == "fail"}
    assert failed == {
        "meanflow.shipped.alignment",
        "meanflow.shipped.stationarity",
        "sampler.two_step.exact_map",
    }, [(r.check, r.status, r.message) for r in results.values()]


def test_the_jax_example_factory_hands_the_code_over_in_at_most_25_lines():
    from examples import jax_meanflow_shipped as mod

    for factory in (mod.implementation, mod.wrong_implementation):
        assert len(inspect.getsource(factory).rstrip().splitlines()) <= 25


def test_a_velocity_sampler_and_a_sampler_from_the_wrong_end_in_jax():
    def euler(apply):  # one call site in a jitted lax loop: each iteration is recorded
        @jax.jit
        def sample(params, x):
            def step(k, x):
                t = jnp.full((x.shape[0],), 1 - k / 4, dtype=x.dtype)
                return x - apply(params, x, t, t) / 4

            return jax.lax.fori_loop(0, 4, step, x)

        return sample

    res = check_jax_sampler("euler", ShippedSampler(euler), F32)
    assert res.status == "pass" and "velocity sampler (4 calls" in res.message, res.message
    assert "1->1, 0.75->0.75, 0.5->0.5, 0.25->0.25" in res.message

    def from_data(apply):
        return lambda params, x: x - 0.4 * apply(params, x, jnp.full(x.shape[:1], 0.4), 0.0)

    res = check_jax_sampler("late", ShippedSampler(from_data), F32)
    assert res.status == "fail" and "not at the noise end" in res.message


# -- what the user sees when their loss raises ------------------------------------------------------


def _raising(apply):
    def loss_fn(params, x, key):
        u = apply(params, x, jnp.ones(x.shape[0]), jnp.zeros(x.shape[0]))
        raise KeyError(f"no entry 'labels' in a batch of shape {u.shape}")  # the user's bug

    return loss_fn


@pytest.mark.parametrize("jit", [False, True])
def test_the_users_own_exception_propagates_with_their_file_and_line(jit):
    make = (lambda apply: jax.jit(_raising(apply))) if jit else _raising
    h = JaxHarness.build(F32, None)
    with pytest.raises(KeyError, match="no entry 'labels'") as info:
        check_times("meanflow", ShippedLoss(make), h)
    err = info.value
    text = "".join(traceback.format_exception(err))
    assert "JAX has removed its internal frames" not in text
    line = inspect.getsourcelines(_raising)[1] + 3  # the raise statement
    frames = user_frames(err)
    assert frames and frames[-1].filename == __file__ and frames[-1].lineno == line


if __name__ == "__main__":
    # False alarms and power of the example's stationarity check over independent runs:
    # python tests/test_oracle_shipped_jax.py [runs]
    import sys

    from examples import jax_meanflow_shipped as mod

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for factory in ("implementation", "wrong_implementation"):
        impl = getattr(mod, factory)()
        (shipped,) = impl.shipped_losses.values()
        h = JaxHarness.build(impl.conventions, shipped.data_shape)
        statuses = [
            check_stationarity("meanflow", shipped, h, repeats=16).status for _ in range(runs)
        ]
        print(factory, {s: statuses.count(s) for s in sorted(set(statuses))}, f"of {runs}")
