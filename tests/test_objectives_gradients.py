"""Proofs 3-6 of issue 5 on real networks (an MLP F(x, t, s), float64, the 8-mode ring).

3. Stop-gradient: each loss's reverse-mode gradient equals the gradient with its target frozen,
   and its forward-mode derivative in the parameters agrees (``detach`` stops tangents,
   ``torch.no_grad`` would not).
4. The JVP route for derivatives agrees with central differences.
5. The equivalences of MATH.md hold: AYF-EMD = |t - s| MeanFlow; FACM's CM part = MeanFlow at
   s = 0; sCM = AYF-EMD at s = 0; split -> MeanFlow (v := F(x, t, t)) as r -> t; Shortcut =
   split at the midpoint; discrete CD / Dt -> 2 sCM; AYF-LMD = |t - s| x its regression form.
6. Each check rejects a wrong variant (a local mutant: wrong sign, factor, tangent order,
   evaluation point, or missing stop-gradient).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from helpers import teacher_batch
from torch.func import functional_call

from flowmap_oracle.conventions import LINEAR, interpolant
from flowmap_oracle.experiments.models import FlowMapModel, MLPFlowMap
from flowmap_oracle.objectives import (
    EulerSolver,
    FiniteDifference,
    ayf_emd_loss,
    ayf_lmd_loss,
    consistency_loss,
    ctm_loss,
    facm_loss,
    flow_matching_loss,
    imm_loss,
    meanflow_loss,
    meanflow_target,
    mmd2_unbiased,
    scm_loss,
    shortcut_loss,
    shortcut_residual,
    split_meanflow_loss,
    split_residual,
)
from flowmap_oracle.objectives._common import surrogate_loss
from flowmap_oracle.objectives.derivatives import directional_derivative
from flowmap_oracle.reference_models import preset

TEACHER = preset("ring8")
V = TEACHER.velocity
N = 24
# Tolerances (float64). Gradient identities are exact algebra: rounding only.
GRAD_TOL = dict(rtol=1e-9, atol=1e-12)
# Central differences with h = 1e-5 on a smooth MLP: truncation ~h^2 |F'''| ~ 1e-9, rounding
# ~1e-16 / 1e-5 = 1e-11.
FD_TOL = dict(rtol=0, atol=1e-7)


def _batch(seed: int = 0, n: int = N):
    return teacher_batch(TEACHER, n, seed)  # t in [0.05, 0.95]


def _model(seed: int = 0, *, gain: float = 1.0) -> MLPFlowMap:
    torch.manual_seed(seed)
    model = MLPFlowMap(2, hidden=32, depth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model


def _grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    gs = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(gs, model.parameters(), strict=True)
        ]
    )


def _close(a: torch.Tensor, b: torch.Tensor, **tol) -> bool:
    return bool(torch.allclose(a, b, **(tol or GRAD_TOL)))


@pytest.fixture(scope="module")
def batch():
    return _batch()


# --------------------------------------------------------------------------------------------
# Proof 4: JVP route == finite-difference route


@pytest.mark.parametrize(
    "loss",
    [
        lambda m, b, d: meanflow_loss(m, b[0], b[1], b[2], b[4], velocity=V, derivative=d),
        lambda m, b, d: scm_loss(m, b[0], b[1], b[2], velocity=V, derivative=d),
        lambda m, b, d: facm_loss(m, b[0], b[1], b[2], velocity=V, derivative=d),
        lambda m, b, d: ayf_emd_loss(m, b[0], b[1], b[2], b[4], velocity=V, derivative=d),
        lambda m, b, d: ayf_lmd_loss(m, b[0], b[1], b[2], b[4], velocity=V, derivative=d),
    ],
    ids=["meanflow", "scm", "facm", "ayf_emd", "ayf_lmd"],
)
def test_jvp_route_matches_finite_differences(batch, loss):
    model = _model()
    jvp = loss(model, batch, "jvp").residual
    fd = loss(model, batch, FiniteDifference(1e-5)).residual
    torch.testing.assert_close(jvp, fd, **FD_TOL)
    assert jvp.abs().max() > 1e-2  # an untrained network: the residual is not trivially zero


def test_finite_differences_reject_the_tangent_order_of_the_other_signature(batch):
    """Tangents (v, 0, 1) -- correct for MeanFlow's fn(z, r, t) -- give d_s F, not d_t F, when
    the network is called as F(x, t, s) (MATH.md 1a)."""
    model = _model()
    x0, x1, t, _, s = batch
    x_t = interpolant(LINEAR, x0, x1, t)
    v = V(x_t, t)
    ones, zeros = torch.ones_like(t), torch.zeros_like(t)
    tangents = (v, ones, zeros)
    _, right = directional_derivative(model, (x_t, t, s), tangents)
    _, fd = directional_derivative(model, (x_t, t, s), tangents, derivative=FiniteDifference(1e-5))
    _, wrong = directional_derivative(model, (x_t, t, s), (v, zeros, ones))
    torch.testing.assert_close(right, fd, **FD_TOL)
    assert (wrong - fd).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------
# Proof 3: stop-gradient (reverse mode): gradient == gradient with the target frozen


def _frozen_copy(model):
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return frozen


def _reference_grads(model, b):
    """Each objective's gradient rebuilt from its (detached) output with the target frozen."""
    x0, x1, t, r, s = b
    x_t = interpolant(LINEAR, x0, x1, t)
    zeros = torch.zeros_like(t)
    v = V(x_t, t)
    frozen = _frozen_copy(model)
    cases = {}

    out = meanflow_loss(model, x0, x1, t, s, velocity=V)
    cases["meanflow"] = (out.loss, (model(x_t, t, s) - out.target).pow(2).sum(1).mean())
    out = split_meanflow_loss(model, x0, x1, t, r, s, velocity=V)
    cases["split"] = (out.loss, (model(x_t, t, s) - out.target).pow(2).sum(1).mean())
    out = consistency_loss(model, x0, x1, t.clamp_min(0.1), delta_t=0.1, solver=EulerSolver(V))
    xt_cd = interpolant(LINEAR, x0, x1, t.clamp_min(0.1))
    ref = (model.flow(xt_cd, t.clamp_min(0.1), zeros) - out.target).pow(2).sum(1).mean()
    cases["consistency"] = (out.loss, ref)
    for name, out, f in (
        ("scm", scm_loss(model, x0, x1, t, velocity=V), model.flow(x_t, t, zeros)),
        ("emd", ayf_emd_loss(model, x0, x1, t, s, velocity=V), model.flow(x_t, t, s)),
        ("lmd", ayf_lmd_loss(model, x0, x1, t, s, velocity=V), model.flow(x_t, t, s)),
    ):
        cases[name] = (out.loss, 0.5 * (f - out.target).pow(2).sum(1).mean())
    out = shortcut_loss(model, x0, x1, t, s, velocity=V)
    ref = (model(x_t, t, t) - v).pow(2).sum(1) + (model.flow(x_t, t, s) - out.target).pow(2).sum(1)
    cases["shortcut"] = (out.loss, ref.mean())
    out = facm_loss(model, x0, x1, t, velocity=V)
    f_cm = model(x_t, t, zeros)
    sq = (f_cm - out.target).pow(2).sum(1)
    cm = sq / (sq.detach() + 1e-3).sqrt() * torch.sin(0.5 * math.pi * t)
    anchor = model(x_t, 2 - t, 2 - t)
    cos = 1 - torch.nn.functional.cosine_similarity(anchor, v, dim=1)
    cases["facm"] = (out.loss, (cm + (anchor - v).pow(2).sum(1) + cos).mean())
    out = ctm_loss(model, x0, x1, t, r, s, solver=EulerSolver(V), compare="s")
    cases["ctm_s"] = (out.loss, (model.flow(x_t, t, s) - out.target).pow(2).sum(1).mean())
    out = ctm_loss(model, x0, x1, t, r, s, solver=EulerSolver(V), compare="data")
    mapped = frozen.flow(model.flow(x_t, t, s), s, zeros)
    cases["ctm_data"] = (out.loss, (mapped - out.target).pow(2).sum(1).mean())
    out = flow_matching_loss(model, x0, x1, t, velocity=V)
    cases["fm"] = (out.loss, (model(x_t, t, t) - v).pow(2).sum(1).mean())
    g, m = 3, N // 3
    tg, rg, sg = (a.reshape(g, m)[:, :1].expand(g, m).reshape(-1) for a in (t, r, s))
    out = imm_loss(model, x0, x1, tg, rg, sg, group_size=m)
    a = model.flow(interpolant(LINEAR, x0, x1, tg), tg, sg).reshape(g, m, 2)
    ref = mmd2_unbiased(a, out.target.reshape(g, m, 2), kernel="laplace", bandwidth=1.0).mean()
    cases["imm"] = (out.loss, ref)
    return cases


