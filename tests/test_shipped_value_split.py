"""``split_meanflow.shipped.value``: a SplitMeanFlow loss against the extras it declares.

The loss is written as research code writes it: it draws its own ``t``, ``r`` and split point,
resets a share of its pairs to flow matching, builds a detached split target from its own calls
and weighs the squared error itself. The value check rebuilds the split target from those calls
with the oracle's network; a correct loss passes with its declaration, a weight applied twice or
a reduction other than the declared one fails, rows whose split point cannot be found skip.
"""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.declared import Declared
from flowmap_oracle.oracle.shipped import ShippedLoss, _Harness
from flowmap_oracle.oracle.shipped_value import check_value


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _split_loss(model, x, *, weigh, fm_share=0.25, jitter=0.0):
    """SplitMeanFlow in one trained call: ``weigh(err, t, r)`` turns the error into the loss;
    ``jitter`` moves the target's first segment off the trained point (a target the oracle
    cannot match)."""
    b = x.shape[0]
    e = torch.randn_like(x)
    t, r = torch.rand(b, dtype=x.dtype), torch.rand(b, dtype=x.dtype)
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    fm = torch.rand(b) < fm_share
    r = torch.where(fm, t, r)
    lam = torch.rand(b, dtype=x.dtype)
    s = t - lam * (t - r)
    z = (1 - t[:, None]) * x + t[:, None] * e
    with torch.no_grad():
        u_ts = model(z + jitter, t, s)
        u_sr = model(z - (t - s)[:, None] * u_ts, s, r)
        target = lam[:, None] * u_ts + (1 - lam)[:, None] * u_sr
        target = torch.where(fm[:, None], e - x, target)
    return weigh(model(z, t, r) - target, t, r)


def weighted(err, t, r):
    return ((1 + 3 * t) * err.pow(2).sum(1)).mean()


def weighted_twice(err, t, r):  # bug: the weight applied twice
    return ((1 + 3 * t) ** 2 * err.pow(2).sum(1)).mean()


def mean_over_entries(err, t, r):  # F.mse_loss where the sum over entries was declared
    return ((1 + 3 * t) * err.pow(2).mean(1)).mean()


WEIGHTED = Declared(weight=lambda t, r: 1 + 3 * t, reduction="sum_mean")


def _check(loss, declared, *, conventions=None):
    h = _Harness.build(conventions or Conventions(), None)
    return check_value("split_meanflow", ShippedLoss(loss, declared=declared), h)


@pytest.mark.parametrize(
    ("weigh", "verdict", "words"),
    [
        (weighted, "pass", "value"),
        (weighted_twice, "fail", "the weight differs"),
        (mean_over_entries, "fail", "a constant factor"),
    ],
)
def test_a_split_loss_against_its_declared_weight_and_reduction(weigh, verdict, words):
    result = _check(lambda m, x: _split_loss(m, x, weigh=weigh), WEIGHTED)
    assert result.status == verdict, result.message
    assert words in result.message


def test_a_target_whose_split_point_cannot_be_found_skips_with_the_reason():
    result = _check(lambda m, x: _split_loss(m, x, weigh=weighted, jitter=1e-2), WEIGHTED)
    assert result.status == "skip", result.message
    assert "split point" in result.message


def test_nothing_declared_skips():
    result = _check(lambda m, x: _split_loss(m, x, weigh=weighted), None)
    assert result.status == "skip" and "declare" in result.message


def _example():
    from examples import split_meanflow as ex

    return ex, Conventions.from_mapping(ex.implementation().conventions)


@pytest.mark.parametrize(
    ("options", "declared", "verdict"),
    [
        ({}, Declared(reduction="mean"), "pass"),
        ({}, Declared(reduction="sum_mean"), "fail"),
        ({"split_at_z_s": False}, Declared(reduction="mean"), "fail"),
        ({"lam_swapped": True}, Declared(reduction="mean"), "fail"),
    ],
)
def test_the_example_passes_when_declared_and_its_bugs_fail(options, declared, verdict):
    """The example's two calls (a flow-matching quarter, the split rest, each ``F.mse_loss``,
    weighted by their shares) are one batch averaged: ``reduction="mean"``."""
    ex, conv = _example()
    result = _check(
        lambda m, x: ex.split_meanflow_loss(m, x, **options), declared, conventions=conv
    )
    assert result.status == verdict, result.message


