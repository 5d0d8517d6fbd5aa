"""Alignment as shipped for SplitMeanFlow, Shortcut, FACM and AYF (``oracle/shipped_targets.py``).

Each check runs on the examples' correct losses (they pass) and on wrong variants written as
research code writes them (they fail): the split point built from the wrong call, the segment
weights swapped, the second segment or half step taken from ``x_t``, a Shortcut step that is not
half, AYF-EMD's ``sign(t - s)`` dropped, FACM's target sign, AYF-LMD's teacher queried at the
start point. A loss whose target calls the oracle cannot match skips with the reason.

Measured over seeds 0-99 (``python tests/measure_shipped_targets.py 100``): every correct loss
below passes at every seed and every wrong variant fails at every seed.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.results import CheckResult
from flowmap_oracle.oracle.shipped import ShippedLoss, _Harness
from flowmap_oracle.oracle.shipped_targets import TARGET_METHODS, check_target_alignment


def _align(
    method: str, shipped: ShippedLoss, conventions: Any = None, seed: int = 0
) -> CheckResult:
    harness = _Harness.build(Conventions.from_mapping(conventions or {}), shipped.data_shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return check_target_alignment(method, shipped, harness)


def _example(module: str, **switches: Any) -> tuple[str, ShippedLoss, Any]:
    """The example's loss (with bug switches set) as its ``implementation()`` hands it over."""
    mod = importlib.import_module(f"examples.{module}")
    impl = mod.implementation()
    ((method, shipped),) = impl.shipped_losses.items()
    if switches:
        base = shipped.loss

        def loss(*args: Any) -> Any:
            return base(*args, **switches)

        shipped = ShippedLoss(
            loss, velocity=shipped.velocity, both_directions=shipped.both_directions
        )
    return method, shipped, impl.conventions


EXAMPLES = ("split_meanflow", "shortcut_models", "ayf_emd_distillation")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("module", EXAMPLES)
def test_the_examples_pass(module, seed):
    method, shipped, conventions = _example(module)
    result = _align(method, shipped, conventions, seed)
    assert result.status == "pass", result.message
    assert result.check == f"{method}.shipped.alignment"
    assert result.weights is not None and len(result.weights.t) > 10


WRONG = {
    # the second segment evaluated at z_t instead of z_s (the example's wrong_implementation)
    "split at z_t": ("split_meanflow", {"split_at_z_s": False}),
    # the split point moved by the whole interval's u(z_t, r, t)
    "split point from the wrong call": ("split_meanflow", {"z_s_from_full": True}),
    # lam and 1 - lam swapped in the target
    "lambda swapped": ("split_meanflow", {"lam_swapped": True}),
    # x' moved by the full step d (the example's wrong_implementation)
    "shortcut step not halved": ("shortcut_models", {"half_step": False}),
    # the second half step taken from x_t
    "shortcut second half from x_t": ("shortcut_models", {"second_from_x_t": True}),
    # sign(t - s) dropped
    "ayf sign dropped": ("ayf_emd_distillation", {"signed": False}),
    # the JVP of F instead of f (the example's wrong_implementation)
    "ayf tangent of F": ("ayf_emd_distillation", {"tangent_of_flow_map": False}),
}


@pytest.mark.parametrize("bug", sorted(WRONG))
def test_the_wrong_variants_fail(bug):
    module, switches = WRONG[bug]
    method, shipped, conventions = _example(module, **switches)
    result = _align(method, shipped, conventions)
    assert result.status == "fail", result.message
    assert "not along the reference residual" in result.message


def test_the_dropped_ayf_sign_fails_only_on_the_pairs_towards_the_noise():
    """Implied weights of the sign-dropped loss: negative exactly where s > t."""
    method, shipped, conventions = _example("ayf_emd_distillation", signed=False)
    result = _align(method, shipped, conventions)
    assert result.weights is not None
    t = torch.tensor(result.weights.t)
    s = torch.tensor(result.weights.s)
    w = torch.tensor(result.weights.weight)
    assert bool((w[s < t] > 0).all()) and bool((w[s > t] < 0).all())


# ----------------------------------------------------------------------------------------------
# SplitMeanFlow: a target network the oracle cannot see


