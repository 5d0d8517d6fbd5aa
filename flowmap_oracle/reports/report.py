"""The full PDF report: one section per module ``reports/<name>_section.py``.

Each section module exposes ``add_<name>_section(doc, *, quick)``; ``SECTIONS`` lists them in the
order they appear. ``quick`` shortens training runs and benchmarks (tests use it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

from .document import ReportDocument

__all__ = ["SECTIONS", "build_report"]

SECTIONS: list[str] = [
    "identities",
    "teachers",
    "training",
    "objectives",
    "oracle",
]
"""Section module names under ``flowmap_oracle.reports``, in report order."""


def build_report(
    path: str | os.PathLike, *, quick: bool = False, sections: Sequence[str] | None = None
) -> Path:
    """Build the report and write the PDF atomically to ``path``.

    Arguments:
        path: where to write the PDF.
        quick: shorten training runs and benchmarks (previews and tests).
        sections: names from :data:`SECTIONS` to include, in report order; ``None`` for all.

    Returns:
        The path written.

    Raises:
        ValueError: for a section name that is not in :data:`SECTIONS`.
    """
    chosen = list(SECTIONS) if sections is None else list(sections)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown report sections {unknown}; known sections: {SECTIONS}")
    doc = ReportDocument("flowmap-oracle report")
    doc.paragraph(
        "Verification of diffusion-distillation identities and objectives against analytic "
        "Gaussian-mixture teachers with exact flow maps. Convention: x_t = (1-t) x0 + t x1, data "
        "at t = 0, noise at t = 1, flow map f_{t->s} = x + (s - t) F(x, t, s)."
    )
    for name in (name for name in SECTIONS if name in chosen):
        module = importlib.import_module(f"{__package__}.{name}_section")
        getattr(module, f"add_{name}_section")(doc, quick=quick)
    return doc.save(path)
