"""Align Your Flow, consistency models, the probability-path table, ReFlow and IMM: each
statement passes the symbolic and the numeric check, and each wrong twin is rejected by both."""

from __future__ import annotations

import pytest
from helpers import (
    assert_every_twin_rejected,
    assert_statement_passes,
    check_all,
    ids_of,
)

FAMILIES = ("ayf", "consistency", "paths", "reflow", "imm")


@pytest.fixture(scope="module")
def results():
    return check_all(*FAMILIES)


@pytest.mark.parametrize("identity_id", ids_of(*FAMILIES))
def test_statement_passes_both_checks(results, identity_id):
    assert_statement_passes(results[identity_id])


@pytest.mark.parametrize("identity_id", ids_of(*FAMILIES))
def test_every_wrong_twin_is_rejected_by_both_checks(results, identity_id):
    assert_every_twin_rejected(results[identity_id])


def test_gradient_identities_are_checked_for_both_time_orders(results):
    for identity_id in ("ayf.emd_gradient", "ayf.lmd_gradient"):
        res = results[identity_id]
        assert "t > s and t < s" in res.symbolic.method
        assert "t > s and t < s" in res.numeric.method
    # the |t - s| twin is wrong only for s > t: its rejection proves both orders are exercised
    twin = {tw.claim.name: tw for tw in results["ayf.emd_gradient"].twins}["no_absolute_value"]
    assert twin.rejected


def test_limits_are_series_limits(results):
    for identity_id in ("ayf.emd_fm_limit", "consistency.discrete_to_continuous"):
        assert "series limit" in results[identity_id].symbolic.method
        assert "1e-20" in results[identity_id].numeric.method
