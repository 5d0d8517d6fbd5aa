"""The report command writes a readable PDF holding every section."""

from __future__ import annotations

import pytest

from flowmap_oracle.cli import main
from flowmap_oracle.reports.report import SECTIONS

pypdf = pytest.importorskip("pypdf")


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.pdf"
    assert main(["report", "--quick", "--out", str(path)]) == 0
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


def test_report_write_is_atomic_and_leaves_no_temporary_files(report_pdf):
    leftovers = [p.name for p in report_pdf.parent.iterdir() if p.name != report_pdf.name]
    assert leftovers == []


def test_every_section_module_exists():
    import importlib

    for name in SECTIONS:
        module = importlib.import_module(f"flowmap_oracle.reports.{name}_section")
        assert callable(getattr(module, f"add_{name}_section"))
