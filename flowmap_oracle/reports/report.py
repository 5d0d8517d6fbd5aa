"""The full PDF report, assembled from sections: one module ``reports/<name>_section.py`` each.

Each section module exposes ``add_<name>_section(doc, results)``, where ``results`` is that
module's frozen ``<Name>SectionInputs`` dataclass; ``SECTIONS`` lists them in report order.
This module only lays the sections out: :func:`flowmap_oracle.report_job.build_report` computes
each section's inputs and calls :func:`write_report`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .document import ReportDocument
from .identities_section import IdentitiesSectionInputs, add_identities_section
from .notation import literal
from .objectives_benchmark_section import (
    ObjectivesBenchmarkSectionInputs,
    add_objectives_benchmark_section,
)
from .objectives_section import ObjectivesSectionInputs, add_objectives_section
from .oracle_section import OracleSectionInputs, add_oracle_section
from .teachers_section import TeachersSectionInputs, add_teachers_section
from .training_section import TrainingSectionInputs, add_training_section

__all__ = ["SECTIONS", "SECTION_INPUTS", "check_sections", "write_report"]

SECTIONS: list[str] = [
    "identities",
    "teachers",
    "training",
    "objectives",
    "objectives_benchmark",
    "oracle",
]
"""Section module names under ``flowmap_oracle.reports``, in report order."""

SECTION_INPUTS: dict[str, type] = {
    "identities": IdentitiesSectionInputs,
    "teachers": TeachersSectionInputs,
    "training": TrainingSectionInputs,
    "objectives": ObjectivesSectionInputs,
    "objectives_benchmark": ObjectivesBenchmarkSectionInputs,
    "oracle": OracleSectionInputs,
}
"""The inputs dataclass each section lays out."""

_ADD: dict[str, Callable[[ReportDocument, Any], None]] = {
    "identities": add_identities_section,
    "teachers": add_teachers_section,
    "training": add_training_section,
    "objectives": add_objectives_section,
    "objectives_benchmark": add_objectives_benchmark_section,
    "oracle": add_oracle_section,
}


def check_sections(names: list[str] | tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming every entry of ``names`` that is not in :data:`SECTIONS`."""
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown report sections {unknown}; known sections: {SECTIONS}")


def write_report(
    path: str | os.PathLike, inputs_by_section: Mapping[str, Any], *, incomplete: str | None = None
) -> Path:
    """Lay out the given sections, in report order, and write the PDF atomically to ``path``.

    Arguments:
        path: where to write the PDF.
        inputs_by_section: section name (from :data:`SECTIONS`) to that section's inputs
            (an instance of its :data:`SECTION_INPUTS` class); sections left out are not shown.
        incomplete: a sentence saying that the run was interrupted and what is missing, shown
            at the top (``None`` for a complete report).

    Returns:
        The path written.

    Raises:
        ValueError: for a section name that is not in :data:`SECTIONS`.
        TypeError: for inputs that are not the section's inputs dataclass.
    """
    check_sections(list(inputs_by_section))
    for name, results in inputs_by_section.items():
        expected = SECTION_INPUTS[name]
        if not isinstance(results, expected):
            raise TypeError(
                f"section {name!r} takes {expected.__name__}, got {type(results).__name__}"
            )
    doc = ReportDocument("flowmap-oracle report")
    if incomplete:
        doc.paragraph(f"Incomplete report. {literal(incomplete)}")
    doc.paragraph(
        "Verification of diffusion-distillation identities and objectives against analytic "
        "Gaussian-mixture teachers with exact flow maps. Convention: "
        r"$x_t = (1-t)\,x_0 + t\,x_1$, data $x_0$ at $t = 0$, noise $x_1$ at $t = 1$, flow map "
        r"$f_{t\to s}(x) = x + (s - t)\,F(x, t, s)$."
    )
    for name in SECTIONS:
        if name in inputs_by_section:
            _ADD[name](doc, inputs_by_section[name])
    return doc.save(path)
