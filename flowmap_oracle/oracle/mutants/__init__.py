"""A catalogue of wrong implementations (mutants), each a bug seen in practice or easy to make.

Every mutant is the reference implementation with one function replaced by a buggy version, so
the check that kills it points at the bug. The oracle must kill every mutant and pass the
reference (both asserted in ``tests/test_mutants.py``); ``flowmap-oracle mutants`` prints the
kill table.
"""

from ._registry import (
    MUTANTS,
    Mutant,
    MutantResult,
    mutant,
    mutant_names,
    run_mutant,
    run_mutants,
)

__all__ = [
    "MUTANTS",
    "Mutant",
    "MutantResult",
    "mutant",
    "mutant_names",
    "run_mutant",
    "run_mutants",
]
