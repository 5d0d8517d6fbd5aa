"""The objectives report section: one formula per objective of the inventory, all renderable by
mathtext (the section itself runs inside the full report's test in quick mode)."""

from __future__ import annotations

import pytest

from flowmap_oracle.experiments.fixed_points import OBJECTIVES
from flowmap_oracle.reports.document import render_formula_png
from flowmap_oracle.reports.objectives_section import FORMULAS
from flowmap_oracle.reports.report import SECTIONS


def test_the_section_is_in_the_report_after_training():
    assert "objectives" in SECTIONS
    assert SECTIONS.index("objectives") == SECTIONS.index("training") + 1


@pytest.mark.parametrize("name", [s.name for s in OBJECTIVES])
def test_every_objective_has_a_renderable_formula(name):
    png = render_formula_png(FORMULAS[name], fontsize=10)
    assert png.startswith(b"\x89PNG")


def test_no_formula_for_an_unknown_objective():
    assert set(FORMULAS) == {s.name for s in OBJECTIVES}
