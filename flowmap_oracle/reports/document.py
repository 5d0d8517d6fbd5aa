"""A small PDF document builder on reportlab, with formulas rendered by matplotlib mathtext.

Sections of the report (identities, oracle runs, benchmarks) append flowables through this
class; none of them touches reportlab directly. No TeX installation is needed: display formulas
are rendered by matplotlib's mathtext, which understands a large subset of LaTeX, and inline
notation in text (``$...$`` spans, :mod:`~flowmap_oracle.reports.notation`) is set in the same
fonts (DejaVu Sans, shipped with matplotlib) as real, searchable text.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

from ..experiments.records import atomic_file
from .notation import (
    FONT,
    MONO,
    Inline,
    break_long_words,
    literal,
    prose,
    register_fonts,
    unbreakable_pieces,
    visible_text,
)

__all__ = ["ReportDocument", "column_widths", "render_formula_png"]

CELL_PAD = 6.0
"""Reportlab's default left and right padding of a table cell, in points."""
CELL_SIZE = 8.0
"""The font size of table cells, in points."""


PROSE_SHARE = 0.3
"""The share of the text width a column of running text gets before names are broken."""


def column_widths(
    cells: Sequence[Sequence[str]],
    total: float,
    measure: Callable[[int, str], float],
    *,
    header_rows: int = 0,
) -> list[float] | None:
    """Column widths in points from the cells' visible text (``measure(row, text)`` gives a
    text's width in that row's font; a newline separates forced lines).

    Each column has a natural width (its widest line) and a floor it is never narrower than
    (plus the cell padding). A table whose natural widths fit keeps them; otherwise the columns
    are filled like water above their floors up to a common level ``c``: a column gets
    ``min(natural, c)`` but not less than its floor, with ``c`` chosen so that the widths sum to
    ``total``. Narrow columns (numbers, statuses) keep their natural width and the wide ones
    share the rest, wrapping at spaces. A column of names that still has to break then shrinks
    to its widest broken line, and the room it frees goes to the columns of running text.

    The floors are the first of these tiers that fits in ``total``: a column of long running
    text (a cell below the header with a space, wider than :data:`PROSE_SHARE` of the width)
    gets that share, a column of short text its widest word, and a column of names keeps each
    name whole; then names may break between their dotted parts; then long text narrows to its
    widest word; finally every column narrows to its widest piece between break points (after
    ``. : / _ -``). When even that does not fit, the table is wider than ``total`` and no word
    is split.
    """
    if not cells:
        return None
    n = max(len(r) for r in cells)
    natural = [0.0] * n
    widest = [[0.0] * n for _ in range(3)]  # words, dotted parts, pieces
    prose = [False] * n
    for i, row in enumerate(cells):
        for j, text in enumerate(row):
            natural[j] = max([natural[j], *(measure(i, line) for line in text.split("\n"))])
            for level in range(3):
                for piece in unbreakable_pieces(text, level):
                    widest[level][j] = max(widest[level][j], measure(i, piece))
            prose[j] = prose[j] or (i >= header_rows and bool(re.search(r"[ \t\n]", text)))
    pad = 2 * CELL_PAD
    natural = [w + pad for w in natural]
    words, parts, pieces = ([w + pad for w in ws] for ws in widest)
    if sum(natural) <= total:
        return natural
    share = PROSE_SHARE * total
    long_text = [prose[j] and natural[j] > share for j in range(n)]
    room = [max(words[j], share) if long_text[j] else words[j] for j in range(n)]
    tiers = [
        room,
        [room[j] if prose[j] else parts[j] for j in range(n)],
        [words[j] if prose[j] else parts[j] for j in range(n)],
        pieces,
    ]
    floor = next((t for t in tiers if sum(t) <= total), None)
    if floor is None:
        return pieces

    def widths(level: float) -> list[float]:
        return [max(lo, min(hi, level)) for lo, hi in zip(floor, natural, strict=True)]

    low, high = 0.0, max(natural)
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (low, mid) if sum(widths(mid)) > total else (mid, high)
    out = widths(low)
    # a column of names that has to break shrinks to its widest broken line; the room it frees
    # goes to the columns of running text
    receivers = [j for j in range(n) if long_text[j]] or [j for j in range(n) if prose[j]]
    slack = 0.0
    for j in range(n):
        if prose[j] or out[j] >= natural[j] or not receivers:
            continue
        need = 0.0
        for i, row in enumerate(cells):
            if j < len(row):
                row_measure = partial(measure, i)
                for word in break_long_words(row[j], out[j] - pad, row_measure):
                    need = max([need, *(row_measure(line) for line in word.split("\n"))])
        if need + pad < out[j]:
            slack += out[j] - need - pad
            out[j] = need + pad
    for j in receivers:
        out[j] += slack / len(receivers)
    return out


