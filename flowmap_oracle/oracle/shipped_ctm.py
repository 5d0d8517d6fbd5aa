"""``ctm.shipped.alignment``: a consistency trajectory model's loss as it ships (Kim et al. 2023).

A CTM loss calls the network at least twice per row: *online*, the student's jump ``t -> s``
from ``x_t``, and as the *target*, the stop-gradient student's jump ``r -> s`` from the
teacher's solve ``x_r`` of the ODE from ``x_t`` (``s <= r <= t``); the paper's code then maps
both results to its smallest time through the student with *frozen weights* (a third call that
receives gradient through its input only) before comparing them. At a perturbed map the check
reads the recorded calls and asks, row by row:

* the target receives no gradient (it is detached) and lies between the two ends (``s <= r <=
  t``), and jumps to the same end ``s`` as the online call;
* its point is the teacher's trajectory through the online point: ``x_r`` against the exact map
  ``Phi_{t->r}(x_t)`` relative to the distance travelled. A teacher solver's own error (Heun on
  CTM's 18-point Karras grid: median at most 1.8 % of the distance, Euler or coarse grids up to
  20 %) passes; a target evaluated at ``t`` instead of ``r`` (100 %) or a solver stepping
  towards the noise does not.
  The median over the rows is judged against :data:`TRAJECTORY_TOL`. With the conditional
  velocity (CTM trained from data, the solver's denoiser the data itself) the target instead
  must carry the online point's noise;
* the gradient at the online output points along the reference direction with a non-negative
  factor per row: ``J_M^T (M(g_online) - M(g_target))`` where ``M`` is the frozen student's
  jump to the time the loss maps to (or the identity when it compares at ``s``), ``g`` the
  jumps recomputed by the oracle from each call's recorded inputs, times ``d g / d output``
  (``(s - t) k c_out``, the adapter's output gain). Every distance of the difference's norm
  (L2, pseudo-Huber, LPIPS-like radial weights) and every positive per-sample weight keeps
  it; an inverted skip ratio ``t / s`` does not. The implied weights are reported.

The check runs in our convention; the adapter decodes the user's raw two-time network
(``preconditioning="ctm"``, :mod:`~flowmap_oracle.oracle.adapters`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..reference_models import ExactFlowMap
from .results import CheckResult, ImpliedWeights, SkipReason
from .shipped import (
    CallRecord,
    InstrumentedNetwork,
    ShippedLoss,
    _alignment_verdict,
    _gradient_at_control,
    _Harness,
    _recovered_noise,
    _result,
    _trained,
    _weights_summary,
)

__all__ = ["TRAJECTORY_TOL", "CtmCalls", "check_ctm_alignment", "find_ctm_calls"]

TRAJECTORY_TOL = 0.5
"""The largest median, over the rows, of ``|x_r - Phi_{t->r}(x_t)| / max(|x_r - x_t|,
|Phi_{t->r}(x_t) - x_t|)`` (the target's distance from the exact teacher trajectory relative to
the distance travelled). Measured over 10 batches of 64 (``python tests/measure_ctm_trajectory.py
> benchmarks/ctm_trajectory_gaps.json``): largest median 0.018 for ``examples/ctm_edm.py`` (Heun,
18-point Karras grid, 1-4 steps), 0.034 for Euler on that grid, 0.12 for Euler on 10 points
(1-8 steps), 0.20 for Heun on 8 points (1-6 steps); single rows reach 0.96 on the coarse grids,
hence the median. A target at the online time gives 1.0, a solver stepping towards the noise 1.0
to 1.01 (smallest medians of the bugs)."""


@dataclass
class CtmCalls:
    """The calls of one CTM loss evaluation, told apart.

    Attributes:
        online: the trained jump ``t -> s`` from ``x_t``.
        target: the untrained jump ``r -> s`` from the teacher's ``x_r``.
        online_map: the frozen jump of the online output to the comparison time (``None`` when
            the loss compares at ``s``).
    """

    online: CallRecord
    target: CallRecord
    online_map: CallRecord | None


def _jump(net: InstrumentedNetwork, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """``f_{t->s}(x) = x + (s - t) F_theta(x, t, s)`` in our convention."""
    return x + (s - t)[:, None] * net.ours(x, t, s)


def find_ctm_calls(net: InstrumentedNetwork) -> CtmCalls | str:
    """Tell the online, target and frozen-map calls apart in :attr:`InstrumentedNetwork.calls`
    (after a backward pass); a string says why they cannot be.

    A call that starts where an earlier jump off the diagonal ends (its ``t`` is that call's
    ``s`` in every row, to a relative 1e-6: the user may recompute the time in its dtype) is a
    *map* call, the frozen jump of that result to the comparison time;
    of the others, the trained calls off the diagonal are online, the untrained ones targets (a
    trained call on the diagonal ``s = t`` is a denoising term and is left alone)."""
    calls = net.calls
    maps: set[int] = set()
    for j, c in enumerate(calls):
        for i in range(j):
            before = calls[i]
            if i in maps or c.t.shape != before.s.shape or not bool((before.s < before.t).any()):
                continue
            if torch.allclose(c.t, before.s, rtol=1e-6, atol=1e-9):
                maps.add(j)
                break
    trained = {id(c) for c in _trained(calls)}
    plain = [(i, c) for i, c in enumerate(calls) if i not in maps]
    online = [(i, c) for i, c in plain if id(c) in trained and bool((c.s < c.t).any())]
    targets = [(i, c) for i, c in plain if id(c) not in trained and bool((c.s < c.t).any())]
    if len(online) > 1:
        return (
            f"the target is not detached: {len(online)} jumps off the diagonal receive the "
            "loss's gradient (compute the target under torch.no_grad() or .detach() it)"
        )
    if not online:
        return "no jump off the diagonal (s < t) received the loss's gradient"
    if len(targets) != 1:
        return (
            f"{len(targets)} untrained jumps off the diagonal: the target call cannot be told "
            "apart (a CTM loss makes exactly one, besides the frozen jumps to the comparison time)"
        )
    on = online[0][1]
    mapped = [calls[j] for j in sorted(maps) if id(calls[j]) in trained]
    mapped = [
        c
        for c in mapped
        if c.t.shape == on.s.shape and torch.allclose(c.t, on.s, rtol=1e-6, atol=1e-9)
    ]
    return CtmCalls(on, targets[0][1], mapped[0] if mapped else None)


def _trajectory_gap(harness: _Harness, on: CallRecord, tg: CallRecord) -> tuple[Tensor, Tensor]:
    """Per row: ``|x_r - Phi_{t->r}(x_t)| / max(|x_r - x_t|, |Phi_{t->r}(x_t) - x_t|)``, and
    the denominator (zero where neither point moved)."""
    phi = ExactFlowMap(harness.teacher)(on.x, on.t, tg.t)
    num = (tg.x - phi).norm(dim=1)
    den = torch.maximum((tg.x - on.x).norm(dim=1), (phi - on.x).norm(dim=1))
    return num / den.clamp_min(1e-300), den


def check_ctm_alignment(method: str, shipped: ShippedLoss, harness: _Harness) -> CheckResult:
    """``ctm.shipped.alignment`` (see the module docstring)."""
    name, start = f"{method}.shipped.alignment", time.perf_counter()
    net = harness.net
    problem = _gradient_at_control(harness, shipped)
    if problem is not None:
        return _result(name, method, "fail", problem, start)
    found = find_ctm_calls(net)
    if isinstance(found, str):
        if "not detached" in found:
            return _result(name, method, "fail", found, start)
        return _result(name, method, "skip", found, start, skip_reason=SkipReason.NOT_APPLICABLE)
    on, tg, m = found.online, found.target, found.online_map
    if on.x.shape != tg.x.shape:
        return _result(
            name,
            method,
            "skip",
            f"the target call has {tg.x.shape[0]} rows, the online call {on.x.shape[0]}: the "
            "rows cannot be paired",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    t, r, s = on.t, tg.t, on.s
    eps = 1e-9
    order = [
        (r > t + eps, "later than the online time t (r > t, towards the noise)"),
        (r < s - eps, "earlier than the end time s (r < s)"),
        ((tg.s - s).abs() > eps, "jumping to another end time than the online call"),
    ]
    for bad, what in order:
        if bool(bad.any()):
            return _result(
                name,
                method,
                "fail",
                f"the target is evaluated {what} in {float(bad.double().mean()):.0%} of the rows",
                start,
            )
    if shipped.velocity == "teacher":
        gap, den = _trajectory_gap(harness, on, tg)
        moved = den > 1e-12 * float(den.max().clamp_min(1e-300))
        med = float(gap[moved].median()) if moved.any() else 0.0
        worst_gap = float(gap[moved].max()) if moved.any() else 0.0
        where = f"median {med:.3g}, worst {worst_gap:.3g} of the distance travelled"
        if med > TRAJECTORY_TOL:
            return _result(
                name,
                method,
                "fail",
                "the target's point is not on the teacher's trajectory through the online point "
                f"at the target's time ({where}; allowed median {TRAJECTORY_TOL:g}): the target "
                "is evaluated at another time than the teacher solved to, or the solver steps "
                "the wrong way",
                start,
            )
        trajectory = f"target on the teacher's trajectory ({where})"
    else:
        e_on, e_tg = _recovered_noise(harness, on), _recovered_noise(harness, tg)
        if isinstance(e_on, str) or isinstance(e_tg, str):
            why = e_on if isinstance(e_on, str) else str(e_tg)
            return _result(name, method, "skip", why, start, skip_reason=SkipReason.NOT_APPLICABLE)
        both = e_on[1] & e_tg[1]
        noise_gap = float((e_on[0] - e_tg[0])[both].abs().max()) if both.any() else 0.0
        if noise_gap > 1e-4:
            return _result(
                name,
                method,
                "fail",
                "the target's point x_r is not built from the online point's noise (the noise "
                f"recovered from the two calls differs by up to {noise_gap:.3g})",
                start,
            )
        trajectory = "target on the online point's noise"
    o = net.adapter.torch_ops
    with torch.no_grad():
        g_tg = _jump(net, tg.x, r, s)
    with torch.enable_grad():
        y = _jump(net, on.x, t, s).detach().requires_grad_(True)
        if m is None:
            diff = y - g_tg
            R = diff.detach()
        else:
            e = m.s
            diff = _jump(net, y, s, e) - _jump(net, g_tg, s, e).detach()
            (R,) = torch.autograd.grad(diff, y, grad_outputs=diff.detach())
    gain = (s - t) * net.adapter.output_gain(t, s, ops=o)
    R_user = gain[:, None] * R
    assert on.output_grad is not None
    G = on.output_grad.reshape(R.shape[0], -1).double()
    g_norm, r_norm = G.norm(dim=1), R_user.norm(dim=1)
    use = (g_norm > 1e-12 * float(g_norm.max())) & (r_norm > 1e-10) & (t > s)
    if not use.any():
        return _result(
            name,
            method,
            "skip",
            "no row had both a gradient and a difference g_online - g_target to compare",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    cos = (G * R_user).sum(1)[use] / (g_norm[use] * r_norm[use])
    worst = float(cos.min())
    weights = ((G * R_user).sum(1) / r_norm.pow(2))[use]
    where_cmp = "at the end time s" if m is None else "after the frozen jump to the comparison time"
    detail = (
        f"{int(use.sum())} rows compared {where_cmp}; {trajectory}; "
        f"{_weights_summary(weights, (t - r)[use])}"
    )
    tol = 1e-3 if harness.user_dtype == torch.float32 else 1e-6
    implied = ImpliedWeights.from_tensors(t[use], s[use], weights)
    return _alignment_verdict(
        name,
        method,
        worst,
        tol,
        lambda angle: (
            "the loss's gradient at the online output is not along g_online - g_target (worst "
            f"angle {angle:.1f} degrees): the jump's skip ratio, preconditioning or comparison "
            f"differs from CTM's g(x, t, s) = (s / t) x + (1 - s / t) G; {detail}"
        ),
        detail,
        start,
        implied,
    )
