"""The ``flowmap-oracle`` console script.

Each subcommand is a small function here that calls the library; the work lives in the package
named after it. Every subcommand keeps one contract:

* exit status 0: success; 1: checks, identities or objectives failed, or nothing was checked;
  2: bad usage or bad input (an invalid option, an output path that cannot be written, an
  implementation that cannot be imported or built, a declared convention that cannot work), with
  one line on stderr naming the problem; 3: an internal error of flowmap-oracle (a bug: the
  traceback is printed); 130: interrupted by Ctrl-C, after writing what finished;
* options and output paths are validated before any work starts (argparse ``type=``
  validators, so that every message reads ``flowmap-oracle COMMAND: error: argument --x: ...``);
* long runs show progress on stderr (:mod:`flowmap_oracle.progress`) when it is a terminal and
  ``--quiet`` is not given; stdout stays parseable;
* JSON outputs are objects ``{"command", "complete", "seconds", ..., "results"}`` (each item with
  its own ``seconds``); Ctrl-C writes the finished items with ``"complete": false``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .progress import Progress

if TYPE_CHECKING:
    from .oracle import Implementation

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

MAX_POINTS_TEXT = "1e6"
"""``bench teachers --n``'s maximum as the help text shows it
(:data:`flowmap_oracle.experiments.bench_teachers.MAX_N`; a test keeps the two equal)."""


class UsageError(Exception):
    """Bad input found by a command before its work starts: one line on stderr, exit 2."""


# --------------------------------------------------------------------------- validators
# Each is an argparse ``type=``: it returns the parsed value or raises ArgumentTypeError, and
# argparse reports ``argument --name: <message>`` with exit status 2 before any work starts.


def _invalid(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def _integer(text: str) -> int:
    """An integer, also written as ``1e5`` or ``100_000``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        _invalid(f"expected an integer, got {text!r}")
    if not math.isfinite(value) or value != int(value):
        _invalid(f"expected an integer, got {text!r}")
    return int(value)


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer ``>= minimum``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            _invalid(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def point_count(text: str) -> int:
    """``bench teachers --n``: from 1 to :data:`~flowmap_oracle.experiments.bench_teachers.MAX_N`."""
    from .experiments.bench_teachers import MAX_N

    value = _integer(text)
    if value < 1:
        _invalid(f"must be at least 1, got {text}")
    if value > MAX_N:
        _invalid(
            f"at most {MAX_N:,} points, got {text}: a larger run takes hours and its baseline's "
            "whole-batch arrays need many GB (the benchmark does not chunk: the baseline solves "
            "the whole batch with one shared step size, which is what it measures)"
        )
    return value


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        _invalid(f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        _invalid(f"must be a positive number, got {text}")
    return value


def preset_name(text: str) -> str:
    """A teacher preset of :data:`flowmap_oracle.reference_models.PRESETS`."""
    from .reference_models import PRESETS

    if text not in PRESETS:
        _invalid(f"unknown preset {text!r}; known presets: {', '.join(PRESETS)}")
    return text


def device_name(text: str) -> str:
    """``cpu``, or ``cuda`` / ``cuda:N`` when CUDA is available."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        _invalid(f"unknown device {text!r}; use cpu or cuda")
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        _invalid(f"unsupported device {text!r}; use cpu or cuda")
    if not torch.cuda.is_available():
        _invalid(f"{text!r} requested but CUDA is not available on this machine; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        _invalid(f"{text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return text


def method_name(text: str) -> str:
    """A method name (``flowmap_oracle.Method``; aliases are refused with the canonical name)."""
    from .conventions import Method

    try:
        return Method.parse(text).value
    except ValueError as err:
        _invalid(str(err))


def check_objective(text: str) -> str:
    """A method name, ``model`` (the flow-map step's checks), ``sampler`` (the shipped
    samplers') or ``network`` (the user's own network's)."""
    from .oracle.protocols import MODEL

    return text if text in (MODEL, "sampler", "network") else method_name(text)


def _known_names(text: str, known: Sequence[str], what: str) -> list[str]:
    """A comma-separated list of names, each one of ``known`` (else one line, exit status 2)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        _invalid(f"unknown {what} {unknown}; known {what}: {', '.join(known)}")
    return names


def baseline_names(text: str) -> list[str]:
    """``bench teachers --baselines``: a comma-separated list of known baselines."""
    from .experiments.bench_teachers import BASELINES

    return _known_names(text, list(BASELINES), "baselines")


def section_names(text: str) -> list[str]:
    """A comma-separated list of report sections."""
    from .reports.report import SECTIONS

    return _known_names(text, SECTIONS, "report sections")


def output_path(text: str) -> Path:
    """A file path the command can write: not a directory, its folder existing (or creatable)
    and writable. Checked by creating (and at once discarding) a nameless temporary file in the
    nearest existing folder, so that nothing is left behind."""
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        _invalid(f"cannot write {text!r}: it is a directory; give a file name")
    folder = path.parent
    while not folder.exists():
        if folder == folder.parent:
            break
        folder = folder.parent
    if not folder.is_dir():
        _invalid(f"cannot write {text!r}: {str(folder)!r} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        _invalid(
            f"cannot write {text!r}: the folder {str(folder)!r} is not writable ({err.strerror})"
        )
    return path


def implementation_spec(text: str) -> str:
    """``package.module:factory`` (the form only; importing it is the command's first step)."""
    module, _, factory = text.partition(":")
    if text.count(":") != 1 or not module or not factory:
        _invalid(f"expected package.module:factory, got {text!r}")
    return text


# --------------------------------------------------------------------------- helpers


def _prog(args: argparse.Namespace) -> str:
    parts = ["flowmap-oracle", args.command]
    if getattr(args, "benchmark", None):
        parts.append(args.benchmark)
    return " ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _interrupted(args: argparse.Namespace, what: str) -> int:
    print(f"{_prog(args)}: interrupted (Ctrl-C); {what}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _command(args: argparse.Namespace) -> str:
    from .experiments.records import command_line

    return command_line(args.argv)


def _document(
    args: argparse.Namespace, results: list[Any], *, complete: bool, seconds: float, **extra: Any
) -> dict[str, Any]:
    """The JSON object every listing command writes (items last, each with its seconds)."""
    return {
        "command": _command(args),
        "complete": complete,
        "seconds": round(seconds, 3),
        **extra,
        "results": results,
    }


def _print_json(obj: Any) -> None:
    import json

    from .experiments.records import jsonable

    print(json.dumps(jsonable(obj), indent=2, allow_nan=False))


def _write_json(path: Path, obj: Any) -> Path:
    from .experiments.records import write_json

    try:
        return write_json(path, obj)
    except OSError as err:
        raise UsageError(f"cannot write {str(path)!r}: {err.strerror or err}") from None


def _wrote(path: Path | None, complete: bool = True) -> str:
    if path is None:
        return "nothing was written"
    return f"wrote {path}" + ("" if complete else " (marked incomplete)")


def _where(err: BaseException | None) -> str:
    """`` (file.py, line N)``: where ``err`` was raised in the user's code, or ``""``."""
    if err is None:
        return ""
    if isinstance(err, SyntaxError) and err.filename:
        return f" ({_short(err.filename)}, line {err.lineno})"
    package = str(Path(__file__).resolve().parent)
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not f.filename.startswith("<")
        and not str(Path(f.filename).resolve()).startswith(package)
        and "importlib" not in f.filename
    ]
    if not frames:
        return ""
    return f" ({_short(frames[-1].filename)}, line {frames[-1].lineno})"


def _short(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:
        return filename


def _load_implementation(spec: str) -> Implementation:
    """Import and build the implementation, then check that its declared conventions can work
    (a JAX float64 implementation needs ``jax_enable_x64``) before any check runs.

    Raises:
        UsageError: naming the problem and, for the user's own exceptions, the file and line.
    """
    from .oracle import ImplementationError, load_implementation
    from .oracle.adapters import ConventionError

    try:
        impl = load_implementation(spec)
    except ImplementationError as err:
        where = _where(err.__cause__)
        if where and where[2:].split(",")[0].rsplit(os.sep, 1)[-1] in str(err):
            where = ""  # the message names the user's file already
        raise UsageError(_one_line(f"{err}{where}")) from None
    except Exception as err:  # raised by the user's module while it was imported
        module = spec.partition(":")[0]
        what = err.msg if isinstance(err, SyntaxError) else err
        raise UsageError(
            _one_line(f"importing {module!r} raised {type(err).__name__}: {what}{_where(err)}")
        ) from None
    import torch

    try:  # one array into the declared framework and dtype: fails now rather than per check
        impl.adapter.array_to_user(torch.zeros(1, dtype=torch.float64))
    except ConventionError as err:
        raise UsageError(_one_line(f"{spec}: {err}")) from None
    except ImportError as err:
        framework = impl.conventions.framework
        raise UsageError(
            _one_line(f"{spec} declares framework {framework!r}, which cannot be imported: {err}")
        ) from None
    return impl


# --------------------------------------------------------------------------- commands


def _cmd_report(args: argparse.Namespace, progress: Progress) -> int:
    from .report_job import ReportInterrupted, build_report

    benchmarks = args.benchmarks
    if benchmarks is None and os.path.isdir("benchmarks"):
        benchmarks = "benchmarks"
    if benchmarks is not None and os.path.exists(benchmarks) and not os.path.isdir(benchmarks):
        raise UsageError(f"argument --benchmarks: {benchmarks!r} is a file, not a directory")
    timings: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    try:
        path = build_report(
            args.out,
            quick=args.quick,
            full=args.full,
            sections=args.sections,
            benchmarks_dir=benchmarks,
            progress=progress,
            cache=not args.no_cache,
            jobs=args.jobs,
            timings=timings,
        )
    except ReportInterrupted as stop:
        finished = ", ".join(stop.finished) or "none"
        return _interrupted(
            args,
            f"finished sections: {finished}; missing: {', '.join(stop.missing)}; "
            + _wrote(stop.path, complete=False),
        )
    print(f"wrote {path}")
    parts = [
        f"{name} " + ("cached" if t["cached"] else f"{t['seconds']:.1f} s")
        for name, t in timings.items()
    ]
    print(f"in {time.perf_counter() - start:.1f} s ({', '.join(parts)})")
    return EXIT_OK


def _cmd_objectives(args: argparse.Namespace, progress: Progress) -> int:
    if args.smoke_json is not None:
        return _smoke_training(args, progress)
    from .conventions import path_named
    from .experiments.fixed_points import OBJECTIVES, measure_fixed_points

    known = [spec.name for spec in OBJECTIVES]
    names = _only(args.only, known, "a fixed-point measurement")
    path = path_named(args.path)
    results: list[Any] = []
    interrupted = False
    start = time.perf_counter()
    with progress.bar(f"objectives ({args.path} path)", len(names)) as bar:
        try:
            for name in names:  # one at a time, for the progress display
                bar.start(name)
                results += measure_fixed_points([name], path=path)
                bar.advance()
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    if args.json:
        rows = [r.to_json() for r in results]
        _print_json(_document(args, rows, complete=not interrupted, seconds=seconds))
    else:
        print(f"path: {args.path}")
        print(f"{'objective':26s} type  kind         fixed-point residual  tolerance  perturbed")
        for r in results:
            print(
                f"{r.name:26s} ({r.loss_type})   {r.fixed_point_kind:12s} "
                f"{r.fixed_point_residual:20.3e}  {r.tolerance:9.1e}  {r.perturbed_residual:9.3e}"
            )
    if interrupted:
        return _interrupted(args, f"{len(results)} of {len(names)} objectives measured")
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED


def _only(chosen: list[str] | None, known: Sequence[str], what: str) -> list[str]:
    """``--only``'s names in the order given (``known`` when absent); each must be in
    ``known``."""
    if not chosen:
        return list(known)
    missing = [name for name in chosen if name not in known]
    if missing:
        raise UsageError(f"argument --only: no {what} for {missing}; available: {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def _smoke_training(args: argparse.Namespace, progress: Progress) -> int:
    from .experiments.smoke_training import (
        SMOKE_OBJECTIVES,
        smoke_steps,
        smoke_train,
        write_smoke_json,
    )

    if args.json:
        raise UsageError("--json does not apply to --smoke-json, which writes its JSON to PATH")
    if args.path != "linear":
        raise UsageError(
            "argument --path: --smoke-json trains on the ring8 teacher's linear path only; "
            "drop --path or --smoke-json"
        )
    names = _only(args.only, SMOKE_OBJECTIVES, "smoke training")
    runs: list[Any] = []
    interrupted = False
    total = sum(smoke_steps(name) for name in names)
    with progress.bar("smoke training", total, unit="step") as bar:
        try:
            for name in names:
                bar.start(name)
                runs.append(smoke_train(name, on_step=bar.advance))
        except KeyboardInterrupt:
            interrupted = True
    for run in runs:
        print(f"{run.name:26s} {run.metric:13s} {run.error_before:.3f} -> {run.error_after:.3f}")
    try:
        written = write_smoke_json(
            runs, args.smoke_json, command=_command(args), complete=not interrupted
        )
    except OSError as err:
        raise UsageError(f"cannot write {str(args.smoke_json)!r}: {err.strerror or err}") from None
    if interrupted:
        return _interrupted(
            args, f"{len(runs)} of {len(names)} objectives trained; {_wrote(written, False)}"
        )
    print(f"wrote {written}")
    return EXIT_OK


def _cmd_identities(args: argparse.Namespace, progress: Progress) -> int:
    from .identities import all_identities

    chosen = all_identities()
    if args.only:
        wanted = set(args.only)
        chosen = [i for i in chosen if i.id in wanted or i.family in wanted]
        unknown = wanted - {i.id for i in chosen} - {i.family for i in chosen}
        if unknown:
            known = ", ".join(i.id for i in all_identities())
            raise UsageError(f"unknown id or family {sorted(unknown)}; known ids: {known}")
    results: list[Any] = []
    interrupted = False
    start = time.perf_counter()
    with progress.bar("identities", len(chosen)) as bar:
        try:
            for identity in chosen:
                bar.start(identity.id)
                results.append(identity.check())
                bar.advance()
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    if args.json:
        rows = [r.to_json() for r in results]
        _print_json(_document(args, rows, complete=not interrupted, seconds=seconds))
    else:
        print(f"{'identity':36s} status  twins     symbolic  numeric residual  seconds")
        for r in results:
            twins = f"{sum(tw.rejected for tw in r.twins)}/{len(r.twins)} rej"
            resid = "-" if r.residual is None else f"{r.residual:.1e}"
            sym = "pass" if r.symbolic.passed else "FAIL"
            print(f"{r.id:36s} {r.status:6s}  {twins:9s} {sym:9s} {resid:>16s}  {r.seconds:7.2f}")
        n_pass = sum(r.status == "pass" for r in results)
        n_twin = sum(r.twin_rejected for r in results)
        print(
            f"{n_pass}/{len(results)} pass, wrong twins rejected for {n_twin}/{len(results)}; "
            f"symbolic checks {sum(r.symbolic_seconds for r in results):.1f} s, "
            f"all checks {sum(r.seconds for r in results):.1f} s"
        )
    if interrupted:
        return _interrupted(args, f"{len(results)} of {len(chosen)} identities checked")
    ok = all(r.status == "pass" and r.twin_rejected for r in results)
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_check(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from .oracle import OracleSettings, SkipReason
    from .oracle.runner import finish_results, plan_checks

    if args.json is not None and args.pdf is not None and args.json.resolve() == args.pdf.resolve():
        raise UsageError("--json and --pdf name the same file")
    impl = _load_implementation(args.implementation)
    settings = OracleSettings(profile=args.profile)
    wanted = set(args.only or ())
    steps = plan_checks(impl, settings, objectives=wanted or None)
    print(f"{impl.name}: {impl.conventions.describe()}; {settings.describe()}", flush=True)
    results: list[Any] = []
    interrupted = False
    start = time.perf_counter()
    with progress.bar("checks", len(steps)) as bar:
        try:
            for step in steps:  # one at a time, for the progress display
                bar.start(step.label)
                results += step.run()
                bar.advance()
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    nothing = False
    if not interrupted:  # a run that checked nothing fails, as run_checks reports it
        finished = finish_results(impl, results)
        nothing = len(finished) > len(results)
        results = finished
    not_provided = sorted(
        {
            ".".join(r.check.split(".")[:2])
            for r in results
            if r.skip_reason is SkipReason.NOT_PROVIDED
        }
    )
    for r in results:
        if r.skip_reason is not SkipReason.NOT_PROVIDED:
            first = r.message.splitlines()[0] if r.message else ""
            print(f"  {r.status:4s}  {r.check:42s} {first}")
    if not_provided:
        print(f"  skip  (not provided) {', '.join(not_provided)}")
    for r in results:
        if r.status == "fail":
            print("\n" + r.report())
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    written: list[str] = []
    if args.json is not None:
        doc = _document(
            args,
            [r.to_json() for r in results],
            complete=not interrupted,
            seconds=seconds,
            implementation={
                "name": impl.name,
                "spec": impl.spec,
                "conventions": impl.conventions.as_dict(),
            },
            settings=settings.describe(),
            counts=counts,
        )
        written.append(str(_write_json(args.json, doc)))
    if args.pdf is not None:
        from .reports.oracle_section import write_check_report

        note = None
        if interrupted:
            note = (
                f"The run was interrupted (Ctrl-C) after {len(results)} of {len(steps)} "
                "checks; the checks that did not run are not listed."
            )
        try:
            written.append(
                str(write_check_report(args.pdf, impl, results, settings, incomplete=note))
            )
        except OSError as err:
            raise UsageError(f"cannot write {str(args.pdf)!r}: {err.strerror or err}") from None
    print(json.dumps(counts))
    if interrupted:
        wrote = f"wrote {', '.join(written)} (marked incomplete)" if written else "nothing written"
        return _interrupted(args, f"{len(results)} of {len(steps)} checks finished; {wrote}")
    if nothing:
        print(
            f"{_prog(args)}: nothing was checked: all {len(results) - 1} selected checks were "
            "skipped (see the reasons above); that is a failure, not a pass",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_FAILED if counts["fail"] else EXIT_OK


def _cmd_mutants(args: argparse.Namespace, progress: Progress) -> int:
    from .oracle.mutants import mutant_names, run_mutant

    names = mutant_names()
    rows: list[Any] = []
    interrupted = False
    start = time.perf_counter()
    with progress.bar("mutants", len(names)) as bar:
        try:
            for name in names:  # one at a time, for the progress display
                bar.start(name)
                rows.append(run_mutant(name))
                bar.advance()
        except KeyboardInterrupt:
            interrupted = True
    seconds = time.perf_counter() - start
    killed = sum(m.killed for m in rows)
    if args.json:
        doc = _document(
            args,
            [m.to_json() for m in rows],
            complete=not interrupted,
            seconds=seconds,
            killed=killed,
        )
        _print_json(doc)
    else:
        print(f"{'mutant':46s} {'objective':9s} {'result':8s} killed by")
        for m in rows:
            verdict = "killed" if m.killed else "SURVIVED"
            print(f"{m.mutant:46s} {m.objective:9s} {verdict:8s} {m.by or '-'}")
        if rows:
            print(f"{killed}/{len(rows)} mutants killed ({100 * killed / len(rows):.0f} %)")
    if interrupted:
        return _interrupted(args, f"{len(rows)} of {len(names)} mutants run")
    return EXIT_OK if all(m.killed for m in rows) else EXIT_FAILED


def _cmd_bench_teachers(args: argparse.Namespace, progress: Progress) -> int:
    from .experiments.bench_teachers import format_result, run_teacher_benchmark, stage_count
    from .experiments.records import environment

    finished: dict[str, Any] = {}
    n_baselines = None if args.baselines is None else len(args.baselines)
    total = stage_count(args.repeats, n_baselines)
    with progress.bar(f"bench teachers, n={args.n}", total) as bar:
        started = [False]

        def stage(label: str) -> None:
            if started[0]:
                bar.advance()
            started[0] = True
            bar.start(label)

        try:
            result = run_teacher_benchmark(
                args.n,
                preset_name=args.preset,
                rtol=args.rtol,
                atol=args.atol,
                device=args.device,
                seed=args.seed,
                repeats=args.repeats,
                baselines=args.baselines,
                command=_command(args),
                progress=stage,
                finished=finished,
            )
        except KeyboardInterrupt:
            written = None
            if args.json is not None:
                partial = {
                    "command": _command(args),
                    "complete": False,
                    "n": args.n,
                    "preset": args.preset,
                    "rtol": args.rtol,
                    "atol": args.atol if args.atol is not None else args.rtol,
                    "device": args.device,
                    "finished_stages": finished,
                    "environment": environment(args.device),
                }
                written = _write_json(args.json, partial)
            return _interrupted(
                args, f"{len(finished)} stages finished; {_wrote(written, complete=False)}"
            )
    print(format_result(result))
    if args.json is not None:
        record = {**result.to_json(), "complete": True, "stages": finished}
        print(f"wrote {_write_json(args.json, record)}")
    return EXIT_OK


def _cmd_bench_meanflow(args: argparse.Namespace, progress: Progress) -> int:
    from .experiments.meanflow_one_step import meanflow_one_step_experiment
    from .experiments.records import environment

    runs = []
    velocities = ("teacher", "conditional")
    interrupted = False
    with progress.bar("bench meanflow", len(velocities) * args.steps, unit="step") as bar:
        try:
            for velocity in velocities:
                bar.start(f"v = {velocity}")
                r = meanflow_one_step_experiment(
                    teacher_name=args.preset,
                    steps=args.steps,
                    velocity=velocity,
                    seed=args.seed,
                    on_step=bar.advance,
                ).summary()
                runs.append(r)
                print(
                    f"MeanFlow on {r['teacher']}, v = {velocity}: one-step error "
                    f"{r['error_before']:.4f} -> {r['error_after']:.4f} after {r['steps']} steps "
                    f"({r['seconds']:.1f} s)",
                    flush=True,
                )
        except KeyboardInterrupt:
            interrupted = True
    written = None
    if args.json is not None:
        record = {
            "command": _command(args),
            "complete": not interrupted,
            **environment("cpu"),
            "runs": runs,
        }
        written = _write_json(args.json, record)
    if interrupted:
        return _interrupted(
            args, f"{len(runs)} of {len(velocities)} runs finished; {_wrote(written, False)}"
        )
    if written is not None:
        print(f"wrote {written}")
    return EXIT_OK


# --------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n"
        )


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress display (it is shown on stderr only when stderr is a terminal)",
    )
    return common


def _bench_parser(
    bench: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    func: Callable[[argparse.Namespace, Progress], int],
    seed_help: str,
) -> argparse.ArgumentParser:
    """A ``bench <name>`` parser with the options every benchmark shares: ``--json``,
    ``--preset``, ``--seed`` and ``--threads`` (applied before ``func`` runs)."""

    def run(args: argparse.Namespace, progress: Progress) -> int:
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        return func(args, progress)

    p = bench.add_parser(name, help=help, parents=[_common()])
    p.add_argument("--json", metavar="PATH", type=output_path, help="write the result as JSON")
    p.add_argument(
        "--preset", default="ring8", type=preset_name, help="teacher preset (default ring8)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help=seed_help)
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads, at least 1 (default: leave torch's choice)",
    )
    p.set_defaults(func=run)
    return p


def _add_bench_teachers(bench: argparse._SubParsersAction) -> None:
    p = _bench_parser(
        bench,
        "teachers",
        help="exact flow map vs a plain torchdiffeq dopri5 baseline (speed, error, memory)",
        func=_cmd_bench_teachers,
        seed_help="seed of the noise draw",
    )
    p.add_argument(
        "--n",
        type=point_count,
        default=10_000,
        help=f"number of noise points, 1 to {MAX_POINTS_TEXT} (larger is refused; 1e5 is fine)",
    )
    p.add_argument(
        "--rtol", type=positive_float, default=1e-9, help="rtol of every solve (> 0; 1e-9)"
    )
    p.add_argument(
        "--atol", type=positive_float, default=None, help="atol of every solve (> 0; = rtol)"
    )
    p.add_argument(
        "--device", default="cpu", type=device_name, help="cpu, or cuda when it is available"
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="timed repeats, at least 1 (the fastest counts)",
    )
    p.add_argument(
        "--baselines",
        metavar="NAMES",
        type=baseline_names,
        default=None,
        help="comma-separated baselines to compare with (default: all of "
        "torchdiffeq_dopri5, torchdiffeq_dopri8, torchdiffeq_dopri5_logsumexp, diffrax_dopri5, "
        "diffrax_dopri8, diffrax_tsit5, scipy_dop853)",
    )


def _add_bench_meanflow(bench: argparse._SubParsersAction) -> None:
    p = _bench_parser(
        bench,
        "meanflow",
        help="train MeanFlow (teacher and conditional velocity) and measure the one-step error",
        func=_cmd_bench_meanflow,
        seed_help="seed of initialisation and data",
    )
    p.add_argument(
        "--steps", type=positive_int, default=2000, help="training steps per run (at least 1)"
    )


def _objective_name(text: str) -> str:
    """``bench objectives --objectives``: a method name the benchmark trains."""
    from .experiments.bench_objectives import OBJECTIVES

    name = method_name(text)
    if name not in OBJECTIVES:
        _invalid(f"the benchmark does not train {name!r}; it trains: {', '.join(OBJECTIVES)}")
    return name


def _ray_address(text: str) -> str:
    """``bench objectives --ray``: ``auto`` or ``HOST:PORT`` / ``ray://HOST:PORT``."""
    from .experiments.ray_backend import check_address

    try:
        return check_address(text)
    except ValueError as err:
        _invalid(str(err))


def _objectives_config(args: argparse.Namespace) -> Any:
    """The grid the options ask for (one line and exit 2 on a bad combination)."""
    from dataclasses import replace

    from .experiments.bench_objectives import auto_config, cpu_config, gpu_config

    if args.device == "auto":
        config = auto_config(quick=args.quick)
    elif args.device.startswith("cuda"):
        config = gpu_config(device=args.device)
    else:
        config = cpu_config(quick=args.quick)
    changes: dict[str, Any] = {}
    for option, attr in (
        ("teachers", "teachers"),
        ("objectives", "objectives"),
        ("paths", "paths"),
        ("steps", "steps"),
    ):
        value = getattr(args, option)
        if value:
            changes[attr] = tuple(dict.fromkeys(value))
    for option in ("seeds", "train_steps", "batch"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    if args.threads is not None:
        changes["threads"] = args.threads
    try:
        return replace(config, **changes)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _cmd_bench_objectives(args: argparse.Namespace, progress: Progress) -> int:
    from .experiments.bench_objectives import (
        ResultStore,
        bench_environment,
        format_summary,
        plan_tasks,
        run_grid,
        summarise,
    )

    config = _objectives_config(args)
    if args.ray is not None:
        from .experiments.ray_backend import INSTALL_HINT, ray_available

        if not ray_available():
            raise UsageError(f"argument --ray: Ray is not installed; {INSTALL_HINT}")
    store_path = args.store or Path(f"build/bench-objectives-{config.name}.jsonl")
    store = ResultStore(store_path)
    try:
        tasks = plan_tasks(config, store.finished())
    except OSError as err:
        raise UsageError(f"argument --store: cannot read {str(store_path)!r}: {err}") from None
    start = time.perf_counter()
    interrupted, failed = False, 0
    with progress.bar("bench objectives", len(tasks), unit="task") as bar:

        def done(task: Any, records: list[dict[str, Any]]) -> None:
            bar.advance()

        try:
            if args.ray is not None:
                from .experiments.ray_backend import run_grid_ray

                failed = len(
                    run_grid_ray(config, store, address=args.ray, on_done=done, tasks=tasks).failed
                )
            else:
                failed = len(
                    run_grid(
                        config,
                        store,
                        tasks=tasks,
                        on_task=lambda task: bar.start(task.label),
                        on_done=done,
                    ).failed
                )
        except KeyboardInterrupt:
            interrupted = True
    keys = {(o, t, p) for o in config.objectives for t in config.teachers for p in config.paths}
    cells = [
        r
        for r in store.latest()
        if r.get("config") == config.name
        and (r["objective"], r["teacher"], r["path"]) in keys
        and int(r["seed"]) < config.seeds
        and int(r["steps"]) in config.steps
        and int(r["train_steps"]) == config.train_steps
        and int(r["batch"]) == config.batch
    ]
    print(format_summary(summarise(cells)))
    written = None
    if args.json is not None:
        document = _document(
            args,
            cells,
            complete=not interrupted,
            seconds=time.perf_counter() - start,
            config=config.to_json(),
            store=str(store_path),
            tasks_run=len(tasks),
            environment=bench_environment(config.device),
        )
        written = _write_json(args.json, document)
    if interrupted:
        return _interrupted(args, f"finished cells are in {store_path}; {_wrote(written, False)}")
    print(f"{len(tasks)} tasks run, {failed} failed; store {store_path}")
    if written is not None:
        print(f"wrote {written}")
    return EXIT_FAILED if failed else EXIT_OK


def _add_bench_objectives(bench: argparse._SubParsersAction) -> None:
    from .conventions import PATH_NAMES

    p = bench.add_parser(
        "objectives",
        help="train every objective on the teachers and measure it against the exact map",
        parents=[_common()],
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one teacher (ring8, linear path), 2 seeds, 1000 steps: about 10 min",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        type=output_path,
        help="write the grid's cells (one object each) as JSON",
    )
    p.add_argument(
        "--store",
        metavar="PATH",
        type=output_path,
        help="the JSON-lines results store (finished cells are skipped on a rerun; "
        "default build/bench-objectives-CONFIG.jsonl)",
    )
    p.add_argument(
        "--teachers",
        nargs="+",
        metavar="PRESET",
        type=preset_name,
        help="teacher presets (default: the configuration's)",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        metavar="NAME",
        type=_objective_name,
        help="objectives (default: all)",
    )
    p.add_argument(
        "--paths",
        nargs="+",
        metavar="PATH",
        choices=PATH_NAMES,
        help="probability paths (default: the configuration's)",
    )
    p.add_argument("--seeds", type=positive_int, default=None, help="number of seeds (>= 1)")
    p.add_argument(
        "--steps",
        nargs="+",
        type=positive_int,
        metavar="K",
        help="sampling steps (default 1 2 4 8)",
    )
    p.add_argument(
        "--train-steps",
        type=positive_int,
        default=None,
        help="training steps per run (default: the configuration's)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help="batch per seed, a multiple of 32 (default 256)",
    )
    p.add_argument(
        "--device",
        default="auto",
        type=lambda text: text if text == "auto" else device_name(text),
        help="auto (cuda when available: the GPU configuration), cpu or cuda",
    )
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        type=_ray_address,
        default=None,
        help="run every task on Ray (auto: a new local cluster or RAY_ADDRESS)",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads per task (default 1)"
    )
    p.set_defaults(func=_cmd_bench_objectives)


# Each entry adds one ``flowmap-oracle bench <name>`` subcommand to the ``bench`` group.
BENCHMARKS = [_add_bench_teachers, _add_bench_meanflow, _add_bench_objectives]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    from .conventions import PATH_NAMES

    parser = _Parser(
        prog="flowmap-oracle",
        description="Verification suite for diffusion distillation (flow maps). Exit status: "
        "0 success; 1 checks failed or nothing was checked; 2 bad usage or input; "
        "3 internal error; 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    p = sub.add_parser(
        "report", help="write the PDF report (identities, oracle, benchmarks)", parents=[common]
    )
    p.add_argument(
        "--out",
        default="build/flowmap-oracle-report.pdf",
        type=output_path,
        help="PDF path to write",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--quick", action="store_true", help="shorter training runs (for tests and previews)"
    )
    length.add_argument(
        "--full",
        action="store_true",
        help="the long runs: 2000 training steps, every fixed point, the example implementations",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="compute every section (by default a section computed by the same code is read "
        "from ~/.cache/flowmap-oracle)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="sections computed at once, each in its own process (default: 2, or 1 on one core)",
    )
    p.add_argument(
        "--sections",
        metavar="NAMES",
        type=section_names,
        help="comma-separated subset of sections (identities, teachers, training, objectives, "
        "oracle); all by default",
    )
    p.add_argument(
        "--benchmarks",
        metavar="DIR",
        help="directory of committed benchmark JSON records (teachers*.json) to show; default: "
        "./benchmarks when it exists",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "objectives",
        help="list every objective with its fixed-point residual at the exact teacher map",
        parents=[common],
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        type=method_name,
        help="measure (or with --smoke-json train) only these objectives (default all)",
    )
    p.add_argument(
        "--path",
        default="linear",
        choices=PATH_NAMES,
        help="the probability path of the teacher and of every objective (default linear)",
    )
    p.add_argument(
        "--smoke-json",
        metavar="PATH",
        type=output_path,
        help="instead, run the smoke training of every objective (or --only's) and write it "
        "as JSON",
    )
    p.set_defaults(func=_cmd_objectives)

    p = sub.add_parser(
        "identities",
        help="check every symbolic identity and its wrong twins (table or JSON)",
        parents=[common],
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument(
        "--only", nargs="+", metavar="ID", help="check only these ids or families (default all)"
    )
    p.set_defaults(func=_cmd_identities)

    p = sub.add_parser(
        "check",
        help="run the oracle on an implementation (exit 0: every applicable check passes)",
        parents=[common],
    )
    p.add_argument(
        "implementation",
        metavar="PACKAGE.MODULE:FACTORY",
        type=implementation_spec,
        help="the factory",
    )
    p.add_argument(
        "--json", metavar="PATH", type=output_path, help="write the results as a JSON object"
    )
    p.add_argument(
        "--pdf", metavar="PATH", type=output_path, help="write the check report as a PDF"
    )
    p.add_argument(
        "--profile", default="ci", choices=["ci", "thorough"], help="hypothesis draws per check"
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="OBJECTIVE",
        type=check_objective,
        help="check only these objectives (method names, model, sampler or network)",
    )
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "mutants", help="run the oracle on every mutant and print the kill table", parents=[common]
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_cmd_mutants)

    p = sub.add_parser("bench", help="benchmarks (each prints a summary and can write JSON)")
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for add in BENCHMARKS:
        add(bench)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status (see the module
    docstring: 0, 1, 2, 3 or 130)."""
    args: argparse.Namespace | None = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help (0) or a usage error (2, its line already printed)
            return stop.code if isinstance(stop.code, int) else EXIT_USAGE
        args.argv = None if argv is None else list(argv)
        progress = Progress(quiet=args.quiet)
        return int(args.func(args, progress) or 0)
    except UsageError as err:
        prog = "flowmap-oracle" if args is None else _prog(args)
        print(f"{prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        prog = "flowmap-oracle" if args is None else _prog(args)
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``flowmap-oracle identities --json | head``): stop quietly,
        # and keep Python from reporting the closed pipe again when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        print(
            "flowmap-oracle: internal error (a bug in flowmap-oracle, not in your code or "
            "input); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