def split_with_low_precision_target(model, x, dtype=torch.bfloat16):
    """SplitMeanFlow whose target runs in reduced precision (as under autocast)."""
    b = x.shape[0]
    e = torch.randn_like(x)
    tt = torch.rand(b, 2, dtype=x.dtype)
    t, r = tt.max(dim=1).values, tt.min(dim=1).values
    z_t = (1 - t[:, None]) * x + t[:, None] * e
    lam = torch.rand(b, dtype=x.dtype)
    s = (1 - lam) * t + lam * r
    with torch.no_grad():
        z, ss, rr, tl = z_t.to(dtype), s.to(dtype), r.to(dtype), t.to(dtype)
        u2 = model(z, ss, tl)
        u1 = model(z - (tl - ss)[:, None] * u2, rr, ss)
        target = ((1 - lam)[:, None] * u1.to(x.dtype) + lam[:, None] * u2.to(x.dtype)).detach()
    return torch.nn.functional.mse_loss(model(z_t, r, t), target)


def test_a_target_the_oracle_cannot_match_skips_with_the_reason():
    """bfloat16 target calls: their points and times are not the trained rows' (rounded at 4e-3)."""
    shipped = ShippedLoss(split_with_low_precision_target)
    result = _align("split_meanflow", shipped, {"signature": "x_s_t"})
    assert result.status == "skip", result.message
    assert "(the split point) was found" in result.message


def test_a_float32_target_beside_a_float64_loss_is_matched_and_passes():
    def loss(model, x):
        return split_with_low_precision_target(model, x, dtype=torch.float32)

    result = _align("split_meanflow", ShippedLoss(loss), {"signature": "x_s_t"})
    assert result.status == "pass", result.message


def split_in_one_batched_call(model, x, teacher, second_at_start=False):
    """SplitMeanFlow distilled from a teacher, the online output and the first segment in one
    call on the concatenated batch (only the first segment's half detached)."""
    b = x.shape[0]
    t = 0.1 + 0.9 * torch.rand(b, dtype=x.dtype)
    s = t * torch.rand(b, dtype=x.dtype)
    r = s + torch.rand(b, dtype=x.dtype) * (t - s)
    z = (1 - t[:, None]) * x + t[:, None] * torch.randn_like(x)
    both = model(torch.cat([z, z]), torch.cat([t, t]), torch.cat([s, r]))
    out, u_tr = both[:b], both[b:].detach()
    with torch.no_grad():
        u_rs = model(z if second_at_start else z - (t - r)[:, None] * u_tr, r, s)
    target = ((t - r)[:, None] * u_tr + (r - s)[:, None] * u_rs) / (t - s)[:, None]
    boundary = (model(z, t, t) - teacher(z, t)).pow(2).sum(1)
    return ((out - target).pow(2).sum(1) + boundary).mean()


@pytest.mark.parametrize("bug", [False, True])
def test_a_split_point_in_the_trained_call_is_found(bug):
    def loss(model, x, teacher):
        return split_in_one_batched_call(model, x, teacher, second_at_start=bug)

    result = _align("split_meanflow", ShippedLoss(loss, velocity="teacher"))
    assert result.status == ("fail" if bug else "pass"), result.message
    assert "not judged" not in result.message


# ----------------------------------------------------------------------------------------------
# Shortcut with a clipped target (noise at 1, (x, t, s) network)


def shortcut_clipped(model, x, teacher, clip=2.5, second_from_x_t=False):
    b = x.shape[0]
    d = 2.0 ** -torch.randint(0, 4, (b,)).to(x.dtype)
    t = d + torch.rand(b, dtype=x.dtype) * (1 - d)
    s = t - d
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    m = t - d / 2
    with torch.no_grad():
        u1 = model(z, t, m)
        z_m = (z - (d / 2)[:, None] * u1).clamp(-clip, clip)
        u2 = model(z if second_from_x_t else z_m, m, s)
        target = (0.5 * (u1 + u2)).clamp(-clip, clip)
    fm = (model(z, t, t) - teacher(z, t)).pow(2).sum(1)
    sc = (model(z, t, s) - target).pow(2).sum(1)
    return (fm + sc).mean()


def test_a_clipped_shortcut_target_passes_and_the_clipped_rows_are_named():
    result = _align("shortcut", ShippedLoss(shortcut_clipped, velocity="teacher"))
    assert result.status == "pass", result.message
    assert "(a clip), not judged" in result.message


def test_a_clipped_shortcut_target_with_a_bug_still_fails():
    def loss(model, x, teacher):
        return shortcut_clipped(model, x, teacher, second_from_x_t=True)

    result = _align("shortcut", ShippedLoss(loss, velocity="teacher"))
    assert result.status == "fail", result.message


