"""Build the PDF report: compute each section's inputs, then hand them to the ``reports`` layout.

The ``reports`` package lays out results and computes nothing; this module runs the
computations it shows (identity checks, teacher accuracy, training runs, fixed points, oracle
runs) and reads the committed benchmark records from an explicit directory. Like the CLI it may
import every layer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .progress import Progress
from .reports.identities_section import IdentitiesSectionInputs
from .reports.objectives_section import ObjectivesSectionInputs
from .reports.oracle_section import EXAMPLES, ExampleRun, OracleSectionInputs
from .reports.report import SECTIONS, check_sections, write_report
from .reports.teachers_section import BenchmarkRecord, PresetSummary, TeachersSectionInputs
from .reports.training_section import TrainingSectionInputs

if TYPE_CHECKING:
    from .reference_models import GaussianMixture

__all__ = [
    "OBJECTIVES_QUICK_SKIPS",
    "SMOKE_QUICK_ARGS",
    "ReportInterrupted",
    "build_report",
    "identities_inputs",
    "load_benchmarks",
    "objectives_inputs",
    "oracle_inputs",
    "teachers_inputs",
    "training_inputs",
]

OBJECTIVES_QUICK_SKIPS = ("reflow", "imm")
"""Fixed points skipped in quick mode (ReFlow's Newton inversion through ODE solves, IMM's
thousands of particles)."""

SMOKE_QUICK_ARGS: dict[str, int] = {"steps": 40, "n_eval": 128, "reflow_pool": 256}
"""Quick mode's smoke training: a preview of the pipeline, not a training result."""


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`build_report`, after the finished sections were written.

    Attributes:
        path: the PDF written with the finished sections (marked incomplete), or ``None`` when
            no section had finished.
        finished: the sections in that PDF.
        missing: the chosen sections that did not finish.
    """

    def __init__(self, path: Path | None, finished: list[str], missing: list[str]) -> None:
        super().__init__(f"interrupted; finished sections {finished}, missing {missing}")
        self.path = path
        self.finished = finished
        self.missing = missing


def identities_inputs(
    identities: Sequence[Any] | None = None, *, progress: Progress | None = None
) -> IdentitiesSectionInputs:
    """Check every identity (or the given ones) and compare the seed's table of paths.

    Quick mode changes nothing here: the checks take some tens of seconds and the section must
    be complete.
    """
    from .identities import all_identities
    from .identities.paths import compare_seed_table, seed_table_errata

    progress = progress or Progress.disabled()
    start = time.perf_counter()
    idents = all_identities() if identities is None else list(identities)
    checked = []
    with progress.bar("identities", len(idents)) as bar:
        for ident in idents:
            bar.start(ident.id)
            checked.append((ident, ident.check()))
            bar.advance()
    results = tuple(checked)
    seconds = time.perf_counter() - start
    return IdentitiesSectionInputs(
        results=results,
        seconds=seconds,
        seed_table=tuple(compare_seed_table()),
        errata=tuple(seed_table_errata()),
    )


def load_benchmarks(directory: str | os.PathLike | None) -> tuple[BenchmarkRecord, ...] | None:
    """The committed ``teachers*.json`` records in ``directory`` (sorted by file name), or
    ``None`` when ``directory`` is ``None`` or does not exist. A record of an interrupted run
    (``"complete": false``) is left out."""
    if directory is None or not Path(directory).is_dir():
        return None
    records = (
        BenchmarkRecord(path.name, json.loads(path.read_text()))
        for path in sorted(Path(directory).glob("teachers*.json"))
    )
    return tuple(r for r in records if r.record.get("complete", True) is not False)


def teachers_inputs(
    *,
    quick: bool = False,
    benchmarks_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> TeachersSectionInputs:
    """Measure the teachers' flow-map errors, draw exact trajectories, read the benchmarks."""
    from .experiments.teacher_accuracy import exact_trajectories, measure_flow_map_errors
    from .reference_models import PRESETS, preset

    progress = progress or Progress.disabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small solves: one thread avoids oversubscribing shared CPUs
    try:
        with progress.bar("teachers", 2) as bar:
            bar.start("flow-map errors")
            start = time.perf_counter()
            rows = measure_flow_map_errors(quick=quick)
            seconds = time.perf_counter() - start
            bar.advance()
            bar.start("exact trajectories")
            trajectories = exact_trajectories(
                "ring8", n=32 if quick else 200, steps=8 if quick else 40
            )
            bar.advance()
    finally:
        torch.set_num_threads(threads)
    presets = tuple(_preset_summary(name, preset(name).mixture) for name in PRESETS)
    return TeachersSectionInputs(
        error_rows=tuple(rows),
        error_seconds=seconds,
        quick=quick,
        presets=presets,
        trajectories=trajectories,
        benchmarks=load_benchmarks(benchmarks_dir),
        benchmarks_dir=None if benchmarks_dir is None else os.fspath(benchmarks_dir),
    )


