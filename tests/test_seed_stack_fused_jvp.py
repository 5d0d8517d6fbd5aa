"""The stacked seeds' own forward-mode pass (``StackedMLPFlowMap.fused_jvp``, its flow map's, and
``SeedBatches.fused_jvp`` routing the rows per member) against ``torch.func.jvp``.

The benchmark of objectives trains its seeds stacked behind ``SeedBatches``; with these passes a
stacked MeanFlow or AYF step no longer goes through ``torch.func.jvp``. The tests hold the passes to
``torch.func.jvp`` at 1e-12 in float64 (values, tangents, losses and every member's parameter
gradients), show that the comparison rejects wrong variants (a tangent pushed through another
member's weights, a bias dropped from or added to the tangent pass, tangents not regrouped with
their rows), that what the pass does not reproduce falls back to ``torch.func.jvp``, and that the
benchmark's own training step takes the fused pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from flowmap_oracle.experiments.bench_objectives import (
    BenchConfig,
    SeedBatches,
    Task,
    _objective_step,
    run_task,
)
from flowmap_oracle.experiments.models import FlowMapModel
from flowmap_oracle.experiments.objectives_throughput import (
    StepCost,
    _stacking_ratios,
    measure_stacking,
)
from flowmap_oracle.experiments.seed_stack import StackedMLPFlowMap
from flowmap_oracle.objectives import (
    ayf_emd_loss,
    ayf_lmd_loss,
    facm_loss,
    meanflow_loss,
    scm_loss,
)
from flowmap_oracle.objectives.derivatives import FusedJvp
from flowmap_oracle.reference_models import preset

TOL = 1e-12  # float64; the fused pass and torch.func.jvp differ by rounding only (~1e-16 seen)
SEEDS, BATCH = (0, 1, 2), 16
MEMBERS = len(SEEDS)

Pair = tuple[Tensor, Tensor]


def _stacked(*, gain: float = 1.0, mode: str = "bmm", cls: type = StackedMLPFlowMap):
    """Three members at random parameters (``gain`` scales them off the initialisation)."""
    model = cls(2, seeds=SEEDS, hidden=16, depth=3, mode=mode)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model


def _inputs(seed: int, *, copies: int = 1) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    n = copies * MEMBERS * BATCH
    x = 2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    s = t * torch.rand(n, generator=gen, dtype=torch.float64)
    tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in (x, t, s))
    return (x, t, s), tangents


def _gap(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    return max(float((u - w).detach().abs().max()) for u, w in zip(a, b, strict=True))


def _reference(model: Callable[..., Tensor], primals, tangents) -> Pair:
    return torch.func.jvp(model, primals, tangents)


# ----------------------------------------------------------------------------- values, tangents


@pytest.mark.parametrize(("seed", "gain"), [(0, 1.0), (1, 3.0), (2, 0.3)])
def test_stacked_fused_jvp_equals_torch_func_jvp(seed, gain):
    model = _stacked(gain=gain)
    primals, tangents = _inputs(seed + 10)
    assert isinstance(model, FusedJvp)
    ref = _reference(model, primals, tangents)
    assert _gap(model.fused_jvp(primals, tangents), ref) < TOL
    assert float(ref[1].detach().abs().max()) > 1e6 * TOL  # a wrong tangent would show
    # each member's rows are that member's own function and tangent
    rows = slice(BATCH, 2 * BATCH)
    member = model.members()[1]
    own = _reference(member, tuple(p[rows] for p in primals), tuple(u[rows] for u in tangents))
    assert _gap(tuple(o[rows] for o in model.fused_jvp(primals, tangents)), own) < TOL


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_seed_batches_routes_rows_and_tangents_per_member(copies):
    """Through the benchmark's wrapper, also on concatenated copies of the batch (the objectives
    that evaluate several batches in one call)."""
    stacked = _stacked(gain=1.5)
    model = SeedBatches(stacked, batch=BATCH)
    primals, tangents = _inputs(20 + copies, copies=copies)
    assert isinstance(model, FusedJvp)
    ref = _reference(model, primals, tangents)
    assert _gap(model.fused_jvp(primals, tangents), ref) < TOL
    if copies > 1:
        # the bare stacked pass (no regrouping) sends rows through another member's weights
        assert _gap(stacked.fused_jvp(primals, tangents), ref) > 1e3 * TOL
        # tangents left in the wrapper's order while the rows are regrouped: rejected
        assert _gap(_unrouted_tangents(model, primals, tangents), ref) > 1e3 * TOL


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_flow_map_offers_the_fused_pass_too(wrapped):
    stacked = _stacked(gain=2.0)
    model: FlowMapModel = SeedBatches(stacked, batch=BATCH) if wrapped else stacked
    primals, tangents = _inputs(30, copies=2 if wrapped else 1)
    flow = model.flow
    assert isinstance(flow, FusedJvp)
    assert torch.equal(flow(*primals), FlowMapModel.flow(model, *primals))
    ref = _reference(lambda x, t, s: FlowMapModel.flow(model, x, t, s), primals, tangents)
    assert _gap(flow.fused_jvp(primals, tangents), ref) < TOL


# ----------------------------------------------------------------------------- wrong variants


def _hand_pass(
    model: StackedMLPFlowMap, primals, tangents, *, variant: str
) -> Pair:  # the fused pass with one deliberate slip
    x, t, s = primals
    dx, dt, ds = tangents
    n, m = x.shape[0], model.n_members
    h = model._input(x, t, s).reshape(m, n // m, -1)
    dh = model._input_tangent(t, s, dx, dt, ds).reshape(m, n // m, -1)
    n_layers = len(model.stacked) // 2
    for k in range(n_layers):
        w, b = model.stacked[2 * k], model.stacked[2 * k + 1]
        wt = w.transpose(1, 2)
        z = torch.baddbmm(b[:, None, :], h, wt)
        if variant == "other_member":  # each member's tangent through the next member's weights
            dz = torch.bmm(dh, wt.roll(1, dims=0))
        elif variant == "bias_in_tangent":
            dz = torch.baddbmm(b[:, None, :], dh, wt)
        else:
            dz = torch.bmm(dh, wt)
        if k < n_layers - 1:
            # "bias_dropped": SiLU's derivative taken at the pre-activation without its bias
            at = torch.bmm(h, wt) if variant == "bias_dropped" else z
            sig = torch.sigmoid(at)
            h = nn.functional.silu(z)
            dh = dz * (sig + nn.functional.silu(at) * (1 - sig))
        else:
            h, dh = z, dz
    return h.reshape(n, -1), dh.reshape(n, -1)


def _unrouted_tangents(model: SeedBatches, primals, tangents) -> Pair:
    """The wrapper's pass with the rows regrouped by member but the tangents not."""
    n, m, b = primals[0].shape[0], model.members_model.n_members, model.batch
    k = n // (m * b)

    def by_member(a: Tensor) -> Tensor:
        return a.reshape(k, m, b, *a.shape[1:]).transpose(0, 1).reshape(a.shape)

    def back(a: Tensor) -> Tensor:
        return a.reshape(m, k, b, -1).transpose(0, 1).reshape(n, -1)

    value, tangent = model.members_model.fused_jvp(tuple(map(by_member, primals)), tangents)
    return back(value), back(tangent)