def shortcut_flow_space(model, x, teacher):
    """The seed's flow-space Shortcut term ``||f_(t->s) - sg(f_(m->s)(f_(t->m)))||^2``, ``f = x +
    (s - t) F``, plus the flow-matching boundary: ``(t - s)^2`` times the velocity form."""
    b = x.shape[0]
    t = 0.05 + 0.95 * torch.rand(b, dtype=x.dtype)
    s = t * torch.rand(b, dtype=x.dtype)
    m = (t + s) / 2
    z = (1 - t[:, None]) * x + t[:, None] * torch.randn_like(x)

    def f(y, a, c):
        return y + (c - a)[:, None] * model(y, a, c)

    with torch.no_grad():
        target = f(f(z, t, m), m, s)
    boundary = (model(z, t, t) - teacher(z, t)).pow(2).sum(1)
    return ((f(z, t, s) - target).pow(2).sum(1) + boundary).mean()


def test_the_flow_space_shortcut_passes_with_its_implied_weight_the_squared_step():
    result = _align("shortcut", ShippedLoss(shortcut_flow_space, velocity="teacher"))
    assert result.status == "pass", result.message
    assert result.weights is not None
    t, s = torch.tensor(result.weights.t), torch.tensor(result.weights.s)
    w = torch.tensor(result.weights.weight)
    off = s < t
    ratio = w[off] / (t[off] - s[off]).pow(2)
    assert off.sum() > 10 and float(ratio.std() / ratio.mean()) < 1e-6
    assert float(w[off].std() / w[off].mean()) > 0.1  # the weight does vary with the step


# ----------------------------------------------------------------------------------------------
# FACM from data: relaxed target with a clamp, norm-L2, sin weight, anchor on the diagonal


def facm_loss(model, x, *, sign=-1.0, t_factor=True, cosine=False, anchor_reversed=False):
    b = x.shape[0]
    t = 0.01 + 0.98 * torch.rand(b, dtype=x.dtype)
    e = torch.randn_like(x)
    tc = t[:, None]
    x_t = (1 - tc) * x + tc * e
    v = e - x
    zero = torch.zeros_like(t)
    u, du = torch.func.jvp(lambda z, tt: model(z, tt, zero), (x_t, t), (v, torch.ones_like(t)))
    u_tgt = v + sign * (tc if t_factor else 1.0) * du
    g = u.detach() - u_tgt.detach()
    a = 1 - (1 - tc) ** 0.5
    target = u.detach() - a * g.clamp(-1.0, 1.0)
    sq = (u - target).pow(2).sum(1)
    cm = sq / (sq.detach() + 1e-3).sqrt() * torch.sin(0.5 * math.pi * t)
    w = model(x_t, t, t)
    anchor = (w - (x - e if anchor_reversed else v)).pow(2).sum(1)
    if cosine:
        anchor = anchor + 1 - torch.nn.functional.cosine_similarity(w, v, dim=1)
    return (cm + anchor).mean()


def _facm(**switches: Any) -> Callable[..., Any]:
    def loss(model, x):
        return facm_loss(model, x, **switches)

    return loss


@pytest.mark.parametrize("seed", [0, 1])
def test_facm_with_a_clamped_relaxed_target_passes(seed):
    result = _align("facm", ShippedLoss(_facm()), seed=seed)
    assert result.status == "pass", result.message
    assert "clamped per component" in result.message


def test_facm_with_a_cosine_anchor_declared_other_passes_and_reports_the_anchor():
    result = _align("facm", ShippedLoss(_facm(cosine=True), distance="other"))
    assert result.status == "pass", result.message
    assert "anchor rows reported, not judged" in result.message


@pytest.mark.parametrize(
    "switches", [{"sign": 1.0}, {"t_factor": False}, {"anchor_reversed": True}], ids=str
)
def test_facm_wrong_variants_fail(switches):
    result = _align("facm", ShippedLoss(_facm(**switches)))
    assert result.status == "fail", result.message


def test_facm_training_a_map_to_an_interior_time_fails():
    def loss(model, x):
        t = 0.5 + 0.4 * torch.rand(x.shape[0], dtype=x.dtype)
        z = (1 - t[:, None]) * x + t[:, None] * torch.randn_like(x)
        return model(z, t, 0.5 * t).pow(2).mean()

    result = _align("facm", ShippedLoss(loss))
    assert result.status == "fail" and "FACM trains" in result.message


