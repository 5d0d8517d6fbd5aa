"""The report's identity section: every identity checked, typeset and explained, then the seed's
errata.

Layout: a summary table (one row per identity), then per identity its seed section, assumptions,
statement, derivation steps (each with the rule applied), how it was checked and the result, and
every wrong twin with the evidence that the same checks reject it; finally the errata of the
seed's table of probability paths. Formulas are SymPy's LaTeX, cleaned by :func:`mathtext_latex`
for matplotlib's mathtext (no TeX installation).

Layout only: the checks run elsewhere (each :class:`~flowmap_oracle.identities.Identity`'s
``check``, and the seed-table comparison of :mod:`flowmap_oracle.identities.paths`); this module
lays out their results, given as an :class:`IdentitiesSectionInputs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import sympy as sp

from ..identities._core import display_latex
from .document import ReportDocument
from .notation import MONO, auto, prose

if TYPE_CHECKING:
    from ..identities import CheckResult, Identity
    from ..identities.paths import Erratum, PathRowComparison

__all__ = [
    "IdentitiesSectionInputs",
    "add_identities_section",
    "mathtext_latex",
    "pretty",
    "relation_lines",
]


@dataclass(frozen=True)
class IdentitiesSectionInputs:
    """What the identities section lays out.

    Attributes:
        results: every identity with its check result, in report order.
        seconds: wall time of all those checks.
        seed_table: the seed's table of probability paths compared row by row with the derived
            fields.
        errata: the seed's errata, with their corrections.
    """

    results: tuple[tuple[Identity, CheckResult], ...]
    seconds: float
    seed_table: tuple[PathRowComparison, ...]
    errata: tuple[Erratum, ...]


_MATRIX = re.compile(r"\\left\[\\begin\{matrix\}(.*?)\\end\{matrix\}\\right\]", re.DOTALL)

_REPLACEMENTS = (
    (r"\limits", ""),  # mathtext places integral limits itself
    (r"\iff", r"\Leftrightarrow"),
    (r"\lVert", r"\|"),
    (r"\rVert", r"\|"),
    (r"\operatorname{sign}", r"\mathrm{sign}"),
)


def mathtext_latex(latex: str) -> str:
    """Rewrite SymPy LaTeX into the subset matplotlib's mathtext parses.

    * ``\\int\\limits`` -> ``\\int`` (mathtext has no ``\\limits``);
    * ``\\iff`` -> ``\\Leftrightarrow``; ``\\lVert``/``\\rVert`` -> ``\\|``;
    * ``\\left[\\begin{matrix} a \\\\ b \\end{matrix}\\right]`` (a column) -> ``(a, b)^T`` and a row
      matrix -> ``(a, b)`` (mathtext has no ``matrix`` environment).
    """

    def matrix(m: re.Match[str]) -> str:
        body = m.group(1)
        rows = [r.strip() for r in body.split(r"\\") if r.strip()]
        if len(rows) > 1 and all("&" not in r for r in rows):
            return "(" + ", ".join(rows) + ")^T"
        return ";\\ ".join("(" + ", ".join(c.strip() for c in r.split("&")) + ")" for r in rows)

    out = _MATRIX.sub(matrix, latex)
    for old, new in _REPLACEMENTS:
        out = out.replace(old, new)
    return out


def pretty(text: str) -> str:
    """Reportlab markup for the identities' ASCII notation (``x_t``, ``F_{t->s}``, ``d_t F``,
    ``alpha``, ``int_s^t``, ``(t - s)^2``), set upright: :func:`~.notation.auto` finds the
    formulas and :func:`~.notation.prose` typesets them (the section itself uses
    :func:`_inline`, which sets variables in italics as the display formulas do)."""
    return prose(auto(text), italic=False)


def _inline(doc: ReportDocument, text: str) -> str:
    """Markup for a string written elsewhere: its ASCII formulas typeset like the display
    formulas (recorded by ``doc``)."""
    return doc.markup(auto(text))


def _text(doc: ReportDocument, markup: str, *, style: str = "BodyText") -> None:
    doc.paragraph(markup, markup=True, style=style)


def relation_lines(relation: sp.Basic) -> list[str]:
    """Mathtext lines of a display relation: a chained equality ``a = b = c`` (nested ``Eq``) is
    split into ``a = b`` and ``= c`` so that long chains stay readable."""
    parts: list[sp.Basic] = []
    rel = relation
    while isinstance(rel, sp.Equality):
        parts.append(rel.lhs)
        rel = rel.rhs
    parts.append(rel)
    if len(parts) <= 2:
        return [mathtext_latex(display_latex(relation))]
    tex = [mathtext_latex(display_latex(p)) for p in parts]
    return [f"{tex[0]} = {tex[1]}", *(f"= {p}" for p in tex[2:])]


def _formula(doc: ReportDocument, relation: sp.Basic, *, fontsize: int = 11) -> None:
    doc.spacer(2)
    for line in relation_lines(relation):
        doc.formula(line, fontsize=fontsize)
    doc.spacer(4)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _method_result_text(doc: ReportDocument, label: str, m) -> str:
    verdict = "passed" if m.passed else "failed"
    residual = "exactly 0" if m.residual == 0.0 else f"max |residual| {_fmt(m.residual)}"
    detail = f" ({_inline(doc, m.detail)})" if m.detail and not m.passed else ""
    return (
        f"<b>{label}</b> ({_inline(doc, m.method)}): <b>{verdict}</b>, {residual}, "
        f"{m.seconds:.2f} s{detail}."
    )


def _code(text: str) -> str:
    """Markup for program output (a SymPy remainder) in the monospace font."""
    return f'<font name="{MONO}" size="8">{escape(text)}</font>'


def _rejection_text(tw) -> str:
    def one(m) -> str:
        if m.passed:
            return "<b>NOT rejected</b>"
        if m.kind == "symbolic":
            rem = m.detail[:200] + ("..." if len(m.detail) > 200 else "")
            return "rejected (" + _code(rem or "false") + ")"
        return f"rejected (max |residual| {_fmt(m.residual)})"

    return f"Symbolic: {one(tw.symbolic)}. Numeric: {one(tw.numeric)}."


_SYMBOLIC_KINDS = (
    ("series limit", "series limit"),
    ("integration", "exact integration"),
    ("set algebra", "exact set algebra"),
    ("Gaussian integrals", "exact integrals"),
)
_NUMERIC_KINDS = (
    ("random exact flow", "random exact flow"),
    ("random smooth", "random smooth functions"),
    ("quadrature", "quadrature"),
    ("discrete laws", "exact discrete laws"),
    ("numerical d_t p", "numerical derivatives"),
    ("schedule", "concrete schedules"),
)


def _kind(method: str, kinds: tuple[tuple[str, str], ...], default: str) -> str:
    """The short name of the first key of ``kinds`` found in a check's ``method`` text."""
    return next((short for key, short in kinds if key in method), default)


