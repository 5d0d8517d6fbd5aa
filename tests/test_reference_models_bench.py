"""The teacher benchmark (CLI and JSON), the teachers' measured accuracy, and the report's table
of committed benchmark records."""

from __future__ import annotations

import json

import pytest
import torch

from flowmap_oracle.cli import main
from flowmap_oracle.experiments.bench_teachers import logsumexp_velocity, plain_velocity
from flowmap_oracle.experiments.teacher_accuracy import measure_flow_map_errors
from flowmap_oracle.reference_models import preset
from flowmap_oracle.report_job import load_benchmarks
from flowmap_oracle.reports import teachers_section

REQUIRED = {
    "n",
    "device",
    "seconds",
    "baseline_seconds",
    "speedup",
    "max_error",
    "baseline_max_error",
    "peak_memory_bytes",
    "baseline_peak_memory_bytes",
    "environment",
    "command",
    "matched_error",
}


def test_bench_teachers_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    argv = ["bench", "teachers", "--n", "48", "--json", str(out)]
    assert main([*argv, "--baselines", "torchdiffeq_dopri5,scipy_dop853"]) == 0
    data = json.loads(out.read_text())
    assert set(data) >= REQUIRED
    assert data["n"] == 48 and data["device"] == "cpu"
    assert data["speedup"] == pytest.approx(data["baseline_seconds"] / data["seconds"])
    assert data["command"].startswith("flowmap-oracle bench teachers --n 48")
    assert data["environment"]["versions"]["torch"] == torch.__version__
    assert data["environment"]["device"] == "cpu"
    # every run is measured against the reference; ours at rtol 1e-9 is far below 1e-6
    assert 0 <= data["max_error"] < 1e-6 and 0 <= data["baseline_max_error"] < 1e-4
    assert data["reference"]["max_difference"] < 1e-10
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # atomic: no temporaries
    assert "speedup" in capsys.readouterr().out
    # the baselines on the same velocity: searched to our error, timed against ours
    assert set(data["baselines"]) == {"torchdiffeq_dopri5", "scipy_dop853"}
    target = data["comparison"]["target_error"]
    assert target == data["comparison"]["ours"]["max_error"] > 0
    for name, b in data["baselines"].items():
        same, matched = b["same_rtol"], b["matched_error"]
        assert same["rtol"] == data["rtol"] and b["search"][0]["rtol"] == data["rtol"]
        assert matched is None or matched["max_error"] <= target, name
        if matched is not None:
            ours = data["comparison"]["ours"]["seconds"]
            assert b["speedup_matched_error"] == pytest.approx(matched["seconds"] / ours)
            # the search stopped at the first rtol reaching our error
            assert b["search"][-1]["rtol"] == matched["rtol"]
            assert all(r["max_error"] > target for r in b["search"][:-1])
    dopri5 = data["baselines"]["torchdiffeq_dopri5"]
    assert data["speedup_same_velocity_matched_error"] == dopri5["speedup_matched_error"]
    assert data["baselines"]["scipy_dop853"]["points_solved"] == 48  # n < SCIPY_POINTS


def test_baseline_velocity_is_the_teachers_velocity():
    """The plain einsum formula of the baseline computes the same field (else the comparison
    would be meaningless); checked on every covariance type."""
    for name in ("ring8", "anisotropic10", "anisotropic_gaussian"):
        teacher = preset(name)
        x = torch.randn(
            20, teacher.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        t = torch.rand(20, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            plain_velocity(teacher)(x, t), teacher.velocity(x, t[:, 0]), rtol=0, atol=1e-13
        )
        for tk in (0.0, 0.37, 1.0):
            tt = torch.tensor(tk, dtype=torch.float64)
            torch.testing.assert_close(
                logsumexp_velocity(teacher)(x, tt), teacher.velocity(x, tk), rtol=0, atol=1e-12
            )


def test_a_wrong_user_velocity_would_be_told_apart():
    """The comparison above rejects a velocity off by a plausible slip (the posterior of x1
    without the beta factor)."""
    teacher = preset("ring8")
    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tt = torch.tensor(0.37, dtype=torch.float64)
    good = logsumexp_velocity(teacher)(x, tt)
    slip = good + 0.37 * 1e-3 * x  # an error far smaller than any such slip
    with pytest.raises(AssertionError):
        torch.testing.assert_close(slip, teacher.velocity(x, 0.37), rtol=0, atol=1e-12)


def test_report_section_measurements_and_benchmark_table(tmp_path):
    rows = measure_flow_map_errors(quick=True)
    assert {r.against for r in rows} >= {
        "closed form",
        "torchdiffeq dopri8",
        "rtol 1e-13",
        "MeanFlow identity",
    }
    assert max(r.max_error for r in rows) < 1e-10
    record = {
        "n": 10,
        "device": "cpu",
        "rtol": 1e-9,
        "seconds": 1.0,
        "baseline_seconds": 7.0,
        "speedup": 7.0,
        "speedup_cpu_time": 8.0,
        "speedup_same_velocity": 1.5,
        "matched_error": {"rtol": 3e-9, "seconds": 0.5, "speedup": 9.0, "max_error": 1e-8},
        "max_error": 1e-9,
        "baseline_max_error": 1e-7,
        "peak_memory_bytes": 2**20,
        "baseline_peak_memory_bytes": 2**21,
        "runs": {"ours": {"seconds": 1.0, "max_error": 1e-9, "peak_memory_bytes": 2**20}},
        "environment": {"torch_threads": 1, "versions": {"torch": "9.9.9"}},
    }
    (tmp_path / "teachers_test.json").write_text(json.dumps(record))
    # a file written before records.environment keeps the torch version at the top
    old_env = {**record, "environment": {"torch_threads": 1, "torch": "8.8.8"}}
    (tmp_path / "teachers_zold.json").write_text(json.dumps(old_env))
    (tmp_path / "other.json").write_text("{}")  # not a teachers benchmark: not read
    records = load_benchmarks(tmp_path)
    assert [r.name for r in records] == ["teachers_test.json", "teachers_zold.json"]
    (caption, rows), (old_caption, _) = teachers_section._benchmark_tables(records)
    assert "torch 9.9.9" in caption and "torch 8.8.8" in old_caption
    assert "teachers_test.json" in caption and "7.0x wall (8.0x CPU)" in caption
    assert "9.0x at matched error" in caption
    assert rows[1] == ["wall seconds", "1.00", "-", "-", "0.50"]
    assert rows[3][1] == "1.0e-09" and rows[6][1] == "1"