# ----------------------------------------------------------------------------------------------
# AYF-LMD distilled from a teacher, both directions


def ayf_lmd_loss(model, x, teacher, *, teacher_at_start=False, sign_t_minus_s=False):
    b = x.shape[0]
    t = torch.rand(b, dtype=x.dtype)
    s = torch.rand(b, dtype=x.dtype)
    x_t = (1 - t[:, None]) * x + t[:, None] * torch.randn_like(x)

    def flow(end):
        return x_t + (end - t)[:, None] * model(x_t, t, end)

    f, df_ds = torch.func.jvp(flow, (s,), (torch.ones_like(s),))
    v = teacher(x_t, t) if teacher_at_start else teacher(f.detach(), s)
    direction = torch.sign((t - s) if sign_t_minus_s else (s - t))[:, None] * (df_ds.detach() - v)
    return 0.5 * (f - (f.detach() - direction)).pow(2).sum(1).mean()


def _lmd(**switches: Any) -> ShippedLoss:
    def loss(model, x, teacher):
        return ayf_lmd_loss(model, x, teacher, **switches)

    return ShippedLoss(loss, velocity="teacher", both_directions=True)


def test_ayf_lmd_passes():
    result = _align("ayf_lmd", _lmd())
    assert result.status == "pass", result.message


@pytest.mark.parametrize(
    "switches", [{"teacher_at_start": True}, {"sign_t_minus_s": True}], ids=str
)
def test_ayf_lmd_wrong_variants_fail(switches):
    result = _align("ayf_lmd", _lmd(**switches))
    assert result.status == "fail", result.message


def test_ayf_lmd_with_the_conditional_velocity_skips_with_the_reason():
    def loss(model, x):
        return ayf_lmd_loss(model, x, lambda z, t: torch.zeros_like(z))

    result = _align("ayf_lmd", ShippedLoss(loss, both_directions=True))
    assert result.status == "skip" and "velocity='teacher'" in result.message


def test_an_unknown_method_is_refused_in_one_line():
    harness = _Harness.build(Conventions(), None)
    with pytest.raises(ValueError, match="no target alignment check for method 'meanflow'"):
        check_target_alignment("meanflow", ShippedLoss(split_with_low_precision_target), harness)
    assert "meanflow" not in TARGET_METHODS


# ----------------------------------------------------------------------------------------------
# JAX: explicit keys, stop_gradient, jit, float32


def make_jax_split(model, teacher, second_at_start=False):
    import jax
    import jax.numpy as jnp

    def loss_fn(params, x, key):
        k_t, k_s, k_r, k_e = jax.random.split(key, 4)
        b = x.shape[0]
        t = 0.1 + 0.9 * jax.random.uniform(k_t, (b,), dtype=x.dtype)
        s = t * jax.random.uniform(k_s, (b,), dtype=x.dtype)
        r = s + jax.random.uniform(k_r, (b,), dtype=x.dtype) * (t - s)
        z = (1 - t[:, None]) * x + t[:, None] * jax.random.normal(k_e, x.shape, dtype=x.dtype)
        u_tr = jax.lax.stop_gradient(model.apply(params, z, t, r))
        z_r = z if second_at_start else z - (t - r)[:, None] * u_tr
        u_rs = jax.lax.stop_gradient(model.apply(params, z_r, r, s))
        target = ((t - r)[:, None] * u_tr + (r - s)[:, None] * u_rs) / (t - s)[:, None]
        split = jnp.sum((model.apply(params, z, t, s) - target) ** 2, axis=-1)
        boundary = jnp.sum((model.apply(params, z, t, t) - teacher(z, t)) ** 2, axis=-1)
        return jnp.mean(split + boundary)

    return jax.jit(loss_fn)


@pytest.mark.parametrize("bug", [False, True])
def test_a_jax_split_loss_runs_through_the_jax_harness(bug):
    pytest.importorskip("jax")
    from flowmap_oracle.oracle.shipped_jax import JaxHarness

    def make(model, teacher):
        return make_jax_split(model, teacher, second_at_start=bug)

    shipped = ShippedLoss(make, velocity="teacher")
    harness = JaxHarness.build({"framework": "jax", "dtype": "float32"}, None)
    result = check_target_alignment("split_meanflow", shipped, harness)
    assert result.status == ("fail" if bug else "pass"), result.message
