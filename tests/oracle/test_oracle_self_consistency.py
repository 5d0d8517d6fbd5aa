"""Oracle checks (split, shortcut): the reference by default, ``--impl=pkg.mod:factory`` otherwise."""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize("check", checks_for("split_meanflow") + checks_for("shortcut"), ids=str)
def test_self_consistency(check, oracle_check):
    oracle_check(check)
