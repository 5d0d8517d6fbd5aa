"""Losses and samplers as they ship: the instrumented network, each check, and the examples.

Every check is shown to pass correct code written the way research code is written and to fail a
variant with a bug seen in practice.
"""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle import Implementation
from flowmap_oracle.oracle import run_checks
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.shipped import (
    ShippedLoss,
    ShippedSampler,
    _Harness,
    _scalar,
    check_alignment,
    check_sampler,
    check_stationarity,
    check_times,
    run_shipped_checks,
)

LINEAR = Conventions()


def _pairs(n, dtype=torch.float64, swap=False):
    t, r = torch.rand(n, dtype=dtype), torch.rand(n, dtype=dtype)
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    r = torch.where(torch.rand(n) < 0.5, t, r)
    return (r, t) if swap else (t, r)


def meanflow(model, x, *, teacher=None, sign=1.0, swap=False, tangent_r=0.0, p=0.0):
    """MeanFlow as commonly written; keyword arguments switch on one bug each."""
    t, r = _pairs(x.shape[0], x.dtype, swap=swap)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    v = e - x if teacher is None else teacher(z, t)
    u, dudt = torch.func.jvp(model, (z, t, r), (v, torch.ones_like(t), tangent_r + 0 * r))
    err = (u - (v - sign * (t - r)[:, None] * dudt).detach()).pow(2).sum(1)
    return (err / (err.detach() + 1e-3) ** p).mean()


def _harness(shape=None, conventions=LINEAR):
    return _Harness.build(conventions, shape)


# -- the instrumented network -------------------------------------------------------------------


def test_the_network_records_times_in_our_convention_and_output_gradients_under_jvp():
    h = _harness(conventions=Conventions(time="noise_at_0"))
    shipped = ShippedLoss(lambda m, x: meanflow(m, x))
    h.net.reset()
    # noise at 0: the user's t = 0.3 is our 0.7
    x = torch.randn(4, 2, dtype=torch.float64)
    tau = torch.full((4,), 0.3, dtype=torch.float64)
    out = h.net(x, tau, tau + 0.2)
    (out**2).sum().backward()
    call = h.net.calls[-1]
    torch.testing.assert_close(call.t, torch.full((4,), 0.7, dtype=torch.float64))
    torch.testing.assert_close(call.s, torch.full((4,), 0.5, dtype=torch.float64))
    assert call.output_grad is not None
    torch.testing.assert_close(call.output_grad, 2 * out.detach())
    # under torch.func.jvp the probe still receives d loss / d output
    h.net.reset()
    h.gradient(shipped, torch.zeros(4, dtype=torch.float64))
    assert h.net.calls[0].transformed and h.net.calls[0].output_grad is not None