def render_formula_png(latex: str, *, fontsize: int = 12, dpi: int = 200) -> bytes:
    """Render ``latex`` (math mode, without surrounding ``$``) to PNG bytes with mathtext.

    Raises:
        ValueError: when mathtext cannot parse the expression; the message names it.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        mathtext.math_to_image(
            f"${latex}$", buf, prop=FontProperties(size=fontsize), dpi=dpi, format="png"
        )
    except ValueError as err:
        raise ValueError(f"mathtext cannot render {latex!r}: {err}") from err
    return buf.getvalue()


@dataclass
class ReportDocument:
    """Collects headings, paragraphs, formulas, tables and figures, then writes a PDF.

    Text given to :meth:`heading`, :meth:`paragraph`, table headers and captions is
    :class:`~flowmap_oracle.reports.notation.Inline` text: ``$...$`` spans are inline notation,
    typeset like the display formulas (``\\$`` is a dollar). Strings computed elsewhere go in
    through :func:`~flowmap_oracle.reports.notation.literal` (shown as they are) or
    :func:`~flowmap_oracle.reports.notation.auto` (their ASCII formulas typeset).

    Arguments:
        title: the document title (first line of page one and PDF metadata), shown literally, or
            typeset when it is :class:`~flowmap_oracle.reports.notation.Inline` text.
    """

    title: str
    _story: list = field(default_factory=list, repr=False)
    math_spans: list[str] = field(default_factory=list, repr=False)
    """The TeX of every inline formula laid out so far (the tests parse them with mathtext)."""
    figures: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        from reportlab.lib.styles import getSampleStyleSheet

        register_fonts()
        self._styles = getSampleStyleSheet()
        for style in self._styles.byName.values():
            font = getattr(style, "fontName", "")
            if font:
                bold = "Bold" if "Bold" in font else ""
                oblique = "Oblique" if "Oblique" in font or "Italic" in font else ""
                face = f"-{bold}{oblique}" if bold or oblique else ""
                style.fontName = (MONO if font.startswith("Courier") else FONT) + face
        self._styles.add(
            self._styles["BodyText"].clone(
                "Caption", fontSize=9, leading=11.5, spaceBefore=2, spaceAfter=10
            )
        )
        self._cell = self._styles["BodyText"].clone(
            "Cell", fontSize=CELL_SIZE, leading=10, splitLongWords=0
        )
        self._head = self._cell.clone("CellHead", fontName=FONT + "-Bold")
        title = self.markup(self.title) if isinstance(self.title, Inline) else escape(self.title)
        self._story.append(_paragraph(title, self._styles["Title"]))

    def markup(self, text: str, **kwargs) -> str:
        """Reportlab markup for :class:`~flowmap_oracle.reports.notation.Inline` text
        (:func:`~flowmap_oracle.reports.notation.prose`), recording its formulas in
        :attr:`math_spans`; for paragraphs composed with ``paragraph(..., markup=True)``."""
        return prose(text, on_math=self.math_spans.append, **kwargs)

    def heading(self, text: str, *, level: int = 1) -> None:
        """Append a heading (:class:`~flowmap_oracle.reports.notation.Inline` text); level 0 is a
        title, 1 a section, 2 a subsection, 3 a paragraph heading."""
        style = {0: "Title", 1: "Heading1", 2: "Heading2", 3: "Heading3"}[level]
        self._story.append(_paragraph(self.markup(text), self._styles[style]))

    def paragraph(self, text: str, *, markup: bool = False, style: str = "BodyText") -> None:
        """Append a paragraph of :class:`~flowmap_oracle.reports.notation.Inline` text, or, when
        ``markup`` is true, of reportlab markup made by the caller (``<b>``, ``<i>``, ``<font>``,
        :func:`~flowmap_oracle.reports.notation.prose`)."""
        self._story.append(_paragraph(text if markup else self.markup(text), self._styles[style]))

    def code(self, text: str) -> None:
        """Append preformatted monospace text (reproduction snippets, commands); lines longer
        than the text width are folded."""
        from reportlab.platypus import Preformatted

        style = self._styles["Code"]
        room = self.text_width - style.leftIndent - style.rightIndent
        chars = max(20, int(room / (0.602 * style.fontSize)))  # DejaVu Sans Mono: 0.602 em
        self._story.append(
            Preformatted(text, style, maxLineLength=chars, splitChars=" ,(", newLineChars="    ")
        )

    def formula(self, latex: str, *, fontsize: int = 12, max_width: float | None = None) -> None:
        """Append a display formula rendered from ``latex`` by mathtext.

        The image is scaled down to fit ``max_width`` points (default: the text width).
        """
        from reportlab.lib.utils import ImageReader
        from reportlab.platypus import Image

        png = render_formula_png(latex, fontsize=fontsize)
        w_px, h_px = ImageReader(io.BytesIO(png)).getSize()
        scale = 72.0 / 200  # pixels at 200 dpi to points
        w, h = w_px * scale, h_px * scale
        limit = max_width or self.text_width
        if w > limit:
            h, w = h * limit / w, limit
        self._story.append(Image(io.BytesIO(png), width=w, height=h, hAlign="LEFT"))

    def table(self, rows: Sequence[Sequence[str]], *, header: Sequence[str] | None = None) -> None:
        """Append a table with an optional bold header row.

        A plain ``str`` cell is shown literally (names, numbers); an
        :class:`~flowmap_oracle.reports.notation.Inline` cell (from
        :func:`~flowmap_oracle.reports.notation.auto` or written with ``$...$``) is typeset;
        header cells are :class:`~flowmap_oracle.reports.notation.Inline` text. Column widths
        come from the content (:func:`column_widths`); cells wrap at spaces, and a name wider than
        its column breaks only after ``. _ : / -``, never inside a word.
        """
        from reportlab.lib import colors
        from reportlab.pdfbase.pdfmetrics import stringWidth
        from reportlab.platypus import Table, TableStyle

        texts = [[c if isinstance(c, Inline) else literal(c) for c in r] for r in rows]
        if header:
            texts.insert(0, [Inline(h) for h in header])
        fonts = [self._cell.fontName] * len(texts)
        if header:
            fonts[0] = self._head.fontName

        def measure(i: int) -> Callable[[str], float]:
            return lambda text: stringWidth(text, fonts[i], CELL_SIZE)

        visible = [[visible_text(prose(c)) for c in r] for r in texts]
        widths = column_widths(
            visible,
            self.text_width,
            lambda i, t: measure(i)(t),
            header_rows=1 if header else 0,
        )
        data = []
        for i, r in enumerate(texts):
            style = self._head if header and i == 0 else self._cell
            data.append(
                [
                    _paragraph(
                        self.markup(
                            c,
                            break_width=None if widths is None else widths[j] - 2 * CELL_PAD,
                            measure=measure(i),
                        ),
                        style,
                    )
                    for j, c in enumerate(r)
                ]
            )
        tbl = Table(
            data,
            colWidths=widths,
            repeatRows=1 if header else 0,
            hAlign="LEFT",
            spaceBefore=4,
            spaceAfter=6,
        )
        style = [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        if header:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke))
        tbl.setStyle(TableStyle(style))
        self._story.append(tbl)

    def figure(self, fig, *, width: float | None = None, caption: str | None = None) -> None:
        """Append a matplotlib figure (rendered as PNG at 150 dpi), numbered, with an optional
        caption (:class:`~flowmap_oracle.reports.notation.Inline` text) kept on its page."""
        from reportlab.lib.utils import ImageReader
        from reportlab.platypus import Image, KeepTogether

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
        buf.seek(0)
        w_px, h_px = ImageReader(buf).getSize()
        buf.seek(0)
        w_in = fig.get_size_inches()[0]
        width = width or min(self.text_width, w_in * 72)
        parts = [Image(buf, width=width, height=width * h_px / w_px)]
        self.figures += 1
        label = f"<b>Figure {self.figures}.</b>"
        text = f"{label} {self.markup(caption)}" if caption else label
        parts.append(_paragraph(text, self._styles["Caption"]))
        self._story.append(KeepTogether(parts))

    def spacer(self, height: float = 6) -> None:
        from reportlab.platypus import Spacer

        self._story.append(Spacer(1, height))

    def page_break(self) -> None:
        from reportlab.platypus import PageBreak

        self._story.append(PageBreak())

    @property
    def text_width(self) -> float:
        from reportlab.lib.pagesizes import A4

        return A4[0] - 2 * 56

    def save(self, path: str | os.PathLike) -> Path:
        """Write the PDF atomically with the user's normal permissions
        (:func:`~flowmap_oracle.experiments.records.atomic_file`)."""
        from reportlab.lib.pagesizes import A4
        from reportlab.platypus import SimpleDocTemplate

        path = Path(path)
        with atomic_file(path) as tmp:
            doc = SimpleDocTemplate(
                str(tmp),
                pagesize=A4,
                title=visible_text(prose(self.title))
                if isinstance(self.title, Inline)
                else self.title,
                leftMargin=56,
                rightMargin=56,
                topMargin=56,
                bottomMargin=56,
            )
            doc.build(list(self._story))
        return path


def _paragraph(text: str, style):
    from reportlab.platypus import Paragraph

    return Paragraph(text, style)
