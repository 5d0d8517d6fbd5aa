"""Symbolic identities of the unified framework for diffusion distillation.

Each identity is an :class:`Identity`: id, title, the seed section it comes from, assumptions,
a statement (a SymPy relation), derivation steps, wrong twins, and :meth:`Identity.check`, which
checks the statement and every twin symbolically (exact simplification or series limit) and
numerically (mpmath at random points, on random smooth functions or random exact flows). The
statement must pass both checks; every twin must fail both.

Families, one module each: ``boundary`` (flow-map boundary conditions), ``meanflow``, ``facm``,
``split`` (SplitMeanFlow and Shortcut), ``ayf`` (Align Your Flow), ``consistency`` (discrete and
continuous CM, CTM), ``paths`` (the seed's probability-path table and its errata),
``reflow_imm`` (ReFlow straightness, IMM's MMD), ``flow_map_matching`` (family ``fmm``: flow map
matching and self-distillation, and their relation to AYF).

Only sympy, mpmath, numpy and the standard library are imported here.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each registers its identities)
    ayf,
    boundary,
    consistency,
    facm,
    flow_map_matching,
    meanflow,
    paths,
    reflow_imm,
    split,
)
from ._core import CheckResult, Claim, Identity, MethodResult, Step, all_identities, get

__all__ = ["CheckResult", "Claim", "Identity", "MethodResult", "Step", "all_identities", "get"]
