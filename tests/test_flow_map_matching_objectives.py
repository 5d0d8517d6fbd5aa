"""Flow map matching (Lagrangian, Eulerian) and self-distillation (LSD, ESD, PSD) as real losses:
the exact teacher map is a fixed point of each on the linear and the trig path (ring8, float64),
a perturbed map is not, the gradients flow where each method puts them, bad input is refused."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.conventions import LINEAR, Method, interpolant, path_named
from flowmap_oracle.experiments.fixed_points import measure_fixed_points
from flowmap_oracle.objectives import (
    FiniteDifference,
    esd_loss,
    fmm_eulerian_loss,
    fmm_lagrangian_loss,
    lsd_loss,
    psd_loss,
    psd_target,
    self_distillation_times,
)
from flowmap_oracle.reference_models import preset

NAMES = ["fmm_lagrangian", "fmm_eulerian", "lsd", "esd", "psd"]


@pytest.fixture(scope="module", params=["linear", "trig"])
def inventory(request):
    rows = measure_fixed_points(NAMES, path=path_named(request.param))
    return {r.name: r for r in rows}


@pytest.mark.parametrize("name", NAMES)
def test_exact_map_is_a_fixed_point_and_a_perturbed_map_is_not(inventory, name):
    r = inventory[name]
    assert r.passed and r.fixed_point_residual <= r.tolerance <= 1e-7, r
    # the control must stand far above the tolerance (the brief asks 10x; measured >= 4e5x)
    assert r.perturbed_residual > 1e4 * r.tolerance, r


def test_methods_have_one_name_and_a_paper_title():
    for name in NAMES:
        m = Method.parse(name)
        assert m.value == name and m.paper_name
    with pytest.raises(ValueError, match="did you mean 'fmm_lagrangian'"):
        Method.parse("fmm")


class _Net(torch.nn.Module):
    """A small smooth F(x, t, s) (float64)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(4, 16, generator=g, dtype=torch.float64) / 2)
        self.w2 = torch.nn.Parameter(torch.randn(16, 2, generator=g, dtype=torch.float64) / 4)

    def forward(self, x, t, s):
        return torch.tanh(torch.cat([x, t[:, None], s[:, None]], 1) @ self.w1) @ self.w2


def _batch(n=32, seed=1):
    teacher = preset("ring8")
    g = torch.Generator().manual_seed(seed)
    x0 = teacher.mixture.sample(n, generator=g)
    x1 = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    t, u, s = self_distillation_times(n, diagonal_fraction=0.25, generator=g)
    return teacher, x0, x1, t, u, s


def _grads(loss, net):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])


@pytest.mark.parametrize("loss_fn", [fmm_lagrangian_loss, fmm_eulerian_loss, lsd_loss, esd_loss])
def test_jvp_and_finite_difference_routes_give_the_same_loss_and_gradient(loss_fn):
    """The reverse-mode gradient through torch.func.jvp equals the one through central
    differences (h = 1e-5: O(h^2) apart), so the derivative terms carry their gradient."""
    teacher, x0, x1, t, _, s = _batch()
    net = _Net()
    a = loss_fn(net, x0, x1, t, s, velocity=teacher.velocity)
    b = loss_fn(net, x0, x1, t, s, velocity=teacher.velocity, derivative=FiniteDifference(1e-5))
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(_grads(a.loss, net), _grads(b.loss, net), rtol=1e-6, atol=1e-8)


def test_lsd_stops_the_gradient_at_the_teacher_and_fmm_does_not():
    """With a teacher, LSD is the Lagrangian FMM loss with sg on the teacher's input: same value,
    different gradient (the FMM gradient also flows through v(f, s))."""
    teacher, x0, x1, t, _, s = _batch()
    off = t != s
    x0, x1, t, s = x0[off], x1[off], t[off], s[off]
    net = _Net()
    fmm = fmm_lagrangian_loss(net, x0, x1, t, s, velocity=teacher.velocity)
    lsd = lsd_loss(net, x0, x1, t, s, distill_from=teacher.velocity)
    torch.testing.assert_close(fmm.loss, lsd.loss)
    gap = (_grads(fmm.loss, net) - _grads(lsd.loss, net)).abs().max()
    assert gap > 1e-3


