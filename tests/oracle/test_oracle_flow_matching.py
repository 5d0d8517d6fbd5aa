"""Oracle checks (fm, reflow): the reference by default, ``--impl=pkg.mod:factory`` otherwise."""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize("check", checks_for("flow_matching") + checks_for("reflow"), ids=str)
def test_flow_matching(check, oracle_check):
    oracle_check(check)
