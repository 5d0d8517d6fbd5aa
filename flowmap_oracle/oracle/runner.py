"""Running checks: :func:`run_check` on one implementation, :func:`run_checks` for all, and
:func:`reproduce` for one failing case.

:func:`run_check` skips a check with a :class:`~.results.SkipReason` when the implementation does
not provide its role, runs the explicit cases and then hypothesis draws, and returns a
:class:`~.results.CheckResult` whose failure message carries a reproduction snippet. The check
runs as the oracle's machinery (:func:`~.context.oracle_warnings`): a warning inside the oracle
never fails it, while the implementation's own code keeps the session's warning filters.

A run in which every check was skipped checked nothing, and must not pass: :func:`run_checks`
then adds a failing result named :data:`NOTHING_CHECKED`.
"""

from __future__ import annotations

import contextlib
import functools
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis import settings as hsettings

from ..conventions import Method
from . import checks as _checks  # noqa: F401  (registers every check)
from .cases import CaseSpace
from .context import CheckContext, OracleSettings, oracle_warnings
from .implementation import Implementation, load_implementation
from .protocols import MODEL
from .registry import CHECKS, Check
from .results import Case, CheckFailure, CheckResult, CheckSkipped, SkipReason, Status
from .shipped import run_shipped_checks
from .user_network import run_network_checks

__all__ = [
    "NETWORK",
    "NOTHING_CHECKED",
    "SHIPPED_REPEATS",
    "PlannedCheck",
    "checks_for",
    "finish_results",
    "nothing_checked",
    "plan_checks",
    "reproduce",
    "reproduction_snippet",
    "run_check",
    "run_checks",
    "run_shipped",
]

SHIPPED_REPEATS = 32
"""The draws of the as-shipped statistical stationarity test in a check run."""

NETWORK = "network"
"""The objective of the user-network checks (:mod:`.user_network`)."""

NOTHING_CHECKED = "oracle.nothing_checked"
"""The name of the failing result :func:`run_checks` adds when every check was skipped."""


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
    # The oracle's warning filters for the whole run (entered here rather than in a ``with``
    # block: the source of ``drawn`` below, indentation included, seeds hypothesis's
    # derandomised draws, which must not change with this function's layout).
    guard = contextlib.ExitStack()
    guard.enter_context(oracle_warnings())
    try:
        ctx = CheckContext(impl, settings)
        space = _space(chk, ctx)
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
            traceback=failure.traceback,
        )
    except Exception as err:  # an error of the oracle itself, not of the implementation
        return result("fail", _internal_error(err))
    finally:
        guard.close()
    notes = "".join(f"; note: {text}" for text in ctx.notes)
    return result("pass", f"passed ({_n_cases(chk, settings, space)} cases){notes}")


def _space(chk: Check, ctx: CheckContext) -> CaseSpace:
    """The check's case space in the declared conventions, restricted by its ``prepare``: the
    explicit and drawn cases come from the space the check's body evaluates on."""
    space = ctx.space(chk.space)
    return space if chk.prepare is None else chk.prepare(ctx, space)


def _internal_error(err: Exception) -> str:
    """One line naming the error, then where in the oracle it happened (for a bug report)."""
    text = str(err).splitlines()[0] if str(err) else ""
    lines = [f"internal error of the oracle: {type(err).__name__}" + (f": {text}" if text else "")]
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        lines.append(f"  at {last.filename}:{last.lineno} in {last.name}")
    lines.append("  this is a bug of flowmap-oracle, not of the implementation; please report it")
    return "\n".join(lines)


def _n_cases(chk: Check, settings: OracleSettings, space: CaseSpace) -> str:
    n = len(space.explicit())
    return f"{n} explicit + {settings.examples} drawn" if chk.draws else f"{n} explicit"


@dataclass(frozen=True)
class PlannedCheck:
    """One step of a check run: a label for progress displays and the call that runs it."""

    label: str
    run: Callable[[], list[CheckResult]]


