"""Report pages of the oracle: the section of the full report, and the standalone check report.

* :func:`add_oracle_section` (the full report) lays out an :class:`OracleSectionInputs`: the
  oracle run on the reference implementation (every check must pass), the mutant kill table
  (every mutant must be killed), and, outside ``quick`` mode, the runs on the example
  implementations in other conventions.
* :func:`write_check_report` (``flowmap-oracle check ... --pdf``): a header naming the
  implementation, its declared conventions and the settings, a summary, one row per check, and
  each failure in full with its reproduction snippet.

Neither runs a check: the callers pass the results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .document import ReportDocument
from .notation import Inline, auto, literal

if TYPE_CHECKING:
    from ..oracle import CheckResult, Implementation, OracleSettings
    from ..oracle.mutants import MutantResult

__all__ = [
    "EXAMPLES",
    "ExampleRun",
    "OracleSectionInputs",
    "add_oracle_section",
    "write_check_report",
]

EXAMPLES = (
    "examples.jax_meanflow:implementation",
    "examples.torch_edm_consistency:implementation",
    "examples.torch_shortcut:implementation",
)
"""Independent implementations in other conventions (in the repository's ``examples/``)."""


@dataclass(frozen=True)
class ExampleRun:
    """The oracle run on one example implementation."""

    name: str
    conventions: str
    results: tuple[CheckResult, ...]


@dataclass(frozen=True)
class OracleSectionInputs:
    """What the oracle section lays out.

    Attributes:
        settings: the oracle settings every run used.
        n_checks: the number of checks the oracle has.
        reference_results: the run on the reference implementation.
        mutant_results: the kill table.
        example_results: the runs on :data:`EXAMPLES`; ``None`` leaves that part out (quick).
    """

    settings: OracleSettings
    n_checks: int
    reference_results: tuple[CheckResult, ...]
    mutant_results: tuple[MutantResult, ...]
    example_results: tuple[ExampleRun, ...] | None = None


def _counts(results: Sequence[CheckResult]) -> str:
    n = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    return f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"


def _first_line(text: str, width: int = 240) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _results_table(doc: ReportDocument, results: Sequence[CheckResult]) -> None:
    doc.table(
        [[r.check, r.status, f"{r.seconds:.2f}", auto(_first_line(r.message))] for r in results],
        header=["check", "status", "s", "message"],
    )


def _kill_table(doc: ReportDocument, rows: Sequence[MutantResult]) -> None:
    doc.table(
        [
            [m.mutant, "killed" if m.killed else "SURVIVED", m.by or "-", auto(m.description)]
            for m in rows
        ],
        header=["mutant", "result", "killed by", "the bug"],
    )


def add_oracle_section(doc: ReportDocument, results: OracleSectionInputs) -> None:
    """The oracle's section: reference run, mutant kill table, example runs (when given)."""
    doc.heading("The oracle: conformance checks of other implementations")
    doc.paragraph(
        "The oracle checks someone else's implementation of a target, a loss or a flow-map step "
        "against the reference objectives, after mapping its declared conventions (noise at "
        r"$t = 0$ or $t = 1$, EDM $\sigma$, TrigFlow angle; network signature; average-velocity, "
        r"$x_0$ or $\varepsilon$ output; torch or JAX; dtype) onto the project's. Checks compare "
        "pointwise on random "
        "networks and at the exact flow map of the curved 8-mode ring teacher, at explicit corner "
        "cases and at times drawn by hypothesis; gradients and stop-gradients (reverse and forward "
        f"mode) are compared too. Settings: {literal(results.settings.describe())}."
    )
    reference = results.reference_results
    doc.heading("Reference implementation", level=2)
    doc.paragraph(f"{results.n_checks} checks on the reference: {_counts(reference)}.")
    _results_table(doc, reference)

    rows = results.mutant_results
    killed = sum(m.killed for m in rows)
    doc.heading("Proof by mutants: the kill table", level=2)
    doc.paragraph(
        f"Each mutant is the reference with one bug seen in practice or easy to make. "
        f"{killed} of {len(rows)} mutants killed (kill rate {100 * killed / len(rows):.0f} %); "
        f"the kill run took {sum(m.seconds for m in rows):.1f} s."
    )
    _kill_table(doc, rows)

    if results.example_results is None:
        return
    doc.heading("Independent example implementations", level=2)
    doc.table(
        [[ex.name, ex.conventions, _counts(ex.results)] for ex in results.example_results],
        header=["implementation", "declared conventions", "result"],
    )


def write_check_report(
    path: str | os.PathLike,
    impl: Implementation,
    results: Sequence[CheckResult],
    settings: OracleSettings,
    *,
    incomplete: str | None = None,
) -> Path:
    """Write the standalone PDF report of one ``flowmap-oracle check`` run (atomically);
    ``incomplete`` is a sentence saying the run was interrupted (shown at the top)."""
    doc = ReportDocument(Inline(f"flowmap-oracle check: {auto(impl.name)}"))
    if incomplete:
        doc.paragraph(f"Incomplete run. {literal(incomplete)}")
    doc.heading("Implementation", level=2)
    rows = [
        ["implementation", auto(impl.name)],
        ["factory", impl.spec or "(constructed in process)"],
        ["description", auto(impl.description) if impl.description else "-"],
        ["provides", ", ".join(impl.provided()) or "-"],
        ["loss reduction", impl.loss_reduction],
    ]
    rows += [[f"convention: {k}", str(v)] for k, v in impl.conventions.as_dict().items()]
    doc.table(rows)
    doc.heading("Settings", level=2)
    # The one thing this module reads itself: the machine's description (python, library
    # versions), as every committed result records it. It measures nothing.
    from ..experiments.records import environment

    env = environment("cpu")  # the checks run on the CPU
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    doc.paragraph(literal(f"{settings.describe()}; python {env['python']}, {versions}."))
    failed = [r for r in results if r.status == "fail"]
    doc.heading("Summary", level=2)
    doc.paragraph(
        f"{_counts(results)}. "
        + (
            "Failures are listed below."
            if failed
            else "Every check that ran passes."
            if incomplete
            else "Every applicable check passes."
        )
    )
    _results_table(doc, results)
    for r in results:
        if r.weights is not None:
            _implied_weights(doc, r)
    for r in failed:
        doc.heading(literal(f"Failure: {r.check}"), level=3)
        doc.paragraph(auto(r.description))
        doc.code(r.message)
        if r.reproduce:
            doc.paragraph("Reproduce with:")
            doc.code(r.reproduce)
    return doc.save(path)


def _implied_weights(doc: ReportDocument, r: CheckResult) -> None:
    """The weighting a loss applies, as its alignment check read it off the gradient: a table
    by start time and a scatter of the weight against ``t`` coloured by ``t - s``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert r.weights is not None
    w = r.weights
    doc.heading(literal(f"Implied weighting: {r.check}"), level=3)
    doc.paragraph(
        "The weight your loss gives each row, read off its gradient at the network's output "
        "(relative to the median weight), by start time t (ours: data at 0, noise at 1), on the "
        "diagonal s = t and off it."
    )
    header, rows = w.table()
    doc.table(rows, header=header)
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    gaps = [a - b for a, b in zip(w.t, w.s, strict=True)]
    points = ax.scatter(w.t, w.weight, c=gaps, s=8, cmap="viridis")
    fig.colorbar(points, ax=ax, label="t - s")
    ax.set_xlabel("t")
    ax.set_ylabel("weight / median")
    if all(v > 0 for v in w.weight):
        ax.set_yscale("log")
    doc.figure(fig, caption=Inline(f"Implied weight of each row against t ({r.check})."))
    plt.close(fig)
