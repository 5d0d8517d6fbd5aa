"""The full PDF report: one section per module ``reports/<name>_section.py``.

Each section module exposes ``add_<name>_section(doc, *, quick)``; ``SECTIONS`` lists them in the
order they appear. ``quick`` shortens training runs and benchmarks (tests use it).
"""

from __future__ import annotations

import importlib
import os
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


def build_report(path: str | os.PathLike, *, quick: bool = False) -> Path:
    """Build every section and write the PDF atomically to ``path``; returns the path."""
    doc = ReportDocument("flowmap-oracle report")
    doc.paragraph(
        "Verification of diffusion-distillation identities and objectives against analytic "
        "Gaussian-mixture teachers with exact flow maps. Convention: x_t = (1-t) x0 + t x1, data "
        "at t = 0, noise at t = 1, flow map f_{t->s} = x + (s - t) F(x, t, s)."
    )
    for name in SECTIONS:
        module = importlib.import_module(f"{__package__}.{name}_section")
        getattr(module, f"add_{name}_section")(doc, quick=quick)
    return doc.save(path)
