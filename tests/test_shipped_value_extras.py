"""``<method>.shipped.value``: the declared extras of issue 10, item 3, beyond the first ones.

* ``Declared(jvp_tangent=...)``: the velocity along which MeanFlow takes ``dF/dt``. Improved
  MeanFlow and two-head variants take the model's own instantaneous velocity ``F(z, t, t)``,
  detached, as the JVP's tangent while regressing onto the conditional (or teacher) velocity.
  A correct loss of each kind passes with its declaration; the same loss fails under another
  declaration, and a loss that takes the conditional velocity while declaring the model's (a
  bug seen when porting one variant to the other) fails. With the declaration the alignment
  check judges the residual along the declared tangent. Without it, a correct improved MeanFlow
  loss is 15 to 46 degrees off the conditional-tangent residual over 10 seeds; the alignment
  check then judges it along the model's own velocity before failing (an invariant check never
  fails correct code for want of a declaration), and says so.
* ``Declared(tangent_normalisation=c)`` for AYF-EMD: the flow map's tangent
  ``sign(t - s) df/dt``, normalised per sample as ``g / (||g|| + c)``. A correct loss passes; the
  constant added inside the norm, one norm over the batch, a dropped sign, another ``c`` fail.

Correct losses agree with the rebuilt ones to at most 1.9e-16 (value) and 1.2e-15 (gradient) in
float64, 8.6e-8 and 2.6e-6 in float32, over 10 seeds, inside the tolerances 1e-8 / 1e-6 (float64)
and 1e-4 / 1e-3 (float32): ``python tests/measure_shipped_value_extras.py 10``.

Every loss below draws its own times and noise, as training scripts do.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.declared import Adaptive, Declared
from flowmap_oracle.oracle.shipped import (
    ShippedLoss,
    _Harness,
    check_alignment,
    run_shipped_checks,
)
from flowmap_oracle.oracle.shipped_value import check_value


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _check(loss, declared, *, method="meanflow", velocity="conditional", conventions=None):
    h = _Harness.build(conventions or Conventions(), None)
    return check_value(method, ShippedLoss(loss, velocity=velocity, declared=declared), h)


# -- improved MeanFlow: the JVP along the model's own velocity ---------------------------------


def imf_loss(net, x, tangent="model", p=0.0):
    """Improved MeanFlow: the compound prediction ``u + (t - r) sg(du/dt)`` regressed onto
    ``e - x``, ``du/dt`` along the network's own velocity ``net(z, t, t)`` (``tangent="model"``)
    or along ``e - x`` (``"conditional"``, plain MeanFlow); ``p`` an adaptive weight's power."""
    n = x.shape[0]
    a, b = torch.rand(n, dtype=x.dtype), torch.rand(n, dtype=x.dtype)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    r = torch.where(torch.rand(n) < 0.25, t, r)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        v_hat = net(z, t, t)
    direction = v_hat if tangent == "model" else e - x
    u, du_dt = torch.func.jvp(net, (z, t, r), (direction, torch.ones_like(t), torch.zeros_like(r)))
    compound = u + (t - r)[:, None] * du_dt.detach()
    sq = (compound - (e - x)).pow(2).sum(1)
    return (sq / (sq.detach() + 1e-3) ** p).mean()


MODEL = Declared(reduction="sum_mean", jvp_tangent="model")


@pytest.mark.parametrize(
    ("tangent", "declared", "verdict"),
    [
        ("model", MODEL, "pass"),
        ("model", dataclasses.replace(MODEL, jvp_tangent="conditional"), "fail"),
        ("model", dataclasses.replace(MODEL, jvp_tangent=None), "fail"),
        # the bug: declared (and meant) the model's velocity, took the conditional one
        ("conditional", MODEL, "fail"),
        ("conditional", dataclasses.replace(MODEL, jvp_tangent="conditional"), "pass"),
        ("conditional", dataclasses.replace(MODEL, jvp_tangent=None), "pass"),
    ],
)
def test_the_jvp_tangent_is_rebuilt_as_declared(tangent, declared, verdict):
    result = _check(lambda m, x: imf_loss(m, x, tangent), declared)
    assert result.status == verdict, result.message
    if verdict == "fail":
        assert "the loss's value is not the declared loss's" in result.message
        assert "gradient it sends" in result.message


