"""Build the PDF report: compute each section's inputs, then hand them to the ``reports`` layout.

The ``reports`` package lays out results and computes nothing; this module runs the
computations it shows (identity checks, teacher accuracy, training runs, fixed points, oracle
runs) and reads the committed benchmark records from an explicit directory. Like the CLI it may
import every layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .progress import Progress
from .reports.identities_section import IdentitiesSectionInputs
from .reports.objectives_benchmark_section import ObjectivesBenchmarkSectionInputs
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
    "code_version",
    "identities_inputs",
    "load_benchmarks",
    "objectives_inputs",
    "oracle_inputs",
    "report_cache_dir",
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


OBJECTIVES_BENCHMARK = "objectives_cpu.json"
"""The committed ``bench objectives --json`` document the report lays out."""


def objectives_benchmark_inputs(
    *, benchmarks_dir: str | os.PathLike | None = None, progress: Progress | None = None
) -> ObjectivesBenchmarkSectionInputs:
    """Read the committed benchmark of objectives (:data:`OBJECTIVES_BENCHMARK` in
    ``benchmarks_dir``); the section says so when there is none."""
    from .experiments.bench_objectives import load_objectives_benchmark

    if benchmarks_dir is None:
        return ObjectivesBenchmarkSectionInputs(None, None)
    path = Path(benchmarks_dir) / OBJECTIVES_BENCHMARK
    if not path.is_file():
        return ObjectivesBenchmarkSectionInputs(None, os.fspath(path))
    return ObjectivesBenchmarkSectionInputs(load_objectives_benchmark(path), os.fspath(path))


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


def oracle_inputs(
    *, quick: bool = False, examples: bool | None = None, progress: Progress | None = None
) -> OracleSectionInputs:
    """Run the oracle on the reference, the mutants and the example implementations
    (``examples``; by default when not ``quick``)."""
    from .oracle import OracleSettings, checks_for, load_implementation, runner
    from .oracle.mutants import mutant_names, run_mutant

    progress = progress or Progress.disabled()
    settings = OracleSettings()
    checks = checks_for()
    mutants = mutant_names()
    with_examples = (not quick) if examples is None else examples
    specs = EXAMPLES if with_examples else ()

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
        example_runs: tuple[ExampleRun, ...] | None = None
        if with_examples:
            runs = []
            for spec in specs:
                impl = load_implementation(spec)
                runs.append(
                    ExampleRun(
                        impl.name, impl.conventions.describe(), check_all(impl, spec.split(":")[0])
                    )
                )
            example_runs = tuple(runs)
    return OracleSectionInputs(
        settings=settings,
        n_checks=len(checks),
        reference_results=reference_results,
        mutant_results=mutant_results,
        example_results=example_runs,
    )


_SECTION_FUNCTIONS = {
    "identities": "identities_inputs",
    "teachers": "teachers_inputs",
    "training": "training_inputs",
    "objectives": "objectives_inputs",
    "objectives_benchmark": "objectives_benchmark_inputs",
    "oracle": "oracle_inputs",
}
_ORIGINALS: dict[str, Callable[..., Any]] = {}  # filled below, once every function is defined


def report_cache_dir() -> Path:
    """Where :func:`build_report` keeps section results: ``$FLOWMAP_ORACLE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/flowmap-oracle``, else ``~/.cache/flowmap-oracle`` (never the working
    directory)."""
    explicit = os.environ.get("FLOWMAP_ORACLE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flowmap-oracle"


def code_version() -> str:
    """A hash of the package's source (every ``.py`` file under ``flowmap_oracle``, by relative
    path and content) and of the Python, torch and numpy versions: what the cached section
    results depend on besides the mode."""
    import hashlib

    import numpy

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    digest.update(f"{sys.version}|{torch.__version__}|{numpy.__version__}".encode())
    return digest.hexdigest()[:20]


def _cache_path(name: str, mode: str, version: str) -> Path:
    return report_cache_dir() / f"report-{name}-{mode}-{version}.pickle"


def _cache_load(path: Path) -> Any | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None  # absent, or written by other code: computed again


def _cache_store(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def _pack(name: str, value: Any) -> Any:
    """A picklable form of a section's inputs: the identities' claims hold local functions, so
    each result keeps its identity's id instead of the objects (:func:`_unpack` restores them)."""
    if name != "identities":
        return value
    results = []
    for ident, res in value.results:
        stmt = dataclasses.replace(res.statement, claim=None)
        twins = tuple(dataclasses.replace(tw, claim=None) for tw in res.twins)
        results.append((ident.id, dataclasses.replace(res, statement=stmt, twins=twins)))
    return dataclasses.replace(value, results=tuple(results))


