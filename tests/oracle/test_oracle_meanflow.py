"""Oracle checks (meanflow): the reference by default, ``--impl=pkg.mod:factory`` otherwise."""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize("check", checks_for("meanflow"), ids=str)
def test_meanflow(check, oracle_check):
    oracle_check(check)