def test_the_hand_pass_without_a_slip_is_the_fused_pass():
    """The harness of the wrong variants below computes the right thing when it has no slip."""
    model = _stacked(gain=1.5)
    primals, tangents = _inputs(40)
    right = _hand_pass(model, primals, tangents, variant="none")
    assert _gap(right, _reference(model, primals, tangents)) < TOL


@pytest.mark.parametrize("variant", ["other_member", "bias_dropped", "bias_in_tangent"])
def test_the_comparison_rejects_a_wrong_tangent_pass(variant):
    model = _stacked(gain=1.5)
    primals, tangents = _inputs(41)
    wrong = _hand_pass(model, primals, tangents, variant=variant)
    ref = _reference(model, primals, tangents)
    assert _gap(wrong[:1], ref[:1]) < TOL  # the value alone cannot tell
    assert _gap(wrong, ref) > 1e3 * TOL


# ----------------------------------------------------------------------------- losses, gradients


class _Plain(FlowMapModel):
    """The wrapper behind a model with no fused pass (its flow is ``FlowMapModel.flow``): the
    objectives take ``torch.func.jvp``."""

    def __init__(self, inner: SeedBatches) -> None:
        super().__init__()
        self.inner = inner
        self.parameterisation = inner.parameterisation

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.inner(x, t, s)