def plan_checks(
    impl: Implementation,
    settings: OracleSettings | None = None,
    *,
    objectives: Iterable[str] | None = None,
    shipped_repeats: int = SHIPPED_REPEATS,
) -> list[PlannedCheck]:
    """What :func:`run_checks` runs, step by step: each registered check (of ``objectives``),
    then the checks of the shipped losses and samplers (one step), then the checks of the user's
    own network (:mod:`.user_network`, objective ``"network"``; one step). Callers that show
    progress run the steps themselves and end with :func:`finish_results`. ``shipped_repeats``:
    the draws of the as-shipped statistical stationarity test (see :func:`run_shipped`)."""
    wanted = None if objectives is None else set(objectives)
    steps = [
        PlannedCheck(chk.name, functools.partial(_run_one, chk, impl, settings))
        for chk in checks_for()
        if wanted is None or chk.objective in wanted
    ]
    shipped_wanted = wanted is None or bool(
        wanted & ({*impl.shipped_losses} | ({"sampler"} if impl.samplers else set()))
    )
    if (impl.shipped_losses or impl.samplers) and shipped_wanted:
        steps.append(
            PlannedCheck(
                "shipped losses and samplers",
                lambda: run_shipped(impl, objectives=wanted, repeats=shipped_repeats),
            )
        )
    if impl.network is not None and (wanted is None or NETWORK in wanted):
        steps.append(PlannedCheck("the user's network", lambda: run_network_checks(impl)))
    return steps


def _run_one(
    chk: Check, impl: Implementation, settings: OracleSettings | None
) -> list[CheckResult]:
    return [run_check(chk, impl, settings)]


def finish_results(impl: Implementation, results: list[CheckResult]) -> list[CheckResult]:
    """``results``, ending with a failing :data:`NOTHING_CHECKED` when nothing was checked."""
    if not any(r.status in ("pass", "fail") for r in results):
        return [*results, nothing_checked(impl, results)]
    return results


def run_checks(
    impl: Implementation,
    settings: OracleSettings | None = None,
    *,
    objectives: Iterable[str] | None = None,
    stop_at_first_failure: bool = False,
    shipped_repeats: int = SHIPPED_REPEATS,
) -> list[CheckResult]:
    """Run every applicable check (of ``objectives``) on ``impl`` (the steps of
    :func:`plan_checks`).

    When every check was skipped (or none was selected), the list ends with a failing result
    named :data:`NOTHING_CHECKED`: a run that checked nothing does not pass.
    """
    results: list[CheckResult] = []
    for step in plan_checks(impl, settings, objectives=objectives, shipped_repeats=shipped_repeats):
        results += step.run()
        if stop_at_first_failure and any(r.status == "fail" for r in results):
            break
    return finish_results(impl, results)


def run_shipped(
    impl: Implementation,
    *,
    objectives: Iterable[str] | None = None,
    repeats: int = SHIPPED_REPEATS,
) -> list[CheckResult]:
    """The as-shipped checks (:mod:`.shipped`) of ``impl``'s shipped losses and samplers.

    ``objectives`` selects methods; samplers run when it is ``None`` or holds ``"sampler"``.
    ``repeats``: the draws of the statistical stationarity test (fewer draws raise its bound:
    the same false-alarm rate, less power).
    """
    wanted = None if objectives is None else set(objectives)
    losses = {m: loss for m, loss in impl.shipped_losses.items() if wanted is None or m in wanted}
    samplers = impl.samplers if wanted is None or "sampler" in wanted else {}
    if not losses and not samplers:
        return []
    return run_shipped_checks(impl.conventions, losses=losses, samplers=samplers, repeats=repeats)


def nothing_checked(impl: Implementation, skipped: list[CheckResult]) -> CheckResult:
    """The failing result of a run whose checks (``skipped``) were all skipped."""
    reasons = Counter(
        "skipped" if r.skip_reason is None else r.skip_reason.value.replace("_", " ")
        for r in skipped
    )
    provided = ", ".join(impl.provided()) or "nothing"
    lines = [
        f"nothing was checked: all {len(skipped)} selected checks were skipped"
        if skipped
        else "nothing was checked: no check was selected",
        f"  {impl.name!r} provides: {provided}",
    ]
    if reasons:
        lines.append("  skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())))
    other = [r for r in skipped if r.skip_reason is not SkipReason.NOT_PROVIDED]
    if other:
        lines.append(f"  for example {other[0].check}: {other[0].message.splitlines()[0]}")
    lines.append(
        "  provide a target, loss or flow_map that a check applies to (the protocols are "
        "listed in flowmap_oracle.oracle.protocols.PROTOCOLS)"
    )
    return CheckResult(
        NOTHING_CHECKED,
        "oracle",
        "fail",
        "\n".join(lines),
        description="fails a run in which every check was skipped: checking nothing is no pass",
    )


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
    with oracle_warnings():
        ctx = CheckContext(impl, settings)
        space = _space(chk, ctx)
        _run_case(chk, ctx, Case(seed, t, s, r), space)