def _preset_summary(name: str, mixture: GaussianMixture) -> PresetSummary:
    kind = mixture.covariance_type
    if kind is None:  # GaussianMixture.__post_init__ resolves it
        raise RuntimeError(f"preset {name!r}: the mixture's covariance_type was not resolved")
    return PresetSummary(name, mixture.dim, mixture.n_components, kind)


def training_inputs(
    *, quick: bool = False, progress: Progress | None = None
) -> TrainingSectionInputs:
    """Train MeanFlow on the ring teacher, with the teacher's and the conditional velocity."""
    from .experiments.meanflow_one_step import meanflow_one_step_experiment

    progress = progress or Progress.disabled()
    steps = 300 if quick else 2000
    runs = []
    with progress.bar("training", 2 * steps, unit="step") as bar:
        for v in ("teacher", "conditional"):
            bar.start(f"MeanFlow, v = {v}")
            runs.append(meanflow_one_step_experiment(steps=steps, velocity=v, on_step=bar.advance))
    teacher, conditional = runs
    return TrainingSectionInputs(runs=(teacher, conditional))


def objectives_inputs(
    *, quick: bool = False, progress: Progress | None = None
) -> ObjectivesSectionInputs:
    """Measure every objective's fixed point at the exact map and smoke-train each one."""
    from .experiments.fixed_points import OBJECTIVES, measure_fixed_points
    from .experiments.smoke_training import SMOKE_OBJECTIVES, smoke_steps, smoke_train

    progress = progress or Progress.disabled()
    skipped = OBJECTIVES_QUICK_SKIPS if quick else ()
    names = [s.name for s in OBJECTIVES if s.name not in skipped]
    measured = []
    with progress.bar("fixed points", len(names)) as bar:
        for name in names:  # one at a time, for the progress display
            bar.start(name)
            measured += measure_fixed_points([name])
            bar.advance()
    fixed_points = tuple(measured)
    quick_args: dict[str, int] = SMOKE_QUICK_ARGS if quick else {}
    steps = {n: quick_args.get("steps", smoke_steps(n)) for n in SMOKE_OBJECTIVES}
    smoked = []
    with progress.bar("smoke training", sum(steps.values()), unit="step") as bar:
        for n in SMOKE_OBJECTIVES:
            bar.start(n)
            smoked.append(smoke_train(n, **quick_args, on_step=bar.advance))
    runs = tuple(smoked)
    return ObjectivesSectionInputs(
        objectives=tuple(OBJECTIVES),
        fixed_points=fixed_points,
        smoke_runs=runs,
        skipped_fixed_points=tuple(skipped),
        smoke_preview=(SMOKE_QUICK_ARGS["steps"], SMOKE_QUICK_ARGS["n_eval"]) if quick else None,
    )


