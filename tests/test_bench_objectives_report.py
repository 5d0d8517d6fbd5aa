"""The layout of the benchmark of objectives: the README leaderboard and the PDF section, from
synthetic results (nothing is trained here)."""

from __future__ import annotations

import json

import pytest

from flowmap_oracle.experiments.bench_objectives import (
    cpu_config,
    load_objectives_benchmark,
    summarise,
)
from flowmap_oracle.reports.objectives_benchmark_section import (
    ObjectivesBenchmarkSectionInputs,
    add_objectives_benchmark_section,
    leaderboard_markdown,
)

EULER = {1: 2.0, 2: 0.7, 4: 0.23, 8: 0.12}
HEUN = {1: 1.4, 2: 0.28, 4: 0.05, 8: 0.013}
ONE_STEP = {
    "meanflow": (0.10, 0.12, 0.11),
    "flow_matching": (2.1, 2.0, 2.2),
    "imm": (0.5, 0.6, 0.7),
}


def _cell(objective, seed, k):
    sampler = "euler" if objective == "flow_matching" else "multi_step"
    rmse = ONE_STEP[objective][seed] / k if sampler == "multi_step" else EULER[k] * 1.1
    grid = [] if sampler == "euler" else [{"t": 1.0, "s": 0.0, "rmse": rmse}]
    return {
        "status": "ok",
        "config": "cpu",
        "objective": objective,
        "teacher": "ring8",
        "path": "linear",
        "steps": k,
        "seed": seed,
        "sampler": sampler,
        "rmse_exact": rmse,
        "w2": rmse + 0.05,
        "mmd": 0.01,
        "ts_grid": grid,
        "train_steps": 100,
        "batch": 64,
        "train_compute": 6400,
        "seconds": 2.0,
        "curve": {"step": [0, 50, 100], "loss": [None, 1.0, 0.9], "rmse_exact": [0.9, 0.5, rmse]},
        "plateau": {"reached": seed != 0},
        "baselines": {
            "euler": {"rmse_exact": EULER[k]},
            "heun": {"rmse_exact": HEUN[k]},
            "adaptive": {"rmse_exact": 0.006},
        },
    }


CELLS = [_cell(o, s, k) for o in ONE_STEP for s in range(3) for k in (1, 2, 4, 8)]


def test_leaderboard_ranks_by_one_step_error_against_the_euler_line():
    text = leaderboard_markdown(summarise(CELLS))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["meanflow", "imm", "flow_matching"]
    # one-step mean 0.11 is below Euler's 8-step 0.12; IMM's 0.6 is not
    assert rows[0].split("|")[-3].strip() == "yes" and rows[1].split("|")[-3].strip() == "no"
    assert rows[0].split("|")[-2].strip() == "2/3"  # seeds 1 and 2 reached the plateau
    assert "| teacher Heun | 1.400 | 0.280 | 0.050 | 0.013 |" in text
    assert "0.110 ± " in rows[0]
    assert "no results" in leaderboard_markdown(summarise(CELLS), teacher="full64")


def test_section_lays_out_the_committed_results(tmp_path):
    pytest.importorskip("reportlab")
    from pypdf import PdfReader

    from flowmap_oracle.reports.document import ReportDocument

    path = tmp_path / "objectives_cpu.json"
    doc = {
        "command": "flowmap-oracle bench objectives",
        "config": cpu_config().to_json(),
        "environment": {"device": "cpu", "versions": {"torch": "x"}, "cpu_count": 2},
        "results": [
            *CELLS,
            {**CELLS[0], "objective": "ctm", "status": "error", "error": "ValueError: boom"},
        ],
    }
    path.write_text(json.dumps(doc))
    results = load_objectives_benchmark(path)
    assert len(results.failures) == 1 and len(results.cells) == len(CELLS)
    report = ReportDocument(title="test")
    add_objectives_benchmark_section(report, ObjectivesBenchmarkSectionInputs(results))
    assert report.figures == 3
    pdf = report.save(tmp_path / "section.pdf")
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Benchmark of objectives" in text and "boom" in text


def test_load_refuses_a_file_that_is_not_a_benchmark_document(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match="not a bench objectives JSON document"):
        load_objectives_benchmark(path)
