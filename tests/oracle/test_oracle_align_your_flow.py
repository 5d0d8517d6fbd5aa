"""Oracle checks (ayf_emd, ayf_lmd): the reference by default, ``--impl=pkg.mod:factory`` otherwise."""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize("check", checks_for("ayf_emd") + checks_for("ayf_lmd"), ids=str)
def test_align_your_flow(check, oracle_check):
    oracle_check(check)