# -- Shortcut (noise at t = 0, model(x, t, log2 level), the target clipped to [-4, 4]) ------------

LEVELS = 7
SHORTCUT = Conventions.from_mapping(
    {"time": "noise_at_0", "signature": "shortcut_log2", "shortcut_levels": LEVELS}
)


def _shortcut_loss(model, x1, *, clip=4.0, half=True, per_entry=True):
    """Shortcut as its training code writes it (exact linear path): a quarter of the batch
    bootstraps level ``k`` from two half steps at ``k + 1``, the rest is flow matching at the
    finest level; one mean squared error over the merged batch (``per_entry=False`` sums the
    entries). ``half=False`` moves the midpoint by the full step (a bug)."""
    b = x1.shape[0]
    nb = b // 4
    k = torch.randint(0, LEVELS - 1, (nb,)).to(x1.dtype)
    d = 2.0**-k
    t = torch.floor(torch.rand(nb, dtype=x1.dtype) / d) * d
    x0 = torch.randn_like(x1)
    xt = (1 - t[:, None]) * x0[:nb] + t[:, None] * x1[:nb]
    with torch.no_grad():
        v1 = model(xt, t, k + 1)
        mid = (xt + (d / 2 if half else d)[:, None] * v1).clamp(-clip, clip)
        target = ((v1 + model(mid, t + d / 2, k + 1)) / 2).clamp(-clip, clip)
    tf = torch.randint(0, 2**LEVELS, (b - nb,)).to(x1.dtype) / 2**LEVELS
    xf = (1 - tf[:, None]) * x0[nb:] + tf[:, None] * x1[nb:]
    pred = model(
        torch.cat([xt, xf]), torch.cat([t, tf]), torch.cat([k, torch.full_like(tf, LEVELS)])
    )
    err = (pred - torch.cat([target, x1[nb:] - x0[nb:]])).pow(2)
    return err.mean() if per_entry else err.sum(1).mean()


MEAN = Declared(reduction="mean")


def _check_shortcut(loss, declared=MEAN):
    h = _Harness.build(SHORTCUT, None)
    return check_value("shortcut", ShippedLoss(loss, declared=declared), h)


@pytest.mark.parametrize(
    ("options", "verdict", "words"),
    [
        ({}, "pass", "value"),
        ({"half": False}, "fail", "gradient it sends"),
        ({"per_entry": False}, "fail", "a constant factor"),
    ],
)
def test_an_unclipped_shortcut_loss_against_its_declaration(options, verdict, words):
    result = _check_shortcut(lambda m, x: _shortcut_loss(m, x, clip=1e9, **options))
    assert result.status == verdict, result.message
    assert words in result.message


def test_a_clipped_shortcut_loss_never_fails_and_its_bug_still_does():
    """Over seeds 0-5 the clip acts on some rows in some seeds (a skip naming the clip), the
    correct loss never fails, and the full-step midpoint fails at every seed."""
    statuses = []
    for seed in range(6):
        torch.manual_seed(seed)
        result = _check_shortcut(lambda m, x: _shortcut_loss(m, x))
        assert result.status in ("pass", "skip"), result.message
        assert result.status == "pass" or "a clip" in result.message, result.message
        statuses.append(result.status)
        torch.manual_seed(seed)
        wrong = _check_shortcut(lambda m, x: _shortcut_loss(m, x, half=False))
        assert wrong.status == "fail", wrong.message
    assert "skip" in statuses and "pass" in statuses, statuses


def test_a_path_declared_linear_that_is_not_is_named_on_the_flow_matching_rows():
    """``examples/shortcut_models.py`` keeps ``sigma_min = 1e-5`` on a path declared linear: the
    velocity of its flow-matching rows is recovered on the declared path and differs, and the
    message says so; the full-step bug fails without that explanation."""
    from examples import shortcut_models as ex

    conv = Conventions.from_mapping(ex.implementation().conventions)
    words = "the rows with s = t differ"
    shipped = check_value(
        "shortcut", ShippedLoss(ex.shortcut_loss, declared=MEAN), _Harness.build(conv, None)
    )
    assert shipped.status == "fail" and words in shipped.message, shipped.message
    torch.manual_seed(0)
    bug = check_value(
        "shortcut",
        ShippedLoss(lambda m, x: ex.shortcut_loss(m, x, half_step=False), declared=MEAN),
        _Harness.build(conv, None),
    )
    assert bug.status == "fail" and words not in bug.message, bug.message
