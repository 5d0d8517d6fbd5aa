"""The mutant registry and the kill run."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..context import OracleSettings
from ..implementation import Implementation
from ..reference import implementation as reference_implementation
from ..runner import checks_for, run_checks

__all__ = [
    "MODULES",
    "MUTANTS",
    "Mutant",
    "MutantResult",
    "mutant",
    "mutant_names",
    "run_mutant",
    "run_mutants",
]

MODULES = (
    "meanflow",
    "flow_matching",
    "facm",
    "self_consistency",
    "consistency",
    "align_your_flow",
    "imm",
    "model",
    "conventions",
    "network",
    "shipped",
    "flow_map_matching",
)
"""Mutant modules under this package, one per objective (``network``: the user's own network;
``shipped``: losses and samplers as they ship)."""


@dataclass(frozen=True)
class Mutant:
    """One wrong implementation.

    Attributes:
        name: ``<objective>.<bug>``.
        objective: the objective whose function is wrong (``"model"`` for the flow-map step).
        description: the bug and why it is plausible.
        factory: builds the :class:`Implementation`; ``spec`` names it for reproduction.
        replaces: which of ``targets``, ``losses``, ``flow_map`` the mutant replaces.
    """

    name: str
    objective: str
    description: str
    factory: Callable[[], Implementation]
    spec: str
    replaces: tuple[str, ...] = ()

    def implementation(self) -> Implementation:
        return self.factory()


SHIPPED_REPEATS = 3
"""The draws of the as-shipped statistical stationarity test in the kill run (32 in a check run).
At 3 draws its bound (Student's t with 2 degrees of freedom at the same false-alarm rate) is too
high to reject anything, so the kill run does not rely on it: every shipped mutant is killed by
``times`` or ``alignment``, or distils from the teacher's velocity, whose stationarity test is
pointwise and takes no repeats. The statistical test's power is shown in
``tests/test_mutants.py`` (the black-box losses, at 16 draws) and the shipped tests."""

MUTANTS: dict[str, Mutant] = {}


def mutant(
    name: str, *, objective: str, description: str, inherit: bool = True
) -> Callable[[Callable], Callable]:
    """Register a factory ``() -> dict`` of replacements as a mutant.

    The factory returns keyword replacements for the reference implementation (``targets``,
    ``losses``, ``flow_map``, ``conventions``); with ``inherit`` the ``targets`` and ``losses``
    are merged into the reference's, so the mutant differs from the reference in exactly those
    functions. Mutants in other conventions set ``inherit=False`` and provide only their own
    functions (the reference's are written in the project's convention).
    """

    def register(fn: Callable[[], dict[str, Any]]) -> Callable[[], Implementation]:
        spec = f"{fn.__module__}:{fn.__name__}"

        def factory() -> Implementation:
            ref = reference_implementation()
            changes = fn()
            base_t, base_l = (ref.targets, ref.losses) if inherit else ({}, {})
            targets = {**base_t, **changes.pop("targets", {})}
            losses = {**base_l, **changes.pop("losses", {})}
            if not inherit:
                changes.setdefault("flow_map", None)
            return replace(
                ref,
                name=f"mutant {name}",
                targets=targets,
                losses=losses,
                description=description,
                spec=spec,
                **changes,
            )

        if name in MUTANTS:
            raise ValueError(f"mutant {name!r} is registered twice")
        factory.__name__ = fn.__name__
        factory.__doc__ = description
        replaces = tuple(k for k in ("targets", "losses", "flow_map") if k in fn())
        MUTANTS[name] = Mutant(name, objective, description, factory, spec, replaces)
        return factory

    return register


def _load() -> None:
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")


@dataclass(frozen=True)
class MutantResult:
    """One row of the kill table.

    Attributes:
        mutant, objective, description: from the :class:`Mutant`.
        killed: whether some check failed on it.
        by: the first check that failed (``None`` if it survived).
        message: that check's message.
        seconds: time to kill.
        by_objective: the objective of the check that failed (a method, ``"model"``,
            ``"sampler"`` or ``"network"``; ``None`` if it survived).
    """

    mutant: str
    objective: str
    description: str
    killed: bool
    by: str | None
    message: str
    seconds: float
    by_objective: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mutant": self.mutant,
            "objective": self.objective,
            "killed": self.killed,
            "by": self.by,
            "description": self.description,
            "message": self.message,
            "seconds": round(self.seconds, 3),
        }


def run_mutant(m: Mutant | str, settings: OracleSettings | None = None) -> MutantResult:
    """Run the oracle on one mutant until the first failing check.

    The checks of the mutant's own objective run first (the others only if it survives them),
    so the kill run stays short; ``by`` names the first check that failed.
    """
    _load()
    m = MUTANTS[m] if isinstance(m, str) else m
    start = time.perf_counter()
    impl = m.implementation()
    kw: dict[str, Any] = {"stop_at_first_failure": True, "shipped_repeats": SHIPPED_REPEATS}
    results = run_checks(impl, settings, objectives=[m.objective], **kw)
    if not any(r.status == "fail" for r in results):
        others = {c.objective for c in checks_for()} - {m.objective}
        results += run_checks(impl, settings, objectives=others, **kw)
    failed = [r for r in results if r.status == "fail"]
    by = failed[0] if failed else None
    return MutantResult(
        m.name,
        m.objective,
        m.description,
        killed=by is not None,
        by=None if by is None else by.check,
        message="survived every check" if by is None else by.message,
        seconds=time.perf_counter() - start,
        by_objective=None if by is None else by.objective,
    )


def mutant_names() -> list[str]:
    """Every registered mutant's name, in the kill table's order (name order)."""
    _load()
    return sorted(MUTANTS)


def run_mutants(settings: OracleSettings | None = None) -> list[MutantResult]:
    """The kill table: every registered mutant, in name order."""
    return [run_mutant(MUTANTS[name], settings) for name in mutant_names()]
