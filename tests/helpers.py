"""Helpers shared by several test modules (no tests here); import them with ``from helpers import``.

``tests/`` is on ``sys.path`` because pytest imports ``tests/conftest.py`` (and every test module)
in its default ``prepend`` import mode from a folder without ``__init__.py``.

* Identities: one run of the checks of some families, and the assertions every identity and
  every wrong twin must satisfy (``test_identities_flowmaps``, ``test_identities_objectives``).
* Reference models: the probability paths the teacher and flow-map tests run on, and the VP
  schedule given in SymPy (``test_reference_models_*``, ``test_paths``).
* Objectives: a seeded batch of data, noise and ordered times on a teacher
  (``test_objectives_gradients``, ``test_objectives_paths``).
* Reports: a PDF's text on one line (``test_report``, ``test_oracle_cli``).
"""

from __future__ import annotations

import sympy
import torch

from flowmap_oracle.identities import CheckResult, all_identities
from flowmap_oracle.identities._core import LIMIT_TOL, NUMERIC_TOL
from flowmap_oracle.reference_models import (
    GaussianMixtureTeacher,
    GeneralPath,
    LinearPath,
    LipmanPath,
    TrigPath,
)

# ---------------------------------------------------------------------------------------------
# Identities


def ids_of(*families: str) -> list[str]:
    return [i.id for i in all_identities() if i.family in families]


def check_all(*families: str) -> dict[str, CheckResult]:
    return {i.id: i.check() for i in all_identities() if i.family in families}


def assert_statement_passes(res: CheckResult) -> None:
    assert res.status == "pass", (res.symbolic, res.numeric)
    assert res.symbolic.passed and res.symbolic.residual == 0.0, res.symbolic
    assert res.numeric.passed, res.numeric
    # numeric residuals are at the 40-digit level, or at a limit step of 1e-20
    assert res.numeric.residual is not None and res.numeric.residual <= max(NUMERIC_TOL, LIMIT_TOL)


def assert_every_twin_rejected(res: CheckResult) -> None:
    assert res.twins
    for tw in res.twins:
        assert not tw.symbolic.passed, (res.id, tw.claim.name, tw.symbolic)
        assert not tw.numeric.passed, (res.id, tw.claim.name, tw.numeric)
        # a rejection by a clear margin, not by rounding: the numeric residual is far above the
        # tolerance (or the check raised, which counts as a rejection and says why)
        if tw.numeric.residual is not None and tw.numeric.method != "error":
            assert tw.numeric.residual > 1e-6, (res.id, tw.claim.name, tw.numeric)
    assert res.twin_rejected


# ---------------------------------------------------------------------------------------------
# Reference models


def general_path() -> GeneralPath:
    """The VP schedule ``alpha = cos^2(pi t / 2)``, ``beta = sin(pi t / 2)`` given in SymPy
    (curved, ``alpha(1) = 0``, ``beta(1) = 1``)."""
    t = sympy.Symbol("t")
    return GeneralPath.from_sympy(sympy.cos(sympy.pi * t / 2) ** 2, sympy.sin(sympy.pi * t / 2), t)


# The probability paths the teacher and flow-map tests run on (name -> constructor).
PATHS = {
    "linear": LinearPath,
    "trig": TrigPath,
    "lipman": lambda: LipmanPath(sigma_min=0.05),
    "general": general_path,
}


# ---------------------------------------------------------------------------------------------
# Objectives


def teacher_batch(
    teacher: GaussianMixtureTeacher,
    n: int,
    seed: int,
    *,
    t_min: float = 0.05,
    t_span: float = 0.9,
) -> tuple[torch.Tensor, ...]:
    """``(x0, x1, t, r, s)``: ``n`` data points of the teacher's mixture, standard normal noise,
    ``t`` uniform in ``[t_min, t_min + t_span]``, ``s`` uniform in ``[0, t]`` and ``r`` uniform in
    ``[s, t]``, drawn in that order from one generator seeded with ``seed`` (so a caller that uses
    only the first few gets the same values as one that uses them all)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = teacher.mixture.sample(n, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    t = t_min + t_span * torch.rand(n, generator=gen, dtype=x0.dtype)
    s = t * torch.rand(n, generator=gen, dtype=x0.dtype)
    r = s + (t - s) * torch.rand(n, generator=gen, dtype=x0.dtype)
    return x0, x1, t, r, s


# ---------------------------------------------------------------------------------------------
# Reports


def pdf_text(path) -> str:
    """The PDF's text with line breaks (wrapping) folded into single spaces (needs pypdf, an
    optional dependency: callers ``pytest.importorskip("pypdf")`` first)."""
    import pypdf

    text = " ".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)
    return " ".join(text.split())
