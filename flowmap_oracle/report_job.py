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


def identities_inputs(identities: Sequence[Any] | None = None) -> IdentitiesSectionInputs:
    """Check every identity (or the given ones) and compare the seed's table of paths.

    Quick mode changes nothing here: the checks take some tens of seconds and the section must
    be complete.
    """
    from .identities import all_identities
    from .identities.paths import compare_seed_table, seed_table_errata

    start = time.perf_counter()
    idents = all_identities() if identities is None else list(identities)
    results = tuple((ident, ident.check()) for ident in idents)
    seconds = time.perf_counter() - start
    return IdentitiesSectionInputs(
        results=results,
        seconds=seconds,
        seed_table=tuple(compare_seed_table()),
        errata=tuple(seed_table_errata()),
    )


def load_benchmarks(directory: str | os.PathLike | None) -> tuple[BenchmarkRecord, ...] | None:
    """The committed ``teachers*.json`` records in ``directory`` (sorted by file name), or
    ``None`` when ``directory`` is ``None`` or does not exist."""
    if directory is None or not Path(directory).is_dir():
        return None
    return tuple(
        BenchmarkRecord(path.name, json.loads(path.read_text()))
        for path in sorted(Path(directory).glob("teachers*.json"))
    )


def teachers_inputs(
    *, quick: bool = False, benchmarks_dir: str | os.PathLike | None = None
) -> TeachersSectionInputs:
    """Measure the teachers' flow-map errors, draw exact trajectories, read the benchmarks."""
    from .experiments.teacher_accuracy import exact_trajectories, measure_flow_map_errors
    from .reference_models import PRESETS, preset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small solves: one thread avoids oversubscribing shared CPUs
    try:
        start = time.perf_counter()
        rows = measure_flow_map_errors(quick=quick)
        seconds = time.perf_counter() - start
        trajectories = exact_trajectories("ring8", n=32 if quick else 200, steps=8 if quick else 40)
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


def training_inputs(*, quick: bool = False) -> TrainingSectionInputs:
    """Train MeanFlow on the ring teacher, with the teacher's and the conditional velocity."""
    from .experiments.meanflow_one_step import meanflow_one_step_experiment

    steps = 300 if quick else 2000
    teacher, conditional = (
        meanflow_one_step_experiment(steps=steps, velocity=v) for v in ("teacher", "conditional")
    )
    return TrainingSectionInputs(runs=(teacher, conditional))


def objectives_inputs(*, quick: bool = False) -> ObjectivesSectionInputs:
    """Measure every objective's fixed point at the exact map and smoke-train each one."""
    from .experiments.fixed_points import OBJECTIVES, measure_fixed_points
    from .experiments.smoke_training import SMOKE_OBJECTIVES, smoke_train

    skipped = OBJECTIVES_QUICK_SKIPS if quick else ()
    names = [s.name for s in OBJECTIVES if s.name not in skipped]
    fixed_points = tuple(measure_fixed_points(names))
    quick_args = SMOKE_QUICK_ARGS if quick else {}
    runs = tuple(smoke_train(n, **quick_args) for n in SMOKE_OBJECTIVES)
    return ObjectivesSectionInputs(
        objectives=tuple(OBJECTIVES),
        fixed_points=fixed_points,
        smoke_runs=runs,
        skipped_fixed_points=tuple(skipped),
        smoke_preview=(SMOKE_QUICK_ARGS["steps"], SMOKE_QUICK_ARGS["n_eval"]) if quick else None,
    )


def oracle_inputs(*, quick: bool = False) -> OracleSectionInputs:
    """Run the oracle on the reference, the mutants and (not quick) the example implementations."""
    from .oracle import OracleSettings, checks_for, load_implementation, run_checks
    from .oracle.mutants import run_mutants

    settings = OracleSettings()
    reference = load_implementation("flowmap_oracle.oracle.reference:implementation")
    reference_results = tuple(run_checks(reference, settings))
    mutant_results = tuple(run_mutants(settings))
    examples: tuple[ExampleRun, ...] | None = None
    if not quick:
        runs = []
        for spec in EXAMPLES:
            impl = load_implementation(spec)
            runs.append(
                ExampleRun(
                    impl.name, impl.conventions.describe(), tuple(run_checks(impl, settings))
                )
            )
        examples = tuple(runs)
    return OracleSectionInputs(
        settings=settings,
        n_checks=len(checks_for()),
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
) -> Path:
    """Compute the chosen sections' inputs and write the PDF report atomically to ``path``.

    Arguments:
        path: where to write the PDF.
        quick: shorten training runs and benchmarks (previews and tests).
        sections: names from :data:`~flowmap_oracle.reports.report.SECTIONS` to include (shown
            in report order); ``None`` for all.
        benchmarks_dir: the directory holding the committed ``teachers*.json`` benchmark
            records; ``None`` (or a missing directory) and the teachers section says so.

    Returns:
        The path written.

    Raises:
        ValueError: for a section name that is not in ``SECTIONS`` (before computing anything).
    """
    chosen = list(SECTIONS) if sections is None else list(sections)
    check_sections(chosen)
    compute: dict[str, Callable[[], Any]] = {
        "identities": identities_inputs,
        "teachers": lambda: teachers_inputs(quick=quick, benchmarks_dir=benchmarks_dir),
        "training": lambda: training_inputs(quick=quick),
        "objectives": lambda: objectives_inputs(quick=quick),
        "oracle": lambda: oracle_inputs(quick=quick),
    }
    inputs = {name: compute[name]() for name in SECTIONS if name in chosen}
    return write_report(path, inputs)