def test_the_model_tangent_with_an_adaptive_weight_and_in_float32():
    decl = dataclasses.replace(MODEL, distance=Adaptive(p=0.5, c=1e-3))
    ok = _check(lambda m, x: imf_loss(m, x, "model", p=0.5), decl)
    assert ok.status == "pass", ok.message
    f32 = Conventions(dtype="float32")
    ok32 = _check(lambda m, x: imf_loss(m, x, "model", p=0.5), decl, conventions=f32)
    assert ok32.status == "pass", ok32.message
    bad32 = _check(lambda m, x: imf_loss(m, x, "conditional", p=0.5), decl, conventions=f32)
    assert bad32.status == "fail", bad32.message


def imf_noise_at_0(net, x1, tangent="model"):
    """The same loss written with noise at ``t = 0`` and data at 1: ``z = t x1 + (1 - t) x0``,
    velocity ``x1 - x0``, the map from ``t`` to a later ``r``: ``u = v + (r - t) du/dt``."""
    n = x1.shape[0]
    a, b = torch.rand(n, dtype=x1.dtype), torch.rand(n, dtype=x1.dtype)
    t, r = torch.minimum(a, b), torch.maximum(a, b)
    x0 = torch.randn_like(x1)
    z = t[:, None] * x1 + (1 - t[:, None]) * x0
    with torch.no_grad():
        v_hat = net(z, t, t)
    direction = v_hat if tangent == "model" else x1 - x0
    u, du_dt = torch.func.jvp(net, (z, t, r), (direction, torch.ones_like(t), torch.zeros_like(r)))
    target = (x1 - x0) + (r - t)[:, None] * du_dt
    return (u - target.detach()).pow(2).sum(1).mean()


@pytest.mark.parametrize(("tangent", "verdict"), [("model", "pass"), ("conditional", "fail")])
def test_the_model_tangent_in_a_convention_with_noise_at_0(tangent, verdict):
    conv = Conventions(time="noise_at_0")
    result = _check(lambda m, x: imf_noise_at_0(m, x, tangent), MODEL, conventions=conv)
    assert result.status == verdict, result.message


def distilled(net, x, teacher, tangent="model"):
    """MeanFlow distilled from a teacher's velocity, the JVP along the model's own velocity
    (``"model"``), the teacher's (``"teacher"``) or the conditional ``e - x``."""
    n = x.shape[0]
    a, b = torch.rand(n, dtype=x.dtype), torch.rand(n, dtype=x.dtype)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        v = teacher(z, t)
        along = {"model": net(z, t, t), "teacher": v, "conditional": e - x}[tangent]
    u, du_dt = torch.func.jvp(net, (z, t, r), (along, torch.ones_like(t), torch.zeros_like(r)))
    return (u - (v - (t - r)[:, None] * du_dt).detach()).pow(2).sum(1).mean()


@pytest.mark.parametrize(
    ("tangent", "declared", "verdict"),
    [
        ("model", "model", "pass"),
        ("teacher", "model", "fail"),
        ("teacher", "teacher", "pass"),
        ("teacher", None, "pass"),
        ("conditional", "conditional", "pass"),
        ("conditional", None, "fail"),
        ("model", "teacher", "fail"),
    ],
)
def test_the_jvp_tangent_beside_the_teachers_velocity(tangent, declared, verdict):
    result = _check(
        lambda m, x, teacher: distilled(m, x, teacher, tangent),
        Declared(reduction="sum_mean", jvp_tangent=declared),
        velocity="teacher",
    )
    assert result.status == verdict, result.message