def oracle_inputs(*, quick: bool = False, progress: Progress | None = None) -> OracleSectionInputs:
    """Run the oracle on the reference, the mutants and (not quick) the example implementations."""
    from .oracle import OracleSettings, checks_for, load_implementation, runner
    from .oracle.mutants import mutant_names, run_mutant

    progress = progress or Progress.disabled()
    settings = OracleSettings()
    checks = checks_for()
    mutants = mutant_names()
    specs = () if quick else EXAMPLES

    def plan(impl: Any) -> list[Any]:
        return runner.plan_checks(impl, settings)

    per_impl = len(checks) + 1  # registered checks, then one step for shipped losses/samplers
    with progress.bar("oracle", per_impl * (1 + len(specs)) + len(mutants), unit="run") as bar:

        def check_all(impl: Any, who: str) -> tuple[Any, ...]:
            """``run_checks(impl, settings)``, one step at a time for the progress display."""
            results: list[Any] = []
            steps = plan(impl)
            for step in steps:
                bar.start(f"{who}: {step.label}")
                results += step.run()
                bar.advance()
            bar.advance(per_impl - len(steps))
            return tuple(runner.finish_results(impl, results))

        reference = load_implementation("flowmap_oracle.oracle.reference:implementation")
        reference_results = check_all(reference, "reference")
        mutant_rows = []
        for name in mutants:
            bar.start(f"mutant {name}")
            mutant_rows.append(run_mutant(name, settings))
            bar.advance()
        mutant_results = tuple(mutant_rows)
        examples: tuple[ExampleRun, ...] | None = None
        if not quick:
            runs = []
            for spec in specs:
                impl = load_implementation(spec)
                runs.append(
                    ExampleRun(
                        impl.name, impl.conventions.describe(), check_all(impl, spec.split(":")[0])
                    )
                )
            examples = tuple(runs)
    return OracleSectionInputs(
        settings=settings,
        n_checks=len(checks),
        reference_results=reference_results,
        mutant_results=mutant_results,
        example_results=examples,
    )


def build_report(
    path: str | os.PathLike,
    *,
    quick: bool = False,
    sections: Sequence[str] | None = None,
    benchmarks_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Compute the chosen sections' inputs and write the PDF report atomically to ``path``.

    Arguments:
        path: where to write the PDF.
        quick: shorten training runs and benchmarks (previews and tests).
        sections: names from :data:`~flowmap_oracle.reports.report.SECTIONS` to include (shown
            in report order); ``None`` for all.
        benchmarks_dir: the directory holding the committed ``teachers*.json`` benchmark
            records; ``None`` (or a missing directory) and the teachers section says so.
        progress: shows the section and the item running (nothing by default).

    Returns:
        The path written.

    Raises:
        ValueError: for a section name that is not in ``SECTIONS`` (before computing anything).
        ReportInterrupted: on Ctrl-C while a section is computed, after writing the sections
            that finished (if any) to ``path`` with a sentence at the top saying which
            sections are missing; the interrupted section's partial results are dropped.
    """
    chosen = list(SECTIONS) if sections is None else list(sections)
    check_sections(chosen)
    progress = progress or Progress.disabled()
    compute: dict[str, Callable[[], Any]] = {
        "identities": lambda: identities_inputs(progress=progress),
        "teachers": lambda: teachers_inputs(
            quick=quick, benchmarks_dir=benchmarks_dir, progress=progress
        ),
        "training": lambda: training_inputs(quick=quick, progress=progress),
        "objectives": lambda: objectives_inputs(quick=quick, progress=progress),
        "oracle": lambda: oracle_inputs(quick=quick, progress=progress),
    }
    ordered = [name for name in SECTIONS if name in chosen]
    inputs: dict[str, Any] = {}
    with progress.bar("report", len(ordered), unit="section") as bar:
        try:
            for name in ordered:
                bar.start(name)
                inputs[name] = compute[name]()
                bar.advance()
        except KeyboardInterrupt:
            missing = [name for name in ordered if name not in inputs]
            written = None
            if inputs:
                note = (
                    f"The run was interrupted (Ctrl-C) while computing the {missing[0]} "
                    f"section; missing sections: {', '.join(missing)}."
                )
                written = write_report(path, inputs, incomplete=note)
            raise ReportInterrupted(written, list(inputs), missing) from None
    return write_report(path, inputs)
