"""A loss-value mismatch broken into the reference's parts.

When a loss is a sum of parts (MeanFlow's rows on the diagonal ``s = t`` and off it, FACM's
consistency part and its flow-matching anchor), a failing value check lists each part and names
the part whose omission, doubling, halving or sign flip reproduces the implementation's value.
The wrong losses below are written as people write them, with the bug in one part.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowmap_oracle.oracle import Implementation, reproduce, run_check
from flowmap_oracle.oracle.checks._common import explain_parts
from flowmap_oracle.oracle.results import CheckFailure


def _meanflow_loss(off_diagonal_weight: float):
    """MeanFlow's loss (plain L2, conditional velocity) with the rows ``r < t`` weighted by
    ``off_diagonal_weight`` (the flow-matching rows ``r = t`` keep weight 1)."""

    def loss(net, data, noise, t, r):
        z = (1 - t[:, None]) * data + t[:, None] * noise
        v = noise - data
        u, dudt = torch.func.jvp(net, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
        per_row = (u - (v - (t - r)[:, None] * dudt).detach()).pow(2).sum(dim=1)
        weight = torch.where(t == r, 1.0, off_diagonal_weight)
        return (weight * per_row).mean()

    return loss


def _facm_loss(anchor_weight: float):
    """FACM's default loss (norm-L2 CM part weighted by sin(pi t / 2), anchor at 2 - t with a
    cosine term) with the anchor weighted by ``anchor_weight``."""

    def loss(net, data, noise, t):
        x_t = (1 - t[:, None]) * data + t[:, None] * noise
        v = noise - data
        zero = torch.zeros_like(t)
        F, dFdt = torch.func.jvp(net, (x_t, t, zero), (v, torch.ones_like(t), zero))
        target = (v - t[:, None] * dFdt).detach()
        sq = (F - target).pow(2).sum(dim=1)
        cm = sq / (sq.detach() + 1e-3).sqrt() * torch.sin(0.5 * math.pi * t)
        f_fm = net(x_t, 2 - t, 2 - t)
        fm = (f_fm - v).pow(2).sum(dim=1) + 1 - torch.nn.functional.cosine_similarity(f_fm, v)
        return (cm + anchor_weight * fm).mean()

    return loss


def _run(check: str, objective: str, loss) -> tuple[str, str]:
    impl = Implementation(name="loss parts test", losses={objective: loss})
    result = run_check(check, impl)
    return result.status, result.message


def test_correct_losses_pass():
    assert _run("meanflow.loss.value_and_gradient", "meanflow", _meanflow_loss(1.0))[0] == "pass"
    assert _run("facm.loss.value_and_gradient", "facm", _facm_loss(1.0))[0] == "pass"


@pytest.mark.parametrize(
    ("weight", "words"), [(0.0, "left out"), (2.0, "counted twice"), (0.5, "halved")]
)
def test_meanflow_rows_off_the_diagonal_named(weight, words):
    status, message = _run("meanflow.loss.value_and_gradient", "meanflow", _meanflow_loss(weight))
    assert status == "fail"
    # The first failing case has rows on both sides of the diagonal (then the off-diagonal rows
    # are named) or none on the diagonal (then the whole regression is that part).
    mixed = "'regression: rows with s = t'" in message
    part = "regression: rows with s != t" if mixed else "regression"
    assert f"the part '{part}' {words}" in message, message


def test_facm_anchor_named():
    status, message = _run("facm.loss.value_and_gradient", "facm", _facm_loss(2.0))
    assert status == "fail"
    assert "the part 'flow-matching anchor' counted twice" in message, message


def test_explain_parts_names_nothing_for_an_unrelated_error():
    parts = {"a": 1.0, "b": 2.0}
    text = explain_parts(3.0, 3.7, parts, 1e-9)
    assert text.startswith("the reference's parts: 'a' 1, 'b' 2 (sum 3; yours 3.7)")
    # one part and no explanation: nothing to add to the message
    assert explain_parts(1.0, 1.3, {"a": 1.0}, 1e-9) == ""
    # one part, explained (a sign flip)
    assert "'a' with its sign flipped" in explain_parts(1.0, -1.0, {"a": 1.0}, 1e-9)


def test_per_sample_times_split_the_rows_at_the_diagonal():
    # A case with per-sample times puts a quarter of the batch on s = t (cases.py).
    impl = Implementation(name="loss parts test", losses={"meanflow": _meanflow_loss(2.0)})
    with pytest.raises(CheckFailure) as failure:
        reproduce("meanflow.loss.value_and_gradient", impl, seed=5, t=None, s=None)
    message = str(failure.value)
    assert "the part 'regression: rows with s != t' counted twice" in message, message
    assert "'regression: rows with s = t'" in message


def _shortcut_loss(boundary_weight: float):
    """Shortcut's loss in velocity space with the flow-matching boundary weighted by
    ``boundary_weight``."""

    def loss(net, data, noise, t, s):
        x_t = (1 - t[:, None]) * data + t[:, None] * noise
        v = noise - data
        m = (t + s) / 2
        with torch.no_grad():
            first = net(x_t, t, m)
            x_m = x_t - (t - m)[:, None] * first
            target = (first + net(x_m, m, s)) / 2
        fm = (net(x_t, t, t) - v).pow(2).sum(dim=1)
        sc = (net(x_t, t, s) - target).pow(2).sum(dim=1)
        return (boundary_weight * fm + sc).mean()

    return loss


def test_shortcut_boundary_named():
    ok = _run("shortcut.loss.value_and_gradient", "shortcut", _shortcut_loss(1.0))
    assert ok[0] == "pass", ok[1]
    status, message = _run("shortcut.loss.value_and_gradient", "shortcut", _shortcut_loss(0.0))
    assert status == "fail"
    assert "the part 'flow matching' left out" in message, message
    assert "'self-consistency'" in message
