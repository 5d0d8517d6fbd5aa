"""The oracle on flow map matching and self-distillation: the reference passes every check on the
linear and the trig path, a correct implementation written as training code writes it (float32,
mean over entries, its own JVP calls) passes, every mutant of these methods is killed by its own
method's check, and undeclarable conventions skip with a reason instead of failing."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.oracle import Implementation
from flowmap_oracle.oracle.mutants import MUTANTS, run_mutant
from flowmap_oracle.oracle.mutants._registry import _load
from flowmap_oracle.oracle.reference import reference_implementation
from flowmap_oracle.oracle.registry import CHECKS
from flowmap_oracle.oracle.runner import run_checks

METHODS = ["fmm_lagrangian", "fmm_eulerian", "lsd", "esd", "psd"]


@pytest.mark.parametrize("path", ["linear", "trig"])
def test_reference_passes_every_check(path):
    results = run_checks(reference_implementation(path), objectives=METHODS)
    ran = {r.check for r in results}
    assert {f"{m}.loss.value_and_gradient" for m in METHODS} <= ran
    bad = [(r.check, r.message) for r in results if r.status != "pass"]
    assert not bad, bad


def _research_losses():
    """The five losses as a training script writes them: float32 network, mean over entries."""

    def interp(x0, x1, t):
        return x0 + t[:, None] * (x1 - x0)

    def flow(net):
        return lambda x, a, b: x + (b - a)[:, None] * net(x, a, b)

    def mse(r):
        return (r**2).mean()

    def fmm_l(net, x0, x1, t, s, v):
        xt = interp(x0, x1, t)
        z = torch.zeros_like(t)
        xs, dxs = torch.func.jvp(flow(net), (xt, t, s), (torch.zeros_like(xt), z, z + 1))
        return mse(dxs - v(xs, s))

    def fmm_e(net, x0, x1, t, s, v):
        xt = interp(x0, x1, t)
        _, dx = torch.func.jvp(flow(net), (xt, t, s), (v(xt, t), torch.ones_like(t), 0 * s))
        return mse(dx)

    def with_fm(net, x0, x1, t, s, off):
        xt = interp(x0, x1, t)
        fm = net(xt, t, t) - (x1 - x0)
        keep = (t == s)[:, None]
        return mse(torch.where(keep, fm, off))

    def lsd(net, x0, x1, t, s):
        xt = interp(x0, x1, t)
        z = torch.zeros_like(t)
        xs, dxs = torch.func.jvp(flow(net), (xt, t, s), (torch.zeros_like(xt), z, z + 1))
        with torch.no_grad():
            b = net(xs, s, s)
        return with_fm(net, x0, x1, t, s, dxs - b)

    def esd(net, x0, x1, t, s):
        xt = interp(x0, x1, t)
        b = net(xt, t, t).detach()
        _, dx = torch.func.jvp(flow(net), (xt, t, s), (b, torch.ones_like(t), 0 * s))
        return with_fm(net, x0, x1, t, s, dx)

    def psd(net, x0, x1, t, u, s):
        xt = interp(x0, x1, t)
        with torch.no_grad():
            two = flow(net)(flow(net)(xt, t, u), u, s)
        h = torch.where(t == s, torch.ones_like(t), t - s)[:, None]
        return with_fm(net, x0, x1, t, s, (two - flow(net)(xt, t, s)) / h)

    return {"fmm_lagrangian": fmm_l, "fmm_eulerian": fmm_e, "lsd": lsd, "esd": esd, "psd": psd}


def test_a_correct_float32_training_code_implementation_passes():
    impl = Implementation(
        name="training code, float32",
        conventions={"dtype": "float32"},
        losses=_research_losses(),
        loss_reduction="mean",
    )
    results = run_checks(impl, objectives=METHODS)
    bad = [(r.check, r.message) for r in results if r.status != "pass"]
    assert not bad, bad
    assert len([r for r in results if r.status == "pass"]) == len(METHODS)


def test_other_time_conventions_skip_with_the_reason():
    impl = Implementation(
        name="noise at 0", conventions={"time": "noise_at_0"}, losses=_research_losses()
    )
    results = run_checks(impl, objectives=["lsd"])
    lsd = [r for r in results if r.check == "lsd.loss.value_and_gradient"]
    assert lsd and lsd[0].status == "skip" and "project's convention" in lsd[0].message


def _mine():
    _load()
    return sorted(n for n, m in MUTANTS.items() if m.objective in METHODS)


def test_at_least_two_mutants_per_method():
    names = _mine()
    for method in METHODS:
        assert len([n for n in names if n.startswith(method + ".")]) >= 2, method


@pytest.mark.parametrize("name", _mine())
def test_each_mutant_is_killed_by_its_own_methods_check(name):
    result = run_mutant(name)
    assert result.killed, result.message
    assert result.by in CHECKS and CHECKS[result.by].objective == MUTANTS[name].objective
    assert not result.message.startswith("internal error"), result.message


def _jax_losses():
    """LSD, ESD, PSD and the Eulerian FMM loss in JAX (float32), as JAX training code writes
    them; the Lagrangian FMM loss too (it needs a differentiable teacher, which it cannot get)."""
    import jax
    import jax.numpy as jnp

    def interp(x0, x1, t):
        return x0 + t[:, None] * (x1 - x0)

    def flow(net):
        return lambda x, a, b: x + (b - a)[:, None] * net(x, a, b)

    def with_fm(net, x0, x1, t, s, off):
        xt = interp(x0, x1, t)
        fm = net(xt, t, t) - (x1 - x0)
        return jnp.sum(jnp.where((t == s)[:, None], fm, off) ** 2, axis=1).mean()

    def lsd(net, x0, x1, t, s):
        xt = interp(x0, x1, t)
        xs, dxs = jax.jvp(flow(net), (xt, t, s), (jnp.zeros_like(xt), 0 * t, jnp.ones_like(s)))
        b = jax.lax.stop_gradient(net(jax.lax.stop_gradient(xs), s, s))
        return with_fm(net, x0, x1, t, s, dxs - b)

    def esd(net, x0, x1, t, s):
        xt = interp(x0, x1, t)
        b = jax.lax.stop_gradient(net(xt, t, t))
        _, dx = jax.jvp(flow(net), (xt, t, s), (b, jnp.ones_like(t), 0 * s))
        return with_fm(net, x0, x1, t, s, dx)

    def psd(net, x0, x1, t, u, s):
        xt = interp(x0, x1, t)
        two = jax.lax.stop_gradient(flow(net)(flow(net)(xt, t, u), u, s))
        h = jnp.where(t == s, jnp.ones_like(t), t - s)[:, None]
        return with_fm(net, x0, x1, t, s, (two - flow(net)(xt, t, s)) / h)

    def fmm_e(net, x0, x1, t, s, v):
        xt = interp(x0, x1, t)
        _, dx = jax.jvp(flow(net), (xt, t, s), (v(xt, t), jnp.ones_like(t), 0 * s))
        return jnp.sum(dx**2, axis=1).mean()

    def fmm_l(net, x0, x1, t, s, v):
        xt = interp(x0, x1, t)
        xs, dxs = jax.jvp(flow(net), (xt, t, s), (jnp.zeros_like(xt), 0 * t, jnp.ones_like(s)))
        return jnp.sum((dxs - v(xs, s)) ** 2, axis=1).mean()

    return {"lsd": lsd, "esd": esd, "psd": psd, "fmm_eulerian": fmm_e, "fmm_lagrangian": fmm_l}


def test_a_correct_jax_implementation_passes_and_the_lagrangian_fmm_check_says_why_it_skips():
    pytest.importorskip("jax")
    impl = Implementation(
        name="JAX training code, float32",
        conventions={"framework": "jax", "dtype": "float32"},
        losses=_jax_losses(),
    )
    results = {r.check: r for r in run_checks(impl, objectives=METHODS)}
    for method in ("lsd", "esd", "psd", "fmm_eulerian"):
        r = results[f"{method}.loss.value_and_gradient"]
        assert r.status == "pass", r.message
    skipped = results["fmm_lagrangian.loss.value_and_gradient"]
    assert skipped.status == "skip" and "differentiable in torch only" in skipped.message
