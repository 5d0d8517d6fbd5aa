"""Shared helpers of the reference-model test files (no tests here): the probability paths the
teacher and flow-map tests run on."""

from __future__ import annotations

import sympy

from flowmap_oracle.reference_models import GeneralPath, LinearPath, LipmanPath, TrigPath


def general_path() -> GeneralPath:
    """The VP schedule ``alpha = cos^2(pi t / 2)``, ``beta = sin(pi t / 2)`` given in SymPy."""
    t = sympy.Symbol("t")
    return GeneralPath.from_sympy(sympy.cos(sympy.pi * t / 2) ** 2, sympy.sin(sympy.pi * t / 2), t)


PATHS = {
    "linear": LinearPath,
    "trig": TrigPath,
    "lipman": lambda: LipmanPath(sigma_min=0.05),
    "general": general_path,
}