def test_every_loss_stops_the_gradient_at_its_target(batch):
    model = _model()
    cases = _reference_grads(model, batch)
    assert len(cases) == 12
    for name, (loss, ref) in cases.items():
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-14, msg=name)
        g, g_ref = _grad(model, loss), _grad(model, ref)
        assert _close(g, g_ref), name
        assert g.abs().max() > 0, name


def _meanflow_without_stopgrad(model, x0, x1, t, s):
    x_t = interpolant(LINEAR, x0, x1, t)
    v = V(x_t, t)
    out, dF = torch.func.jvp(model, (x_t, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    target = v - (t - s)[:, None] * dF  # mutant: no detach
    return (out - target).pow(2).sum(1).mean(), target.detach()


def _meanflow_with_no_grad(model, x0, x1, t, s):
    x_t = interpolant(LINEAR, x0, x1, t)
    v = V(x_t, t)
    with torch.no_grad():  # mutant: stops reverse-mode gradients only
        _, dF = directional_derivative(
            model,
            (x_t, t, s),
            (v, torch.ones_like(t), torch.zeros_like(s)),
            derivative=FiniteDifference(1e-5),
        )
        target = v - (t - s)[:, None] * dF
    return (model(x_t, t, s) - target).pow(2).sum(1).mean(), target


def _split_without_stopgrad(model, x0, x1, t, r, s):
    x_t = interpolant(LINEAR, x0, x1, t)
    f_tr = model(x_t, t, r)  # mutant: target branches keep their graph
    f_rs = model(x_t - (t - r)[:, None] * f_tr, r, s)
    target = ((t - r)[:, None] * f_tr + (r - s)[:, None] * f_rs) / (t - s)[:, None]
    return (model(x_t, t, s) - target).pow(2).sum(1).mean(), target.detach()


def test_the_stop_gradient_check_rejects_missing_stop_gradients(batch):
    x0, x1, t, r, s = batch
    model = _model()
    x_t = interpolant(LINEAR, x0, x1, t)
    for loss, target in (
        _meanflow_without_stopgrad(model, x0, x1, t, s),
        _split_without_stopgrad(model, x0, x1, t, r, s),
    ):
        ref = (model(x_t, t, s) - target).pow(2).sum(1).mean()
        torch.testing.assert_close(loss, ref)  # same value ...
        assert not _close(_grad(model, loss), _grad(model, ref))  # ... different gradient


# --------------------------------------------------------------------------------------------
# Proof 3, forward mode: d/de L(theta + e u) == <grad L, u>


class _View(FlowMapModel):
    """The MLP evaluated at a parameter dict (so torch.func.jvp can push parameter tangents)."""

    def __init__(self, model, params):
        super().__init__()
        self.model, self.params = model, params

    def forward(self, x, t, s):
        return functional_call(self.model, self.params, (x, t, s))


FORWARD_CASES = {
    "meanflow": lambda m, b: meanflow_loss(m, b[0], b[1], b[2], b[4], velocity=V).loss,
    "meanflow_model_v": lambda m, b: (
        meanflow_loss(m, b[0], b[1], b[2], b[4], velocity="model").loss
    ),
    "split": lambda m, b: split_meanflow_loss(m, *b, velocity=V).loss,
    "consistency": lambda m, b: (
        consistency_loss(
            m, b[0], b[1], b[2].clamp_min(0.1), delta_t=0.1, solver=EulerSolver(V)
        ).loss
    ),
    "scm": lambda m, b: scm_loss(m, b[0], b[1], b[2], velocity=V).loss,
    "facm": lambda m, b: facm_loss(m, b[0], b[1], b[2], velocity=V).loss,
    "emd": lambda m, b: ayf_emd_loss(m, b[0], b[1], b[2], b[4], velocity=V).loss,
    "lmd": lambda m, b: ayf_lmd_loss(m, b[0], b[1], b[2], b[4], velocity=V).loss,
    "shortcut": lambda m, b: shortcut_loss(m, b[0], b[1], b[2], b[4], velocity=V).loss,
    "ctm_s": lambda m, b: ctm_loss(m, *b, solver=EulerSolver(V), compare="s").loss,
    "mutant_no_grad": lambda m, b: _meanflow_with_no_grad(m, b[0], b[1], b[2], b[4])[0],
}


@pytest.mark.parametrize("name", list(FORWARD_CASES))
def test_forward_mode_tangents_are_stopped_too(batch, name):
    model = _model()
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    direction = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    loss_fn = FORWARD_CASES[name]
    _, forward = torch.func.jvp(lambda p: loss_fn(_View(model, p), batch), (params,), (direction,))
    reverse = _grad(model, loss_fn(model, batch))
    expected = reverse @ torch.cat([direction[k].flatten() for k, _ in model.named_parameters()])
    agree = torch.allclose(forward, expected, **GRAD_TOL)
    # torch.no_grad blocks reverse-mode gradients but lets forward-mode tangents through the
    # target: the two derivatives disagree, which is what this check exists to catch.
    assert agree == (name != "mutant_no_grad"), (float(forward), float(expected))


# --------------------------------------------------------------------------------------------
# Proof 5 and 6: equivalences, each with a rejected mutant


def _emd_with_wrong_sign(model, x0, x1, t, s):
    x_t = interpolant(LINEAR, x0, x1, t)
    v = V(x_t, t)
    f, df = torch.func.jvp(model.flow, (x_t, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return surrogate_loss(f, torch.sign(s - t)[:, None] * df.detach(), None)[0]


@pytest.mark.parametrize("velocity", [V, None], ids=["teacher", "conditional"])
def test_emd_gradient_is_abs_t_minus_s_times_meanflow(velocity):
    x0, x1, t, _, s = _batch(1)
    s = torch.where(torch.arange(N) % 3 == 0, (t + 0.3).clamp(max=1.0), s)  # both directions
    model = _model(1)
    emd = _grad(model, ayf_emd_loss(model, x0, x1, t, s, velocity=velocity).loss)
    w = 0.5 * (t - s).abs()  # MeanFlow's loss is ||r||^2, so 1/2 ||r||^2 carries the 1/2
    mf = _grad(model, meanflow_loss(model, x0, x1, t, s, velocity=velocity, weight=w).loss)
    assert _close(emd, mf)
    if velocity is V:
        assert not _close(_grad(model, _emd_with_wrong_sign(model, x0, x1, t, s)), mf)
        wrong_w = (t - s) ** 2 / 2  # a wrong factor
        wrong = _grad(model, meanflow_loss(model, x0, x1, t, s, velocity=V, weight=wrong_w).loss)
        assert not _close(emd, wrong)


def test_facm_consistency_part_is_meanflow_at_s_zero():
    x0, x1, t, _, _ = _batch(2)
    model = _model(2)
    zeros = torch.zeros_like(t)
    facm = facm_loss(model, x0, x1, t, velocity=V, cm_p=0.0, time_weight=False, fm_weight=0.0)
    mf = meanflow_loss(model, x0, x1, t, zeros, velocity=V)
    torch.testing.assert_close(facm.loss, mf.loss, rtol=1e-12, atol=0)
    assert _close(_grad(model, facm.loss), _grad(model, mf.loss))
    # mutant: the network called with swapped times F(x, 0, t)
    swapped = meanflow_loss(lambda x, a, b: model(x, b, a), x0, x1, t, zeros, velocity=V)
    assert not torch.allclose(facm.loss, swapped.loss, rtol=1e-3)


def test_scm_equals_emd_at_s_zero_and_t_times_meanflow():
    x0, x1, t, _, _ = _batch(3)
    model = _model(3)
    zeros = torch.zeros_like(t)
    scm = _grad(model, scm_loss(model, x0, x1, t, velocity=V).loss)
    emd = _grad(model, ayf_emd_loss(model, x0, x1, t, zeros, velocity=V).loss)
    mf = _grad(model, meanflow_loss(model, x0, x1, t, zeros, velocity=V, weight=t / 2).loss)
    assert _close(scm, emd)
    assert _close(scm, mf)
    # mutant: the sCM gradient with the tangent's sign flipped
    x_t = interpolant(LINEAR, x0, x1, t)
    f, g = torch.func.jvp(
        lambda x, tt: model.flow(x, tt, zeros), (x_t, t), (V(x_t, t), torch.ones_like(t))
    )
    assert not _close(_grad(model, surrogate_loss(f, -g.detach(), None)[0]), scm)


def _meanflow_residual_model_v(model, x_t, t, s):
    v = model(x_t, t, t).detach()
    out, target = meanflow_target(model, x_t, t, s, v)
    return out - target


def _split_mutant_at_x_t(model, x_t, t, r, s):
    """Mutant: F_{r->s} evaluated at x_t instead of the predicted x_r."""
    f_ts, f_tr, f_rs = model(x_t, t, s), model(x_t, t, r), model(x_t, r, s)
    col = lambda a: a[:, None]  # noqa: E731
    return (col(t - s) * f_ts - col(t - r) * f_tr - col(r - s) * f_rs).detach()


def test_split_residual_tends_to_meanflow_with_the_models_velocity_as_r_to_t():
    x0, x1, t, _, s = _batch(4)
    # gain 3: a network with a sizeable J_x F, which is what the mutant misses
    model = _model(4, gain=3.0)
    x_t = interpolant(LINEAR, x0, x1, t)
    limit = _meanflow_residual_model_v(model, x_t, t, s).detach()
    errors, mutant_errors = [], []
    for h in (1e-2, 1e-3, 1e-4, 1e-5):
        r = t - h
        errors.append(float((split_residual(model, x_t, t, r, s) / h - limit).abs().max()))
        mutant = _split_mutant_at_x_t(model, x_t, t, r, s) / h
        mutant_errors.append(float((mutant - limit).abs().max()))
    # O(h): each tenfold smaller h shrinks the error about tenfold (allow 7x for curvature).
    assert all(a / b > 7 for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-3, errors
    assert min(mutant_errors) > 1e-2, mutant_errors  # the mutant has another limit


def test_shortcut_is_split_at_the_midpoint():
    x0, x1, t, _, s = _batch(5)
    model = _model(5)
    x_t = interpolant(LINEAR, x0, x1, t)
    m = 0.5 * (t + s)
    split = split_residual(model, x_t, t, m, s)
    vel, _ = shortcut_residual(model, x_t, t, s, space="velocity")
    flow, _ = shortcut_residual(model, x_t, t, s, space="flow")
    torch.testing.assert_close(vel.detach(), split / (t - s)[:, None], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flow.detach(), -split, rtol=1e-10, atol=1e-12)
    # The seed's flow-space loss is (t - s)^2 times the paper's velocity-space loss.
    lf = shortcut_loss(model, x0, x1, t, s, velocity=V, space="flow", consistency_weight=1.0)
    lv = shortcut_loss(model, x0, x1, t, s, velocity=V, space="velocity")
    fm = flow_matching_loss(model, x0, x1, t, velocity=V).per_sample
    torch.testing.assert_close(
        lf.per_sample - fm, (t - s) ** 2 * (lv.per_sample - fm), rtol=1e-9, atol=1e-13
    )
    off_mid = split_residual(model, x_t, t, 0.25 * t + 0.75 * s, s)  # mutant: not the midpoint
    assert (off_mid - split).abs().max() > 1e-3


def test_discrete_consistency_gradient_over_dt_tends_to_twice_scm():
    x0, x1, t, _, _ = _batch(6)
    t = t.clamp_min(0.2)
    model = _model(6)
    scm = _grad(model, scm_loss(model, x0, x1, t, velocity=V).loss)
    rel = []
    for dt in (1e-2, 1e-3, 1e-4):
        cd = consistency_loss(model, x0, x1, t, delta_t=dt, solver=EulerSolver(V))
        rel.append(float((_grad(model, cd.loss) / dt - 2 * scm).norm() / (2 * scm).norm()))
    assert rel[0] / rel[1] > 7 and rel[1] / rel[2] > 7 and rel[2] < 1e-3, rel
    # mutant factor: comparing with 1 x sCM leaves a 50% error
    cd = consistency_loss(model, x0, x1, t, delta_t=1e-4, solver=EulerSolver(V))
    assert float((_grad(model, cd.loss) / 1e-4 - scm).norm() / scm.norm()) > 0.4


def test_lmd_gradient_is_abs_t_minus_s_times_its_regression_form():
    x0, x1, t, _, s = _batch(7)
    model = _model(7)
    x_t = interpolant(LINEAR, x0, x1, t)
    lmd = _grad(model, ayf_lmd_loss(model, x0, x1, t, s, velocity=V).loss)
    F, dF_ds = torch.func.jvp(
        model, (x_t, t, s), (torch.zeros_like(x_t), torch.zeros_like(t), torch.ones_like(s))
    )
    x_s = x_t - (t - s)[:, None] * F.detach()
    target = (V(x_s, s) + (t - s)[:, None] * dF_ds).detach()
    w = (t - s).abs()[:, None]
    ref = _grad(model, (0.5 * w * (F - target).pow(2)).sum(1).mean())
    assert _close(lmd, ref)
    # mutant: the Eulerian sign sign(t - s) in the Lagrangian objective
    f, df = torch.func.jvp(
        model.flow, (x_t, t, s), (torch.zeros_like(x_t), torch.zeros_like(t), torch.ones_like(s))
    )
    r_l = df.detach() - V(f.detach(), s)
    wrong = _grad(model, surrogate_loss(f, torch.sign(t - s)[:, None] * r_l, None)[0])
    assert not _close(wrong, ref)


def test_emd_over_abs_t_minus_s_tends_to_flow_matching_as_s_to_t():
    x0, x1, t, _, _ = _batch(8)
    model = _model(8)
    fm = _grad(model, 0.5 * flow_matching_loss(model, x0, x1, t, velocity=V).loss)
    rel = []
    for h in (1e-2, 1e-3, 1e-4):
        emd = _grad(model, ayf_emd_loss(model, x0, x1, t, t - h, velocity=V).loss) / h
        rel.append(float((emd - fm).norm() / fm.norm()))
    assert rel[0] / rel[1] > 7 and rel[1] / rel[2] > 7 and rel[2] < 1e-3, rel
