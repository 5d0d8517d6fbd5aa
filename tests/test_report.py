"""The report command writes a readable PDF: the MeanFlow identity typeset with its check result,
and the one-step error figure (sections ``identities`` and ``training``; every other section has a
test of its own). The ``reports`` package is layout only: its modules import nothing that
computes, and the benchmark records come from an explicit directory."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import pdf_text

import flowmap_oracle.reports
from flowmap_oracle import report_job
from flowmap_oracle.cli import main
from flowmap_oracle.identities import all_identities
from flowmap_oracle.reports.report import SECTION_INPUTS, SECTIONS, write_report

pypdf = pytest.importorskip("pypdf")


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.pdf"
    args = ["report", "--quick", "--sections", "identities,training", "--out", str(path)]
    assert main(args) == 0
    return path


def _text_and_images(path):
    """The PDF's reader, its text with line breaks folded into spaces (headings may wrap), and
    its number of images."""
    reader = pypdf.PdfReader(str(path))
    images = sum(len(page.images) for page in reader.pages)
    return reader, pdf_text(path), images


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


def test_every_section_module_exists_and_takes_its_frozen_inputs():
    for name in SECTIONS:
        module = importlib.import_module(f"flowmap_oracle.reports.{name}_section")
        add = getattr(module, f"add_{name}_section")
        assert list(inspect.signature(add).parameters) == ["doc", "results"]
        inputs = SECTION_INPUTS[name]
        assert inputs.__module__ == module.__name__
        assert inputs.__dataclass_params__.frozen


# What a module of ``reports/`` may import from the layers that compute: result types (the
# section inputs hold them), one pure formatting helper, and the machine description that the
# standalone check report prints (python and library versions; it measures nothing).
RESULT_TYPES = {
    "flowmap_oracle.experiments.teacher_accuracy.ErrorRow",
    "flowmap_oracle.experiments.teacher_accuracy.Trajectories",
    "flowmap_oracle.experiments.meanflow_one_step.OneStepExperiment",
    "flowmap_oracle.experiments.fixed_points.FixedPointResult",
    "flowmap_oracle.experiments.fixed_points.ObjectiveSpec",
    "flowmap_oracle.experiments.smoke_training.SmokeResult",
    "flowmap_oracle.oracle.CheckResult",
    "flowmap_oracle.oracle.Implementation",
    "flowmap_oracle.oracle.OracleSettings",
    "flowmap_oracle.oracle.mutants.MutantResult",
    "flowmap_oracle.identities.CheckResult",
    "flowmap_oracle.identities.Identity",
    "flowmap_oracle.identities.paths.Erratum",
    "flowmap_oracle.identities.paths.PathRowComparison",
}
FORMATTING_HELPERS = {"flowmap_oracle.identities._core.display_latex"}
MACHINE_DESCRIPTION = {"flowmap_oracle.experiments.records.environment"}
FILE_WRITING = {"flowmap_oracle.experiments.records.atomic_file"}
ALLOWED = RESULT_TYPES | FORMATTING_HELPERS | MACHINE_DESCRIPTION | FILE_WRITING
COMPUTING_LAYERS = (
    "flowmap_oracle.experiments",
    "flowmap_oracle.oracle",
    "flowmap_oracle.identities",
    "flowmap_oracle.reference_models",
    "flowmap_oracle.objectives",
    "flowmap_oracle.conventions",
)


def _in_computing_layer(name: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in COMPUTING_LAYERS)


def layer_imports(source: str, package: str = "flowmap_oracle.reports") -> list[str]:
    """Every name that ``source`` (a module of ``package``) imports from a computing layer, fully
    qualified (``import a.b`` gives ``a.b``; ``from ..a import b`` gives ``flowmap_oracle.a.b``),
    wherever the import statement is (module level, a function body, ``if TYPE_CHECKING``), plus
    ``"<dynamic import>"`` for ``importlib`` or ``__import__``, which would hide one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            if any(n == "importlib" or n.startswith("importlib.") for n in names):
                found.append("<dynamic import>")
            found += [n for n in names if _in_computing_layer(n)]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if base == "importlib" or base.startswith("importlib."):
                found.append("<dynamic import>")
            found += [f"{base}.{a.name}" for a in node.names if _in_computing_layer(base)]
        elif isinstance(node, ast.Name) and node.id == "__import__":
            found.append("<dynamic import>")
    return found