def test_esd_with_a_teacher_is_the_eulerian_fmm_loss():
    teacher, x0, x1, t, _, s = _batch()
    off = t != s
    x0, x1, t, s = x0[off], x1[off], t[off], s[off]
    net = _Net()
    fmm = fmm_eulerian_loss(net, x0, x1, t, s, velocity=teacher.velocity)
    esd = esd_loss(net, x0, x1, t, s, distill_from=teacher.velocity)
    torch.testing.assert_close(fmm.loss, esd.loss)
    torch.testing.assert_close(_grads(fmm.loss, net), _grads(esd.loss, net))


def test_psd_velocity_space_is_the_map_space_residual_over_s_minus_t():
    _, x0, x1, t, u, s = _batch()
    net = _Net()
    vel = psd_loss(net, x0, x1, t, u, s)
    mp = psd_loss(net, x0, x1, t, u, s, space="map")
    off = t != s
    scale = (s - t)[off][:, None]
    torch.testing.assert_close(vel.residual[off] * scale, mp.residual[off])
    # the target is the stop-gradient composition f_{u->s}(f_{t->u}(x_t)), not f_{t->u} o f_{u->s}
    x_t = interpolant(LINEAR, x0, x1, t)
    f, target = psd_target(net, x_t, t, u, s)
    assert not target.requires_grad and f.requires_grad
    flow = lambda x, a, b: x + (b - a)[:, None] * net(x, a, b)  # noqa: E731
    torch.testing.assert_close(target, flow(flow(x_t, t, u), u, s).detach())
    wrong = flow(flow(x_t, u, s), t, u).detach()
    assert (wrong - target)[off].abs().max() > 1e-3


def test_diagonal_rows_are_flow_matching_with_the_conditional_velocity():
    _, x0, x1, t, u, s = _batch()
    net = _Net()
    diag = t == s
    x_t = interpolant(LINEAR, x0, x1, t)
    for out in (lsd_loss(net, x0, x1, t, s), esd_loss(net, x0, x1, t, s)):
        torch.testing.assert_close(out.residual[diag], (net(x_t, t, t) - (x1 - x0))[diag])
    out = psd_loss(net, x0, x1, t, u, s)
    torch.testing.assert_close(out.residual[diag], (net(x_t, t, t) - (x1 - x0))[diag])


def test_bad_input_gets_one_clear_error():
    _, x0, x1, t, u, s = _batch()
    net = _Net()
    for fn in (fmm_lagrangian_loss, fmm_eulerian_loss):
        with pytest.raises(ValueError, match="needs a teacher's velocity field"):
            fn(net, x0, x1, t, s, velocity="conditional")
        with pytest.raises(TypeError, match="callable"):
            fn(net, x0, x1, t, s, velocity=3)
    with pytest.raises(ValueError, match="vacuous"):
        lsd_loss(net, x0, x1, t, s, velocity="model")
    with pytest.raises(ValueError, match="t >= u >= s"):
        psd_loss(net, x0, x1, t, s, u)  # u and s swapped
    with pytest.raises(ValueError, match="space"):
        psd_loss(net, x0, x1, t, u, s, space="f")
    with pytest.raises(ValueError, match="diagonal_fraction"):
        self_distillation_times(4, diagonal_fraction=1.5)


def test_self_distillation_times_are_ordered_with_the_requested_diagonal_share():
    g = torch.Generator().manual_seed(0)
    t, u, s = self_distillation_times(4000, diagonal_fraction=0.25, generator=g)
    assert bool((t >= u).all() and (u >= s).all())
    share = float((t == s).double().mean())
    assert abs(share - 0.25) < 0.03  # binomial sd 0.0068: > 4 sd
    t, u, s = self_distillation_times(100, diagonal_fraction=0.0, intermediate="midpoint")
    torch.testing.assert_close(u, (t + s) / 2)
