"""Inline notation and table layout of the report (``reports/notation.py``, ``reports/document.py``):
``$...$`` spans become reportlab markup in the display formulas' fonts, ASCII formulas written
elsewhere are found and typeset while names and prose stay as they are, every inline span is
also valid mathtext, and table cells wrap at word boundaries (a long dotted name breaks only after
``. _ : / -``, never inside a word)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("reportlab")
pytest.importorskip("matplotlib")

from matplotlib.mathtext import MathTextParser

from flowmap_oracle.reports import notation
from flowmap_oracle.reports.document import CELL_PAD, ReportDocument, column_widths
from flowmap_oracle.reports.notation import (
    NBSP,
    SUB_TAG,
    SUP_TAG,
    Inline,
    auto,
    break_long_words,
    literal,
    math_markup,
    math_spans,
    prose,
    visible_text,
)

_PARSER = MathTextParser("path")
RAW = re.compile(
    r"->|\^|(?<![\w.])[A-Za-z]_[A-Za-z0-9{]|(?<![\w.])x[01](?![\w.])"
    r"|\b(?:sigma|theta|alpha|beta|tau|mu|Phi|eps|epsilon|lambda|gamma)\b"
)
"""ASCII notation: an arrow, a caret, a one-letter name with a subscript, x0 or x1, a Greek
name."""


def _mathtext_parses(tex: str) -> None:
    _PARSER.parse(f"${tex}$")


@pytest.mark.parametrize(
    ("tex", "markup"),
    [
        ("x_t", f"<i>x</i>{SUB_TAG}<i>t</i></sub>"),  # tag attributes keep their spaces
        (r"\Phi_{1\to 0}(x_1)", f"\u03a6{SUB_TAG}1\u21920</sub>(<i>x</i>{SUB_TAG}1</sub>)"),
        ("x_1 - x_0", f"<i>x</i>{SUB_TAG}1</sub>{NBSP}\u2212{NBSP}<i>x</i>{SUB_TAG}0</sub>"),
        ("-t", "\u2212<i>t</i>"),  # unary minus: no space
        ("a = -b", f"<i>a</i>{NBSP}={NBSP}\u2212<i>b</i>"),
        (r"\sigma_d^2", f"<i>\u03c3</i>{SUB_TAG}<i>d</i></sub>{SUP_TAG}2</super>"),
        (r"\mathrm{sg}(v)", "sg(<i>v</i>)"),
        (r"F^*", f"<i>F</i>{SUP_TAG}*</super>"),
        (r"F(x,t,s)", f"<i>F</i>(<i>x</i>,{NBSP}<i>t</i>,{NBSP}<i>s</i>)"),
        (r"\frac{d}{dt}", "<i>d</i>/<i>dt</i>"),
        (r"\sqrt{a+b}", f"\u221a(<i>a</i>{NBSP}+{NBSP}<i>b</i>)"),
        (r"x < y", f"<i>x</i>{NBSP}&lt;{NBSP}<i>y</i>"),
    ],
)
def test_math_markup_sets_notation_like_mathtext(tex, markup):
    """Latin and lower-case Greek letters italic, digits and capitals upright, a true minus,
    spaced relations and operators (non-breaking before, breaking after), tight scripts."""
    assert math_markup(tex) == markup
    _mathtext_parses(tex)


def test_a_long_formula_breaks_only_after_relations_and_operators():
    """A short formula is held together; a long one may break after ``=``, ``+`` or ``-``
    (TeX's rule), never before them or inside an argument list."""
    short = math_markup("t = 1")
    assert " " not in short and NBSP in short
    long = math_markup(r"f_{t\to s}(x, y) = x + (s - t)\,F(x, t, s) + \alpha\beta")
    breaks = [m.start() for m in re.finditer(" ", visible_text(long))]
    text = visible_text(long)
    assert len(breaks) == 4
    assert all(text[i - 1] in "=+\u2212" for i in breaks), text
    assert "F(x,\xa0t,\xa0s)" in text


def test_math_markup_rejects_what_it_cannot_set():
    with pytest.raises(ValueError, match="unknown command"):
        math_markup(r"\nonsense x")
    with pytest.raises(ValueError, match="missing"):
        math_markup(r"x_{t")
    with pytest.raises(ValueError, match="unbalanced"):
        prose("a $x_t and more")


def test_prose_escapes_text_and_typesets_spans_and_keeps_literal_dollars():
    text = r"costs \$5 < \$6 & $x_t$"
    assert math_spans(text) == ["x_t"]
    out = prose(text)
    assert out.startswith("costs $5 &lt; $6 &amp; <i>x</i>")
    assert visible_text(out) == "costs $5 < $6 & xt"
    assert prose(literal("a $b$ c")) == "a $b$ c"


@pytest.mark.parametrize(
    ("ascii", "marked"),
    [
        ("f_{t->s}", r"$f_{t \to s}$"),
        ("Phi_{1->0}(x1)", r"$\Phi_{1 \to 0}(x_{1})$"),
        ("with v = x1 - x0 here", "with $v = x_{1} - x_{0}$ here"),
        ("x_t = (1-t) x0 + t x1", r"$x_{t} = (1-t)\,x_{0} + t\,x_{1}$"),
        ("sg(v) and sigma, theta", r"$\mathrm{sg}(v)$ and $\sigma$, $\theta$"),
        (
            "F_tgt = v + (t - s) dF/dt: flipped",
            r"$F_{\mathrm{tgt}} = v + (t - s)\,dF/dt$: flipped",
        ),
        ("at t = 0.", "at $t = 0$."),
        ("sigma_d^2/(t^2 + sigma_d^2)", r"$\sigma_{d}^{2}/(t^{2} + \sigma_{d}^{2})$"),
        ("D_t F* and d_s F*", r"$D_{t}\,F^{*}$ and $\partial_{s}\,F^{*}$"),
        ("read 'v d_{x_t} F' as", r"read '$v\,\partial_{x_{t}}\,F$' as"),
        ("every F) here", "every F) here"),  # an unmatched bracket stays text
        ("x~ = x_t - Dt v", r"$\tilde{x} = x_{t} - \Delta t\,v$"),
        ("the coupling (x0^, x1)", r"the coupling $(\hat{x}_{0}, x_{1})$"),
        ("grad_theta L_Dt", r"$\nabla_{\theta}\,L_{\Delta t}$"),
        ("||F - sg(target)||^2", r"$\|F - \mathrm{sg}(\mathrm{target})\|^{2}$"),
        ("Cov(Y, x_t)/Var(x_t)", r"$\mathrm{Cov}(Y, x_{t})/\mathrm{Var}(x_{t})$"),
        ("[0, 1] -> [1, 2]", r"$[0, 1] \to [1, 2]$"),
    ],
)
def test_auto_marks_ascii_formulas(ascii, marked):
    out = auto(ascii)
    assert isinstance(out, Inline)
    assert out == marked
    for span in math_spans(out):
        _mathtext_parses(span)


@pytest.mark.parametrize(
    "text",
    [
        "meanflow.target.exact_map_fixed_point",
        "flowmap_oracle.oracle.mutants.meanflow:sign_of_t_minus_s",
        "edm_sigma x_t_s noise_at_1 sum_mean c_out_t_minus_s average_velocity",
        "profile=ci, batch=16, teacher=ring8, hypothesis examples=6",
        "the 2-D ring took 1.5 s at lr 3e-3 (a) forward, (b) backward; a Heun solver",
        "passed (5 explicit + 6 drawn cases)",
        "torch 2.13.0+cpu, float64, dopri5",
    ],
)
def test_auto_leaves_names_and_prose_alone(text):
    assert auto(text) == text


def _identity_texts() -> list[str]:
    from flowmap_oracle.identities import all_identities

    out = []
    for ident in all_identities():
        out += [ident.title, ident.statement.description, *ident.assumptions, ident.notes]
        out += [step.rule for step in ident.steps]
        out += [twin.description for twin in ident.twins]
    return [t for t in out if t]


def _oracle_texts() -> list[str]:
    from flowmap_oracle.oracle.mutants import MUTANTS, mutant_names
    from flowmap_oracle.oracle.runner import checks_for

    mutants = [MUTANTS[name].description for name in mutant_names()]
    return mutants + [c.description for c in checks_for()]


@pytest.mark.parametrize("source", ["identities", "oracle"])
def test_every_formula_found_in_the_project_texts_is_valid_mathtext(source):
    """What ``auto`` marks in the identities' and the oracle's texts parses in mathtext (the
    same source could be a display formula) and renders as markup; no ASCII notation
    (:data:`RAW`) is left outside a span."""
    texts = _identity_texts() if source == "identities" else _oracle_texts()
    assert len(texts) > 20
    spans = 0
    for text in texts:
        marked = auto(text)
        for span in math_spans(marked):
            _mathtext_parses(span)
            spans += 1
        outside = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", " ", marked)
        assert not RAW.search(outside), (text, marked)
        visible = visible_text(prose(marked))
        assert "->" not in visible and "_{" not in visible
    assert spans > 20


def test_a_long_name_breaks_only_after_a_dot_or_underscore():
    measure = len  # one unit per character
    name = "meanflow.target.exact_map_fixed_point"
    (broken,) = break_long_words(name, 18, measure)
    lines = broken.split("\n")
    assert "".join(lines) == name
    assert lines == ["meanflow.target.", "exact_map_fixed_", "point"]
    assert all(measure(line) <= 18 for line in lines)
    # dotted parts first: with room for a whole part the break falls after a dot
    assert break_long_words(name, 22, measure)[0].split("\n") == [
        "meanflow.target.",
        "exact_map_fixed_point",
    ]
    # a word without break points is never split, and short words are untouched
    assert break_long_words("supercalifragilistic is long", 5, measure) == [
        "supercalifragilistic",
        " ",
        "is",
        " ",
        "long",
    ]


def _cell_lines(doc: ReportDocument) -> list[list[list[str]]]:
    """The lines of every cell of the document's last table, as reportlab breaks them."""
    tbl = doc._story[-1]
    out = []
    for row in tbl._cellvalues:
        cells = []
        for j, para in enumerate(row):
            para.wrap(tbl._colWidths[j] - 2 * CELL_PAD, 1e6)
            lines = para.blPara.lines
            cells.append(
                [
                    "".join(f.text for f in line.words)
                    if hasattr(line, "words")
                    else " ".join(line[1])
                    for line in lines
                ]
            )
        out.append(cells)
    return out


def test_table_cells_wrap_at_word_boundaries_and_names_at_dots_or_underscores():
    names = [
        "meanflow.target.exact_map_fixed_point",
        "conventions.linear_interpolant_on_trig_path",
        "split_meanflow.target.random_network",
    ]
    message = auto("the target f(x_t, t, 0) with v = x1 - x0 differs from the reference")
    doc = ReportDocument("table")
    doc.table(
        [[n, n, n, message] for n in names], header=["mutant", "killed by", "check", "message"]
    )
    widths = doc._story[-1]._colWidths
    assert abs(sum(widths) - doc.text_width) < 1e-6
    rows = _cell_lines(doc)[1:]
    for row in rows:
        for lines in row[:3]:  # a broken name: every piece ends at an allowed point
            assert "".join(lines) in names
            assert all(line[-1] in "._:/-" for line in lines[:-1]), lines
        # the message wraps only at spaces: its lines joined by spaces are the whole text
        text = visible_text(prose(message))
        assert " ".join(line.strip() for line in row[3]) == text
        assert len(row[3]) > 1
    assert any(len(row[0]) > 1 for row in rows)  # the table is narrow enough to break names


def test_column_widths_keep_narrow_columns_and_share_the_rest():
    def measure(_row: int, text: str) -> float:
        return 5.0 * len(text)

    def widths(cells, total=400.0):
        return column_widths(cells, total, measure)

    fits = widths([["preset", "err"], ["ring8", "1e-3"]])
    assert fits == [5.0 * 6 + 2 * CELL_PAD, 5.0 * 4 + 2 * CELL_PAD]  # natural, not stretched
    sentence = " ".join(["word"] * 80)
    name = "objective.part_one.part_two"
    got = widths([["result", "check", "the bug"], ["killed", name, sentence]])
    assert abs(sum(got) - 400.0) < 1e-6
    assert got[0] == 5.0 * 6 + 2 * CELL_PAD  # narrow: natural width
    assert got[1] == 5.0 * len(name) + 2 * CELL_PAD  # fits under the common level: natural
    assert got[2] == pytest.approx(400.0 - got[0] - got[1])  # the sentence takes the rest
    # a name too long for its share breaks, its column shrinks to the widest broken line and
    # the running text takes the rest
    long_name = ".".join(["objective", "part_one", "part_two"] * 4)
    two = widths([[long_name, sentence]], total=300.0)
    assert abs(sum(two) - 300.0) < 1e-6
    broken = break_long_words(long_name, two[0] - 2 * CELL_PAD, lambda t: 5.0 * len(t))[0]
    assert two[0] == 5.0 * max(len(line) for line in broken.split("\n")) + 2 * CELL_PAD < 150.0


def test_fonts_are_matplotlibs_dejavu():
    from reportlab.pdfbase import pdfmetrics

    notation.register_fonts()
    names = pdfmetrics.getRegisteredFontNames()
    for face in ("", "-Bold", "-Oblique", "-BoldOblique"):
        assert notation.FONT + face in names and notation.MONO + face in names


def _five_per_char(_row: int, text: str) -> float:
    return 5.0 * len(text)


def test_column_widths_keep_names_whole_and_let_short_text_wrap():
    """The identity summary: a column of names stays whole; the short text columns wrap."""
    name = "facm.consistency_is_meanflow"
    cells = [
        ["identity", "status", "symbolic", "numeric on", "residual", "s"],
        [name, "pass", "exact simplification", "random smooth functions", "1.8e-40", "0.4"],
    ]
    got = column_widths(cells, 483.0, _five_per_char, header_rows=1)
    assert got is not None and abs(sum(got) - 483.0) < 1e-6
    assert got[0] == 5.0 * len(name) + 2 * CELL_PAD
    assert got[2] < 5.0 * len("exact simplification") + 2 * CELL_PAD  # wraps
    assert got[2] >= 5.0 * len("simplification") + 2 * CELL_PAD  # at a word boundary
    assert got[4] == 5.0 * len("residual") + 2 * CELL_PAD  # numbers keep their width


def test_column_widths_give_long_text_its_share_and_break_names_between_parts():
    """The kill table: the description gets its share of the width; the check names break
    between their dotted parts rather than squeezing it."""
    total = 400.0
    mutant, check = "consistency.step_wrong_direction", "consistency.loss.value_and_gradient"
    bug = "the neighbour x_t + dt (x1 - x0): a consistency step in the wrong direction " * 2
    cells = [["mutant", "killed by", "the bug"], [mutant, check, bug]]
    got = column_widths(cells, total, _five_per_char, header_rows=1)
    assert got is not None and abs(sum(got) - total) < 1e-6
    from flowmap_oracle.reports.document import PROSE_SHARE

    assert got[2] >= PROSE_SHARE * total - 1e-6
    # the names break between their dotted parts, and their columns shrink to the widest
    # broken line: consistency.loss. / value_and_gradient
    assert got[1] == pytest.approx(5.0 * len("value_and_gradient") + 2 * CELL_PAD)
    assert got[0] < 5.0 * len(mutant) + 2 * CELL_PAD
