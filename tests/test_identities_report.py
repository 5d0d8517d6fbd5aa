"""The identity section of the report: LaTeX cleaning for mathtext, the text prettifier, every
display relation renders, and a PDF with the section holds what it promises."""

from __future__ import annotations

import pytest

from flowmap_oracle.identities import all_identities, get
from flowmap_oracle.report_job import identities_inputs
from flowmap_oracle.reports import identities_section as sec

pytest.importorskip("reportlab")
pytest.importorskip("matplotlib")
from flowmap_oracle.reports.document import ReportDocument, render_formula_png


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (r"\int\limits_{s}^{t} v\, d\tau", r"\int_{s}^{t} v\, d\tau"),
        (r"a \iff b", r"a \Leftrightarrow b"),
        (r"\lVert x \rVert", r"\| x \|"),
        (r"\left[\begin{matrix}a\\b\end{matrix}\right]", "(a, b)^T"),
        (r"\left[\begin{matrix}a & b\end{matrix}\right]", "(a, b)"),
        (r"\operatorname{sign}{\left(t \right)}", r"\mathrm{sign}{\left(t \right)}"),
    ],
)
def test_mathtext_latex_rewrites_what_mathtext_cannot_parse(raw, clean):
    assert sec.mathtext_latex(raw) == clean
    render_formula_png(sec.mathtext_latex(raw))


def test_the_constructs_rewritten_are_really_unsupported():
    for raw in (
        r"\int\limits_{s}^{t} v",
        r"a \iff b",
        r"\left[\begin{matrix}a\\b\end{matrix}\right]",
    ):
        with pytest.raises(ValueError, match="mathtext cannot render"):
            render_formula_png(raw)


def test_every_display_relation_renders():
    """Every statement, step and twin parses in mathtext (parsing and layout without
    rasterising: the same parser the PNG renderer uses, several times faster)."""
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    for ident in all_identities():
        relations = [ident.statement.relation, *(s.relation for s in ident.steps)]
        relations += [tw.relation for tw in ident.twins]
        for rel in relations:
            for line in sec.relation_lines(rel):
                parser.parse(f"${line}$")


def test_chained_equalities_are_split_into_lines():
    lines = sec.relation_lines(get("meanflow.average_velocity").statement.relation)
    assert len(lines) == 2 and lines[1].startswith("= ")


def test_pretty_turns_ascii_math_into_markup():
    out = sec.pretty("F_{t->s} = (x_t - x_s)/(t - s), d_t F, alpha, int_s^t v, (t - s)^2, a < b")
    assert "\u2192" in out and "\u2202" in out and "\u03b1" in out and "\u222b" in out
    assert "<sub" in out and "<super" in out and "&lt;" in out
    assert sec.pretty("sigma_d").startswith("\u03c3<sub")


def test_section_pdf_holds_statements_twins_and_errata(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    chosen = [get("meanflow.identity"), get("facm.time_shift"), get("paths.fm_lipman")]
    doc = ReportDocument("identities")
    sec.add_identities_section(doc, identities_inputs(chosen))
    path = doc.save(tmp_path / "identities.pdf")
    reader = pypdf.PdfReader(str(path))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for needle in (
        "Identities of the unified framework",
        "meanflow.identity",
        "Derivation",
        "Wrong twin",
        "sign_flipped",
        "rejected",
        "Errata",
        "Table row: Gaussian",
        "Table row: FM (Lipman et al.)",
        "verified symbolically",
        "3/3",
    ):
        assert needle in text, needle
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 10  # the formulas