def _summary_table(doc: ReportDocument, results: tuple[tuple[Identity, CheckResult], ...]) -> None:
    rows = []
    for ident, res in results:
        rows.append(
            [
                ident.id,
                res.status,
                f"{sum(t.rejected for t in res.twins)}/{len(res.twins)}",
                _kind(res.symbolic.method, _SYMBOLIC_KINDS, "exact simplification"),
                _kind(res.numeric.method, _NUMERIC_KINDS, "random points"),
                _fmt(res.residual),
                f"{res.seconds:.1f}",
            ]
        )
    doc.table(
        rows,
        header=["identity", "status", "twins rejected", "symbolic", "numeric on", "residual", "s"],
    )


_FAMILY_TITLES = {
    "boundary": "Flow-map boundary conditions",
    "meanflow": "MeanFlow",
    "facm": "Flow-Anchored Consistency Models (FACM)",
    "split": "SplitMeanFlow and Shortcut models",
    "ayf": "Align Your Flow (EMD and LMD)",
    "consistency": "Consistency models and CTM",
    "paths": "Probability paths (the seed's table)",
    "reflow": "ReFlow",
    "imm": "Inductive Moment Matching (IMM)",
}


def _identity_block(doc: ReportDocument, ident: Identity, res: CheckResult) -> None:
    _text(doc, f"{escape(ident.id)}: {_inline(doc, ident.title)}", style="Heading2")
    _text(
        doc,
        f"<b>Seed section:</b> {escape(ident.seed_section)}. <b>Assumptions:</b> "
        + "; ".join(_inline(doc, a) for a in ident.assumptions)
        + ".",
    )
    _text(doc, f"<b>Statement.</b> {_inline(doc, ident.statement.description)}")
    _formula(doc, ident.statement.relation, fontsize=12)
    _text(doc, "<b>Derivation.</b>")
    for i, step in enumerate(ident.steps, 1):
        _text(doc, f"<i>Step {i}:</i> {_inline(doc, step.rule)}")
        _formula(doc, step.relation)
    _text(
        doc,
        f"<b>Result: {res.status.upper()}.</b> "
        + _method_result_text(doc, "Symbolic", res.symbolic)
        + " "
        + _method_result_text(doc, "Numeric", res.numeric),
    )
    for tw in res.twins:
        verdict = "rejected" if tw.rejected else "NOT REJECTED"
        _text(
            doc,
            f"<b>Wrong twin <i>{escape(tw.claim.name)}</i> ({verdict}).</b> "
            f"{_inline(doc, tw.claim.description)}",
        )
        _formula(doc, tw.claim.relation)
        _text(doc, _rejection_text(tw))
    if ident.notes:
        _text(doc, f"<b>Note.</b> {_inline(doc, ident.notes)}")


