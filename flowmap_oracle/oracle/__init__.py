"""The correctness oracle: checks of someone else's implementation against the reference.

* :class:`Implementation` (what a factory returns) and :func:`load_implementation`;
* :func:`run_checks` / :func:`run_check` return :class:`CheckResult` records;
* :func:`reproduce` reruns one failing case (every failure message prints the call);
* conventions are declared and converted by :mod:`flowmap_oracle.oracle.adapters`.
"""

from .context import OracleSettings
from .implementation import (
    ENV_VAR,
    PROTOCOLS,
    Implementation,
    ImplementationError,
    load_implementation,
)
from .registry import CHECKS, Check
from .results import Case, CheckFailure, CheckResult, Mismatch, SkipReason
from .runner import checks_for, reproduce, run_check, run_checks

__all__ = [
    "CHECKS",
    "ENV_VAR",
    "PROTOCOLS",
    "Case",
    "Check",
    "CheckFailure",
    "CheckResult",
    "Implementation",
    "ImplementationError",
    "Mismatch",
    "OracleSettings",
    "SkipReason",
    "checks_for",
    "load_implementation",
    "reproduce",
    "run_check",
    "run_checks",
]
