"""Boundary conditions, MeanFlow, FACM and the split/Shortcut identities: each statement passes
the symbolic and the numeric check, and each wrong twin is rejected by both."""

from __future__ import annotations

import pytest
from helpers import (
    assert_every_twin_rejected,
    assert_statement_passes,
    check_all,
    ids_of,
)

FAMILIES = ("boundary", "meanflow", "facm", "split")


@pytest.fixture(scope="module")
def results():
    return check_all(*FAMILIES)


@pytest.mark.parametrize("identity_id", ids_of(*FAMILIES))
def test_statement_passes_both_checks(results, identity_id):
    assert_statement_passes(results[identity_id])


@pytest.mark.parametrize("identity_id", ids_of(*FAMILIES))
def test_every_wrong_twin_is_rejected_by_both_checks(results, identity_id):
    assert_every_twin_rejected(results[identity_id])


def test_meanflow_identity_and_target_reject_the_sign_flipped_twin(results):
    """The slice's identity: derived from (t - s) F = int_s^t v, checked symbolically and at
    random points; flipping the sign of the (t - s) term is caught by the same checks."""
    for identity_id in ("meanflow.identity", "meanflow.target"):
        res = results[identity_id]
        assert res.status == "pass"
        twin = {tw.claim.name: tw for tw in res.twins}["sign_flipped"]
        assert twin.rejected
        assert "integral relation" in results["meanflow.identity"].symbolic.method
        assert "random" in res.numeric.method


def test_jvp_pitfall_of_the_seed_is_a_rejected_twin(results):
    twin = {tw.claim.name: tw for tw in results["meanflow.jvp"].twins}
    assert twin["seed_tangents_on_seed_order"].rejected
    # the remainder is d_s F - d_t F: the tangents (v, 0, 1) differentiate in s
    assert "Derivative" in twin["seed_tangents_on_seed_order"].symbolic.detail
