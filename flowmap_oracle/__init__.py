"""flowmap-oracle: a verification suite for diffusion distillation.

The names a user needs are here::

    from flowmap_oracle import Implementation, Method, run_checks

* :class:`Implementation`, :func:`load_implementation`: what your factory returns, and how the
  oracle loads it (``package.module:factory``);
* :class:`Conventions`: your declared conventions (time variable, network signature,
  prediction, framework, dtype, path);
* :func:`run_checks`, :func:`reproduce`, :class:`OracleSettings`, :class:`CheckResult`,
  :class:`SkipReason`: running the oracle and reading its results;
* :class:`Method`: the one vocabulary of method names;
* :func:`preset`, :class:`GaussianMixtureTeacher`, :class:`ExactFlowMap`: the analytic teachers
  and their exact flow maps.

Everything else lives in the packages named after its job: ``identities``, ``reference_models``,
``objectives``, ``oracle``, ``experiments``, ``reports``. Names are imported on first use, so
``import flowmap_oracle.identities`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "CheckResult": "flowmap_oracle.oracle",
    "Conventions": "flowmap_oracle.oracle.adapters",
    "ExactFlowMap": "flowmap_oracle.reference_models",
    "GaussianMixtureTeacher": "flowmap_oracle.reference_models",
    "Implementation": "flowmap_oracle.oracle",
    "Method": "flowmap_oracle.conventions",
    "OracleSettings": "flowmap_oracle.oracle",
    "SkipReason": "flowmap_oracle.oracle",
    "load_implementation": "flowmap_oracle.oracle",
    "preset": "flowmap_oracle.reference_models",
    "reproduce": "flowmap_oracle.oracle",
    "run_checks": "flowmap_oracle.oracle",
}

__all__ = [
    "CheckResult",
    "Conventions",
    "ExactFlowMap",
    "GaussianMixtureTeacher",
    "Implementation",
    "Method",
    "OracleSettings",
    "SkipReason",
    "load_implementation",
    "preset",
    "reproduce",
    "run_checks",
]

if TYPE_CHECKING:
    from .conventions import Method
    from .oracle import (
        CheckResult,
        Implementation,
        OracleSettings,
        SkipReason,
        load_implementation,
        reproduce,
        run_checks,
    )
    from .oracle.adapters import Conventions
    from .reference_models import ExactFlowMap, GaussianMixtureTeacher, preset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowmap_oracle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
