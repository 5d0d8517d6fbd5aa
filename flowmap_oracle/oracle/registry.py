"""The check registry: one :class:`Check` per property, registered by the :func:`check` decorator.

A check is a body ``body(ctx, case, space)`` that raises :class:`~.results.CheckFailure` when the
implementation disagrees with the reference on that case, plus what it needs: the method, the
role (``target``, ``loss`` or ``flow_map``) the implementation must provide, and the space of
times it runs on. The check modules (:mod:`.checks`) import this table; running checks is
:mod:`.runner`'s job (it imports the check modules, so nothing imports in a circle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..conventions import Method
from .cases import CaseSpace, Space
from .context import CheckContext
from .protocols import MODEL, Role
from .results import Case

__all__ = ["CHECKS", "Check", "check"]


@dataclass(frozen=True)
class Check:
    """One property of one objective.

    Attributes:
        name: ``<method>.<role>.<property>``.
        objective: the :class:`~flowmap_oracle.conventions.Method` (``"model"`` for the flow-map
            step).
        role: what the implementation must provide: ``"target"``, ``"loss"`` or ``"flow_map"``.
        space: the times the check runs on.
        description: one sentence: what is compared with what.
        body: ``body(ctx, case, space)``; raises :class:`CheckFailure` on a mismatch.
        draws: whether hypothesis draws cases beyond the explicit ones (off for checks that
            solve ODEs per case).
        cost: rough relative cost; the runner orders cheap checks first.
        prepare: ``prepare(ctx, space) -> space``: the check's restriction of its case space;
            the runner draws the explicit and hypothesis cases from the restricted space.
    """

    name: str
    objective: str
    role: Role
    space: Space
    description: str
    body: Callable[[CheckContext, Case, CaseSpace], None]
    draws: bool = True
    cost: int = 1
    prepare: Callable[[CheckContext, CaseSpace], CaseSpace] | None = None

    def __str__(self) -> str:
        return self.name


CHECKS: dict[str, Check] = {}
"""Every registered check by name (filled by importing :mod:`.checks`)."""


def check(
    name: str,
    *,
    objective: str,
    role: str,
    space: Space,
    description: str,
    draws: bool = True,
    cost: int = 1,
) -> Callable[[Callable], Callable]:
    """Decorator registering ``body`` as a :class:`Check`."""

    method = MODEL if objective == MODEL else Method.parse(objective)
    if not name.startswith(f"{method}.{Role(role)}."):
        raise ValueError(f"check {name!r} must be named '{method}.{role}.<property>'")

    def register(body: Callable) -> Callable:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = Check(name, method, Role(role), space, description, body, draws, cost)
        return body

    return register
