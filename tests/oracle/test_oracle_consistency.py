"""Oracle checks (cm, scm, ctm): the reference by default, ``--impl=pkg.mod:factory`` otherwise."""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize(
    "check", checks_for("consistency") + checks_for("scm") + checks_for("ctm"), ids=str
)
def test_consistency(check, oracle_check):
    oracle_check(check)
