"""The report command writes a readable PDF: the MeanFlow identity typeset with its check result,
and the one-step error figure (sections ``identities`` and ``training``; every other section has a
test of its own)."""

from __future__ import annotations

import re

import pytest

from flowmap_oracle.cli import main
from flowmap_oracle.identities import all_identities
from flowmap_oracle.reports.report import SECTIONS

pypdf = pytest.importorskip("pypdf")


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.pdf"
    args = ["report", "--quick", "--sections", "identities,training", "--out", str(path)]
    assert main(args) == 0
    return path


def _text_and_images(path):
    reader = pypdf.PdfReader(str(path))
    text = "\n".join(page.extract_text() for page in reader.pages)
    images = sum(len(page.images) for page in reader.pages)
    return reader, text, images


def test_report_is_a_readable_pdf_with_the_one_step_error_figure(report_pdf):
    reader, text, images = _text_and_images(report_pdf)
    assert len(reader.pages) >= 1
    assert "One-step error of MeanFlow against the exact flow map" in text
    assert "error after" in text
    assert images >= 1


def test_report_holds_the_meanflow_identity_and_its_check_result(report_pdf):
    _, text, _ = _text_and_images(report_pdf)
    assert "Identities of the unified framework" in text
    assert "meanflow.identity" in text
    # The summary line counts passing identities and rejected twins over all identities.
    m = re.search(
        r"(\d+)/(\d+) identities pass; the wrong twins are rejected for (\d+)/(\d+)", text
    )
    assert m is not None, "summary line missing"
    n_pass, n_all, n_twin, n_all2 = map(int, m.groups())
    assert n_pass == n_all == n_twin == n_all2 == len(all_identities())


def test_unknown_section_is_an_error(tmp_path, capsys):
    assert (
        main(["report", "--sections", "identities,nonsense", "--out", str(tmp_path / "r.pdf")]) == 2
    )
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()


def test_report_write_is_atomic_and_leaves_no_temporary_files(report_pdf):
    leftovers = [p.name for p in report_pdf.parent.iterdir() if p.name != report_pdf.name]
    assert leftovers == []


def test_every_section_module_exists():
    import importlib

    for name in SECTIONS:
        module = importlib.import_module(f"flowmap_oracle.reports.{name}_section")
        assert callable(getattr(module, f"add_{name}_section"))


def test_table_columns_short_ones_keep_their_width_long_ones_wrap():
    from flowmap_oracle.reports.document import _column_widths

    narrow = _column_widths([["ring8", "1e-3"]], ["preset", "err"], 400.0)
    assert sum(narrow) < 400.0  # a table that fits is not stretched
    long_text = "x" * 300
    widths = _column_widths([["killed", long_text]], ["result", "the bug"], 400.0)
    assert abs(sum(widths) - 400.0) < 1e-9
    assert widths[0] == _column_widths([["killed"]], ["result"], 400.0)[0]
    assert abs(widths[1] - (400.0 - widths[0])) < 1e-9  # the long column takes the rest
