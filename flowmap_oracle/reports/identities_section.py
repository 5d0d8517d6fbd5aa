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
from typing import TYPE_CHECKING, Literal
from xml.sax.saxutils import escape

import sympy as sp

from ..identities._core import display_latex
from .document import ReportDocument

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


_GREEK = {
    "alpha": "\u03b1",
    "beta": "\u03b2",
    "gamma": "\u03b3",
    "delta": "\u03b4",
    "epsilon": "\u03b5",
    "eps": "\u03b5",
    "theta": "\u03b8",
    "lambda": "\u03bb",
    "mu": "\u03bc",
    "pi": "\u03c0",
    "sigma": "\u03c3",
    "tau": "\u03c4",
    "phi": "\u03c6",
    "psi": "\u03c8",
    "Phi": "\u03a6",
    "Delta": "\u0394",
}
_GREEK_RE = re.compile(
    r"(?<![A-Za-z])(" + "|".join(sorted(_GREEK, key=len, reverse=True)) + r")(?![A-Za-z])"
)
_PARTIAL_RE = re.compile(r"(?<![A-Za-z])d_(\{[^{}]*\}|\w)")
_SUB_BRACED = re.compile(r"_\{([^{}]*)\}")
_SUB = re.compile(r"_([0-9A-Za-z\u0391-\u03c9]+)")
_SUP_BRACED = re.compile(r"\^\{([^{}]*)\}")
_SUP = re.compile(r"\^(-?[0-9A-Za-z\u0391-\u03c9]+)")
_FONT = "DejaVuSans"
_SUB_TAG = '<sub rise="20%" size="72%">'
_SUP_TAG = '<super rise="35%" size="72%">'


def pretty(text: str) -> str:
    """Turn the identities' ASCII math (``x_t``, ``F_{t->s}``, ``d_t F``, ``alpha``, ``int_s^t``,
    ``(t - s)^2``) into reportlab markup with Unicode symbols, subscripts and superscripts.

    The text is escaped first, so it may contain ``<``, ``>`` and ``&``; use it with
    ``markup=True`` inside :func:`_font` (DejaVu Sans has the Greek letters and symbols)."""
    out = escape(text)
    for old, new in (
        ("-&gt;", "\u2192"),
        ("&lt;=", "\u2264"),
        ("&gt;=", "\u2265"),
        ("!=", "\u2260"),
        ("sqrt(", "\u221a("),
    ):
        out = out.replace(old, new)
    out = re.sub(r"int_(\w)\^(\w)", "\u222b<sub>\\1</sub><super>\\2</super>", out)
    out = _GREEK_RE.sub(lambda m: _GREEK[m.group(1)], out)
    out = re.sub(r"(?<![A-Za-z])grad(?![A-Za-z])", "\u2207", out)
    out = _PARTIAL_RE.sub("\u2202_\\1", out)
    out = out.replace("/dtau", "/d\u03c4")
    out = _SUB_BRACED.sub(r"<sub>\1</sub>", out)
    out = _SUB.sub(r"<sub>\1</sub>", out)
    out = _SUP_BRACED.sub(r"<super>\1</super>", out)
    out = _SUP.sub(r"<super>\1</super>", out)
    # smaller and closer to the baseline than reportlab's default, so lines do not collide
    return out.replace("<sub>", _SUB_TAG).replace("<super>", _SUP_TAG)