def test_the_alignment_check_follows_the_declared_tangent_and_keeps_its_power():
    """Declared, a correct improved MeanFlow loss is aligned; the conditional tangent under the
    model's declaration, and a sign error in the JVP term, are not."""

    def align(loss, declared):
        h = _Harness.build(Conventions(), None)
        return check_alignment("meanflow", ShippedLoss(loss, declared=declared), h)

    assert align(imf_loss, MODEL).status == "pass"
    wrong = align(lambda m, x: imf_loss(m, x, "conditional"), MODEL)
    assert wrong.status == "fail" and "not along the reference residual" in wrong.message
    assert align(_imf_sign_error, MODEL).status == "fail"
    # the plain MeanFlow loss is judged along the conditional velocity, declared or not
    plain = lambda m, x: imf_loss(m, x, "conditional")  # noqa: E731
    assert align(plain, None).status == "pass"
    assert align(plain, dataclasses.replace(MODEL, jvp_tangent="conditional")).status == "pass"


def test_undeclared_improved_meanflow_passes_the_alignment_along_the_models_velocity():
    """No false alarm without a declaration: the check tries the model's own tangent, says so,
    and still fails a sign error or a tangent on the wrong time argument."""

    def align(loss):
        h = _Harness.build(Conventions(), None)
        return check_alignment("meanflow", ShippedLoss(loss), h)

    correct = align(imf_loss)
    assert correct.status == "pass", correct.message
    assert "jvp_tangent='model'" in correct.message
    assert align(_imf_sign_error).status == "fail"

    def tangent_on_r(net, x):
        n = x.shape[0]
        a, b = torch.rand(n, dtype=x.dtype), torch.rand(n, dtype=x.dtype)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        e = torch.randn_like(x)
        z = (1 - t[:, None]) * x + t[:, None] * e
        with torch.no_grad():
            v_hat = net(z, t, t)
        zero, one = torch.zeros_like(t), torch.ones_like(t)
        u, du = torch.func.jvp(net, (z, t, r), (v_hat, zero, one))  # bug: d/dr, not d/dt
        return (u + (t - r)[:, None] * du.detach() - (e - x)).pow(2).sum(1).mean()

    assert align(tangent_on_r).status == "fail"


def _imf_sign_error(net, x):
    n = x.shape[0]
    a, b = torch.rand(n, dtype=x.dtype), torch.rand(n, dtype=x.dtype)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        v_hat = net(z, t, t)
    u, du_dt = torch.func.jvp(net, (z, t, r), (v_hat, torch.ones_like(t), torch.zeros_like(r)))
    return (u - (t - r)[:, None] * du_dt.detach() - (e - x)).pow(2).sum(1).mean()  # bug: sign


def test_a_correct_improved_meanflow_loss_passes_every_check_when_declared():
    results = run_shipped_checks(
        {}, losses={"meanflow": ShippedLoss(imf_loss, declared=MODEL)}, repeats=16
    )
    verdicts = {r.check: r.status for r in results}
    assert set(verdicts.values()) == {"pass"}, verdicts


# -- bad declarations ---------------------------------------------------------------------------


def test_bad_jvp_tangent_declarations_are_one_clear_error():
    with pytest.raises(ValueError, match=r"Declared\.jvp_tangent must be one of conditional"):
        Declared(jvp_tangent="ema")
    with pytest.raises(ValueError, match="jvp_tangent is a MeanFlow extra; the scm loss"):
        run_shipped_checks({}, losses={"scm": ShippedLoss(imf_loss, declared=MODEL)})
    teacher = Declared(jvp_tangent="teacher")
    with pytest.raises(ValueError, match="the loss is not handed a teacher"):
        ShippedLoss(imf_loss, declared=teacher)  # refused where it is written, before any work
    ShippedLoss(lambda m, x, teacher_v: imf_loss(m, x), velocity="teacher", declared=teacher)


# -- AYF-EMD: the tangent normalisation g / (||g|| + c) ------------------------------------------