class _Counting(StackedMLPFlowMap):
    """Counts the fused passes it is asked for (so the agreement below is not vacuous)."""

    calls = 0

    def fused_jvp(self, primals, tangents):
        self.calls += 1
        return super().fused_jvp(primals, tangents)


def _meanflow(p: float, velocity: str):
    def loss(m, b, v):
        vel = v if velocity == "teacher" else velocity
        return meanflow_loss(m, *b, velocity=vel, adaptive_p=p)

    return loss


OBJECTIVES = {
    "meanflow_teacher": _meanflow(0.0, "teacher"),
    "meanflow_conditional_adaptive": _meanflow(1.0, "conditional"),
    "meanflow_model": _meanflow(0.0, "model"),
    "ayf_emd": lambda m, b, v: ayf_emd_loss(m, *b, velocity=v),
    "ayf_lmd": lambda m, b, v: ayf_lmd_loss(m, *b, velocity=v),
    "scm": lambda m, b, v: scm_loss(m, *b[:3], velocity=v),
    "facm": lambda m, b, v: facm_loss(m, *b[:3], velocity=v),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_losses_and_every_member_s_gradients_agree_with_the_torch_func_route(name):
    teacher = preset("ring8")
    stacked = _stacked(gain=1.5, cls=_Counting)
    model = SeedBatches(stacked, batch=BATCH)
    gen = torch.Generator().manual_seed(50)
    n = MEMBERS * BATCH
    x0 = teacher.mixture.sample(n, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    t = 0.05 + 0.9 * torch.rand(n, generator=gen, dtype=x0.dtype)
    s = t * torch.rand(n, generator=gen, dtype=x0.dtype)
    params = list(stacked.parameters())

    def run(net: FlowMapModel) -> tuple[Tensor, tuple[Tensor, ...]]:
        loss = MEMBERS * OBJECTIVES[name](net, (x0, x1, t, s), teacher.velocity).loss
        return loss, torch.autograd.grad(loss, params)

    (fused, g_fused), (ref, g_ref) = run(model), run(_Plain(model))
    assert stacked.calls == 1  # the fused run took the fused pass; the reference did not
    assert _gap((fused,), (ref,)) < TOL * max(1.0, float(ref.detach().abs()))
    for i in range(MEMBERS):
        mine = tuple(g[i] for g in g_fused)
        want = tuple(g[i] for g in g_ref)
        scale = max(float(g.abs().max()) for g in want)
        assert scale > 1e6 * TOL, i  # every member has a gradient to compare
        assert _gap(mine, want) < TOL * max(1.0, scale), i


def test_reverse_mode_through_the_tangent_agrees():
    """Losses that differentiate the tangent itself get the same input and parameter gradients;
    the wrong variants' differ."""
    model = _stacked(gain=1.5)
    primals, tangents = _inputs(60)
    x = primals[0].clone().requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(61), dtype=x.dtype)
    inputs = [x, *model.parameters()]

    def grads(route) -> tuple[Tensor, ...]:
        value, tangent = route((x, *primals[1:]), tangents)
        return torch.autograd.grad((w * tangent).sum() + (value**2).sum(), inputs)

    ref = grads(lambda p, u: _reference(model, p, u))
    assert _gap(grads(model.fused_jvp), ref) < TOL
    wrong = grads(lambda p, u: _hand_pass(model, p, u, variant="other_member"))
    assert _gap(wrong, ref) > 1e3 * TOL


# ----------------------------------------------------------------------------- fallbacks


class _Shifted(StackedMLPFlowMap):
    """A subclass with its own forward: the fused pass would compute the parent's function."""

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return super().forward(x, t, s) + torch.sin(3 * t)[:, None] * x


class _ShiftedBatches(SeedBatches):
    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return super().forward(x, t, s) * (1 + t)[:, None]


def _hooked_stack() -> StackedMLPFlowMap:
    model = _stacked()
    model.register_forward_hook(lambda mod, inp, out: out * out)
    return model


def _hooked_batches() -> SeedBatches:
    model = SeedBatches(_stacked(), batch=BATCH)
    model.register_forward_hook(lambda mod, inp, out: out * out)
    return model


FALLBACKS = {
    "vmap": lambda: _stacked(mode="vmap"),
    "subclass_forward": lambda: _stacked(cls=_Shifted),
    "hook_on_stack": _hooked_stack,
    "wrapper_subclass_forward": lambda: _ShiftedBatches(_stacked(), batch=BATCH),
    "hook_on_wrapper": _hooked_batches,
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_what_the_fused_pass_cannot_reproduce_falls_back_to_torch_func_jvp(name):
    model = FALLBACKS[name]()
    primals, tangents = _inputs(70, copies=2 if isinstance(model, SeedBatches) else 1)
    ref = _reference(model, primals, tangents)
    assert _gap(model.fused_jvp(primals, tangents), ref) < TOL
    if name != "vmap":  # the unguarded pass (the plain function) would be far off here
        stacked = model.members_model if isinstance(model, SeedBatches) else model
        plain = StackedMLPFlowMap(2, seeds=SEEDS, hidden=16, depth=3)
        plain.load_state_dict(stacked.state_dict())
        unguarded = SeedBatches(plain, batch=BATCH) if isinstance(model, SeedBatches) else plain
        assert _gap(unguarded.fused_jvp(primals, tangents), ref) > 1e3 * TOL


def test_a_global_forward_hook_also_falls_back():
    model = SeedBatches(_stacked(), batch=BATCH)
    primals, tangents = _inputs(71, copies=2)
    plain = model.fused_jvp(primals, tangents)
    handle = nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: out * out if isinstance(mod, StackedMLPFlowMap) else out
    )
    try:
        fused = model.fused_jvp(primals, tangents)
        ref = _reference(model, primals, tangents)
    finally:
        handle.remove()
    assert _gap(fused, ref) < TOL
    assert _gap(plain, ref) > 1e3 * TOL


def test_bad_input_is_named():
    stacked = _stacked()
    (x, t, s), (dx, dt, ds) = _inputs(72)
    with pytest.raises(ValueError, match="three tangents"):
        stacked.fused_jvp((x, t), (dx, dt))
    with pytest.raises(ValueError, match="three tangents"):
        SeedBatches(stacked, batch=BATCH).fused_jvp((x, t), (dx, dt))
    cut = (x[:-1], t[:-1], s[:-1]), (dx[:-1], dt[:-1], ds[:-1])
    with pytest.raises(ValueError, match="47 rows cannot be split among 3 members"):
        stacked.fused_jvp(*cut)
    with pytest.raises(ValueError, match=r"47 rows are not whole copies .*\(3 members x 16 rows\)"):
        SeedBatches(stacked, batch=BATCH).fused_jvp(*cut)


# ----------------------------------------------------------------------------- the benchmark


@pytest.mark.parametrize("objective", ["meanflow", "ayf_emd", "scm"])
def test_the_benchmark_step_takes_the_fused_pass(objective):
    """The benchmark's own step function on the wrapper it trains: one fused pass per step."""
    teacher = preset("ring8")
    stacked = _stacked(cls=_Counting)
    step = _objective_step(objective, teacher)
    gen = torch.Generator().manual_seed(80)
    n = MEMBERS * BATCH
    x0 = teacher.mixture.sample(n, generator=gen).to(torch.float64)
    x1 = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    step(SeedBatches(stacked, batch=BATCH), x0, x1, gen).loss.backward()
    assert stacked.calls == 1


# One Gaussian teacher: its exact map is in closed form (no ODE solves); a few steps.
TINY = BenchConfig(
    name="test",
    teachers=("anisotropic_gaussian",),
    paths=("linear",),
    objectives=("meanflow",),
    steps=(1,),
    seeds=2,
    train_steps=4,
    batch=32,
    hidden=8,
    depth=2,
    checkpoints=1,
    n_eval=16,
    n_data=16,
    n_grid=4,
    n_curve=8,
)


def test_a_benchmark_task_trains_without_torch_func_jvp_and_to_the_same_models():
    """``run_task`` end to end, counted by the profiler: forward-mode dual tensors (what
    ``torch.func.jvp`` makes) appear only in the ``"vmap"`` stack, which has no fused pass; both
    stacks train the same members (errors equal to rounding)."""
    runs = {}
    for stack in ("bmm", "vmap"):
        config = replace(TINY, stack=stack)
        task = Task("meanflow", "anisotropic_gaussian", "linear", (0, 1), config)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            records = run_task(task)
        duals = sum(e.count for e in prof.key_averages() if e.key == "aten::_make_dual")
        runs[stack] = (duals, records)
    assert runs["bmm"][0] == 0
    assert runs["vmap"][0] >= 4  # one per training step at least: the count sees torch.func.jvp
    fused, reference = runs["bmm"][1], runs["vmap"][1]
    assert [(r["status"], r["seed"], r["train_steps"]) for r in fused] == [
        ("ok", 0, 4),
        ("ok", 1, 4),
    ]
    for a, b in zip(fused, reference, strict=True):
        assert a["seed"] == b["seed"]
        assert a["rmse_exact"] == pytest.approx(b["rmse_exact"], rel=1e-9, abs=0)
        assert a["curve"]["loss"][-1] == pytest.approx(b["curve"]["loss"][-1], rel=1e-9, abs=0)
    # the members did train: the error on the curve's noise moved by far more than that
    for r in fused:
        first, last = r["curve"]["rmse_exact"][0], r["curve"]["rmse_exact"][-1]
        assert abs(last - first) > 1e-4 * first


# ----------------------------------------------------------------------------- the measurement


def test_the_stacking_measurement_times_the_fused_and_the_torch_func_stacked_steps():
    torch.set_num_threads(1)
    costs = measure_stacking(batch=32, hidden=8, depth=1, warmup=1, repeats=2)
    stacked, vmap, single = (
        "3 seeds stacked (bmm)",
        "3 seeds stacked (vmap)",
        "3 seeds one at a time",
    )
    assert [c.what for c in costs] == [
        f"flow_matching, {stacked}",
        f"flow_matching, {vmap}",
        f"flow_matching, {single}",
        *(
            name
            for objective in ("meanflow", "ayf_emd")
            for name in (
                f"{objective}, {stacked}",
                f"{objective}_torch_func_jvp, {stacked}",
                f"{objective}, {vmap}",
                f"{objective}, {single}",
            )
        ),
    ]
    assert all(c.error is None and c.cpu_seconds and c.per_seed for c in costs)
    with pytest.raises(ValueError, match="objectives must be among"):
        measure_stacking(objectives=("imm",))


def test_stacking_ratios_divide_the_fused_stacked_step_by_each_partner():
    b, v, one = "3 seeds stacked (bmm)", "3 seeds stacked (vmap)", "3 seeds one at a time"
    cpu = {
        f"flow_matching, {b}": 2.0,
        f"flow_matching, {one}": 4.0,
        f"meanflow, {b}": 3.0,
        f"meanflow_torch_func_jvp, {b}": 6.0,
        f"meanflow, {v}": 12.0,
        f"meanflow, {one}": 5.0,
    }
    costs = [StepCost(w, "eager", "teacher", 1.0, cpu_seconds=c) for w, c in cpu.items()]
    assert _stacking_ratios(costs, seeds=3) == {
        "flow_matching stacked (bmm) / one at a time": 0.5,
        "meanflow stacked (bmm) / flow_matching stacked (bmm)": 1.5,
        "meanflow stacked (bmm) / one at a time": 0.6,
        "meanflow stacked (bmm) / stacked (vmap)": 0.25,
        "meanflow stacked (bmm) / stacked (bmm) by torch.func.jvp": 0.5,
    }
