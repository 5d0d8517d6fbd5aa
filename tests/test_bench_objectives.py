"""The benchmark of objectives: stacked seeds, distances, plateau and intervals, the store, the
grid runner (failures, interruption, reruns), the configurations and the command line."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from flowmap_oracle.cli import main
from flowmap_oracle.experiments.bench_objectives import (
    OBJECTIVES,
    PLATEAU_THRESHOLD,
    BenchConfig,
    ResultStore,
    Task,
    auto_config,
    cpu_config,
    evaluate_member,
    gpu_config,
    mean_ci,
    plan_tasks,
    plateau,
    reference_for,
    run_grid,
    summarise,
    w2_distance,
)
from flowmap_oracle.experiments.models import PerturbedFlowMap, TeacherFlowMap
from flowmap_oracle.experiments.seed_stack import StackedMLPFlowMap
from flowmap_oracle.objectives import meanflow_loss

# One Gaussian: its exact flow map is in closed form, so references cost no ODE solves.
TINY = BenchConfig(
    name="test",
    teachers=("anisotropic_gaussian",),
    paths=("linear",),
    objectives=("flow_matching", "meanflow"),
    steps=(1, 2),
    seeds=2,
    train_steps=6,
    batch=32,
    hidden=16,
    depth=2,
    checkpoints=2,
    n_eval=48,
    n_data=48,
    n_grid=8,
    n_curve=16,
)


# ----------------------------------------------------------------------------- stacked seeds


@pytest.mark.parametrize("mode", ["bmm", "vmap"])
def test_stacked_members_match_their_own_models(mode):
    stacked = StackedMLPFlowMap(2, seeds=(3, 5, 7), hidden=16, depth=2, mode=mode)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3 * 10, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(30, generator=gen, dtype=torch.float64)
    s = t * torch.rand(30, generator=gen, dtype=torch.float64)
    out = stacked(x, t, s).reshape(3, 10, 2)
    members = stacked.members()
    for i, member in enumerate(members):
        rows = slice(10 * i, 10 * (i + 1))
        torch.testing.assert_close(out[i], member(x[rows], t[rows], s[rows]))
    # the wrong pairing (chunk 0 through member 1) is told apart
    assert not torch.allclose(out[0], members[1](x[:10], t[:10], s[:10]))


def test_stacked_member_starts_from_its_seeds_initialisation():
    from flowmap_oracle.experiments.models import MLPFlowMap

    torch.manual_seed(5)
    single = MLPFlowMap(2, hidden=16, depth=2)
    member = StackedMLPFlowMap(2, seeds=(4, 5), hidden=16, depth=2).members()[1]
    for a, b in zip(single.parameters(), member.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_stacked_loss_times_members_gives_each_member_its_own_gradient():
    """The benchmark trains on ``S * mean``: member i's gradient is its own batch mean's."""
    stacked = StackedMLPFlowMap(2, seeds=(0, 1), hidden=8, depth=2)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(16, generator=gen, dtype=torch.float64)
    s = t * torch.rand(16, generator=gen, dtype=torch.float64)
    total = meanflow_loss(stacked, x0, x1, t, s).loss
    (grad_scaled,) = torch.autograd.grad(2 * total, [stacked.stacked[0]])
    member = stacked.members()[1]
    own = meanflow_loss(member, x0[8:], x1[8:], t[8:], s[8:]).loss
    (grad_own,) = torch.autograd.grad(own, [next(member.parameters())])
    torch.testing.assert_close(grad_scaled[1], grad_own)
    # without the factor S the gradient is 1/S of it: the check tells the two apart
    assert not torch.allclose(grad_scaled[1] / 2, grad_own)


# ----------------------------------------------------------------------------- measurements


def test_w2_of_a_translated_set_is_the_shift_and_a_shuffled_coupling_is_not_used():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(60, 2, generator=gen, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4], dtype=torch.float64)
    b = a[torch.randperm(60, generator=gen)] + shift
    w2 = w2_distance(a, b)
    assert w2.method == "emd"
    assert w2.value == pytest.approx(0.5, abs=1e-9)  # |shift| = 0.5, whatever the order
    # the matching of rows by index (the wrong coupling) costs more
    assert (a - b).pow(2).sum(1).mean().sqrt() > 0.6
    approx = w2_distance(a, b, exact_max=10)
    assert approx.method == "sinkhorn"
    assert approx.value == pytest.approx(0.5, abs=0.1)


def test_w2_refuses_sets_of_different_dimension():
    with pytest.raises(ValueError, match="one d"):
        w2_distance(torch.zeros(3, 2), torch.zeros(3, 3))


def test_plateau_criterion():
    steps = [0, 250, 500, 750, 1000]
    flat = plateau(steps, [1.0, 0.5, 0.41, 0.400, 0.395])  # 1.3 % over the last quarter
    assert flat["reached"] is True
    assert flat["relative_change"] == pytest.approx((0.400 - 0.395) / 0.395)
    falling = plateau(steps, [1.0, 0.8, 0.6, 0.5, 0.4])  # 25 %: still learning
    assert falling["reached"] is False
    assert falling["relative_change"] > PLATEAU_THRESHOLD
    assert plateau([0, 10], [None, 0.3])["reached"] is None


def test_mean_ci_is_students_t_interval():
    from scipy import stats

    values = [0.21, 0.25, 0.19, 0.3]
    mean, low, high = mean_ci(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert mean_ci([0.2]) == (0.2, 0.2, 0.2)


def test_exact_map_scores_zero_and_a_perturbed_map_does_not():
    ref = reference_for(TINY, "anisotropic_gaussian", "linear")
    exact = TeacherFlowMap(ref.exact)
    good = evaluate_member(exact, "meanflow", ref, (1,), linear=True)[1]
    assert good["rmse_exact"] < 1e-6
    assert good["w2"] == pytest.approx(ref.w2_floor, abs=1e-6)
    assert max(row["rmse"] for row in good["ts_grid"]) < 1e-6
    bad = evaluate_member(PerturbedFlowMap(exact, eps=0.05), "meanflow", ref, (1,), linear=True)
    assert bad[1]["rmse_exact"] > 0.01
    assert max(row["rmse"] for row in bad[1]["ts_grid"]) > 0.005


# ----------------------------------------------------------------------------- store and grid


def _ok(config, objective, seed, k, **extra):
    return {
        "status": "ok",
        "config": config.name,
        "objective": objective,
        "teacher": config.teachers[0],
        "path": "linear",
        "steps": k,
        "seed": seed,
        "train_steps": config.train_steps,
        "batch": config.batch,
        **extra,
    }


def test_store_skips_finished_cells_and_ignores_a_cut_line(tmp_path):
    store = ResultStore(tmp_path / "s.jsonl")
    store.append([_ok(TINY, "meanflow", 0, k) for k in TINY.steps])
    store.append([{**_ok(TINY, "meanflow", 1, 1), "status": "error", "error": "boom"}])
    with open(store.path, "a") as fh:
        fh.write('{"status": "ok", "config": "te')  # an interrupted write
    tasks = plan_tasks(TINY, store.finished())
    seeds = {(t.objective, t.seeds) for t in tasks}
    # meanflow seed 0 is finished; seed 1 only failed, so it runs again; flow matching is new
    assert seeds == {("meanflow", (1,)), ("flow_matching", (0, 1))}
    assert len(store.records()) == 3
    store.append([_ok(TINY, "flow_matching", 0, 1)])  # after the cut line: still readable
    assert len(store.records()) == 4


def test_grid_records_a_failing_task_and_goes_on_and_ctrl_c_keeps_finished_cells(tmp_path):
    store = ResultStore(tmp_path / "grid.jsonl")
    good = Task("flow_matching", "anisotropic_gaussian", "linear", (0, 1), TINY)
    bad = Task("no_such_objective", "anisotropic_gaussian", "linear", (0,), TINY)
    run = run_grid(TINY, store, tasks=[bad, good])
    assert [t.objective for t, _ in run.failed] == ["no_such_objective"]
    records = store.records()
    errors = [r for r in records if r["status"] == "error"]
    oks = [r for r in records if r["status"] == "ok"]
    assert len(errors) == len(TINY.steps) and "no_such_objective" in errors[0]["error"]
    assert {(r["seed"], r["steps"]) for r in oks} == {(s, k) for s in (0, 1) for k in (1, 2)}
    row = oks[0]
    for name in ("rmse_exact", "w2", "mmd", "seconds", "train_steps", "batch", "device"):
        assert row[name] is not None
    assert set(row["baselines"]) >= {"euler", "heun", "adaptive", "w2_floor"}
    assert len(row["curve"]["step"]) == len(row["curve"]["rmse_exact"]) == TINY.checkpoints + 1

    def stop(task, records):
        raise KeyboardInterrupt

    second = ResultStore(tmp_path / "ctrl_c.jsonl")
    with pytest.raises(KeyboardInterrupt):
        run_grid(TINY, second, tasks=[good, good], on_done=stop)
    assert len(second.records()) == 2 * len(TINY.steps)  # the first task is kept
    summary = summarise(store.records())
    assert {(r.objective, r.steps, r.n_seeds) for r in summary} == {
        ("flow_matching", 1, 2),
        ("flow_matching", 2, 2),
    }


def test_ray_runs_a_tiny_grid_into_the_store(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (the bench extra); CI has it")
    from flowmap_oracle.experiments.ray_backend import run_grid_ray

    config = replace(TINY, objectives=("meanflow",), seeds=1)
    store = ResultStore(tmp_path / "ray.jsonl")
    try:
        run = run_grid_ray(config, store, init_kwargs={"num_cpus": 2, "include_dashboard": False})
    finally:
        ray.shutdown()
    assert not run.failed
    assert {(r["objective"], r["steps"]) for r in store.records()} == {
        ("meanflow", 1),
        ("meanflow", 2),
    }
    assert plan_tasks(config, store.finished()) == []


# ----------------------------------------------------------------------------- configurations


def test_configurations():
    cpu, quick, gpu = cpu_config(), cpu_config(quick=True), gpu_config()
    assert set(cpu.objectives) == set(quick.objectives) == set(OBJECTIVES)
    assert quick.teachers == ("ring8",) and len(cpu.teachers) >= 2 and len(cpu.paths) == 2
    assert all(preset_dim(t) == 2 for t in cpu.teachers)
    assert gpu.device == "cuda" and set(gpu.teachers) >= {
        "ring8",
        "checkerboard",
        "anisotropic10",
        "full64",
    }
    assert gpu.hidden > cpu.hidden and gpu.train_steps > cpu.train_steps and gpu.seeds >= 3
    assert auto_config().name == ("gpu" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="multiple of 32"):
        replace(cpu, batch=100)
    with pytest.raises(ValueError, match="unknown teacher"):
        replace(cpu, teachers=("ring9",))


def preset_dim(name: str) -> int:
    from flowmap_oracle.reference_models import preset

    return preset(name).dim


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--teachers", "ring9"], "unknown preset 'ring9'"),
        (["--objectives", "meanflw"], "meanflw"),
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--seeds", "0"], "--seeds: must be at least 1"),
        (["--ray", "not an address"], "--ray: expected auto"),
        (["--batch", "100"], "multiple of 32"),
        (["--paths", "curved"], "--paths"),
    ],
)
def test_cli_refuses_bad_options_before_any_work(argv, message, capsys, tmp_path):
    store = tmp_path / "never.jsonl"
    assert main(["bench", "objectives", "--store", str(store), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not store.exists()


def test_cli_json_document(tmp_path, capsys):
    store = ResultStore(tmp_path / "s.jsonl")
    config = cpu_config(quick=True)
    cells = [
        _ok(
            config,
            "meanflow",
            seed,
            k,
            rmse_exact=0.1 * (seed + 1),
            w2=0.2,
            mmd=0.01,
            train_compute=1,
            seconds=1.0,
            plateau={"reached": True},
            baselines={
                "euler": {"rmse_exact": 0.3},
                "heun": {"rmse_exact": 0.1},
                "adaptive": {"rmse_exact": 0.01},
            },
        )
        for seed in range(config.seeds)
        for k in config.steps
    ]
    store.append(cells)
    out = tmp_path / "doc.json"
    code = main(
        [
            "bench",
            "objectives",
            "--quick",
            "--objectives",
            "meanflow",
            "--store",
            str(store.path),
            "--json",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["complete"] is True and doc["tasks_run"] == 0
    assert len(doc["results"]) == config.seeds * len(config.steps)
    assert "meanflow" in capsys.readouterr().out
    assert math.isclose(doc["config"]["train_steps"], config.train_steps)
