"""The ``flowmap-oracle`` console script.

Each subcommand is a small function here that calls the library; the work lives in the package
named after it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .conventions import PATH_NAMES, Method, path_named

__all__ = ["main"]


def _cmd_report(args: argparse.Namespace) -> int:
    from .report_job import build_report

    sections = args.sections.split(",") if args.sections else None
    benchmarks = args.benchmarks
    if benchmarks is None and os.path.isdir("benchmarks"):
        benchmarks = "benchmarks"
    try:
        path = build_report(
            args.out, quick=args.quick, sections=sections, benchmarks_dir=benchmarks
        )
    except ValueError as err:
        print(f"flowmap-oracle report: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _cmd_objectives(args: argparse.Namespace) -> int:
    import json

    from .experiments.fixed_points import measure_fixed_points

    if args.smoke_json:
        from .experiments.records import command_line
        from .experiments.smoke_training import smoke_train_all, write_smoke_json

        runs = smoke_train_all()
        for run in runs:
            print(
                f"{run.name:26s} {run.metric:13s} {run.error_before:.3f} -> {run.error_after:.3f}"
            )
        command = command_line(args.argv)
        print(f"wrote {write_smoke_json(runs, args.smoke_json, command=command)}")
        return 0
    try:
        methods = [Method.parse(name) for name in args.only or ()]
    except ValueError as err:
        print(f"flowmap-oracle objectives: {err}", file=sys.stderr)
        return 2
    results = measure_fixed_points(methods or None, path=path_named(args.path))
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(f"path: {args.path}")
        print(f"{'objective':26s} type  kind         fixed-point residual  tolerance  perturbed")
        for r in results:
            print(
                f"{r.name:26s} ({r.loss_type})   {r.fixed_point_kind:12s} "
                f"{r.fixed_point_residual:20.3e}  {r.tolerance:9.1e}  {r.perturbed_residual:9.3e}"
            )
    return 0 if all(r.passed for r in results) else 1


def _cmd_identities(args: argparse.Namespace) -> int:
    import json

    from .identities import all_identities

    chosen = all_identities()
    if args.only:
        wanted = set(args.only)
        chosen = [i for i in chosen if i.id in wanted or i.family in wanted]
        unknown = wanted - {i.id for i in chosen} - {i.family for i in chosen}
        if unknown:
            known = ", ".join(i.id for i in all_identities())
            print(
                f"flowmap-oracle identities: unknown id or family {sorted(unknown)}; "
                f"known ids: {known}",
                file=sys.stderr,
            )
            return 2
    results = [identity.check() for identity in chosen]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
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
    ok = all(r.status == "pass" and r.twin_rejected for r in results)
    return 0 if ok else 1


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from .experiments.records import write_json
    from .oracle import (
        ImplementationError,
        OracleSettings,
        SkipReason,
        checks_for,
        load_implementation,
        run_checks,
    )

    known = {c.objective for c in checks_for()}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        print(
            f"flowmap-oracle check: unknown objective(s) {unknown}; known: {sorted(known)}",
            file=sys.stderr,
        )
        return 2
    try:
        impl = load_implementation(args.implementation)
    except ImplementationError as err:
        print(f"flowmap-oracle check: {err}", file=sys.stderr)
        return 2
    settings = OracleSettings(profile=args.profile)
    results = run_checks(impl, settings, objectives=args.only)
    print(f"{impl.name}: {impl.conventions.describe()}; {settings.describe()}")
    not_provided = sorted(
        {
            ".".join(r.check.split(".")[:2])
            for r in results
            if r.skip_reason is SkipReason.NOT_PROVIDED
        }
    )
    for r in results:
        if r.skip_reason is not SkipReason.NOT_PROVIDED:
            print(f"  {r.status:4s}  {r.check:42s} {r.message.splitlines()[0][:90]}")
    if not_provided:
        print(f"  skip  (not provided) {', '.join(not_provided)}")
    for r in results:
        if r.status == "fail":
            print("\n" + r.report())
    if args.json:
        write_json(args.json, [r.to_json() for r in results])
    if args.pdf:
        from .reports.oracle_section import write_check_report

        write_check_report(args.pdf, impl, results, settings)
    failed = sum(r.status == "fail" for r in results)
    print(json.dumps({s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}))
    return 1 if failed else 0


def _cmd_mutants(args: argparse.Namespace) -> int:
    import json

    from .oracle.mutants import run_mutants

    rows = run_mutants()
    if args.json:
        print(json.dumps([m.to_json() for m in rows], indent=2))
    else:
        print(f"{'mutant':46s} {'objective':9s} {'result':8s} killed by")
        for m in rows:
            verdict = "killed" if m.killed else "SURVIVED"
            print(f"{m.mutant:46s} {m.objective:9s} {verdict:8s} {m.by or '-'}")
        killed = sum(m.killed for m in rows)
        print(f"{killed}/{len(rows)} mutants killed ({100 * killed / len(rows):.0f} %)")
    return 0 if all(m.killed for m in rows) else 1


def _cmd_bench_teachers(args: argparse.Namespace) -> int:
    from .experiments.bench_teachers import format_result, run_teacher_benchmark
    from .experiments.records import command_line, write_json

    result = run_teacher_benchmark(
        args.n,
        preset_name=args.preset,
        rtol=args.rtol,
        device=args.device,
        seed=args.seed,
        repeats=args.repeats,
        command=command_line(args.argv),
    )
    print(format_result(result))
    if args.json:
        print(f"wrote {write_json(args.json, result.to_json())}")
    return 0


def _bench_parser(
    bench: argparse._SubParsersAction, name: str, *, help: str, func, seed_help: str
) -> argparse.ArgumentParser:
    """A ``bench <name>`` parser with the options every benchmark shares: ``--json``,
    ``--preset``, ``--seed`` and ``--threads`` (applied before ``func`` runs)."""

    def run(args: argparse.Namespace) -> int:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return func(args)

    p = bench.add_parser(name, help=help)
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--preset", default="ring8", help="teacher preset (default ring8)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
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
    p.add_argument("--n", type=int, default=10_000, help="number of noise points")
    p.add_argument("--rtol", type=float, default=1e-9, help="rtol = atol of every solve")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats (the fastest counts)")


def _cmd_bench_meanflow(args: argparse.Namespace) -> int:
    from .experiments.meanflow_one_step import meanflow_one_step_experiment
    from .experiments.records import command_line, environment, write_json

    runs = []
    for velocity in ("teacher", "conditional"):
        r = meanflow_one_step_experiment(
            teacher_name=args.preset, steps=args.steps, velocity=velocity, seed=args.seed
        ).summary()
        runs.append(r)
        print(
            f"MeanFlow on {r['teacher']}, v = {velocity}: one-step error "
            f"{r['error_before']:.4f} -> {r['error_after']:.4f} after {r['steps']} steps "
            f"({r['seconds']:.1f} s)"
        )
    if args.json:
        record = {"command": command_line(args.argv), **environment("cpu"), "runs": runs}
        print(f"wrote {write_json(args.json, record)}")
    return 0


def _add_bench_meanflow(bench: argparse._SubParsersAction) -> None:
    p = _bench_parser(
        bench,
        "meanflow",
        help="train MeanFlow (teacher and conditional velocity) and measure the one-step error",
        func=_cmd_bench_meanflow,
        seed_help="seed of initialisation and data",
    )
    p.add_argument("--steps", type=int, default=2000, help="training steps per run")


# Each entry adds one ``flowmap-oracle bench <name>`` subcommand to the ``bench`` group.
BENCHMARKS = [_add_bench_teachers, _add_bench_meanflow]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flowmap-oracle",
        description="Verification suite for diffusion distillation (flow maps).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("report", help="write the PDF report (identities, oracle, benchmarks)")
    p.add_argument("--out", default="build/flowmap-oracle-report.pdf", help="PDF path to write")
    p.add_argument(
        "--quick", action="store_true", help="shorter training runs (for tests and previews)"
    )
    p.add_argument(
        "--sections",
        metavar="NAMES",
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
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per objective")
    p.add_argument(
        "--only", nargs="+", metavar="NAME", help="measure only these objectives (default all)"
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
        help="instead, run the smoke training of every objective and write it as JSON",
    )
    p.set_defaults(func=_cmd_objectives)

    p = sub.add_parser(
        "identities",
        help="check every symbolic identity and its wrong twins (table or JSON)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per identity")
    p.add_argument(
        "--only", nargs="+", metavar="ID", help="check only these ids or families (default all)"
    )
    p.set_defaults(func=_cmd_identities)

    p = sub.add_parser(
        "check",
        help="run the oracle on an implementation (exit 0: every applicable check passes)",
    )
    p.add_argument("implementation", metavar="PACKAGE.MODULE:FACTORY", help="the factory")
    p.add_argument("--json", metavar="PATH", help="write one JSON object per check")
    p.add_argument("--pdf", metavar="PATH", help="write the check report as a PDF")
    p.add_argument(
        "--profile", default="ci", choices=["ci", "thorough"], help="hypothesis draws per check"
    )
    p.add_argument("--only", nargs="+", metavar="OBJECTIVE", help="check only these objectives")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("mutants", help="run the oracle on every mutant and print the kill table")
    p.add_argument("--json", action="store_true", help="print one JSON object per mutant")
    p.set_defaults(func=_cmd_mutants)

    p = sub.add_parser("bench", help="benchmarks (each prints a summary and can write JSON)")
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for add in BENCHMARKS:
        add(bench)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (``flowmap-oracle identities --json | head``): stop quietly,
        # and keep Python from reporting the closed pipe again when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
