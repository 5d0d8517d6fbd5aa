"""``<method>.shipped.value``: a shipped loss against the extras it declares.

Each declared extra (adaptive weight, pseudo-Huber constant, per-sample weight, reduction, sCM
tangent normalisation, reset fraction, extra flow-matching term) passes a correct loss written as
research code writes it and rejects a variant with a bug seen in practice; nothing declared is a
skip with the reason; a bad declaration is one clear error. The examples pass with their
declarations and their wrong-weighting variants fail the value check only.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from flowmap_oracle.oracle import Implementation
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.declared import L2, Adaptive, Declared, PseudoHuber
from flowmap_oracle.oracle.implementation import ImplementationError
from flowmap_oracle.oracle.shipped import ShippedLoss, _Harness, run_shipped_checks
from flowmap_oracle.oracle.shipped_value import check_value


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _meanflow(model, x, *, weigh, diagonal=0.5, fm=None, fm_first=False):
    """MeanFlow as commonly written: ``weigh(err, t, r)`` turns the per-entry error into the loss;
    ``fm`` adds a flow-matching term on a second call with that coefficient (computed before the
    MeanFlow term with ``fm_first``)."""
    b = x.shape[0]
    t, r = torch.rand(b, dtype=x.dtype), torch.rand(b, dtype=x.dtype)
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    r = torch.where(torch.rand(b) < diagonal, t, r)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    extra = 0.0 if fm is None or not fm_first else fm * weigh(model(z, t, t) - (e - x), t, t)
    u, dudt = torch.func.jvp(model, (z, t, r), (e - x, torch.ones_like(t), torch.zeros_like(r)))
    loss = weigh(u - (e - x - (t - r)[:, None] * dudt).detach(), t, r)
    if fm is not None and not fm_first:
        extra = fm * weigh(model(z, t, t) - (e - x), t, t)
    return loss + extra


def adaptive(err, t, r, p=0.5, c=1e-3):
    sq = err.pow(2).sum(1)
    return (sq / (sq.detach() + c) ** p).mean()


def adaptive_squared_twice(err, t, r, p=0.5, c=1e-3):
    sq = err.pow(2).sum(1)
    return (sq / (sq.detach().pow(2) + c) ** p).mean()


def time_weighted(err, t, r):
    return ((1 + 3 * t) * err.pow(2).sum(1)).mean()


def time_weighted_at_r(err, t, r):  # bug: the weight evaluated at r, not t
    return ((1 + 3 * r) * err.pow(2).sum(1)).mean()


def mse(err, t, r):
    return err.pow(2).mean()


def _check(loss, declared, *, method="meanflow", conventions=None, shape=None):
    h = _Harness.build(conventions or Conventions(), shape)
    return check_value(method, ShippedLoss(loss, declared=declared, data_shape=shape), h)


ADAPTIVE = Declared(distance=Adaptive(p=0.5, c=1e-3), reduction="sum_mean")
WEIGHTED = Declared(weight=lambda t, r: 1 + 3 * t, reduction="sum_mean")


@pytest.mark.parametrize(
    ("weigh", "declared", "verdict", "words"),
    [
        (adaptive, ADAPTIVE, "pass", "value"),
        (adaptive_squared_twice, ADAPTIVE, "fail", "the distance differs"),
        (time_weighted, WEIGHTED, "pass", "value"),
        (time_weighted_at_r, WEIGHTED, "fail", "the weight differs"),
        (mse, Declared(reduction="mean"), "pass", "value"),
        (mse, Declared(reduction="sum_mean"), "fail", "a constant factor 0.5"),
        (mse, Declared(reduction="sum"), "fail", "reduction"),
        (adaptive, dataclasses.replace(ADAPTIVE, reduction="mean"), "fail", "reduction='sum_mean'"),
    ],
)
def test_meanflow_declared_weights_distances_and_reductions(weigh, declared, verdict, words):
    result = _check(lambda m, x: _meanflow(m, x, weigh=weigh), declared)
    assert result.status == verdict, result.message
    assert words in result.message


def test_a_wrong_weight_is_caught_by_the_gradient_even_when_the_value_agrees():
    """A loss rescaled so that its value equals the declared one: only the per-output gradient
    (the implied weight per row) tells the squared-twice weight apart."""

    def disguised(err, t, r):
        wrong, right = adaptive_squared_twice(err, t, r), adaptive(err, t, r)
        return wrong * (right / wrong).detach()

    result = _check(lambda m, x: _meanflow(m, x, weigh=disguised), ADAPTIVE)
    assert result.status == "fail", result.message
    assert "not the declared loss's value" not in result.message
    assert "gradient it sends" in result.message and "distance differs" in result.message


@pytest.mark.parametrize(("declared", "verdict"), [(0.5, "pass"), (0.75, "fail")])
def test_the_reset_fraction_is_judged_by_a_binomial_test(declared, verdict):
    decl = Declared(reduction="sum_mean", reset_fraction=declared)
    result = _check(lambda m, x: _meanflow(m, x, weigh=time_weighted_at_r, diagonal=0.5), decl)
    # the weight is wrong here too; the reset fraction's verdict is read from its own words
    assert ("resets another fraction" in result.message) == (verdict == "fail"), result.message
    assert "binomial p" in result.message
    ok = _check(
        lambda m, x: _meanflow(m, x, weigh=mse, diagonal=0.5),
        Declared(reset_fraction=declared),
    )
    assert ok.status == verdict, ok.message


@pytest.mark.parametrize(
    ("coefficient", "fm_first", "verdict"),
    [(0.5, False, "pass"), (0.5, True, "pass"), (1.0, False, "fail")],
)
def test_an_extra_flow_matching_term_is_rebuilt_with_its_coefficient(
    coefficient, fm_first, verdict
):
    result = _check(
        lambda m, x: _meanflow(m, x, weigh=mse, fm=coefficient, fm_first=fm_first),
        Declared(flow_matching_term=0.5),
    )
    assert result.status == verdict, result.message
    if verdict == "fail":
        assert "'the flow-matching term' counted twice" in result.message
    # undeclared, the second trained call is named
    undeclared = _check(lambda m, x: _meanflow(m, x, weigh=mse, fm=0.5), Declared())
    assert undeclared.status == "skip" and "flow_matching_term" in undeclared.message


def test_float32_losses_are_checked_at_their_own_tolerance():
    conv = Conventions(dtype="float32")
    good = _check(lambda m, x: _meanflow(m, x, weigh=adaptive), ADAPTIVE, conventions=conv)
    assert good.status == "pass", good.message
    bad = _check(
        lambda m, x: _meanflow(m, x, weigh=adaptive_squared_twice), ADAPTIVE, conventions=conv
    )
    assert bad.status == "fail", bad.message


# -- consistency (pseudo-Huber, 1 / dsigma) and sCM (tangent normalisation) ----------------------


def _ect():
    from examples import consistency_training_ect as ect

    conv = Conventions.from_mapping(ect.implementation().conventions)
    return ect, conv


@pytest.mark.parametrize(
    ("distance", "declared", "verdict"),
    [
        ("pseudo_huber", None, "pass"),
        ("pseudo_huber_c_unsquared", None, "fail"),
        ("pseudo_huber", {"distance": PseudoHuber(c=0.01)}, "fail"),
        ("pseudo_huber", {"weight": None}, "fail"),
        ("pseudo_huber", {"distance": L2()}, "fail"),
    ],
)
def test_consistency_pseudo_huber_and_its_weight(distance, declared, verdict):
    ect, conv = _ect()
    decl = ect.DECLARED if declared is None else dataclasses.replace(ect.DECLARED, **declared)
    result = _check(
        lambda m, x: ect.ect_loss(m, x, distance=getattr(ect, distance)),
        decl,
        method="consistency",
        conventions=conv,
        shape=ect.IMAGE_SHAPE,
    )
    assert result.status == verdict, result.message


@pytest.mark.parametrize(
    ("options", "declared", "verdict"),
    [
        ({}, None, "pass"),
        ({"normalise": "normalise_tangent_whole_batch"}, None, "fail"),
        ({"sign": -1.0}, None, "fail"),
        ({}, {"tangent_normalisation": 1.0}, "fail"),
        ({}, {"tangent_scale": None}, "fail"),
    ],
)
def test_scm_tangent_scale_and_normalisation(options, declared, verdict):
    from examples import scm_trigflow as scm

    conv = Conventions.from_mapping(scm.implementation().conventions)
    opts = {k: getattr(scm, v) if isinstance(v, str) else v for k, v in options.items()}
    decl = scm.DECLARED if declared is None else dataclasses.replace(scm.DECLARED, **declared)
    result = _check(
        lambda m, x: scm.scm_loss(m, x, **opts),
        decl,
        method="scm",
        conventions=conv,
        shape=scm.DATA_SHAPE,
    )
    assert result.status == verdict, result.message


@pytest.mark.parametrize(
    ("module", "declared"),
    [
        # pseudo-Huber, torch.autograd.functional.jvp, a network read as (z, r, t)
        ("examples.meanflow_autograd_jvp", Declared(PseudoHuber(0.03), reduction="sum_mean")),
        # noise at t = 0, F.mse_loss
        ("examples.flow_matching_noise_at_0", Declared(reduction="mean")),
        # a single-time velocity network, F.mse_loss
        ("examples.flow_matching_velocity_net", Declared(reduction="mean")),
        # float32, the teacher's velocity, an adaptive weight with p = 1 (the example's)
        ("examples.meanflow_distillation_float32", None),
    ],
)
def test_no_false_alarm_in_other_conventions(module, declared):
    mod = importlib.import_module(module)
    if declared is None:
        declared = Declared(Adaptive(p=mod.ADAPTIVE_P, c=mod.ADAPTIVE_C), reduction="sum_mean")
    impl = mod.implementation()
    ((method, shipped),) = impl.shipped_losses.items()
    shipped = dataclasses.replace(shipped, declared=declared)
    harness = _Harness.build(Conventions.from_mapping(impl.conventions), shipped.data_shape)
    result = check_value(method, shipped, harness)
    assert result.status == "pass", result.message


# -- nothing declared, and bad declarations -----------------------------------------------------


def test_nothing_declared_skips_with_what_to_declare():
    result = _check(lambda m, x: _meanflow(m, x, weigh=adaptive), None)
    assert result.status == "skip" and result.skip_reason == "not_applicable"
    assert "Declared(" in result.message and "Adaptive(p, c)" in result.message
    # a method the check does not rebuild, and a harness that is not torch's
    other = _check(lambda m, x: _meanflow(m, x, weigh=mse), Declared(), method="facm")
    assert other.status == "skip" and "not yet facm" in other.message
    jax_like = check_value("meanflow", ShippedLoss(lambda m, x: x, declared=Declared()), object())
    assert jax_like.status == "skip" and "rebuilds torch losses" in jax_like.message


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: Adaptive(p=-1.0), ValueError, "Adaptive.p must be a finite non-negative"),
        (lambda: Adaptive(p=0.5, c=0.0), ValueError, "Adaptive.c must be a finite positive"),
        (lambda: PseudoHuber(c=float("nan")), ValueError, "PseudoHuber.c must be"),
        (lambda: Declared(distance="l2"), TypeError, "Declared.distance must be L2()"),
        (lambda: Declared(reduction="avg"), ValueError, "Declared.reduction must be one of"),
        (lambda: Declared(reset_fraction=1.5), ValueError, "reset_fraction must be in [0, 1]"),
        (lambda: Declared(weight=2.0), TypeError, "Declared.weight must be a callable"),
        (lambda: Declared(tangent_normalisation=-0.1), ValueError, "tangent_normalisation"),
        (lambda: Declared(flow_matching_term=0.0), ValueError, "flow_matching_term must be"),
        (lambda: ShippedLoss(lambda m, x: x, declared=ADAPTIVE.distance), TypeError, "Declared"),
    ],
)
def test_a_bad_declaration_is_one_clear_error(make, error, words):
    with pytest.raises(
        error, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        make()


def test_a_declaration_for_another_method_is_refused():
    with pytest.raises(ValueError, match="tangent_normalisation and tangent_scale describe sCM"):
        _check(lambda m, x: _meanflow(m, x, weigh=mse), Declared(tangent_normalisation=0.1))
    with pytest.raises(ValueError, match="declared weight"):
        _check(
            lambda m, x: _meanflow(m, x, weigh=mse),
            Declared(weight=lambda t, r: torch.ones(3, dtype=t.dtype)),
        )


def test_a_declaration_for_another_method_stops_the_run_before_any_work():
    calls = []

    def loss(model, x):
        calls.append(1)
        return _meanflow(model, x, weigh=mse)

    bad = ShippedLoss(loss, declared=Declared(flow_matching_term=1.0))
    with pytest.raises(ImplementationError, match="flow_matching_term is a MeanFlow extra"):
        Implementation("mismatched", shipped_losses={"flow_matching": bad})
    with pytest.raises(ValueError, match="flow_matching: flow_matching_term is a MeanFlow extra"):
        run_shipped_checks({}, losses={"flow_matching": bad})
    assert calls == []  # refused before the loss was ever called
    # the same declaration on the method it describes is accepted
    Implementation("matched", shipped_losses={"meanflow": bad})


# -- the examples -------------------------------------------------------------------------------

WRONG_WEIGHTING = {
    "examples.meanflow_images": "wrong_weighting_implementation",
    "examples.consistency_training_ect": "wrong_huber_implementation",
    "examples.scm_trigflow": "wrong_normalisation_implementation",
}


@pytest.mark.parametrize("module", sorted(WRONG_WEIGHTING))
def test_the_examples_declarations_pass_and_their_wrong_weightings_fail_the_value_check_only(
    module,
):
    mod = importlib.import_module(module)
    verdicts = {}
    for factory in ("implementation", WRONG_WEIGHTING[module]):
        impl = getattr(mod, factory)()
        results = run_shipped_checks(impl.conventions, losses=impl.shipped_losses, repeats=8)
        verdicts[factory] = {r.check: r.status for r in results}
    (method,) = mod.implementation().shipped_losses
    assert verdicts["implementation"][f"{method}.shipped.value"] == "pass"
    wrong = verdicts[WRONG_WEIGHTING[module]]
    assert {c for c, s in wrong.items() if s == "fail"} == {f"{method}.shipped.value"}, wrong


def test_a_jax_meanflow_loss_is_rebuilt_too():
    pytest.importorskip("jax")
    from examples import jax_meanflow_shipped as mod
    from flowmap_oracle.oracle.shipped_jax import JaxHarness

    declared = Declared(Adaptive(p=0.5, c=1e-3), reduction="sum_mean", reset_fraction=0.75)
    verdicts = {}
    for factory, decl in (
        ("implementation", declared),
        ("implementation", dataclasses.replace(declared, reset_fraction=0.25)),
        ("implementation", Declared(reduction="sum_mean", reset_fraction=0.75)),
        ("wrong_implementation", declared),  # the JVP's time tangent on r instead of t
    ):
        impl = getattr(mod, factory)()
        ((method, shipped),) = impl.shipped_losses.items()
        shipped = dataclasses.replace(shipped, declared=decl)
        harness = JaxHarness.build(impl.conventions, shipped.data_shape)
        result = check_value(method, shipped, harness)
        verdicts[(factory, decl.reset_fraction, type(decl.distance).__name__)] = result
    ok = verdicts[("implementation", 0.75, "Adaptive")]
    assert ok.status == "pass", ok.message
    wrong_fraction = verdicts[("implementation", 0.25, "Adaptive")]
    assert wrong_fraction.status == "fail" and "resets another fraction" in wrong_fraction.message
    assert "not the declared loss's value" not in wrong_fraction.message
    assert verdicts[("implementation", 0.75, "L2")].status == "fail"
    assert verdicts[("wrong_implementation", 0.75, "Adaptive")].status == "fail"