def _errata(
    doc: ReportDocument,
    seed_table: tuple[PathRowComparison, ...],
    errata: tuple[Erratum, ...],
) -> None:
    doc.heading("Errata: the seed's table of probability paths", level=1)
    doc.paragraph(
        r"Each conditional field is derived from its path, "
        r"$u = \mu' + (\sigma'/\sigma)(x - \mu)$, checked against the continuity equation "
        r"$\partial_t p + \mathrm{div}(p\,u) = 0$, and compared with the seed's entry literally "
        r"(the seed's $x_t$ is the argument $x$). A disagreeing row is an erratum; its corrected "
        r"formula is the derived field, and the seed's formula is that row's wrong twin above "
        r"(rejected by the same checks)."
    )
    rows = []
    for cmp in seed_table:
        rows.append(
            [
                cmp.method,
                "yes" if cmp.agrees else "NO",
                "yes" if cmp.seed_solves_continuity else "NO",
                "yes" if cmp.derived_solves_continuity else "NO",
                "correct" if cmp.agrees else "erratum",
            ]
        )
    doc.table(
        rows,
        header=[
            "row",
            "seed = derived",
            "seed solves continuity",
            "derived solves continuity",
            "verdict",
        ],
    )
    for err in errata:
        _text(doc, _inline(doc, err.location), style="Heading3")
        _text(doc, "<b>Seed:</b>")
        doc.formula(mathtext_latex(err.seed_latex), fontsize=11)
        _text(doc, "<b>Corrected:</b>")
        for part in err.corrected_latex.split(r",\quad "):
            doc.formula(mathtext_latex(part), fontsize=11)
        _text(
            doc,
            _inline(doc, err.explanation)
            + (" <i>(verified symbolically)</i>" if err.verified else " <b>(not verified)</b>"),
        )


def add_identities_section(doc: ReportDocument, results: IdentitiesSectionInputs) -> None:
    """Append the identity section: the summary, every identity's block, then the errata."""
    checked = results.results
    total = results.seconds
    symbolic = sum(res.symbolic_seconds for _, res in checked)
    n_pass = sum(res.status == "pass" for _, res in checked)
    n_twin = sum(res.twin_rejected for _, res in checked)

    doc.heading("Identities of the unified framework", level=1)
    doc.paragraph(
        r"Convention: $x_t = (1 - t)\,x_0 + t\,x_1$ (data at $t = 0$, noise at $t = 1$); the flow "
        r"map is $f_{t\to s}(x) = x + (s - t)\,F(x, t, s)$, so $F$ is the average velocity. Each "
        "identity is checked twice: symbolically (exact simplification or a series limit, with "
        "abstract functions where the statement holds for every function) and numerically "
        "(mpmath at 40 digits at random points, on random smooth functions or on a random "
        "exact flow in $d = 2$ whose map, velocity and average velocity are closed-form). Each "
        "identity has wrong twins (a sign, a factor, a swapped argument); the same two checks "
        "must reject every twin."
    )
    _text(
        doc,
        f"<b>{n_pass}/{len(checked)}</b> identities pass; the wrong twins are rejected for "
        f"<b>{n_twin}/{len(checked)}</b>. Symbolic checks (statements and twins) took "
        f"{symbolic:.1f} s, all checks {total:.1f} s.",
    )
    doc.heading("Summary", level=2)
    _summary_table(doc, checked)
    family = None
    for ident, res in checked:
        if ident.family != family:
            family = ident.family
            doc.heading(_FAMILY_TITLES.get(family, family), level=1)
        _identity_block(doc, ident, res)
    _errata(doc, results.seed_table, results.errata)
