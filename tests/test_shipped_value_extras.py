"""``<method>.shipped.value``: the declared extras of issue 10, item 3, beyond the first ones.

* ``Declared(jvp_tangent=...)``: the velocity along which MeanFlow takes ``dF/dt``. Improved
  MeanFlow and two-head variants take the model's own instantaneous velocity ``F(z, t, t)``,
  detached, as the JVP's tangent while regressing onto the conditional (or teacher) velocity.
  A correct loss of each kind passes with its declaration; the same loss fails under another
  declaration, and a loss that takes the conditional velocity while declaring the model's (a
  bug seen when porting one variant to the other) fails. With the declaration the alignment
  check judges the residual along the declared tangent (without it, a correct improved MeanFlow
  loss is off the conditional-tangent residual by up to 34 degrees).

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
        _check(imf_loss, teacher)
