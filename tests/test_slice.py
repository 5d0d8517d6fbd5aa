"""End-to-end slice: MeanFlow training lowers the one-step error; the report is a readable PDF."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.experiments.meanflow_one_step import meanflow_one_step_experiment


@pytest.fixture(scope="module")
def trained():
    return meanflow_one_step_experiment(steps=600, velocity="teacher", seed=0, n_eval=512)


def test_training_lowers_one_step_error_well_below_untrained(trained):
    # 600 steps of distillation on the 8-mode ring: measured 0.89 -> 0.31. Requiring a factor
    # of two leaves room for BLAS/thread nondeterminism while failing for a broken loss.
    assert trained.error_after < 0.5 * trained.error_before, (
        trained.error_before,
        trained.error_after,
    )


def test_one_step_error_is_measured_against_the_exact_map(trained):
    # The recorded error must be the RMSE between the stored predictions and exact images of
    # the same noise points (a different point set, so only the order of magnitude agrees).
    rmse = (trained.predicted - trained.exact).pow(2).sum(1).mean().sqrt()
    assert torch.isfinite(rmse)
    assert 0.25 * trained.error_after < float(rmse) < 4 * trained.error_after


def test_experiment_rejects_unknown_velocity():
    with pytest.raises(ValueError, match="velocity must be"):
        meanflow_one_step_experiment(steps=1, velocity="x0 - x1")


def test_bench_meanflow_writes_json_with_device_versions_and_command(tmp_path, capsys):
    import json

    from flowmap_oracle.cli import main

    path = tmp_path / "meanflow.json"
    assert main(["bench", "meanflow", "--steps", "3", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["command"] == f"flowmap-oracle bench meanflow --steps 3 --json {path}"
    assert record["device"] == "cpu" and record["versions"]["torch"]
    assert [r["velocity"] for r in record["runs"]] == ["teacher", "conditional"]
    for run in record["runs"]:
        assert run["steps"] == 3 and run["error_before"] > 0 and run["error_after"] > 0
    assert "one-step error" in capsys.readouterr().out