def _unpack(name: str, value: Any) -> Any:
    """The inverse of :func:`_pack` (the claims are taken from the identities by id)."""
    if name != "identities":
        return value
    from .identities import all_identities

    by_id = {ident.id: ident for ident in all_identities()}
    results = []
    for ident_id, res in value.results:
        ident = by_id[ident_id]
        stmt = dataclasses.replace(res.statement, claim=ident.statement)
        twins = tuple(
            dataclasses.replace(tw, claim=claim)
            for tw, claim in zip(res.twins, ident.twins, strict=True)
        )
        results.append((ident, dataclasses.replace(res, statement=stmt, twins=twins)))
    return dataclasses.replace(value, results=tuple(results))


def _compute_section(name: str, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
    """Run one section's function (by its module-level name, so a replaced one runs) and
    return its inputs with the wall and CPU seconds it took."""
    start, cpu = time.perf_counter(), time.process_time()
    value = globals()[_SECTION_FUNCTIONS[name]](**kwargs)
    return value, time.perf_counter() - start, time.process_time() - cpu


class _Unpicklable:
    """What a section process sends back when its inputs cannot be pickled (they are then
    computed again in the parent)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _compute_packed(name: str, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
    value, wall, cpu = _compute_section(name, kwargs)
    packed = _pack(name, value)
    try:
        pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        return _Unpicklable(str(err)), wall, cpu
    return packed, wall, cpu


def _worker_init() -> None:
    # one torch thread per section process (the sections share the machine's cores); also keeps
    # a forked child off the parent's OpenMP pool
    torch.set_num_threads(1)


def build_report(
    path: str | os.PathLike,
    *,
    quick: bool = False,
    full: bool = False,
    sections: Sequence[str] | None = None,
    benchmarks_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    cache: bool = False,
    jobs: int = 1,
    timings: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Compute the chosen sections' inputs and write the PDF report atomically to ``path``.

    Arguments:
        path: where to write the PDF.
        quick: shorten training runs and benchmarks (previews and tests).
        full: the long runs (2000 training steps, every fixed point, the example
            implementations in the oracle section); the default runs the quick settings of
            the training and objectives sections and the oracle on the reference and the
            mutants. ``quick`` and ``full`` exclude each other.
        sections: names from :data:`~flowmap_oracle.reports.report.SECTIONS` to include (shown
            in report order); ``None`` for all.
        benchmarks_dir: the directory holding the committed ``teachers*.json`` benchmark
            records; ``None`` (or a missing directory) and the teachers section says so.
        progress: shows the section and the item running (nothing by default).
        cache: reuse section results computed by the same code (:func:`code_version`) in the
            same mode, kept under :func:`report_cache_dir`; quick mode and replaced section
            functions are never cached. The benchmark records are read afresh each time.
        jobs: sections computed at once, each in its own process (1: in this process, with
            per-item progress).
        timings: filled with each section's ``{"seconds", "cpu_seconds", "cached"}``.

    Returns:
        The path written.

    Raises:
        ValueError: for a section name that is not in ``SECTIONS`` (before computing anything),
            ``quick`` and ``full`` together, or ``jobs < 1``.
        ReportInterrupted: on Ctrl-C while a section is computed, after writing the sections
            that finished (if any) to ``path`` with a sentence at the top saying which
            sections are missing; the interrupted section's partial results are dropped.
    """
    chosen = list(SECTIONS) if sections is None else list(sections)
    check_sections(chosen)
    if quick and full:
        raise ValueError("quick and full exclude each other")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    progress = progress or Progress.disabled()
    mode = "quick" if quick else "full" if full else "default"
    short = not full  # training and objectives: the quick settings unless full
    kwargs: dict[str, dict[str, Any]] = {
        "identities": {},
        "teachers": {"quick": quick},
        "training": {"quick": short},
        "objectives": {"quick": short},
        "objectives_benchmark": {"benchmarks_dir": benchmarks_dir},
        "oracle": {"quick": quick, "examples": full},
    }
    ordered = [name for name in SECTIONS if name in chosen]
    inputs: dict[str, Any] = {}
    spent = {} if timings is None else timings
    version = code_version() if cache and not quick else ""

    def cacheable(name: str) -> bool:
        fn = globals()[_SECTION_FUNCTIONS[name]]
        return bool(version) and fn is _ORIGINALS.get(name)

    def finish(name: str, value: Any) -> Any:
        if name == "objectives_benchmark":  # the committed records, read afresh
            return objectives_benchmark_inputs(benchmarks_dir=benchmarks_dir)
        if name == "teachers":  # the records are read afresh, never from the cache
            value = dataclasses.replace(
                value,
                benchmarks=load_benchmarks(benchmarks_dir),
                benchmarks_dir=None if benchmarks_dir is None else os.fspath(benchmarks_dir),
            )
        return value

    todo = []
    for name in ordered:
        hit = _cache_load(_cache_path(name, mode, version)) if cacheable(name) else None
        if hit is not None:
            inputs[name] = finish(name, _unpack(name, hit))
            spent[name] = {"seconds": 0.0, "cpu_seconds": 0.0, "cached": True}
        else:
            todo.append(name)

    def done(name: str, result: tuple[Any, float, float]) -> None:
        value, wall, cpu = result
        if cacheable(name):
            _cache_store(_cache_path(name, mode, version), _pack(name, value))
        inputs[name] = finish(name, value)
        spent[name] = {"seconds": wall, "cpu_seconds": cpu, "cached": False}

    with progress.bar("report", len(ordered), unit="section") as bar:
        bar.advance(len(ordered) - len(todo))
        try:
            if jobs == 1 or len(todo) < 2:
                for name in todo:
                    bar.start(name)
                    extra: dict[str, Any] = {"progress": progress}
                    if name == "teachers":
                        extra["benchmarks_dir"] = benchmarks_dir
                    done(name, _compute_section(name, {**kwargs[name], **extra}))
                    bar.advance()
            else:
                _run_parallel(todo, kwargs, jobs, bar, done)
        except KeyboardInterrupt:
            missing = [name for name in ordered if name not in inputs]
            written = None
            if inputs:
                note = (
                    f"The run was interrupted (Ctrl-C) while computing the {missing[0]} "
                    f"section; missing sections: {', '.join(missing)}."
                )
                written = write_report(
                    path, {k: inputs[k] for k in ordered if k in inputs}, incomplete=note
                )
            raise ReportInterrupted(written, [k for k in ordered if k in inputs], missing) from None
    return write_report(path, {k: inputs[k] for k in ordered})


def _run_parallel(
    todo: list[str],
    kwargs: dict[str, dict[str, Any]],
    jobs: int,
    bar: Any,
    done: Callable[[str, tuple[Any, float, float]], None],
) -> None:
    """Compute the sections ``todo`` in ``jobs`` processes (forked where the platform allows, so
    that they run this process's code), calling ``done`` as each finishes. The longest ones
    start first. An interrupt in a section waits for the others running, then is raised."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    longest_first = sorted(todo, key=lambda n: _EXPECTED_ORDER.index(n))
    interrupted = False
    retry: list[str] = []
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init
    ) as pool:
        futures = {pool.submit(_compute_packed, n, kwargs[n]): n for n in longest_first}
        bar.start(", ".join(longest_first))
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        value, wall, cpu = fut.result()
                    except KeyboardInterrupt:
                        interrupted = True
                    else:
                        if isinstance(value, _Unpicklable):
                            retry.append(futures[fut])
                        else:
                            done(futures[fut], (_unpack(futures[fut], value), wall, cpu))
                    bar.advance()
        except KeyboardInterrupt:
            interrupted = True
            for fut in pending:
                fut.cancel()
            for fut in pending:
                with contextlib.suppress(BaseException):
                    value, wall, cpu = fut.result()
                    if not isinstance(value, _Unpicklable):
                        done(futures[fut], (_unpack(futures[fut], value), wall, cpu))
    if interrupted:
        raise KeyboardInterrupt
    for name in retry:  # computed again here: its inputs could not come back from a process
        done(name, _compute_section(name, kwargs[name]))


_EXPECTED_ORDER = [
    "oracle",
    "objectives",
    "identities",
    "training",
    "teachers",
    "objectives_benchmark",
]
"""Sections from the longest to the shortest (measured), the order parallel runs start them;
every section of :data:`~flowmap_oracle.reports.report.SECTIONS` (a test checks)."""

_ORIGINALS.update({name: globals()[fn] for name, fn in _SECTION_FUNCTIONS.items()})
