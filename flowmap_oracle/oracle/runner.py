"""Running checks: :func:`run_check` on one implementation, :func:`run_checks` for all, and
:func:`reproduce` for one failing case.

:func:`run_check` skips a check with a :class:`~.results.SkipReason` when the implementation does
not provide its role, runs the explicit cases and then hypothesis draws, and returns a
:class:`~.results.CheckResult` whose failure message carries a reproduction snippet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis import settings as hsettings

from ..conventions import Method
from . import checks as _checks  # noqa: F401  (registers every check)
from .cases import CaseSpace
from .context import CheckContext, OracleSettings
from .implementation import Implementation, load_implementation
from .protocols import MODEL
from .registry import CHECKS, Check
from .results import Case, CheckFailure, CheckResult, CheckSkipped, SkipReason, Status

__all__ = ["checks_for", "reproduce", "reproduction_snippet", "run_check", "run_checks"]


def checks_for(objective: str | None = None) -> list[Check]:
    """Registered checks (of one method, or ``"model"``), cheapest first, then by name.

    Raises:
        ValueError: for an unknown method name.
    """
    if objective is not None and objective != MODEL:
        objective = Method.parse(objective)
    selected = [c for c in CHECKS.values() if objective is None or c.objective == objective]
    return sorted(selected, key=lambda c: (c.objective, c.cost, c.name))


def _hypothesis_settings(settings: OracleSettings) -> hsettings:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if settings.shrink else [])
    return hsettings(
        max_examples=settings.examples,
        derandomize=settings.profile == "ci",
        database=None,
        deadline=None,
        phases=phases,
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )


def _run_case(chk: Check, ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    try:
        chk.body(ctx, case, space)
    except CheckFailure as failure:
        failure.case = case
        raise


def run_check(
    chk: Check | str, impl: Implementation, settings: OracleSettings | None = None
) -> CheckResult:
    """Run one check on ``impl`` and return its result (never raises for a failing impl)."""
    chk = CHECKS[chk] if isinstance(chk, str) else chk
    settings = settings or OracleSettings()
    start = time.perf_counter()

    def result(status: Status, message: str, **kw: Any) -> CheckResult:
        return CheckResult(
            chk.name,
            chk.objective,
            status,
            message,
            description=chk.description,
            seconds=time.perf_counter() - start,
            **kw,
        )

    if not impl.provides(chk.objective, chk.role):
        what = "flow_map" if chk.role == "flow_map" else f"{chk.objective} {chk.role}"
        return result(
            "skip",
            f"the implementation provides no {what} function",
            skip_reason=SkipReason.NOT_PROVIDED,
        )
    ctx = CheckContext(impl, settings)
    try:
        space = ctx.space(chk.space)
        for case in space.explicit():
            _run_case(chk, ctx, case, space)
        if chk.draws and settings.examples > 0:

            @_hypothesis_settings(settings)
            @given(case=space.strategy())
            def drawn(case: Case) -> None:
                _run_case(chk, ctx, case, space)

            drawn()
    except CheckSkipped as skip:
        return result("skip", str(skip), skip_reason=skip.reason)
    except CheckFailure as failure:
        where = "" if failure.case is None else f"case {failure.case.describe()}; "
        return result(
            "fail",
            f"{failure.message}\n  inputs: {where}{settings.describe()}",
            mismatch=failure.mismatch,
            case=failure.case,
            reproduce=reproduction_snippet(chk, impl, failure.case, settings),
        )
    except Exception as err:  # an error of the oracle itself, not of the implementation
        return result("fail", f"internal error of the oracle: {type(err).__name__}: {err}")
    return result("pass", f"passed ({_n_cases(chk, settings, space)} cases)")


def _n_cases(chk: Check, settings: OracleSettings, space: CaseSpace) -> str:
    n = len(space.explicit())
    return f"{n} explicit + {settings.examples} drawn" if chk.draws else f"{n} explicit"


def run_checks(
    impl: Implementation,
    settings: OracleSettings | None = None,
    *,
    objectives: Iterable[str] | None = None,
    stop_at_first_failure: bool = False,
) -> list[CheckResult]:
    """Run every applicable check (of ``objectives``) on ``impl``."""
    wanted = None if objectives is None else set(objectives)
    results = []
    for chk in checks_for():
        if wanted is not None and chk.objective not in wanted:
            continue
        res = run_check(chk, impl, settings)
        results.append(res)
        if stop_at_first_failure and res.status == "fail":
            break
    return results


def reproduction_snippet(
    chk: Check, impl: Implementation, case: Case | None, settings: OracleSettings
) -> str:
    """Python that reruns ``chk`` on ``case`` and raises the same failure."""
    spec = repr(impl.spec) if impl.spec else "implementation  # your Implementation object"
    args = [repr(chk.name), spec]
    if case is not None:
        args += [f"{k}={v!r}" for k, v in case.kwargs().items()]
    if settings != OracleSettings():
        args.append(f"batch={settings.batch}, teacher={settings.teacher!r}")
    return f"from flowmap_oracle import reproduce\nreproduce({', '.join(args)})"


def reproduce(
    name: str,
    implementation: str | Implementation,
    *,
    seed: int = 0,
    t: float | None = None,
    s: float | None = None,
    r: float | None = None,
    batch: int = 16,
    teacher: str = "ring8",
) -> None:
    """Rerun check ``name`` on one case; raises :class:`CheckFailure` with the full message.

    Arguments:
        name: the check.
        implementation: ``package.module:factory`` or an :class:`Implementation`.
        seed, t, s, r: the :class:`~.results.Case`.
        batch, teacher: the settings of the original run.
    """
    chk = CHECKS[name]
    impl = (
        load_implementation(implementation) if isinstance(implementation, str) else implementation
    )
    settings = OracleSettings(batch=batch, teacher=teacher)
    ctx = CheckContext(impl, settings)
    space = ctx.space(chk.space)
    _run_case(chk, ctx, Case(seed, t, s, r), space)
