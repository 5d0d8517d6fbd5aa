"""Ctrl-C: every long command writes what finished (JSON with ``"complete": false``, the report
PDF with its finished sections and a sentence saying it is incomplete), prints one line and exits
130. The interrupt is raised by a library function monkeypatched here to raise KeyboardInterrupt
after N items (a real SIGINT through a terminal is in test_cli_progress.py)."""

from __future__ import annotations

import json

import pytest

import flowmap_oracle.oracle.runner as oracle_runner
from flowmap_oracle.cli import EXIT_INTERRUPTED, main
from flowmap_oracle.oracle import CheckResult


def _after(n: int, real):
    """``real`` for the first ``n`` calls, then KeyboardInterrupt (as Ctrl-C would raise)."""
    calls = [0]

    def fake(*args, **kwargs):
        calls[0] += 1
        if calls[0] > n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return fake


def _interrupt_line(capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "interrupted (Ctrl-C)" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return captured.out


def test_check_writes_the_finished_checks_to_json_and_pdf(tmp_path, capsys, monkeypatch):
    from helpers import pdf_text

    pytest.importorskip("pypdf")

    def passed(chk, impl, settings=None):  # a fast stand-in for a real check
        return CheckResult(chk.name, chk.objective, "pass", "passed", seconds=0.25)

    monkeypatch.setattr(oracle_runner, "run_check", _after(2, passed))
    out_json, out_pdf = tmp_path / "c.json", tmp_path / "c.pdf"
    argv = ["check", "flowmap_oracle.oracle.reference:implementation", "--only", "flow_matching"]
    code = main([*argv, "meanflow", "--json", str(out_json), "--pdf", str(out_pdf)])
    assert code == EXIT_INTERRUPTED
    _interrupt_line(capsys, "2 of", "checks finished", str(out_json), "marked incomplete")
    doc = json.loads(out_json.read_text())
    assert doc["complete"] is False
    assert len(doc["results"]) == 2 and doc["counts"]["pass"] == 2
    assert [r["seconds"] for r in doc["results"]] == [0.25, 0.25]  # per-item timings
    assert doc["implementation"]["spec"] == "flowmap_oracle.oracle.reference:implementation"
    text = pdf_text(out_pdf)
    assert "Incomplete run" in text and "after 2 of" in text
    assert "Every check that ran passes" in text


def test_identities_prints_the_finished_ones_as_incomplete_json(capsys, monkeypatch):
    from flowmap_oracle import identities

    real = identities.all_identities

    class Interrupting:
        """An identity whose check is interrupted."""

        def __init__(self, identity):
            self._identity = identity

        def __getattr__(self, name):
            return getattr(self._identity, name)

        def check(self):
            raise KeyboardInterrupt

    def chosen():
        idents = real()
        return [*idents[:1], *(Interrupting(i) for i in idents[1:])]

    monkeypatch.setattr(identities, "all_identities", chosen)
    assert main(["identities", "--json", "--only", "boundary"]) == EXIT_INTERRUPTED
    out = _interrupt_line(capsys, "1 of 3 identities checked")
    doc = json.loads(out)
    assert doc["complete"] is False and [r["id"] for r in doc["results"]] == [
        "boundary.meanflow_ayf"
    ]
    assert doc["results"][0]["seconds"] > 0


def test_objectives_prints_the_finished_ones_as_incomplete_json(capsys, monkeypatch):
    from flowmap_oracle.experiments import fixed_points

    monkeypatch.setattr(
        fixed_points, "measure_fixed_points", _after(1, fixed_points.measure_fixed_points)
    )
    assert main(["objectives", "--json", "--only", "flow_matching", "meanflow"]) == 130
    doc = json.loads(_interrupt_line(capsys, "1 of 2 objectives measured"))
    assert doc["complete"] is False and [r["name"] for r in doc["results"]] == ["flow_matching"]
    assert "seconds" in doc["results"][0]


def test_smoke_training_writes_the_finished_runs(tmp_path, capsys, monkeypatch):
    from flowmap_oracle.experiments import smoke_training

    def trained(name, **kwargs):  # a fast stand-in for a training run
        return smoke_training.SmokeResult(name, "one-step", 3, 8, 1e-3, 0.9, 0.8, 0.5, [1.0])

    monkeypatch.setattr(smoke_training, "smoke_train", _after(1, trained))
    out = tmp_path / "smoke.json"
    argv = ["objectives", "--smoke-json", str(out), "--only", "meanflow", "flow_matching"]
    assert main(argv) == EXIT_INTERRUPTED
    _interrupt_line(capsys, "1 of 2 objectives trained", "marked incomplete")
    record = json.loads(out.read_text())
    assert record["complete"] is False
    assert [r["name"] for r in record["runs"]] == ["meanflow"]
    assert record["runs"][0]["seconds"] == 0.5


def test_mutants_prints_the_finished_rows(capsys, monkeypatch):
    from flowmap_oracle.oracle import mutants
    from flowmap_oracle.oracle.mutants import MutantResult

    def row(name):
        return MutantResult(name, "meanflow", "a bug", True, "meanflow.target", "differs", 0.5)

    monkeypatch.setattr(mutants, "mutant_names", lambda: ["a.first", "b.second", "c.third"])
    monkeypatch.setattr(mutants, "run_mutant", _after(1, row))
    assert main(["mutants", "--json"]) == EXIT_INTERRUPTED
    doc = json.loads(_interrupt_line(capsys, "1 of 3 mutants run"))
    assert doc["complete"] is False and [r["mutant"] for r in doc["results"]] == ["a.first"]
    monkeypatch.setattr(mutants, "run_mutant", _after(1, row))
    assert main(["mutants"]) == EXIT_INTERRUPTED  # the table, too, shows what finished
    out = _interrupt_line(capsys)
    assert "a.first" in out and "b.second" not in out


def test_bench_teachers_writes_the_finished_stages(tmp_path, capsys, monkeypatch):
    from flowmap_oracle.experiments import bench_teachers

    monkeypatch.setattr(bench_teachers, "_time", _after(1, bench_teachers._time))
    out = tmp_path / "teachers.json"
    argv = ["bench", "teachers", "--n", "16", "--rtol", "1e-5", "--json", str(out)]
    assert main(argv) == EXIT_INTERRUPTED
    _interrupt_line(capsys, "stages finished", "marked incomplete")
    record = json.loads(out.read_text())
    assert record["complete"] is False and record["n"] == 16
    stages = record["finished_stages"]
    assert list(stages)[:4] == ["reference", "reference_check", "warm_up", "ours, repeat 1"]
    assert all(stage["seconds"] >= 0 for stage in stages.values())
    assert record["environment"]["versions"]["torch"]


def test_a_complete_teachers_record_has_its_stage_timings(tmp_path, capsys, monkeypatch):
    from flowmap_oracle.experiments import bench_teachers

    monkeypatch.setattr(bench_teachers, "_LOOSER", ())  # no matched-error reruns: faster
    out = tmp_path / "teachers.json"
    assert main(["bench", "teachers", "--n", "8", "--rtol", "1e-5", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["complete"] is True
    assert {"reference", "reference_check", "warm_up", "ours, repeat 1"} <= set(record["stages"])
    assert all(stage["seconds"] >= 0 for stage in record["stages"].values())


def test_an_incomplete_teachers_record_is_not_shown_in_the_report(tmp_path):
    from flowmap_oracle.report_job import load_benchmarks

    (tmp_path / "teachers_a.json").write_text(json.dumps({"complete": False, "n": 3}))
    (tmp_path / "teachers_b.json").write_text(json.dumps({"complete": True, "n": 4}))
    (tmp_path / "teachers_c.json").write_text(json.dumps({"n": 5}))  # written before the flag
    assert [r.name for r in load_benchmarks(tmp_path)] == ["teachers_b.json", "teachers_c.json"]


def test_bench_meanflow_writes_the_finished_runs(tmp_path, capsys, monkeypatch):
    from flowmap_oracle.experiments import meanflow_one_step

    class Run:  # a fast stand-in for a training run
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def summary(self):
            velocity, steps = self.kwargs["velocity"], self.kwargs["steps"]
            errors = {"error_before": 0.9, "error_after": 0.8}
            return {
                "teacher": "ring8",
                "velocity": velocity,
                "steps": steps,
                **errors,
                "seconds": 0.5,
            }

    monkeypatch.setattr(meanflow_one_step, "meanflow_one_step_experiment", _after(1, Run))
    out = tmp_path / "meanflow.json"
    assert main(["bench", "meanflow", "--steps", "2", "--json", str(out)]) == EXIT_INTERRUPTED
    _interrupt_line(capsys, "1 of 2 runs finished", "marked incomplete")
    record = json.loads(out.read_text())
    assert record["complete"] is False
    assert [r["velocity"] for r in record["runs"]] == ["teacher"]
    assert record["runs"][0]["seconds"] == 0.5


def test_report_writes_the_finished_sections_marked_incomplete(tmp_path, capsys, monkeypatch):
    from helpers import pdf_text

    import flowmap_oracle.report_job as report_job
    from flowmap_oracle.identities import all_identities

    pytest.importorskip("pypdf")
    real = report_job.identities_inputs
    monkeypatch.setattr(
        report_job,
        "identities_inputs",
        lambda **kwargs: real(all_identities()[:2], **kwargs),
    )
    monkeypatch.setattr(report_job, "training_inputs", _after(0, None))
    out = tmp_path / "r.pdf"
    argv = ["report", "--out", str(out), "--sections", "identities,training"]
    assert main(argv) == EXIT_INTERRUPTED
    _interrupt_line(capsys, "finished sections: identities", "missing: training", str(out))
    text = pdf_text(out)
    assert "Incomplete report" in text and "missing sections: training" in text
    assert "boundary.meanflow_ayf" in text  # the finished section is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]


def test_report_interrupted_in_its_first_section_writes_nothing(tmp_path, capsys, monkeypatch):
    import flowmap_oracle.report_job as report_job

    monkeypatch.setattr(report_job, "identities_inputs", _after(0, None))
    out = tmp_path / "r.pdf"
    assert main(["report", "--out", str(out), "--sections", "identities"]) == EXIT_INTERRUPTED
    _interrupt_line(capsys, "finished sections: none", "nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_anywhere_else_exits_130_with_one_line(capsys, monkeypatch):
    from flowmap_oracle import identities

    monkeypatch.setattr(identities, "all_identities", _after(0, None))
    assert main(["identities"]) == EXIT_INTERRUPTED
    _interrupt_line(capsys)