def ayf_emd(net, x, teacher, normalise="per_sample", signed=True, c=0.1):
    """AYF-EMD distilled from a teacher: the flow map's tangent ``sign(t - s) df/dt`` from one
    JVP, normalised, and a weighted squared distance to the detached ``f + g``'s mirror."""
    n = x.shape[0]
    t, s = torch.rand(n, dtype=x.dtype), torch.rand(n, dtype=x.dtype)
    e = torch.randn_like(x)
    x_t = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        v = teacher(x_t, t)
    f, df_dt = torch.func.jvp(
        lambda y, tt: y + (s - tt)[:, None] * net(y, tt, s), (x_t, t), (v, torch.ones_like(t))
    )
    g = (torch.sign(t - s)[:, None] if signed else 1.0) * df_dt.detach()
    if normalise == "per_sample":
        g = g / (g.norm(dim=1, keepdim=True) + c)
    elif normalise == "c_inside_the_norm":  # bug: ||g + c|| for ||g|| + c
        g = g / (g + c).norm(dim=1, keepdim=True)
    elif normalise == "whole_batch":  # bug: one norm over the batch
        g = g / (g.norm() + c)
    w = 1 / (1 + (t - s).abs())
    return (w * (f - f.detach() + g).pow(2).sum(1)).mean()


AYF = Declared(
    weight=lambda t, s: 1 / (1 + (t - s).abs()), tangent_normalisation=0.1, reduction="sum_mean"
)


@pytest.mark.parametrize(
    ("options", "declared", "verdict", "words"),
    [
        ({}, AYF, "pass", "tangent normalisation c = 0.1"),
        ({"normalise": "c_inside_the_norm"}, AYF, "fail", "gradient it sends"),
        ({"normalise": "whole_batch"}, AYF, "fail", "gradient it sends"),
        ({"signed": False}, AYF, "fail", "opposite direction"),
        ({"c": 0.01}, AYF, "fail", "value is not the declared"),
        ({}, dataclasses.replace(AYF, tangent_normalisation=None), "fail", "distance differs"),
        ({"normalise": None}, dataclasses.replace(AYF, tangent_normalisation=None), "pass", ""),
        ({}, dataclasses.replace(AYF, weight=None), "fail", "the weight differs"),
    ],
)
def test_ayf_emd_tangent_normalisation(options, declared, verdict, words):
    result = _check(
        lambda m, x, teacher: ayf_emd(m, x, teacher, **options),
        declared,
        method="ayf_emd",
        velocity="teacher",
    )
    assert result.status == verdict, result.message
    assert words in result.message


def test_the_ayf_emd_example_passes_with_its_declaration_and_its_wrong_variants_fail():
    from examples import ayf_emd_distillation as ex

    declared = Declared(weight=lambda t, s: 0.5, tangent_normalisation=ex.TANGENT_C)
    declared = dataclasses.replace(declared, reduction="sum_mean")
    verdicts = {}
    for name, loss in (
        ("correct", ex.ayf_emd_loss),
        ("tangent of F", lambda m, x, te: ex.ayf_emd_loss(m, x, te, tangent_of_flow_map=False)),
        ("sign dropped", lambda m, x, te: ex.ayf_emd_loss(m, x, te, signed=False)),
    ):
        verdicts[name] = _check(loss, declared, method="ayf_emd", velocity="teacher").status
    assert verdicts == {"correct": "pass", "tangent of F": "fail", "sign dropped": "fail"}


def test_a_correct_ayf_emd_loss_passes_every_check_when_declared():
    shipped = ShippedLoss(ayf_emd, velocity="teacher", both_directions=True, declared=AYF)
    results = run_shipped_checks({}, losses={"ayf_emd": shipped}, repeats=16)
    verdicts = {r.check: r.status for r in results}
    assert set(verdicts.values()) == {"pass"}, verdicts


def test_ayf_emd_in_other_conventions_is_skipped_with_the_reason():
    conv = Conventions(time="noise_at_0")
    result = _check(
        lambda m, x, teacher: ayf_emd(m, x, teacher),
        AYF,
        method="ayf_emd",
        velocity="teacher",
        conventions=conv,
    )
    assert result.status == "skip" and "not yet" in result.message, result.message


def test_tangent_extras_outside_their_methods_are_refused_before_any_work():
    with pytest.raises(ValueError, match="tangent_scale"):
        run_shipped_checks(
            {}, losses={"ayf_emd": ShippedLoss(ayf_emd, declared=Declared(tangent_scale=torch.cos))}
        )
    with pytest.raises(ValueError, match="also AYF-EMD's"):
        run_shipped_checks({}, losses={"facm": ShippedLoss(ayf_emd, declared=AYF)})
