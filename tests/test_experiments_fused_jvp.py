"""The benchmark MLP's own forward-mode pass (``MLPFlowMap.fused_jvp``) against ``torch.func.jvp``.

``directional_derivative(..., derivative="jvp")`` uses a network's ``fused_jvp`` when it has one,
so every objective trained on an :class:`MLPFlowMap` takes this path. These tests hold it to
``torch.func.jvp`` at 1e-12 in float64 (values, tangents, and the parameter gradients of the
MeanFlow loss and of a loss on the tangent itself), show that the comparison rejects wrong
tangents, and that anything the fused pass does not reproduce (a subclass's ``forward``, a changed
``net``, a hook) falls back to ``torch.func.jvp``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest
import torch
from torch import Tensor, nn

import flowmap_oracle.oracle
import flowmap_oracle.reference_models
from flowmap_oracle.experiments.models import (
    FACM,
    MEANFLOW,
    FlowMapModel,
    MLPFlowMap,
    Parameterisation,
)
from flowmap_oracle.objectives import (
    ayf_emd_loss,
    ayf_lmd_loss,
    esd_loss,
    facm_loss,
    fmm_eulerian_loss,
    fmm_lagrangian_loss,
    lsd_loss,
    meanflow_loss,
    scm_loss,
)
from flowmap_oracle.objectives.derivatives import FusedJvp, directional_derivative
from flowmap_oracle.reference_models import preset

TOL = 1e-12  # float64; the fused pass and torch.func.jvp differ by rounding only (~1e-16 seen)

PARAMETERISATIONS = {
    "meanflow": MEANFLOW,
    "facm": FACM,
    "no_closed_form": Parameterisation(
        name="curved",
        skip=lambda t, s: torch.cos(t - s),
        out=lambda t, s: torch.sin(s - t) * (1 + t),
    ),
}


def _model(seed: int = 0, *, gain: float = 1.0) -> MLPFlowMap:
    """An MLP at random parameters (``gain`` scales them off the initialisation's range)."""
    torch.manual_seed(seed)
    model = MLPFlowMap(2, hidden=32, depth=3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model


def _inputs(seed: int = 1, n: int = 64) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    s = t * torch.rand(n, generator=gen, dtype=torch.float64)
    tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in (x, t, s))
    return (x, t, s), tangents


def _gap(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    return max(float((u - w).detach().abs().max()) for u, w in zip(a, b, strict=True))


def _reference(model: nn.Module, primals, tangents) -> tuple[Tensor, Tensor]:
    return torch.func.jvp(model, primals, tangents)


@pytest.mark.parametrize(("seed", "gain"), [(0, 1.0), (1, 3.0), (2, 0.3)])
def test_fused_jvp_equals_torch_func_jvp(seed, gain):
    model = _model(seed, gain=gain)
    primals, tangents = _inputs(seed + 10)
    fused = model.fused_jvp(primals, tangents)
    ref = _reference(model, primals, tangents)
    assert _gap(fused, ref) < TOL
    # the tangent is far above the tolerance: a wrong tangent would show
    assert float(ref[1].detach().abs().max()) > 1e6 * TOL


@pytest.mark.parametrize("k", [0, 1, 2])
def test_the_comparison_rejects_a_tangent_that_drops_one_direction(k):
    """A fused pass that ignored dx, dt or ds (the kind of slip a hand-written JVP makes) fails."""
    model = _model()
    primals, tangents = _inputs()
    dropped = tuple(torch.zeros_like(u) if i == k else u for i, u in enumerate(tangents))
    wrong = model.fused_jvp(primals, dropped)
    assert _gap(wrong, _reference(model, primals, tangents)) > 1e3 * TOL


def _silu_tangent_mutant(model: MLPFlowMap, primals, tangents) -> tuple[Tensor, Tensor]:
    """The fused pass with SiLU's derivative taken as ``sigmoid(z)`` (a wrong variant)."""
    x, t, s = primals
    dx, dt, ds = tangents
    h = torch.cat([x, model._features(t), model._features(s), t[:, None], (t - s)[:, None]], 1)
    _, dft = model._features_and_tangent(t, dt)
    _, dfs = model._features_and_tangent(s, ds)
    dh = torch.cat([dx, dft, dfs, dt[:, None], (dt - ds)[:, None]], 1)
    layers = list(model.net)[::2]
    for layer in layers[:-1]:
        z = nn.functional.linear(h, layer.weight, layer.bias)
        dh = nn.functional.linear(dh, layer.weight) * torch.sigmoid(z)
        h = nn.functional.silu(z)
    return nn.functional.linear(h, layers[-1].weight, layers[-1].bias), nn.functional.linear(
        dh, layers[-1].weight
    )


def test_the_comparison_rejects_a_wrong_activation_derivative():
    model = _model()
    primals, tangents = _inputs()
    wrong = _silu_tangent_mutant(model, primals, tangents)
    ref = _reference(model, primals, tangents)
    assert _gap(wrong[:1], ref[:1]) < TOL  # the value alone cannot tell
    assert _gap(wrong, ref) > 1e3 * TOL


def _hidden(model: nn.Module):
    """The same function without ``fused_jvp``: the objectives fall back to ``torch.func.jvp``."""
    return lambda x, t, s: model(x, t, s)


@pytest.mark.parametrize("velocity", ["conditional", "teacher", "model"])
@pytest.mark.parametrize("adaptive_p", [0.0, 1.0])
def test_meanflow_loss_and_parameter_gradients_agree_with_the_torch_func_route(
    velocity, adaptive_p
):
    teacher = preset("ring8")
    model = _model(3, gain=2.0)
    gen = torch.Generator().manual_seed(4)
    n = 128
    x0 = teacher.mixture.sample(n, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    t = torch.rand(n, generator=gen, dtype=x0.dtype)
    s = t * torch.rand(n, generator=gen, dtype=x0.dtype)
    v = teacher.velocity if velocity == "teacher" else velocity
    params = list(model.parameters())

    def run(net):
        out = meanflow_loss(net, x0, x1, t, s, velocity=v, adaptive_p=adaptive_p)
        return out, torch.autograd.grad(out.loss, params)

    assert isinstance(model, FusedJvp) and not isinstance(_hidden(model), FusedJvp)
    (fused, g_fused), (ref, g_ref) = run(model), run(_hidden(model))
    assert _gap((fused.loss,), (ref.loss,)) < TOL
    assert _gap((fused.target, fused.residual), (ref.target, ref.residual)) < TOL
    assert _gap(g_fused, g_ref) < TOL
    # a target whose derivative has the wrong tangent order (v, 0, 1) moves the gradients far
    # beyond the tolerance, so the agreement above is not vacuous
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    vv = x1 - x0
    _, wrong_d = directional_derivative(
        model, (x_t, t, s), (vv, torch.zeros_like(t), torch.ones_like(s))
    )
    _, right_d = directional_derivative(
        model, (x_t, t, s), (vv, torch.ones_like(t), torch.zeros_like(s))
    )
    assert _gap((wrong_d,), (right_d,)) > 1e3 * TOL


def test_reverse_mode_through_the_tangent_agrees():
    """Losses that differentiate the tangent itself (flow map matching, Lagrangian forms) get
    the same parameter and input gradients from the fused pass."""
    model = _model(5, gain=1.5)
    primals, tangents = _inputs(6)
    x = primals[0].clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(primals[0].shape, generator=gen, dtype=torch.float64)
    inputs = [x, *model.parameters()]

    def grads(route):
        value, tangent = route(model, (x, *primals[1:]), tangents)
        return torch.autograd.grad((w * tangent).sum() + (value**2).sum(), inputs)

    fused = grads(lambda m, p, u: m.fused_jvp(p, u))
    ref = grads(_reference)
    assert _gap(fused, ref) < TOL
    wrong = grads(_silu_tangent_mutant)
    assert _gap(wrong, ref) > 1e3 * TOL


def test_the_fused_pass_composes_with_torch_func_transforms():
    """``torch.func.jacrev`` of the fused tangent equals that of ``torch.func.jvp``'s."""
    model = _model(8)
    (x, t, s), (dx, dt, ds) = _inputs(9, n=8)

    def tangent_of(route):
        return lambda x_: route(model, (x_, t, s), (dx, dt, ds))[1].sum(0)

    fused = torch.func.jacrev(tangent_of(lambda m, p, u: m.fused_jvp(p, u)))(x)
    ref = torch.func.jacrev(tangent_of(_reference))(x)
    assert _gap((fused,), (ref,)) < TOL


def test_float32_and_vmap_over_tangents():
    """A float32 model (agreement to float32 rounding) and ``torch.func.vmap`` over a stack of
    tangents: one JVP per direction, as a Jacobian-by-columns would call it."""
    torch.manual_seed(16)
    model = MLPFlowMap(3, hidden=16, depth=2, dtype=torch.float32)
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(10, 3, generator=gen)
    t = torch.rand(10, generator=gen)
    s = t * torch.rand(10, generator=gen)
    one, zero = torch.ones_like(t), torch.zeros_like(s)
    directions = torch.randn(4, 10, 3, generator=gen)

    def fused(v):
        return model.fused_jvp((x, t, s), (v, one, zero))[1]

    def ref(v):
        return torch.func.jvp(model, (x, t, s), (v, one, zero))[1]

    got, want = torch.func.vmap(fused)(directions), torch.func.vmap(ref)(directions)
    assert got.dtype == torch.float32
    scale = float(want.detach().abs().max())
    assert _gap((got,), (want,)) < 1e-5 * scale
    assert _gap((torch.func.vmap(fused)(directions.flip(0)),), (want,)) > 1e-2 * scale


@pytest.mark.parametrize("name", ["meanflow", "facm", "no_closed_form"])
def test_the_fused_flow_jvp_equals_torch_func_jvp_of_the_flow(name):
    """``model.flow`` (``c_skip x + c_out F``) offers its own pass too: equal to
    ``torch.func.jvp`` of the flow for each parameterisation (``no_closed_form``: coefficients
    without ``skip_dot``/``out_dot``, differentiated by ``torch.func.jvp``)."""
    param = PARAMETERISATIONS[name]
    model = MLPFlowMap(2, hidden=16, depth=2, parameterisation=param)
    primals, tangents = _inputs(20)
    assert isinstance(model.flow, FusedJvp)
    fused = model.flow.fused_jvp(primals, tangents)
    ref = torch.func.jvp(lambda x, t, s: FlowMapModel.flow(model, x, t, s), primals, tangents)
    assert _gap(fused, ref) < TOL
    assert _gap((model.flow(*primals),), (FlowMapModel.flow(model, *primals),)) == 0.0


@pytest.mark.parametrize("name", ["meanflow", "facm"])
def test_closed_form_coefficient_derivatives_equal_torch_func_jvp(name):
    param = PARAMETERISATIONS[name]
    (_, t, s), (_, dt, ds) = _inputs(21)
    cols = (t[:, None], s[:, None], dt[:, None], ds[:, None])
    _, _, dskip, dout = param.jvp(*cols)
    _, want_skip = torch.func.jvp(param.skip, cols[:2], cols[2:])
    _, want_out = torch.func.jvp(param.out, cols[:2], cols[2:])
    assert _gap((dskip, dout), (want_skip, want_out)) < TOL
    # an out_dot with the sign of t and s swapped (d(t - s) for d(s - t)) is rejected
    wrong = dataclasses.replace(param, out_dot=lambda t, s, dt, ds: dt - ds)
    assert _gap(wrong.jvp(*cols)[2:], (want_skip, want_out)) > 1e3 * TOL


class _Plain(FlowMapModel):
    """The MLP behind a model with no fused pass (its flow is FlowMapModel.flow)."""

    def __init__(self, inner: MLPFlowMap) -> None:
        super().__init__()
        self.inner = inner
        self.parameterisation = inner.parameterisation

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.inner(x, t, s)


FLOW_OBJECTIVES = {
    "ayf_emd": lambda m, b, v: ayf_emd_loss(m, *b, velocity=v),
    "ayf_lmd": lambda m, b, v: ayf_lmd_loss(m, *b, velocity=v),
    "fmm_lagrangian": lambda m, b, v: fmm_lagrangian_loss(m, *b, velocity=v),
    "fmm_eulerian": lambda m, b, v: fmm_eulerian_loss(m, *b, velocity=v),
    "lsd": lambda m, b, v: lsd_loss(m, *b, velocity=v),
    "esd": lambda m, b, v: esd_loss(m, *b, velocity=v),
    "scm": lambda m, b, v: scm_loss(m, *b[:3], velocity=v),
    "facm": lambda m, b, v: facm_loss(m, *b[:3], velocity=v),
}


class _Counting(MLPFlowMap):
    """Counts the fused passes it is asked for (so the agreement below is not vacuous)."""

    calls = 0

    def fused_jvp(self, primals, tangents):
        self.calls += 1
        return super().fused_jvp(primals, tangents)


@pytest.mark.parametrize("name", list(FLOW_OBJECTIVES))
def test_objectives_on_the_flow_map_agree_with_the_torch_func_route(name):
    """Every objective that differentiates the model (its flow map or F) gets the same loss and
    parameter gradients from the fused pass as from ``torch.func.jvp``."""
    teacher = preset("ring8")
    model = _Counting(2, hidden=32, depth=3)
    model.load_state_dict(_model(22, gain=1.5).state_dict())
    gen = torch.Generator().manual_seed(23)
    n = 64
    x0 = teacher.mixture.sample(n, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    t = 0.05 + 0.9 * torch.rand(n, generator=gen, dtype=x0.dtype)
    s = t * torch.rand(n, generator=gen, dtype=x0.dtype)
    batch = (x0, x1, t, s)
    params = list(model.parameters())

    def run(net):
        loss = FLOW_OBJECTIVES[name](net, batch, teacher.velocity).loss
        return loss, torch.autograd.grad(loss, params)

    (fused, g_fused), (ref, g_ref) = run(model), run(_Plain(model))
    assert model.calls == 1  # the fused run took the fused pass; the reference did not
    assert _gap((fused,), (ref,)) < TOL * max(1.0, float(ref.detach().abs()))
    scale = max(float(g.abs().max()) for g in g_ref)
    assert scale > 1e6 * TOL
    assert _gap(g_fused, g_ref) < TOL * max(1.0, scale)


class _Shifted(MLPFlowMap):
    """A subclass with its own forward: the fused pass would compute the parent's function."""

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return super().forward(x, t, s) + torch.sin(3 * t)[:, None] * x


def _changed_net() -> MLPFlowMap:
    model = _model(11)
    model.net[1] = nn.Tanh()
    return model


class _ScaledLinear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


def _linear_subclass() -> MLPFlowMap:
    model = _model(13)
    old = model.net[2]
    new = _ScaledLinear(old.in_features, old.out_features, dtype=torch.float64)
    new.load_state_dict(old.state_dict())
    model.net[2] = new
    return model


def _hooked() -> MLPFlowMap:
    model = _model(12)
    model.net[2].register_forward_hook(lambda mod, inp, out: out * out)
    return model


@pytest.mark.parametrize(
    "make", [lambda: _Shifted(2, hidden=16, depth=2), _changed_net, _linear_subclass, _hooked]
)
def test_what_the_fused_pass_cannot_reproduce_falls_back_to_torch_func_jvp(make):
    model = make()
    primals, tangents = _inputs(13)
    fused = model.fused_jvp(primals, tangents)
    ref = _reference(model, primals, tangents)
    assert _gap(fused, ref) < TOL
    assert _gap(fused, (model(*primals), ref[1])) < TOL
    # the unguarded fused pass (the plain MLP's function) would be far off here
    plain = MLPFlowMap(2, hidden=model.net[0].out_features, depth=len(model.net) // 2)
    plain.load_state_dict(model.state_dict())
    assert _gap(plain.fused_jvp(primals, tangents), ref) > 1e3 * TOL


def test_a_global_forward_hook_also_falls_back():
    model = _model(18)
    primals, tangents = _inputs(19)
    plain = model.fused_jvp(primals, tangents)
    handle = nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: out * out if isinstance(mod, nn.Linear) else out
    )
    try:
        fused = model.fused_jvp(primals, tangents)
        ref = _reference(model, primals, tangents)
    finally:
        handle.remove()
    assert _gap(fused, ref) < TOL
    assert _gap(plain, ref) > 1e3 * TOL


def test_directional_derivative_uses_the_network_s_own_pass_when_offered():
    calls = []

    class Offers(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return 2 * x

        def fused_jvp(self, primals, tangents):
            calls.append(len(primals))
            return 2 * primals[0], 2 * tangents[0]

    x = torch.ones(3, 2, dtype=torch.float64)
    _, d = directional_derivative(Offers(), (x,), (3 * x,))
    assert calls == [1] and torch.equal(d, 6 * x)
    _, d = directional_derivative(lambda a: 2 * a, (x,), (3 * x,))
    assert calls == [1] and torch.equal(d, 6 * x)


def test_fused_jvp_names_bad_arity():
    model = _model()
    (x, t, _), (dx, dt, _) = _inputs()
    with pytest.raises(ValueError, match="three tangents"):
        model.fused_jvp((x, t), (dx, dt))


def _classes(package) -> list[type]:
    out = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        out += [
            c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == info.name
        ]
    return out


def test_the_oracle_s_networks_do_not_take_the_fused_path():
    """The oracle differentiates its own and the user's networks by ``torch.func.jvp``; none of
    its classes (nor the reference models') offers ``fused_jvp``."""
    classes = _classes(flowmap_oracle.oracle) + _classes(flowmap_oracle.reference_models)
    assert len(classes) > 20
    offering = [c.__qualname__ for c in classes if hasattr(c, "fused_jvp")]
    assert offering == []
    assert hasattr(MLPFlowMap, "fused_jvp")  # the scan would see one
