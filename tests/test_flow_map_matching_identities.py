"""The flow-map-matching identities (family ``fmm``): each statement passes its symbolic and
numeric checks and every wrong twin fails both; the command line lists and passes them."""

from __future__ import annotations

import json

import pytest

from flowmap_oracle.cli import main
from flowmap_oracle.identities import all_identities, get

IDS = [
    "fmm.lagrangian_eulerian",
    "fmm.eulerian_gradient",
    "fmm.lagrangian_gradient",
    "fmm.progressive_composition",
]


def test_the_family_is_registered():
    assert [i.id for i in all_identities() if i.family == "fmm"] == IDS


@pytest.mark.parametrize("identity_id", IDS)
def test_statement_passes_and_every_twin_is_rejected(identity_id):
    result = get(identity_id).check()
    assert result.status == "pass", (result.symbolic.detail, result.numeric.detail)
    assert result.symbolic.passed and result.numeric.passed
    assert result.numeric.residual is not None and result.numeric.residual < 1e-25
    assert len(result.twins) >= 2
    for twin in result.twins:
        assert twin.rejected, twin.claim.name
        # a rejection is a real mismatch, not an error of the check
        assert twin.symbolic.method != "error" and twin.numeric.method != "error"
        assert twin.numeric.residual is not None and twin.numeric.residual > 1e-3


def test_cli_prints_and_passes_the_family(capsys):
    assert main(["identities", "--json", "--only", "fmm"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["id"] for r in rows] == IDS
    assert all(r["status"] == "pass" and r["twin_rejected"] for r in rows)
