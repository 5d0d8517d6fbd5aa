"""Bad input gets a clear error naming the problem; time samplers and distances do what their
docstrings say (including the stop-gradient inside the adaptive weight)."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.experiments.models import MLPFlowMap
from flowmap_oracle.objectives import (
    EulerSolver,
    FiniteDifference,
    ayf_lmd_loss,
    consistency_loss,
    ctm_loss,
    facm_loss,
    flow_matching_loss,
    imm_loss,
    meanflow_loss,
    scm_loss,
    shortcut_loss,
    split_meanflow_loss,
)
from flowmap_oracle.objectives._common import frozen_flow
from flowmap_oracle.objectives.distances import (
    adaptive_l2,
    cosine_distance,
    pseudo_huber,
    squared_l2,
)
from flowmap_oracle.objectives.time_sampling import (
    consistency_times,
    ctm_times,
    imm_times,
    pair_times,
    shortcut_times,
    split_times,
)
from flowmap_oracle.reference_models import preset

TEACHER = preset("ring8")
V = TEACHER.velocity
N = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MLPFlowMap(2, hidden=8, depth=1)


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    x0 = TEACHER.mixture.sample(N, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    t = torch.linspace(0.3, 0.9, N, dtype=x0.dtype)
    return x0, x1, t, 0.6 * t, 0.3 * t


def test_shape_dtype_and_finiteness_of_points_are_checked(model, batch):
    x0, x1, t, _, s = batch
    with pytest.raises(ValueError, match=r"x1 has shape"):
        meanflow_loss(model, x0, x1[:-1], t, s)
    with pytest.raises(TypeError, match="dtype"):
        meanflow_loss(model, x0, x1.float(), t, s)
    with pytest.raises(ValueError, match="x0 must have shape"):
        meanflow_loss(model, x0[0], x1[0], t, s)
    bad = x0.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0 contains non-finite"):
        flow_matching_loss(model, bad, x1, t)


def test_times_are_checked(model, batch):
    x0, x1, t, r, s = batch
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        meanflow_loss(model, x0, x1, t + 0.5, s)
    with pytest.raises(ValueError, match="s must have shape"):
        meanflow_loss(model, x0, x1, t, s[:-1])
    with pytest.raises(TypeError, match="t has dtype"):
        scm_loss(model, x0, x1, t.float())
    with pytest.raises(ValueError, match="t >= r >= s"):
        split_meanflow_loss(model, x0, x1, t, s, r)
    with pytest.raises(ValueError, match="t >= s"):
        shortcut_loss(model, x0, x1, s, t)
    with pytest.raises(ValueError, match="t >= r >= s"):
        ctm_loss(model, x0, x1, t, s, r, solver=EulerSolver(V))
    with pytest.raises(ValueError, match="t - delta_t"):
        consistency_loss(model, x0, x1, t, delta_t=0.35, solver=None)
    with pytest.raises(ValueError, match="delta_t must be positive"):
        consistency_loss(model, x0, x1, t, delta_t=0.0, solver=None)


def test_velocity_choices_are_checked(model, batch):
    x0, x1, t, r, s = batch
    with pytest.raises(ValueError, match="velocity must be a callable"):
        meanflow_loss(model, x0, x1, t, s, velocity="marginal")
    with pytest.raises(ValueError, match="velocity returned shape"):
        meanflow_loss(model, x0, x1, t, s, velocity=lambda x, tt: x[:, :1])
    with pytest.raises(ValueError, match="non-finite"):
        meanflow_loss(model, x0, x1, t, s, velocity=lambda x, tt: x / 0)
    with pytest.raises(ValueError, match="inadmissible"):
        ayf_lmd_loss(model, x0, x1, t, s, velocity="conditional")
    for loss in (
        lambda: flow_matching_loss(model, x0, x1, t, velocity="model"),
        lambda: facm_loss(model, x0, x1, t, velocity="model"),
        lambda: shortcut_loss(model, x0, x1, t, s, velocity="model"),
        lambda: split_meanflow_loss(model, x0, x1, t, r, s, velocity="model"),
        lambda: ctm_loss(
            model, x0, x1, t, r, s, solver=EulerSolver(V), dsm_weight=1.0, velocity="model"
        ),
    ):
        with pytest.raises(ValueError, match="vacuous"):
            loss()


def test_other_options_are_checked(model, batch):
    x0, x1, t, r, s = batch
    with pytest.raises(ValueError, match="derivative must be"):
        meanflow_loss(model, x0, x1, t, s, derivative="forward")
    with pytest.raises(ValueError, match="step must be positive"):
        FiniteDifference(0.0)
    with pytest.raises(ValueError, match="distance must be"):
        consistency_loss(model, x0, x1, t, delta_t=0.1, solver=None, distance="lpips")
    with pytest.raises(ValueError, match="distance must be"):
        ctm_loss(model, x0, x1, t, r, s, solver=EulerSolver(V), distance="lpips")
    with pytest.raises(ValueError, match="tangent_normalisation must be positive"):
        scm_loss(model, x0, x1, t, tangent_normalisation=0.0)
    with pytest.raises(ValueError, match="time_encoding"):
        facm_loss(model, x0, x1, t, time_encoding="shifted")
    with pytest.raises(ValueError, match="compare must be"):
        ctm_loss(model, x0, x1, t, r, s, solver=EulerSolver(V), compare="noise")
    with pytest.raises(ValueError, match="multiple of group_size"):
        imm_loss(model, x0, x1, t, r, s, group_size=3)
    with pytest.raises(ValueError, match="constant within each group"):
        imm_loss(model, x0, x1, t, r, s, group_size=4)
    with pytest.raises(ValueError, match="weight must have shape"):
        meanflow_loss(model, x0, x1, t, s, weight=torch.ones(N + 1, dtype=t.dtype))
    with pytest.raises(ValueError, match="n_steps"):
        EulerSolver(V, n_steps=0)


def test_time_samplers_respect_order_fractions_and_grids():
    gen = torch.Generator().manual_seed(0)
    n = 4000
    t, s = pair_times(n, equal_fraction=0.75, generator=gen)
    assert ((s >= 0) & (s <= t) & (t <= 1)).all()
    assert abs(float((s == t).double().mean()) - 0.75) < 0.03
    t, r, s = split_times(n, boundary_fraction=0.25, generator=gen)
    assert ((s <= r) & (r <= t)).all()
    assert abs(float((s == t).double().mean()) - 0.25) < 0.03
    t, dt = consistency_times(n, n_steps=10, generator=gen)
    assert torch.allclose(t * 10, (t * 10).round()) and (t - dt >= -1e-15).all()
    t, s = shortcut_times(n, max_log2_steps=4, fm_fraction=0.0, generator=gen)
    step = t - s
    assert torch.allclose(torch.log2(step), torch.log2(step).round())
    assert torch.allclose(t / step, (t / step).round()) and (s >= 0).all()
    t, r, s = ctm_times(n, generator=gen)
    assert ((s <= r) & (r <= t)).all()
    t, r, s = imm_times(50, 8, generator=gen)
    for a in (t, r, s):
        grouped = a.reshape(50, 8)
        assert (grouped == grouped[:, :1]).all()
    assert ((s <= r) & (r <= t)).all()
    with pytest.raises(ValueError, match="equal_fraction"):
        pair_times(4, equal_fraction=1.5)


def test_distances_and_the_stop_gradient_inside_the_adaptive_weight():
    r = torch.tensor([[3.0, 4.0], [0.1, 0.0]], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(squared_l2(r), torch.tensor([25.0, 0.01], dtype=torch.float64))
    torch.testing.assert_close(
        pseudo_huber(r, c=1.0), torch.tensor([26**0.5 - 1, 1.01**0.5 - 1], dtype=torch.float64)
    )
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(cosine_distance(a, b), torch.ones(1, dtype=torch.float64))
    # MeanFlow's weight sg(1 / (||r||^2 + c)^p): gradient 2 r / (||r||^2 + c)^p, not the
    # gradient of the whole ratio (which a missing stop-gradient would give).
    p, c = 1.0, 1e-3
    (g,) = torch.autograd.grad(adaptive_l2(r, p=p, c=c).sum(), r)
    sq = r.detach().pow(2).sum(1, keepdim=True)
    torch.testing.assert_close(g, 2 * r.detach() / (sq + c) ** p)
    (g_full,) = torch.autograd.grad((r.pow(2).sum(1) / (r.pow(2).sum(1) + c) ** p).sum(), r)
    assert not torch.allclose(g_full, g)
    torch.testing.assert_close(adaptive_l2(r, p=0.0, c=c), squared_l2(r))
    with pytest.raises(ValueError, match="positive"):
        pseudo_huber(r, c=0.0)


def test_frozen_flow_freezes_module_parameters_and_rejects_plain_callables(model, batch):
    """``sg(f_{theta-})``: gradients reach the input but not the parameters; a plain callable's
    parameters cannot be found, so it is rejected rather than silently left unfrozen."""
    x0, x1, t, r, s = batch
    x = x0.clone().requires_grad_(True)
    out = frozen_flow(model)(x, t, s).pow(2).sum()
    (gx,) = torch.autograd.grad(out, x, retain_graph=True)
    assert float(gx.abs().max()) > 0
    assert all(
        g is None for g in torch.autograd.grad(out, list(model.parameters()), allow_unused=True)
    )
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        frozen_flow(lambda x, t, s: model(x, t, s))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        ctm_loss(lambda x, t, s: model(x, t, s), x0, x1, t, r, s, solver=EulerSolver(V))
    # compare="s" needs no frozen map: a plain average velocity is accepted there
    ctm_loss(lambda x, t, s: model(x, t, s), x0, x1, t, r, s, solver=EulerSolver(V), compare="s")
