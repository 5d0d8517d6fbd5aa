"""The seed's table of probability paths as data: derived fields, the literal comparison, the
errata with their corrections; and the IMM helpers."""

from __future__ import annotations

import mpmath
import pytest
import sympy as sp

from flowmap_oracle.identities import get, paths
from flowmap_oracle.identities.reflow_imm import gauss_kernel_mean, mmd2_discrete


@pytest.fixture(scope="module")
def table():
    return {c.key: c for c in paths.compare_seed_table()}


def test_the_two_wrong_rows_are_the_gaussian_and_lipman_rows(table):
    assert {k for k, c in table.items() if not c.agrees} == {"gaussian", "fm_lipman"}
    for key in ("gaussian", "fm_lipman"):
        assert not table[key].seed_solves_continuity
        assert table[key].fix_verified
    for key in ("icfm", "ot_cfm", "vp_si"):
        assert table[key].agrees and table[key].seed_solves_continuity
    assert all(c.derived_solves_continuity for c in table.values())


def test_rows_whose_twin_is_the_seed_formula_are_exactly_the_errata(table):
    for row in paths.PATH_ROWS:
        assert row.seed_is_twin == (not table[row.key].agrees), row.key
        twin = get(f"paths.{row.key}").twins[0]
        assert (twin.name == "seed_formula") == row.seed_is_twin


def test_lipman_row_in_the_seed_convention_is_its_time_reversal(table):
    c = table["fm_lipman"]
    assert c.other_convention_is_time_reversal is True
    assert c.other_convention_latex is not None and r"\sigma_{min}" in c.other_convention_latex


def test_gaussian_field_is_the_seed_formula_with_x1_replaced_by_x():
    row = next(r for r in paths.PATH_ROWS if r.key == "gaussian")
    derived = paths.derived_field(row.mean, row.std)
    assert sp.simplify(row.seed_field.subs(paths.x1, paths.x) - derived) == 0
    # on the path x = alpha x0 + beta x1 the derived field is alpha' x0 + beta' x1
    on_path = derived.subs(
        paths.x, paths.alpha(paths.t) * paths.x0 + paths.beta(paths.t) * paths.x1
    )
    expected = (
        sp.diff(paths.alpha(paths.t), paths.t) * paths.x0
        + sp.diff(paths.beta(paths.t), paths.t) * paths.x1
    )
    assert sp.simplify(on_path - expected) == 0


def test_continuity_residual_rejects_a_wrong_field():
    mean, std = paths.t * paths.x1, 1 - paths.t
    good = paths.derived_field(mean, std)
    assert sp.simplify(paths.continuity_residual(good, mean, std)) == 0
    assert sp.simplify(paths.continuity_residual(good + 1, mean, std)) != 0


def test_errata_list_holds_corrections_and_the_text_erratum():
    errata = paths.seed_table_errata()
    locations = [e.location for e in errata]
    assert locations == [
        "Table row: Gaussian",
        "Table row: FM (Lipman et al.)",
        "Text below the table (linear path)",
    ]
    assert all(e.verified for e in errata)
    assert r"x_{t}" in errata[0].corrected_latex and r"x_{1}" in errata[0].seed_latex
    assert "1 - t" in errata[1].corrected_latex.replace(r"\left(", "(").replace(r"\right)", ")")


def test_gauss_kernel_mean_matches_quadrature():
    with mpmath.workdps(30):
        for mean, var in ((0, 2), (0.7, 0.3), (-1.2, 1.5)):
            quad = mpmath.quad(
                lambda z, m=mean, v=var: (
                    mpmath.exp(-(z**2) / 2) * mpmath.npdf(z, m, mpmath.sqrt(v))
                ),
                [-mpmath.inf, mean, mpmath.inf],
            )
            assert abs(gauss_kernel_mean(mpmath.mpf(mean), mpmath.mpf(var)) - quad) < 1e-25


def test_mmd_of_discrete_laws():
    k = lambda a, b: mpmath.exp(-((a - b) ** 2) / 2)  # noqa: E731
    p, w = [mpmath.mpf(0), mpmath.mpf(1)], [mpmath.mpf(0.5), mpmath.mpf(0.5)]
    assert abs(mmd2_discrete(k, p, w, p[::-1], w)) < 1e-30
    assert mmd2_discrete(k, p, w, [mpmath.mpf(0), mpmath.mpf(2)], w) > 1e-3
