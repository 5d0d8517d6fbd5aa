"""A small PDF document builder on reportlab, with formulas rendered by matplotlib mathtext.

Sections of the report (identities, oracle runs, benchmarks) append flowables through this
class; none of them touches reportlab directly. No TeX installation is needed: formulas are
rendered by matplotlib's mathtext, which understands a large subset of LaTeX.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from ..experiments.records import atomic_file

__all__ = ["ReportDocument", "render_formula_png"]


def _column_widths(
    rows: list[list[str]], header: list[str] | None, total: float
) -> list[float] | None:
    """Column widths in points. A table that fits keeps its natural widths; otherwise the widths
    sum to ``total``: a column whose longest cell fits its fair share
    keeps its natural width (short numeric columns stay on one line); the remaining width is
    shared by the long text columns in proportion to their longest cell, where they wrap."""
    table = ([header] if header else []) + [list(map(str, r)) for r in rows]
    if not table:
        return None
    n = max(len(r) for r in table)
    longest = [max((len(str(r[j])) for r in table if j < len(r)), default=1) for j in range(n)]
    # 8 pt Helvetica averages about 4.6 pt per character; 12 pt covers the cell padding.
    natural = [min(length, 80) * 4.6 + 12 for length in longest]
    if sum(natural) <= total:
        return natural
    fixed: set[int] = set()
    while True:
        rest = [j for j in range(n) if j not in fixed]
        room = total - sum(natural[j] for j in fixed)
        fits = {j for j in rest if natural[j] <= room / len(rest)}
        if not fits:
            scale = room / sum(natural[j] for j in rest)
            return [natural[j] if j in fixed else natural[j] * scale for j in range(n)]
        fixed |= fits


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

    Arguments:
        title: the document title (first line of page one and PDF metadata).
    """

    title: str
    _story: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        from reportlab.lib.styles import getSampleStyleSheet

        self._styles = getSampleStyleSheet()
        self.heading(self.title, level=0)

    def heading(self, text: str, *, level: int = 1) -> None:
        """Append a heading; level 0 is the title, 1 a section, 2 a subsection."""
        from reportlab.platypus import Paragraph

        style = {0: "Title", 1: "Heading1", 2: "Heading2", 3: "Heading3"}[level]
        self._story.append(Paragraph(escape(text), self._styles[style]))

    def paragraph(self, text: str, *, markup: bool = False, style: str = "BodyText") -> None:
        """Append a paragraph. Plain text is escaped unless ``markup`` is true (reportlab's
        mini-HTML: ``<b>``, ``<i>``, ``<font>``)."""
        from reportlab.platypus import Paragraph

        self._story.append(Paragraph(text if markup else escape(text), self._styles[style]))

    def code(self, text: str) -> None:
        """Append preformatted monospace text (reproduction snippets, commands)."""
        from reportlab.platypus import Preformatted

        self._story.append(Preformatted(text, self._styles["Code"]))

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

    def table(self, rows: list[list[str]], *, header: list[str] | None = None) -> None:
        """Append a table of strings with an optional bold header row."""
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        cell = self._styles["BodyText"].clone("cell", fontSize=8, leading=10)
        data = [[Paragraph(escape(str(c)), cell) for c in r] for r in rows]
        if header:
            bold = cell.clone("head", fontName="Helvetica-Bold")
            data.insert(0, [Paragraph(escape(h), bold) for h in header])
        tbl = Table(
            data,
            colWidths=_column_widths(rows, header, self.text_width),
            repeatRows=1 if header else 0,
            hAlign="LEFT",
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
        """Append a matplotlib figure (rendered as PNG at 150 dpi) with an optional caption."""
        from reportlab.platypus import Image

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
        w_in, h_in = fig.get_size_inches()
        width = width or min(self.text_width, w_in * 72)
        self._story.append(Image(buf, width=width, height=width * h_in / w_in))
        if caption:
            self.paragraph(caption, style="Italic")

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
                title=self.title,
                leftMargin=56,
                rightMargin=56,
                topMargin=56,
                bottomMargin=56,
            )
            doc.build(list(self._story))
        return path
