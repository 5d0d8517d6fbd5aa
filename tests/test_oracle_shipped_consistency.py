"""The as-shipped oracle on consistency-family code: single-time networks, declared
preconditioning and sigma_data, the discrete and continuous consistency alignment checks, time
ranges, re-noising samplers, and the ECT and sCM examples.

Each check is shown to pass correct code and to fail a variant with a bug seen in practice. The
losses draw from torch's global random state; each test seeds it (restoring it afterwards).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.shipped import (
    ShippedLoss,
    ShippedSampler,
    _Harness,
    check_consistency_alignment,
    check_sampler,
    check_stationarity,
    check_times,
    run_shipped_checks,
)

CM = Conventions(signature="x_t", prediction="x0")  # model(x, t) is the consistency function


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def ct_loss(model, x, *, detach=True, swap=False, fresh=False):
    """Consistency training in our own convention; keyword arguments switch on one bug each."""
    b = x.shape[0]
    t = torch.rand(b, dtype=x.dtype) * 0.9 + 0.1
    r = t - 0.05
    if swap:
        t, r = r, t
    e = torch.randn_like(x)
    x_t = (1 - t)[:, None] * x + t[:, None] * e
    if fresh:
        e = torch.randn_like(x)
    x_r = (1 - r)[:, None] * x + r[:, None] * e
    online = model(x_t, t)
    target = model(x_r, r)
    if detach:
        target = target.detach()
    return ((online - target) ** 2).sum(1).mean() / 0.05


@pytest.mark.parametrize(
    ("bug", "verdict", "words"),
    [
        ({}, "pass", "worst cosine"),
        ({"detach": False}, "fail", "the target is not detached"),
        ({"swap": True}, "fail", "wrong order"),
        ({"fresh": True}, "fail", "not built from the online point's noise"),
    ],
)
def test_discrete_consistency_alignment(bug, verdict, words):
    harness = _Harness.build(CM, None)
    result = check_consistency_alignment(
        "consistency", ShippedLoss(lambda m, x: ct_loss(m, x, **bug)), harness
    )
    assert result.status == verdict, result.message
    assert words in result.message


def test_flow_matching_seeded_like_user_code_is_stationary():
    """Regression: the harness's data generator was seeded with 0, the seed users give torch;
    the data and the loss's noise then came out of identical streams, correlated, and correct
    flow matching failed stationarity at |t| = 28."""

    def fm(model, x):
        t = torch.rand(x.shape[0], dtype=x.dtype)
        e = torch.randn_like(x)
        z = (1 - t)[:, None] * x + t[:, None] * e
        return ((model(z, t, t) - (e - x)) ** 2).sum(1).mean()

    result = check_stationarity(
        "flow_matching", ShippedLoss(fm, data_shape=(3,)), _Harness.build(Conventions(), (3,))
    )
    assert result.status == "pass", result.message


def test_a_loss_leaving_its_declared_time_range_fails_and_the_range_used_is_reported():
    def fm(model, x, hi=1.0):
        t = torch.rand(x.shape[0], dtype=x.dtype) * hi
        e = torch.randn_like(x)
        z = (1 - t)[:, None] * x + t[:, None] * e
        return ((model(z, t, t) - (e - x)) ** 2).sum(1).mean()

    harness = _Harness.build(Conventions(), None)
    inside = check_times("flow_matching", ShippedLoss(fm, time_range=(0.0, 1.0)), harness)
    assert inside.status == "pass" and "user times in [" in inside.message
    outside = check_times("flow_matching", ShippedLoss(fm, time_range=(0.0, 0.5)), harness)
    assert outside.status == "fail" and "outside the declared time_range" in outside.message
    with pytest.raises(ValueError, match="time_range must be a pair"):
        ShippedLoss(fm, time_range=(1.0, 0.0))


def test_samplers_keep_to_their_declared_range():
    def one_step(model, z):
        t = torch.ones(z.shape[0], dtype=z.dtype)
        return model(z, t)

    ok = check_sampler("one", ShippedSampler(one_step, time_range=(0.0, 1.0)), CM)
    assert ok.status == "pass", ok.message
    bad = check_sampler("one", ShippedSampler(one_step, time_range=(0.0, 0.9)), CM)
    assert bad.status == "fail" and "outside the declared time_range" in bad.message


def _two_step(model, z, *, renoise=0.5, ask=0.5):
    x0 = model(z, torch.ones(z.shape[0], dtype=z.dtype))
    e = torch.randn_like(x0)
    x = (1 - renoise) * x0 + renoise * e
    return model(x, torch.full((z.shape[0],), ask, dtype=z.dtype))


@pytest.mark.parametrize(
    ("kw", "verdict", "words"),
    [
        ({}, "pass", "a stochastic sampler"),
        ({"renoise": 0.7}, "fail", "re-noises to another time"),
    ],
)
def test_re_noising_samplers_are_judged_by_the_noise_they_add(kw, verdict, words):
    result = check_sampler("two", ShippedSampler(lambda m, z: _two_step(m, z, **kw)), CM)
    assert result.status == verdict, result.message
    assert words in result.message


# -- the examples -------------------------------------------------------------------------------

CAUGHT_BY = {
    # the target point on a fresh noise draw; a one-step sampler asking at sigma_min
    "examples.consistency_training_ect": {
        "consistency.shipped.alignment",
        "sampler.one_step.exact_map",
    },
    # a sign error in the tangent; re-noising to t = 0.8 while asking the network at 1.1
    "examples.scm_trigflow": {
        "scm.shipped.alignment",
        "scm.shipped.stationarity",
        "scm.shipped.value",
        "sampler.two_step.exact_map",
    },
    # s and r drawn in the wrong order
    "examples.imm_biased": {"imm.shipped.times"},
}
METHOD_PROPERTY = {
    "examples.imm_biased": {"imm.shipped.stationarity"},
    "examples.consistency_training_ect": {"consistency.shipped.stationarity"},
}
"""Checks whose result may be a report of the method's own bias (the biased MMD estimator;
discrete consistency training's target on the same noise, not the same trajectory: ECT's
stationarity passes at ``repeats=16`` and is reported as a bias at the default 32), never a
failure."""


def _run(module: str, factory: str):
    impl = getattr(importlib.import_module(module), factory)()
    return run_shipped_checks(
        impl.conventions, losses=impl.shipped_losses, samplers=impl.samplers, repeats=16
    )


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_example_passes_every_check_as_shipped(module):
    results = _run(module, "implementation")
    reported = METHOD_PROPERTY.get(module, set())

    def fine(r):
        if r.check.endswith(".shipped.value") and r.status == "skip":  # nothing declared
            # nothing declared, or a method the value check does not rebuild yet (IMM)
            return "nothing declared" in r.message or "not yet imm" in r.message
        if r.check in reported and r.status == "skip":
            return "a property of the method" in r.message
        return r.status == "pass"

    assert results and all(fine(r) for r in results), [
        (r.check, r.status, r.message) for r in results if not fine(r)
    ]
    impl = importlib.import_module(module).implementation()
    expected = {f"sampler.{name}.exact_map" for name in impl.samplers}
    for method in impl.shipped_losses:
        checks = ("times", "alignment", "stationarity") if method != "imm" else ("times",)
        expected |= {f"{method}.shipped.{c}" for c in (*checks, "stationarity", "descent", "value")}
    assert expected == {r.check for r in results}


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_bugs_of_the_wrong_variant_are_caught_by_the_intended_checks(module):
    results = _run(module, "wrong_implementation")
    failed = {r.check for r in results if r.status == "fail"}
    assert failed == CAUGHT_BY[module], [(r.check, r.status, r.message) for r in results]


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_factory_hands_the_code_over_in_at_most_25_lines(module):
    source = inspect.getsource(importlib.import_module(module).implementation)
    assert len(source.rstrip().splitlines()) <= 25, source


def test_consistency_preconditioning_at_sigma_min_is_read_as_the_user_composes_it():
    """Consistency models' c_out vanishes at sigma_min, where D = x whatever the raw network
    returns: a target clamped there is compared as the user's code computes it (no false
    alarm), and the raw network is handed the decoded (c_in x, c_noise) inputs."""
    sd, s_min = 0.5, 0.002
    conv = Conventions(
        time="edm_sigma",
        signature="x_t",
        prediction="x0",
        preconditioning="consistency",
        sigma_data=sd,
        sigma_min=s_min,
    )

    def denoise(model, x, sigma):
        s = sigma[:, None]
        c_skip = sd**2 / ((s - s_min) ** 2 + sd**2)
        c_out = (s - s_min) * sd / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * model(x / (s**2 + sd**2).sqrt(), sigma.log() / 4)

    def ct(model, x):
        sigma = (torch.rand(x.shape[0], dtype=x.dtype) * 3).exp() * s_min * 4
        sigma_r = (sigma * 0.7).clamp(min=s_min)
        sigma_r[::2] = s_min  # half the targets at sigma_min, where c_out = 0
        e = torch.randn_like(x)
        online = denoise(model, x + sigma[:, None] * e, sigma)
        with torch.no_grad():
            target = denoise(model, x + sigma_r[:, None] * e, sigma_r)
        return ((online - target) ** 2).sum(1).div(sigma - sigma_r).mean()

    result = check_consistency_alignment(
        "consistency", ShippedLoss(ct, data_shape=(2,)), _Harness.build(conv, (2,))
    )
    assert result.status == "pass", result.message


def test_scm_in_float32_passes_and_its_bugs_are_caught():
    """The same TrigFlow code declared in float32: the tolerances follow the dtype."""
    import dataclasses

    from examples import scm_trigflow

    verdicts = {}
    for factory in ("implementation", "wrong_implementation"):
        impl = getattr(scm_trigflow, factory)()
        conv = dataclasses.replace(Conventions.from_mapping(impl.conventions), dtype="float32")
        results = run_shipped_checks(
            conv, losses=impl.shipped_losses, samplers=impl.samplers, repeats=16
        )
        verdicts[factory] = {r.check for r in results if r.status != "pass"}
    assert verdicts["implementation"] == set()
    # and in float32 the reversed tangent is also seen to repel (the descent check); in float64
    # at seed 0 that step is not distinguishable (reported), so the descent check is not among
    # the float64 failures
    assert verdicts["wrong_implementation"] == CAUGHT_BY["examples.scm_trigflow"] | {
        "scm.shipped.descent"
    }


@pytest.mark.parametrize(("sign", "verdict"), [(1.0, "pass"), (-1.0, "fail")])
def test_explicit_scm_target_on_a_single_time_network(sign, verdict):
    """The explicit-input checks hand a single-time network ``net(x, t)`` too."""
    from flowmap_oracle import Implementation
    from flowmap_oracle.oracle import run_checks

    def scm_target(net, x, t, v):
        _, d = torch.func.jvp(net, (x, t), (v, torch.ones_like(t)))
        return sign * d.detach()

    impl = Implementation(
        name="single-time sCM tangent",
        conventions={"signature": "x_t", "prediction": "x0"},
        targets={"scm": scm_target},
    )
    results = {r.check: r.status for r in run_checks(impl, objectives=["scm"])}
    assert results["scm.target.random_network"] == verdict
    assert results["scm.target.exact_map_zero"] == "pass"