def test_the_import_check_sees_computing_imports():
    """The check below can fail: a computing function imported back anywhere is reported."""
    source = (
        "from ..experiments.meanflow_one_step import OneStepExperiment\n"
        "from ..oracle import run_checks, CheckResult\n"
        "import flowmap_oracle.identities.paths\n"
        "def f():\n"
        "    from ..experiments.teacher_accuracy import measure_flow_map_errors\n"
        "    from ..reference_models import preset\n"
        "    import importlib\n"
        "    return __import__('flowmap_oracle.experiments')\n"
    )
    offenders = [n for n in layer_imports(source) if n not in ALLOWED]
    assert sorted(offenders) == sorted(
        [
            "flowmap_oracle.oracle.run_checks",
            "flowmap_oracle.identities.paths",
            "flowmap_oracle.experiments.teacher_accuracy.measure_flow_map_errors",
            "flowmap_oracle.reference_models.preset",
            "<dynamic import>",
            "<dynamic import>",
        ]
    )
    assert layer_imports("from .document import ReportDocument\nimport numpy\n") == []


def test_the_allow_list_holds_only_types_and_named_helpers():
    for name in ALLOWED:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert isinstance(obj, type) == (name in RESULT_TYPES), name


@pytest.mark.parametrize(
    "path",
    sorted(Path(flowmap_oracle.reports.__file__).parent.glob("*.py")),
    ids=lambda p: p.name,
)
def test_reports_modules_import_nothing_that_computes(path):
    offenders = [n for n in layer_imports(path.read_text()) if n not in ALLOWED]
    assert offenders == [], f"{path.name} imports from a computing layer: {offenders}"


def test_write_report_rejects_unknown_sections_and_wrong_inputs(tmp_path):
    with pytest.raises(ValueError, match="nonsense"):
        write_report(tmp_path / "r.pdf", {"nonsense": object()})
    with pytest.raises(TypeError, match="TrainingSectionInputs"):
        write_report(tmp_path / "r.pdf", {"training": object()})
    assert list(tmp_path.iterdir()) == []


def _teachers_inputs(benchmarks, benchmarks_dir):
    from flowmap_oracle.experiments.teacher_accuracy import ErrorRow, Trajectories
    from flowmap_oracle.reports.teachers_section import PresetSummary, TeachersSectionInputs

    points = np.linspace(0.0, 1.0, 3 * 4 * 2).reshape(3, 4, 2)
    return TeachersSectionInputs(
        error_rows=(ErrorRow("ring8", "x_s", "rtol 1e-13", 1.5e-13, 4),),
        error_seconds=0.25,
        quick=True,
        presets=(PresetSummary("ring8", 2, 8, "isotropic"),),
        trajectories=Trajectories("ring8", points, np.zeros((8, 2))),
        benchmarks=benchmarks,
        benchmarks_dir=benchmarks_dir,
    )


@pytest.mark.parametrize(
    ("benchmarks_dir", "expected"),
    [
        (None, "No benchmark directory was given"),
        ("missing", "does not exist, so no committed benchmark results are shown."),
        ("empty", "No benchmark results found under"),
    ],
)
def test_teachers_section_says_when_there_are_no_benchmark_records(
    tmp_path, benchmarks_dir, expected
):
    (tmp_path / "empty").mkdir()
    where = None if benchmarks_dir is None else tmp_path / benchmarks_dir
    records = report_job.load_benchmarks(where)
    assert records == (() if benchmarks_dir == "empty" else None)
    inputs = _teachers_inputs(records, None if where is None else str(where))
    path = write_report(tmp_path / "t.pdf", {"teachers": inputs})
    text = pdf_text(path)
    assert "Measured flow-map errors" in text and "1.5e-13" in text
    assert expected in text


@pytest.mark.parametrize(
    ("argv", "make_default", "expected"),
    [
        ([], True, "benchmarks"),
        ([], False, None),
        (["--benchmarks", "elsewhere"], True, "elsewhere"),
    ],
)
def test_report_cli_passes_the_benchmark_directory(
    tmp_path, monkeypatch, argv, make_default, expected
):
    seen = {}

    def fake_build_report(path, *, quick, sections, benchmarks_dir, **_):
        seen["benchmarks_dir"] = benchmarks_dir
        return Path(path)

    monkeypatch.setattr(report_job, "build_report", fake_build_report)
    monkeypatch.chdir(tmp_path)
    if make_default:
        (tmp_path / "benchmarks").mkdir()
    assert main(["report", "--out", "r.pdf", *argv]) == 0
    assert seen == {"benchmarks_dir": expected}


def test_table_columns_short_ones_keep_their_width_long_ones_wrap():
    from flowmap_oracle.reports.document import column_widths

    def widths(cells):
        return column_widths(cells, 400.0, lambda _row, text: 4.6 * len(text))

    narrow = widths([["preset", "err"], ["ring8", "1e-3"]])
    assert sum(narrow) < 400.0  # a table that fits is not stretched
    long_text = " ".join(["words"] * 60)
    got = widths([["result", "the bug"], ["killed", long_text]])
    assert abs(sum(got) - 400.0) < 1e-6
    assert got[0] == widths([["result"], ["killed"]])[0]
    assert abs(got[1] - (400.0 - got[0])) < 1e-6  # the long column takes the rest