def test_images_labels_and_scalar_times_pass_through():
    h = _harness(shape=(1, 2, 2))
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    out = h.net(x, 1.0, torch.zeros(3, 1, 1, 1, dtype=torch.float64), torch.tensor([1, 2, 3]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match=r"the data are \(batch, 1, 2, 2\)"):
        h.net(torch.randn(3, 4, dtype=torch.float64), 1.0, 0.0)


def test_losses_may_return_tuples_or_dicts_but_must_hold_a_scalar():
    one = torch.tensor(1.0)
    assert _scalar((one, {"mse": 2.0}), "loss") is not None
    assert float(_scalar({"loss": one, "log": 3}, "loss")) == 1.0
    with pytest.raises(TypeError, match="scalar"):
        _scalar(torch.ones(3), "the loss")
    with pytest.raises(ValueError, match="velocity"):
        ShippedLoss(lambda m, b: one, velocity="marginal")  # type: ignore[arg-type]


# -- times ----------------------------------------------------------------------------------


def test_times_pass_correct_pairs_and_name_pairs_drawn_in_the_wrong_direction():
    h = _harness()
    ok = check_times("meanflow", ShippedLoss(lambda m, x: meanflow(m, x)), h)
    assert ok.status == "pass" and "on the diagonal" in ok.message
    bad = check_times("meanflow", ShippedLoss(lambda m, x: meanflow(m, x, swap=True)), h)
    assert bad.status == "fail" and "wrong direction" in bad.message
    both = ShippedLoss(lambda m, x: meanflow(m, x, swap=True), both_directions=True)
    assert check_times("meanflow", both, h).status == "pass"


def test_a_step_past_the_end_of_the_path_fails_the_checks_and_does_not_escape():
    # Shortcut-style noise-at-0 code forming x_{t+d} with t + d > 1 (a grid without its clip).
    def loss(model, x):
        t = 0.75 + 0.2 * torch.rand(x.shape[0], dtype=x.dtype)
        e = torch.randn_like(x)
        z = t[:, None] * x + (1 - t[:, None]) * e
        return (model(z, t, t + 0.25) - (x - e)).pow(2).mean()

    noise_at_0 = Conventions(time="noise_at_0")
    results = run_shipped_checks(noise_at_0, losses={"meanflow": ShippedLoss(loss)}, repeats=4)
    times = next(r for r in results if r.check == "meanflow.shipped.times")
    assert times.status == "fail", times.message
    assert "a time off the path" in times.message and "your time argument(s)" in times.message
    # every check that runs the loss fails (nothing is declared: the value check does not run it)
    assert all(r.status == "fail" for r in results if r.check != "meanflow.shipped.value")


@pytest.mark.parametrize("velocity", ["conditional", "teacher"])
def test_descent_passes_a_loss_and_fails_the_same_loss_maximised(velocity):
    # A negated loss keeps the exact map stationary (stationarity passes) but repels from it.
    def loss(sign):
        if velocity == "teacher":
            return lambda m, x, teacher: sign * meanflow(m, x, teacher=teacher)
        return lambda m, x: sign * meanflow(m, x)

    for sign, verdict in ((1.0, "pass"), (-1.0, "fail")):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            results = run_shipped_checks(
                LINEAR, losses={"meanflow": ShippedLoss(loss(sign), velocity=velocity)}, repeats=16
            )
        status = {r.check: r.status for r in results}
        assert status["meanflow.shipped.descent"] == verdict, results
        assert status["meanflow.shipped.stationarity"] == "pass", results


# -- alignment --------------------------------------------------------------------------------


@pytest.mark.parametrize("velocity", ["conditional", "teacher"])
def test_alignment_holds_for_any_weighting_and_fails_sign_and_tangent_errors(velocity):
    h = _harness()

    def make(**bug):
        if velocity == "teacher":
            return ShippedLoss(
                lambda m, x, te: meanflow(m, x, teacher=te, **bug), velocity=velocity
            )
        return ShippedLoss(lambda m, x: meanflow(m, x, **bug))

    for weighting in (0.0, 1.0):  # plain L2 and MeanFlow's adaptive weight
        res = check_alignment("meanflow", make(p=weighting), h)
        assert res.status == "pass", res.message
    assert "implied weight" in res.message
    for bug in ({"sign": -1.0}, {"tangent_r": 1.0}):
        res = check_alignment("meanflow", make(**bug), h)
        assert res.status == "fail" and "not along the reference residual" in res.message


def test_alignment_says_why_when_rows_cannot_be_matched_to_the_data():
    def scaled_noise(model, x):  # noise scaled by sigma_data = 0.5: a different path
        t = torch.rand(x.shape[0], dtype=x.dtype)
        z = (1 - t[:, None]) * x + t[:, None] * 0.5 * torch.randn_like(x)
        return (model(z, t, t) - (0.5 * torch.randn_like(x) - x)).pow(2).mean()

    res = check_alignment("flow_matching", ShippedLoss(scaled_noise), _harness())
    assert res.status == "skip" and "sigma_data" in res.message


# -- stationarity -----------------------------------------------------------------------------


def test_stationarity_is_pointwise_with_the_teacher_velocity_for_any_weighting():
    h = _harness()
    adaptive = ShippedLoss(lambda m, x, te: meanflow(m, x, teacher=te, p=1.0), velocity="teacher")
    assert check_stationarity("meanflow", adaptive, h).status == "pass"
    bug = ShippedLoss(lambda m, x, te: meanflow(m, x, teacher=te, sign=-1.0), velocity="teacher")
    res = check_stationarity("meanflow", bug, h)
    assert res.status == "fail" and "not a fixed point" in res.message


def test_stationarity_with_the_conditional_velocity_holds_for_radial_weights_and_fails_bugs():
    h = _harness()
    for p in (0.0, 1.0):  # plain L2 and MeanFlow's adaptive weight: both radial, both unbiased
        shipped = ShippedLoss(lambda m, x, p=p: meanflow(m, x, p=p))
        res = check_stationarity("meanflow", shipped, h, repeats=16)
        assert res.status == "pass", res.message
    for bug in ({"sign": -1.0}, {"tangent_r": 1.0}):
        res = check_stationarity(
            "meanflow", ShippedLoss(lambda m, x, b=bug: meanflow(m, x, **b)), h
        )
        assert res.status == "fail" and "expected gradient is not zero" in res.message


def test_a_declared_non_radial_distance_gets_its_bias_reported_not_failed():
    def cosine_fm(model, x):
        t = torch.rand(x.shape[0], dtype=x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        return (1 - torch.nn.functional.cosine_similarity(model(z, t, t), e - x)).mean()

    shipped = ShippedLoss(cosine_fm, distance="other")
    res = check_stationarity("flow_matching", shipped, _harness(), repeats=16)
    assert res.status != "fail", res.message


# -- samplers ---------------------------------------------------------------------------------


def _two_step(model, noise, stride=None, times=((1.0, 0.5), (0.5, 0.0))):
    x = noise
    for a, b in times:
        t = torch.full((len(x),), a, dtype=x.dtype)
        x = x - (stride or (a - b)) * model(x, t, torch.full_like(t, b))
    return x


@pytest.mark.parametrize(
    ("sampler", "verdict"),
    [
        (_two_step, "pass"),
        (lambda m, z: _two_step(m, z, stride=1.0), "does not land"),
        (lambda m, z: _two_step(m, z, times=((0.0, 1.0),)), "steps away from the data"),
        (lambda m, z: _two_step(m, z, times=((0.4, 0.0),)), "not at the noise end"),
    ],
)
def test_samplers_land_on_the_exact_map_or_name_what_is_wrong(sampler, verdict):
    res = check_sampler("s", ShippedSampler(sampler), LINEAR)
    assert (res.status == "pass") == (verdict == "pass"), res.message
    assert verdict == "pass" or verdict in res.message


def test_velocity_samplers_are_checked_for_direction_and_their_error_is_reported():
    def euler(model, x, n=4):
        for k in range(n, 0, -1):
            t = torch.full((len(x),), k / n, dtype=x.dtype)
            x = x - model(x, t, t) / n
        return x

    res = check_sampler("euler", ShippedSampler(euler), LINEAR)
    assert res.status == "pass" and "velocity sampler" in res.message and "RMSE" in res.message


# -- through the oracle's entry points ---------------------------------------------------------


def test_run_checks_includes_the_shipped_checks_and_a_loss_alone_is_checked():
    impl = Implementation(
        "shipped only",
        shipped_losses={"meanflow": ShippedLoss(lambda m, x: meanflow(m, x, p=1.0))},
        samplers={"two": ShippedSampler(_two_step)},
    )
    results = run_checks(impl, objectives=["meanflow", "sampler"])
    names = {r.check: r.status for r in results}
    assert names["meanflow.shipped.times"] == "pass"
    assert names["meanflow.shipped.alignment"] == "pass"
    assert names["sampler.two.exact_map"] == "pass"
    assert "meanflow.shipped_loss" in impl.provided()
    with pytest.raises(ValueError, match="did you mean 'flow_matching'"):
        Implementation("alias", shipped_losses={"fm": ShippedLoss(lambda m, x: x)})


EXAMPLES = [
    "examples.meanflow_images",
    "examples.meanflow_autograd_jvp",
    "examples.flow_matching_noise_at_0",
]


@pytest.mark.parametrize("module", EXAMPLES)
def test_examples_pass_as_shipped_and_their_bugs_are_caught(module):
    import importlib

    mod = importlib.import_module(module)
    good = mod.implementation()
    results = run_shipped_checks(
        good.conventions, losses=good.shipped_losses, samplers=good.samplers, repeats=8
    )
    assert not [r.message for r in results if r.status == "fail"]
    bad = mod.wrong_implementation()
    results = run_shipped_checks(
        bad.conventions, losses=bad.shipped_losses, samplers=bad.samplers, repeats=8
    )
    failed = {r.check for r in results if r.status == "fail"}
    loss_checks = {c for c in failed if ".shipped." in c}
    sampler_checks = {c for c in failed if c.startswith("sampler.")}
    assert loss_checks and sampler_checks, [(r.check, r.status) for r in results]


def test_the_implied_weights_recover_the_weighting_the_loss_applies():
    # Per-sample weights 1 + 3 t, as a time weighting in a training script.
    def weighted(model, x):
        t, r = _pairs(x.shape[0], x.dtype)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        u, dudt = torch.func.jvp(model, (z, t, r), (e - x, torch.ones_like(t), 0 * r))
        err = (u - (e - x - (t - r)[:, None] * dudt).detach()).pow(2).sum(1)
        return ((1 + 3 * t) * err).mean()

    result = check_alignment("meanflow", ShippedLoss(weighted), _harness())
    assert result.status == "pass", result.message
    w = result.weights
    assert w is not None and len(w.t) > 0
    ratio = torch.tensor(w.weight) / (1 + 3 * torch.tensor(w.t))
    assert float(ratio.std() / ratio.mean()) < 1e-6  # proportional to 1 + 3 t, row by row
    header, rows = w.table()
    assert header[0] == "t" and len(rows) == 5
    assert result.to_json()["implied_weights"]["weight"] == list(w.weight)
    # the unweighted loss implies flat weights
    flat = check_alignment("meanflow", ShippedLoss(lambda m, x: meanflow(m, x)), _harness())
    assert flat.weights is not None
    assert max(flat.weights.weight) / min(flat.weights.weight) < 1 + 1e-6
