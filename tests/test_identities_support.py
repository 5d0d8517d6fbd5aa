"""Shared helpers of the identity test files (no tests here): one module-scoped run of the
checks per file, and the assertions every identity must satisfy."""

from __future__ import annotations

from flowmap_oracle.identities import CheckResult, all_identities
from flowmap_oracle.identities._core import LIMIT_TOL, NUMERIC_TOL


def ids_of(*families: str) -> list[str]:
    return [i.id for i in all_identities() if i.family in families]


def check_all(*families: str) -> dict[str, CheckResult]:
    return {i.id: i.check() for i in all_identities() if i.family in families}


def assert_statement_passes(res: CheckResult) -> None:
    assert res.status == "pass", (res.symbolic, res.numeric)
    assert res.symbolic.passed and res.symbolic.residual == 0.0, res.symbolic
    assert res.numeric.passed, res.numeric
    # numeric residuals are at the 40-digit level, or at a limit step of 1e-20
    assert res.numeric.residual is not None and res.numeric.residual <= max(NUMERIC_TOL, LIMIT_TOL)


def assert_every_twin_rejected(res: CheckResult) -> None:
    assert res.twins
    for tw in res.twins:
        assert not tw.symbolic.passed, (res.id, tw.claim.name, tw.symbolic)
        assert not tw.numeric.passed, (res.id, tw.claim.name, tw.numeric)
        # a rejection by a clear margin, not by rounding: the numeric residual is far above the
        # tolerance (or the check raised, which counts as a rejection and says why)
        if tw.numeric.residual is not None and tw.numeric.method != "error":
            assert tw.numeric.residual > 1e-6, (res.id, tw.claim.name, tw.numeric)
    assert res.twin_rejected
