"""The ``flowmap-oracle`` console script.

Each subcommand is a small function here that calls the library; the work lives in the package
named after it (``identities``, ``reference_models``, ``numerics``, ``reports``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _cmd_report(args: argparse.Namespace) -> int:
    from .reports.report import build_report

    path = build_report(args.out, quick=args.quick)
    print(f"wrote {path}")
    return 0


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
    p.set_defaults(func=_cmd_report)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
