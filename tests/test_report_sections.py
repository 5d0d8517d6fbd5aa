"""Every section of the report, built directly from small inputs: the running text shows the
typeset notation (``Φ1→0(x1)``, ``ft→s(x)``, ``x1 − x0``) and no raw ASCII notation (``_{``,
``->``, ``Phi_``, ``x_t``), every inline formula is valid mathtext, and every figure has labelled
axes, a title and a legend for its several series."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import pdf_text

pytest.importorskip("reportlab")
pytest.importorskip("matplotlib")
pytest.importorskip("pypdf")  # pdf_text reads the PDFs

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.mathtext import MathTextParser

from flowmap_oracle.reports.document import ReportDocument
from flowmap_oracle.reports.notation import visible_text

RAW_NOTATION = [
    re.compile(r"_\{"),
    re.compile(r"->"),
    re.compile(r"\b(?:Phi|Sigma|sigma|theta|alpha|beta|tau|mu|epsilon)\b"),
    re.compile(r"(?<![\w.])[A-Za-z]_[A-Za-z0-9](?![\w.\[])"),  # x_t, not x_t_s or a.b_c
    re.compile(r"(?<![\w.])x[01](?![\w.])"),  # x0, x1 not subscripted
]


def _raw_notation(text: str) -> list[str]:
    return [m.group(0) for pattern in RAW_NOTATION for m in pattern.finditer(text)]


def _story_text(doc: ReportDocument) -> str:
    """The text of every paragraph and table cell, from its markup, with sub- and superscripts
    shown as ``_[..]`` and ``^[..]`` (so that ``x1`` and a typeset ``x_[1]`` differ)."""
    from reportlab.platypus import KeepTogether, Paragraph, Table

    out: list[str] = []

    def visit(flowable) -> None:
        if isinstance(flowable, Paragraph):
            markup = re.sub(r"<sub[^>]*>", "_[", flowable.text)
            markup = re.sub(r"<super[^>]*>", "^[", markup)
            markup = re.sub(r"</sub>|</super>", "]", markup)
            out.append(visible_text(markup))
        elif isinstance(flowable, Table):
            for row in flowable._cellvalues:
                for cell in row:
                    visit(cell)
        elif isinstance(flowable, KeepTogether):
            for part in flowable._content:
                visit(part)

    for flowable in doc._story:
        visit(flowable)
    return " ".join(" ".join(out).split())


def _names_removed(text: str) -> str:
    """``text`` without identifiers (dotted or with several underscores) and twin names."""
    return re.sub(r"\S*[._]\S*[._]\S*|\b[a-z]+_[a-z]+\b", " ", text)


def _build(add, inputs, tmp_path) -> tuple[ReportDocument, str]:
    """Lay out one section; returns the document and the PDF's text. Checks that the markup
    holds no raw ASCII notation and that every inline formula is valid mathtext."""
    doc = ReportDocument("section")
    add(doc, inputs)
    text = pdf_text(doc.save(tmp_path / "section.pdf"))
    parser = MathTextParser("path")
    for span in doc.math_spans:
        parser.parse(f"${span}$")
    story = _names_removed(re.sub(r"remainder: .*?\)\.", " ", _story_text(doc)))
    assert _raw_notation(story) == [], story
    return doc, text


def _one_step_runs():
    from flowmap_oracle.experiments.meanflow_one_step import OneStepExperiment

    gen = torch.Generator().manual_seed(0)
    runs = []
    for velocity in ("teacher", "conditional"):
        exact = torch.randn(64, 2, generator=gen, dtype=torch.float64)
        runs.append(
            OneStepExperiment(
                teacher="ring8",
                objective="meanflow",
                velocity=velocity,
                steps=5,
                batch_size=8,
                error_before=0.9,
                error_after=0.6,
                losses=[1.0, 0.8, 0.7, 0.6, 0.5],
                seconds=0.1,
                noise=torch.randn(64, 2, generator=gen, dtype=torch.float64),
                exact=exact,
                predicted=exact + 0.1,
            )
        )
    return tuple(runs)


def _trajectories():
    from flowmap_oracle.experiments.teacher_accuracy import Trajectories

    points = np.linspace(0.0, 1.0, 5 * 6 * 2).reshape(5, 6, 2)
    return Trajectories("ring8", points, np.zeros((8, 2)))


def _smoke_runs():
    from flowmap_oracle.experiments.smoke_training import SmokeResult

    return tuple(
        SmokeResult(name, metric, 40, 128, 3e-3, 0.9, 0.8, 0.1, [1.0, 0.5])
        for name, metric in (("flow_matching", "4-step Euler"), ("meanflow", "one-step"))
    )


def test_training_section_typesets_its_notation(tmp_path):
    from flowmap_oracle.reports.training_section import (
        TrainingSectionInputs,
        add_training_section,
    )

    _, text = _build(add_training_section, TrainingSectionInputs(_one_step_runs()), tmp_path)
    for typeset in ("F(x, t, s)", "x1 − x0", "f(x1, 1, 0) = x1 − F(x1, 1, 0)", "Φ1→0(x1)"):
        assert typeset in text, typeset
    assert "Figure 1." in text
    assert not re.search(r"_\{|->|Phi_", text)


def test_teachers_section_typesets_its_notation(tmp_path):
    from flowmap_oracle.experiments.teacher_accuracy import ErrorRow
    from flowmap_oracle.reports.teachers_section import (
        PresetSummary,
        TeachersSectionInputs,
        add_teachers_section,
    )

    inputs = TeachersSectionInputs(
        error_rows=(
            ErrorRow("ring8", "x_s (1 -> 0)", "rtol 1e-13", 1.5e-13, 4),
            ErrorRow("ring8", "F* = v - (t-s) D_t F*", "MeanFlow identity", 2e-15, 4),
        ),
        error_seconds=0.25,
        quick=True,
        presets=(PresetSummary("anisotropic_gaussian", 2, 8, "isotropic"),),
        trajectories=_trajectories(),
        benchmarks=None,
    )
    _, text = _build(add_teachers_section, inputs, tmp_path)
    for typeset in ("xt = α(t) x0 + β(t) x1", "σmin", "Ck−1", "a = Jxv v + ∂tv", "xs (1 → 0)"):
        assert typeset in text, typeset
    assert "anisotropic_gaussian" in text  # names stay as they are
    assert not re.search(r"_\{|->|Phi_", text)


def test_objectives_section_typesets_its_notation(tmp_path):
    from flowmap_oracle.experiments.fixed_points import OBJECTIVES, FixedPointResult
    from flowmap_oracle.reports.objectives_section import (
        ObjectivesSectionInputs,
        add_objectives_section,
    )

    specs = tuple(OBJECTIVES[:3])
    fixed = tuple(
        FixedPointResult(
            s.name, s.loss_type, s.module, s.fixed_point_kind, 1e-12, s.tolerance,
            s.tolerance_reason, 1.0, True, s.teacher, s.control, None, 16, 0.1,
        )
        for s in specs
    )  # fmt: skip
    inputs = ObjectivesSectionInputs(specs, fixed, _smoke_runs())
    _, text = _build(add_objectives_section, inputs, tmp_path)
    for typeset in ("Φ1→0", "f1→0(x1)", "F(x, t, t)", "xt = (1 − t) x0 + t x1"):
        assert typeset in text, typeset
    assert "split_meanflow" in text
    assert not re.search(r"_\{|->|Phi_", text)


def test_oracle_section_typesets_descriptions_and_keeps_check_names(tmp_path):
    from flowmap_oracle.oracle import CheckResult, OracleSettings
    from flowmap_oracle.oracle.mutants import MUTANTS, MutantResult, mutant_names
    from flowmap_oracle.reports.oracle_section import OracleSectionInputs, add_oracle_section

    mutants = tuple(
        MutantResult(m.name, m.objective, m.description, True, "meanflow.target.stop_gradient",
                     "differs", 0.1)
        for m in [MUTANTS[name] for name in mutant_names()[:12]]
    )  # fmt: skip
    checks = (
        CheckResult(
            "meanflow.target.exact_map_fixed_point",
            "meanflow",
            "fail",
            "MeanFlow target F_tgt (our convention) with v = x1 - x0 differs from the reference",
        ),
        CheckResult("model.flow_map.one_step", "model", "pass", "passed (5 explicit cases)"),
    )
    inputs = OracleSectionInputs(OracleSettings(), 2, checks, mutants)
    _, text = _build(add_oracle_section, inputs, tmp_path)
    assert "Ftgt (our convention) with v = x1 − x0" in text
    assert "meanflow.target.exact_map_fixed_point" in text.replace(" ", "")
    assert "EDM σ" in text
    # names in the kill table stay names (their underscores are not subscripts)
    names = " ".join(m.mutant for m in mutants)
    assert all(n in text.replace(" ", "") for n in names.split())
    assert not re.search(r"_\{|->|Phi_", text)


def test_identities_section_typesets_the_identities_texts(tmp_path):
    from flowmap_oracle.identities import get
    from flowmap_oracle.report_job import identities_inputs
    from flowmap_oracle.reports.identities_section import add_identities_section

    chosen = [get("meanflow.sampling"), get("meanflow.identity")]
    doc, text = _build(add_identities_section, identities_inputs(chosen), tmp_path)
    assert "ft→s(x) = x + (s − t) F(x, t, s)" in text
    assert "Φt→s(xt)" in text
    assert len(doc.math_spans) > 20
    assert not re.search(r"->|Phi_", text)


def test_the_report_introduction_states_the_convention_typeset(tmp_path):
    from flowmap_oracle.reports.report import write_report
    from flowmap_oracle.reports.training_section import TrainingSectionInputs

    path = write_report(tmp_path / "r.pdf", {"training": TrainingSectionInputs(_one_step_runs())})
    text = pdf_text(path)
    assert "Convention: xt = (1 − t) x0 + t x1" in text
    assert "ft→s(x) = x + (s − t) F(x, t, s)" in text
    assert not re.search(r"_\{|->|Phi_", text)


# --- figures ---------------------------------------------------------------------------------


def _figures():
    from flowmap_oracle.reports.objectives_section import smoke_figure
    from flowmap_oracle.reports.teachers_section import trajectory_figure
    from flowmap_oracle.reports.training_section import training_figure

    return {
        "trajectories": trajectory_figure(_trajectories()),
        "training": training_figure(_one_step_runs()),
        "smoke": smoke_figure(_smoke_runs()),
    }


def test_every_figure_has_labelled_axes_a_title_and_readable_legends():
    text_width_in = (595.27 - 2 * 56) / 72
    for name, fig in _figures().items():
        # drawn at the text width or narrower, so fonts reach the page at their own size
        assert fig.get_size_inches()[0] <= text_width_in + 0.05, name
        for ax in fig.axes:
            assert ax.get_xlabel().strip(), (name, "x label")
            assert ax.get_ylabel().strip(), (name, "y label")
            assert ax.get_title().strip(), (name, "title")
            series = [
                a
                for a in [*ax.lines, *ax.collections, *ax.patches]
                if a.get_label() and not a.get_label().startswith("_")
            ]
            labels = {a.get_label() for a in series}
            if len(labels) > 1:
                legend = ax.get_legend()
                assert legend is not None, (name, "legend")
                shown = {t.get_text() for t in legend.get_texts()}
                assert labels <= shown, (name, labels, shown)
                assert min(t.get_fontsize() for t in legend.get_texts()) >= 7, name
        fig.canvas.draw()  # every label and legend entry renders (mathtext included)
        plt.close(fig)
