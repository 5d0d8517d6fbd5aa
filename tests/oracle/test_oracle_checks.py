"""Every oracle check, one test each: the reference by default, ``--impl=pkg.mod:factory``
otherwise.

The same items the plugin adds to a session that names an implementation (``checks_for()``:
every registered check of every method and of the model, cheapest first). The module is marked
``flowmap_oracle``, so the plugin adds no items of its own when this folder is collected.
"""

import pytest

from flowmap_oracle.oracle import checks_for

pytestmark = pytest.mark.flowmap_oracle


@pytest.mark.parametrize("check", checks_for(), ids=str)
def test_oracle_check(check, oracle_check):
    oracle_check(check)
