"""``flowmap-oracle check``: exit status, the JSON objects, the PDF report with its header; and
the oracle's section of the full report."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from helpers import pdf_text

from flowmap_oracle.cli import main
from flowmap_oracle.oracle import load_implementation, run_check
from flowmap_oracle.oracle.mutants import run_mutant

pytest.importorskip("pypdf")  # pdf_text reads the PDFs

GOOD = "examples.torch_edm_consistency:implementation"
BAD = "flowmap_oracle.oracle.mutants.meanflow:sign_of_t_minus_s"


def test_check_passes_an_example_and_writes_json_and_pdf(tmp_path, capsys):
    out_json, out_pdf = tmp_path / "r.json", tmp_path / "r.pdf"
    assert main(["check", GOOD, "--json", str(out_json), "--pdf", str(out_pdf)]) == 0
    rows = json.loads(out_json.read_text())["results"]
    assert rows and all({"check", "status", "message"} <= set(r) for r in rows)
    assert {r["status"] for r in rows} <= {"pass", "skip"}
    assert any(r["status"] == "pass" for r in rows)
    text = pdf_text(out_pdf)
    assert "flowmap-oracle check: example: torch consistency model" in text
    assert "edm_sigma" in text and "x0" in text  # the declared conventions
    assert "profile=ci" in text  # the settings
    assert f"torch {metadata.version('torch')}" in text  # and the versions
    assert "Every applicable check passes" in text
    assert "passed" in capsys.readouterr().out


def test_check_fails_a_mutant_with_the_failure_in_json_and_pdf(tmp_path):
    out_json, out_pdf = tmp_path / "r.json", tmp_path / "r.pdf"
    assert (
        main(["check", BAD, "--only", "meanflow", "--json", str(out_json), "--pdf", str(out_pdf)])
        == 1
    )
    rows = json.loads(out_json.read_text())["results"]
    failed = [r for r in rows if r["status"] == "fail"]
    assert failed and all(r["objective"] == "meanflow" for r in rows)
    assert "differs from the reference" in failed[0]["message"]
    assert failed[0]["reproduce"].startswith("from flowmap_oracle import reproduce")
    text = pdf_text(out_pdf)
    assert "Failure: meanflow.target" in text and "Reproduce with" in text
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["r.json", "r.pdf"]  # atomic writes leave no temporary files


def test_check_with_a_bad_spec_exits_2_with_the_reason(capsys):
    assert main(["check", "flowmap_oracle.oracle.reference:no_such_factory"]) == 2
    assert "has no attribute 'no_such_factory'" in capsys.readouterr().err


def test_oracle_report_section_renders_the_reference_run_and_the_kill_table(tmp_path):
    from flowmap_oracle.oracle import OracleSettings
    from flowmap_oracle.reports import oracle_section
    from flowmap_oracle.reports.document import ReportDocument

    ref, settings = load_implementation(), OracleSettings()
    inputs = oracle_section.OracleSectionInputs(
        settings=settings,
        n_checks=1,
        reference_results=(run_check("model.flow_map.one_step", ref, settings),),
        mutant_results=(run_mutant("model.c_out_t_minus_s", settings),),
    )
    doc = ReportDocument("oracle section")
    oracle_section.add_oracle_section(doc, inputs)
    text = pdf_text(doc.save(tmp_path / "s.pdf"))
    assert "The oracle: conformance checks of other implementations" in text
    assert "Proof by mutants: the kill table" in text
    assert "model.c_out_t_minus_s" in text and "kill rate 100 %" in text
    assert "model.flow_map.one_step" in text