def _register_font() -> bool:
    """Register matplotlib's DejaVu Sans family with reportlab (once); False if unavailable."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if _FONT in pdfmetrics.getRegisteredFontNames():
        return True
    try:
        from matplotlib import font_manager

        variants: dict[str, tuple[str, Literal["normal", "italic"]]] = {
            "": ("normal", "normal"),
            "-Bold": ("bold", "normal"),
            "-Oblique": ("normal", "italic"),
            "-BoldOblique": ("bold", "italic"),
        }
        faces = {}
        for key, (weight, style) in variants.items():
            path = font_manager.findfont(
                font_manager.FontProperties(family="DejaVu Sans", weight=weight, style=style),
                fallback_to_default=False,
            )
            faces[key] = path
            pdfmetrics.registerFont(TTFont(_FONT + key, path))
    except (ValueError, OSError):
        return False
    addMapping(_FONT, 0, 0, _FONT)
    addMapping(_FONT, 1, 0, _FONT + "-Bold")
    addMapping(_FONT, 0, 1, _FONT + "-Oblique")
    addMapping(_FONT, 1, 1, _FONT + "-BoldOblique")
    return True


def _text(doc: ReportDocument, markup: str, *, style: str = "BodyText") -> None:
    """A paragraph of :func:`pretty` markup in DejaVu Sans."""
    doc.paragraph(f'<font name="{_FONT}">{markup}</font>', markup=True, style=style)


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


def _method_result_text(label: str, m) -> str:
    verdict = "passed" if m.passed else "failed"
    residual = "exactly 0" if m.residual == 0.0 else f"max |residual| {_fmt(m.residual)}"
    detail = f" ({pretty(m.detail)})" if m.detail and not m.passed else ""
    return (
        f"<b>{label}</b> ({pretty(m.method)}): <b>{verdict}</b>, {residual}, "
        f"{m.seconds:.2f} s{detail}."
    )


def _rejection_text(tw) -> str:
    def one(m) -> str:
        if m.passed:
            return "<b>NOT rejected</b>"
        if m.kind == "symbolic":
            rem = m.detail[:200] + ("..." if len(m.detail) > 200 else "")
            return "rejected (" + escape(rem or "false") + ")"
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
    _text(doc, f"{escape(ident.id)}: {pretty(ident.title)}", style="Heading2")
    _text(
        doc,
        f"<b>Seed section:</b> {escape(ident.seed_section)}. <b>Assumptions:</b> "
        + "; ".join(pretty(a) for a in ident.assumptions)
        + ".",
    )
    _text(doc, f"<b>Statement.</b> {pretty(ident.statement.description)}")
    _formula(doc, ident.statement.relation, fontsize=12)
    _text(doc, "<b>Derivation.</b>")
    for i, step in enumerate(ident.steps, 1):
        _text(doc, f"<i>Step {i}: {pretty(step.rule)}</i>")
        _formula(doc, step.relation)
    _text(
        doc,
        f"<b>Result: {res.status.upper()}.</b> "
        + _method_result_text("Symbolic", res.symbolic)
        + " "
        + _method_result_text("Numeric", res.numeric),
    )
    for tw in res.twins:
        verdict = "rejected" if tw.rejected else "NOT REJECTED"
        _text(
            doc,
            f"<b>Wrong twin <i>{escape(tw.claim.name)}</i> ({verdict}).</b> "
            f"{pretty(tw.claim.description)}",
        )
        _formula(doc, tw.claim.relation)
        _text(doc, _rejection_text(tw))
    if ident.notes:
        _text(doc, f"<b>Note.</b> {pretty(ident.notes)}")


def _errata(
    doc: ReportDocument,
    seed_table: tuple[PathRowComparison, ...],
    errata: tuple[Erratum, ...],
) -> None:
    doc.heading("Errata: the seed's table of probability paths", level=1)
    _text(
        doc,
        pretty(
            "Each conditional field is derived from its path, u = mu' + (sigma'/sigma)(x - mu), "
            "checked against the continuity equation d_t p + div(p u) = 0, and compared with the "
            "seed's entry literally (the seed's x_t is the argument x). A disagreeing row is an "
            "erratum; its corrected formula is the derived field, and the seed's formula is that "
            "row's wrong twin above (rejected by the same checks)."
        ),
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
        _text(doc, pretty(err.location), style="Heading3")
        _text(doc, "<b>Seed:</b>")
        doc.formula(mathtext_latex(err.seed_latex), fontsize=11)
        _text(doc, "<b>Corrected:</b>")
        for part in err.corrected_latex.split(r",\quad "):
            doc.formula(mathtext_latex(part), fontsize=11)
        _text(
            doc,
            pretty(err.explanation)
            + (" <i>(verified symbolically)</i>" if err.verified else " <b>(not verified)</b>"),
        )


def add_identities_section(doc: ReportDocument, results: IdentitiesSectionInputs) -> None:
    """Append the identity section: the summary, every identity's block, then the errata."""
    if not _register_font():
        raise RuntimeError(
            "DejaVu Sans (shipped with matplotlib) is needed for the identity section"
        )
    checked = results.results
    total = results.seconds
    symbolic = sum(res.symbolic_seconds for _, res in checked)
    n_pass = sum(res.status == "pass" for _, res in checked)
    n_twin = sum(res.twin_rejected for _, res in checked)

    doc.heading("Identities of the unified framework", level=1)
    _text(
        doc,
        pretty(
            "Convention: x_t = (1 - t) x_0 + t x_1 (data at t = 0, noise at t = 1); the flow map "
            "is f_{t->s}(x) = x + (s - t) F(x, t, s), so F is the average velocity. Each identity "
            "is checked twice: symbolically (exact simplification or a series limit, with "
            "abstract functions where the statement holds for every function) and numerically "
            "(mpmath at 40 digits at random points, on random smooth functions or on a random "
            "exact flow in d = 2 whose map, velocity and average velocity are closed-form). Each "
            "identity has wrong twins (a sign, a factor, a swapped argument); the same two checks "
            "must reject every twin."
        ),
    )
    _text(
        doc,
        f"<b>{n_pass}/{len(checked)}</b> identities pass; the wrong twins are rejected for "
        f"<b>{n_twin}/{len(checked)}</b>. Symbolic checks (statements and twins) took "
        f"{symbolic:.1f} s, all checks {total:.1f} s.",
    )
    doc.paragraph("Summary", style="Heading2")
    _summary_table(doc, checked)
    family = None
    for ident, res in checked:
        if ident.family != family:
            family = ident.family
            doc.heading(_FAMILY_TITLES.get(family, family), level=1)
        _identity_block(doc, ident, res)
    _errata(doc, results.seed_table, results.errata)
