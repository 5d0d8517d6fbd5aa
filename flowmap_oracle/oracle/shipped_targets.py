"""Alignment as shipped for SplitMeanFlow, Shortcut, FACM and Align Your Flow (EMD and LMD).

The alignment checks of :mod:`.shipped` (flow matching and MeanFlow, discrete consistency, sCM)
hold pointwise for every weighting and distance of the residual's norm: at each network output
the loss trains, the gradient it sends back is the method's reference residual at the same
inputs times a non-negative factor per row. This module gives the same check to the methods whose
target is built from further calls of the network (the split and Shortcut rules) or whose residual
is a derivative in the end time (AYF-LMD). Each runs the loss once at a perturbed map
(``theta_k = CONTROL``, where every residual is of order ``CONTROL``), keeps the outputs that
received gradient, rebuilds the reference residual at each trained row with the oracle's own
network :meth:`~.shipped.InstrumentedNetwork.ours` and compares directions (the verdict of
:func:`~.shipped._alignment_verdict`, cosine at least ``1 - tol`` per row). Residuals are in our
convention (MATH.md) and are carried to the user's output units by the adapter's output gain.

``split_meanflow.shipped.alignment`` and ``shortcut.shipped.alignment``
    a trained row ``F(x_t, t, s)`` with ``s < t`` must point along ``F - F_split``,
    ``F_split = [(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s)`` with ``x_r = x_t - (t - r)
    F(x_t, t, r)`` (MATH.md 1c; Shortcut is ``r = (t + s) / 2`` in its velocity form, and its flow
    form differs by the factor ``(t - s)^2``). The split point ``r`` of each row is read off the
    loss's own target calls: the call at the same point ``x_t`` and start ``t`` (within
    :data:`MATCH_TOL`) whose end lies strictly between ``s`` and ``t``. A target built from the
    wrong call, a second segment evaluated at ``x_t`` instead of ``x_r``, weights ``lambda``
    swapped with ``1 - lambda``, a half step that is not half, all move the loss's target away
    from ``F_split``. Rows on the diagonal ``s = t`` are flow-matching rows: ``F - v`` (the
    velocity as in :func:`~.shipped._matched_velocity`; with the conditional velocity, a call
    whose rows cannot be matched to the data leaves its diagonal rows unjudged, and says so).
    Research code clips (Shortcut clips the midpoint and its target to ``[-4, 4]``): a row that
    disagrees is attributed to a clip only where its reference target or split point is larger
    than on every agreeing row, and only while such rows are fewer than the agreeing ones (a clip
    that acts on most rows has moved the method's fixed point, and fails).
``facm.shipped.alignment``
    the consistency part, trained at ``(x_t, t, 0)``, must point along the MeanFlow residual at
    ``s = 0``, ``F - [v - t dF/dt]`` (MATH.md 1b). FACM's relaxed target clamps the residual per
    component, ``a(t) clip(g, -1, 1)``: a row off the residual's direction is accepted when it is
    the residual clipped at one level ``c`` shared by all such rows (every component on the
    residual's side, the components below ``c`` at one common factor, the rest at one common
    magnitude; or every component clipped, all beyond ``c``), and no agreeing row has an
    unclipped entry beyond ``c``. The anchor rows ``F(x_t, t, t)`` must point along ``F - v``
    (with a declared ``distance="other"``, FACM's cosine term, they are reported, not judged). A
    network call at FACM's expanded time ``2 - t`` leaves the path and fails as in the times check.
``ayf_emd.shipped.alignment``
    ``G`` along ``sign(t - s) (d_theta f)^T df/dt`` in the output: in ``F`` that is ``|t - s|``
    times the MeanFlow residual ``F - [v - (t - s) dF/dt]`` (MATH.md 1d), for ``s < t`` and
    ``s > t`` alike; a dropped ``sign(t - s)`` reverses the rows with ``s > t``.
``ayf_lmd.shipped.alignment``
    ``G`` along ``|t - s| R_L``, ``R_L = F + (s - t) d_s F - v(x_s, s)`` at the predicted point
    ``x_s = x_t + (s - t) F`` (MATH.md 1f), both directions; it needs the teacher's velocity (the
    conditional velocity has no value at ``x_s``), and skips otherwise.

Rows whose velocity is recovered from the data (the conditional velocity) are compared within
:data:`RECOVERY_SLACK`. Every check skips, with the reason, where the loss's calls cannot be
matched to its trained rows (never a failure of correct code); none needs a statistical bound:
each is pointwise. Measured over seeds 0-99 (``tests/measure_shipped_targets.py``): the correct
losses of ``tests/test_shipped_targets.py`` pass at every seed, their wrong variants fail at every
seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from .results import CheckResult, ImpliedWeights, SkipReason
from .shipped import (
    NO_GRADIENT,
    CallRecord,
    ShippedLoss,
    _alignment_verdict,
    _gradient_at_control,
    _matched_velocity,
    _result,
    _trained,
)

__all__ = ["TARGET_METHODS", "check_target_alignment", "split_points"]

TARGET_METHODS = ("split_meanflow", "shortcut", "facm", "ayf_emd", "ayf_lmd")
"""The methods :func:`check_target_alignment` covers."""
RECOVERY_SLACK = 1e-2
"""Where a row's velocity is recovered from the data the oracle handed over (the conditional
velocity), its reference residual carries the error of the declared path: a Shortcut path with
``sigma_min = 1e-5`` declared linear moves the recovered velocity by up to about ``1.5e-3`` at the
smallest times judged (``beta = 0.02``). Such a row agrees when ``sin(angle) <= RECOVERY_SLACK *
median |R| / |R|`` (about half a degree at a typical row, more where the residual is small),
besides the tolerance of the dtype."""
MATCH_TOL = 1e-6
"""A target call's row matches a trained row when their points agree to this relative
tolerance and their start times to this absolute one: a target computed in float32 (autocast)
beside a float64 loss still matches, one in bfloat16 does not (its rounding, about 4e-3, would
move the reference more than the direction test allows)."""


@dataclass
class _Rows:
    """Trained rows of one part of a loss with their reference residuals.

    Attributes:
        part: the loss's part, as the messages name it.
        G: ``d loss / d output`` per row, the user's output units, ``(N, D)``.
        R: the reference residual carried to the user's output units, ``(N, D)``.
        t, s: the rows' times in our convention.
        extents: ``(N, k)`` magnitudes beyond which a clip in the user's code may act (the
            reference target and split point), or ``None`` where no clip is expected.
        clamp: the residual may be clamped per component (FACM's relaxed target).
        slack: an absolute error of the residual, relative to the block's median residual, that
            a row's direction may carry (:data:`RECOVERY_SLACK` where the velocity was recovered
            from the data).
    """

    part: str
    G: Tensor
    R: Tensor
    t: Tensor
    s: Tensor
    extents: Tensor | None = None
    clamp: bool = False
    slack: float = 0.0


@dataclass(frozen=True)
class _Verdict:
    """The rows judged by direction, and those explained by a clip or clamp."""

    worst: float
    worst_part: str
    judged: int
    clipped: int
    clamped: int
    loose: int
    weights: ImpliedWeights


def _tolerance(harness: Any) -> float:
    return 1e-3 if harness.user_dtype == torch.float32 else 1e-6


def _to_user(harness: Any, R: Tensor, t: Tensor, s: Tensor, kind: str) -> Tensor:
    """A residual in our ``F`` carried to the user's output units (``R / (w k)``)."""
    adapter = harness.net.adapter
    o = adapter.torch_ops
    k = adapter.output_gain(t, s, ops=o)
    w = adapter.residual_factor(t, s, kind, ops=o)
    return R / (w * k)[:, None]


def _output_grad(call: CallRecord, rows: Tensor) -> Tensor:
    assert call.output_grad is not None
    return call.output_grad.reshape(call.x.shape[0], -1).double()[rows]


def _clamp_levels(G: Tensor, R: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the shapes of ``G = lam clip(R, -c, c)`` (``lam > 0``; FACM's clamped residual):
    ``partial`` (the components below the level at one common ratio ``lam``, the others at one
    common magnitude ``lam c`` above theirs; with the level ``c``) and ``saturated`` (every
    component clipped: one common magnitude, each on ``R``'s side)."""
    big = R.abs() > 1e-12 * R.abs().amax(1, keepdim=True).clamp_min(1e-300)
    rho = torch.where(big, G / torch.where(big, R, torch.ones_like(R)), torch.zeros_like(R))
    g_max = G.abs().amax(1)
    same_side = torch.where(big, rho > 0, G.abs() <= tol * g_max[:, None]).all(1)
    saturated = same_side & (g_max - G.abs().amin(1) <= tol * g_max)
    lam = rho.amax(1, keepdim=True)
    below = big & (rho >= lam * (1 - tol))
    clipped = big & ~below
    hi = torch.where(clipped, G.abs(), torch.full_like(G, -torch.inf)).amax(1)
    lo = torch.where(clipped, G.abs(), torch.full_like(G, torch.inf)).amin(1)
    common = hi - lo <= tol * hi
    under = torch.where(below, G.abs(), torch.zeros_like(G)).amax(1) <= lo * (1 + tol)
    partial = same_side & ~saturated & clipped.any(1) & common & under
    return partial, hi / lam[:, 0].clamp_min(1e-300), saturated


def _clamp_explains(G: Tensor, R: Tensor, ok: Tensor, tol: float) -> Tensor:
    """The rows off ``R``'s direction that are ``R`` clamped per component at one level ``c``
    shared by every row: partly clipped rows at that level, fully clipped rows with every
    component beyond it, and no agreeing row's residual beyond it."""
    partial, level, saturated = _clamp_levels(G, R, tol)
    partial, saturated = partial & ~ok, saturated & ~ok
    slack = 10 * tol
    # c is at least every entry of an agreeing row at that row's full ratio (left unclipped;
    # an agreeing row may still have one dominant entry clipped)
    rho = G / torch.where(R == 0, torch.ones_like(R), R)
    full = ok[:, None] & (rho >= rho.amax(1, keepdim=True) * (1 - tol))
    floor = float(R.abs()[full].max()) if full.any() else 0.0
    if partial.any():
        c = float(level[partial].median())
        if floor > c * (1 + slack):
            return torch.zeros_like(ok)
        partial &= (level - c).abs() <= slack * c
    else:
        c = floor
    return partial | (saturated & (R.abs().amin(1) >= c * (1 - slack)))


def _judge(blocks: list[_Rows], tol: float) -> _Verdict | None:
    """Compare directions row by row; rows a clip or clamp explains are left out of the verdict
    (counted). ``None`` when no row has both a gradient and a residual."""
    blocks = [b for b in blocks if b.G.shape[0]]
    if not blocks:
        return None
    g_max = max(float(b.G.norm(dim=1).max()) for b in blocks)
    worst, worst_part, judged, clipped, clamped, n_loose = 1.0, "", 0, 0, 0, 0
    weights, ts, ss = [], [], []
    for b in blocks:
        g_norm, r_norm = b.G.norm(dim=1), b.R.norm(dim=1)
        use = (g_norm > 1e-12 * g_max) & (r_norm > 1e-10)
        if not use.any():
            continue
        G, R = b.G[use], b.R[use]
        cos = (G * R).sum(1) / (g_norm[use] * r_norm[use])
        ok = cos >= 1 - tol
        if b.slack:
            r_use = r_norm[use]
            sin = (1 - cos.clamp(max=1.0).pow(2)).clamp_min(0).sqrt()
            loose = ~ok & (cos > 0) & (sin <= b.slack * r_use.median() / r_use)
            n_loose += int(loose.sum())
            cos = torch.where(loose, torch.full_like(cos, 1 - tol), cos)
            ok |= loose
        explained = torch.zeros_like(ok)
        if b.clamp:
            explained |= _clamp_explains(G, R, ok, tol)
            clamped += int(explained.sum())
        if b.extents is not None:
            ext = b.extents[use]
            bound = torch.where(ok[:, None], ext, torch.full_like(ext, -torch.inf)).amax(0)
            beyond = ~ok & ~explained & (ext > bound * (1 + 1e-9)).any(1)
            if int(beyond.sum()) < int(ok.sum()):
                explained |= beyond
                clipped += int(beyond.sum())
        keep = ~explained
        if keep.any():
            low = float(cos[keep].min())
            if low < worst:
                worst, worst_part = low, b.part
            judged += int(keep.sum())
            weights.append(((G * R).sum(1) / R.pow(2).sum(1))[keep])
            ts.append(b.t[use][keep])
            ss.append(b.s[use][keep])
    if judged == 0:
        return None
    implied = ImpliedWeights.from_tensors(torch.cat(ts), torch.cat(ss), torch.cat(weights))
    return _Verdict(worst, worst_part, judged, clipped, clamped, n_loose, implied)


def _finish(
    name: str,
    method: str,
    start: float,
    harness: Any,
    blocks: list[_Rows],
    notes: list[str],
    reference: str,
) -> CheckResult:
    verdict = _judge(blocks, _tolerance(harness))
    if verdict is None:
        reason = "no trained row had both a gradient and a reference residual to compare"
        return _result(
            name,
            method,
            "skip",
            "; ".join([reason, *notes]),
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    w = torch.tensor(verdict.weights.weight)
    parts = ", ".join(f"{int(b.G.shape[0])} {b.part}" for b in blocks if b.G.shape[0])
    detail = (
        f"{verdict.judged} rows judged ({parts}); implied weight (relative to its median) in "
        f"[{float(w.min()):.3g}, {float(w.max()):.3g}]"
    )
    if verdict.clipped:
        detail += (
            f"; {verdict.clipped} rows off the reference only where their target or split "
            "point is larger than on every agreeing row (a clip), not judged"
        )
    if verdict.clamped:
        detail += f"; {verdict.clamped} rows are the residual clamped per component"
    if verdict.loose:
        detail += (
            f"; {verdict.loose} rows with the velocity recovered from the data agree to within "
            f"{RECOVERY_SLACK:g} of the median residual"
        )
    if notes:
        detail += "; " + "; ".join(notes)
    return _alignment_verdict(
        name,
        method,
        verdict.worst,
        _tolerance(harness),
        lambda angle: (
            f"the loss's gradient at its {verdict.worst_part} rows is not along the reference "
            f"residual (worst angle {angle:.1f} degrees): its target differs from the {method} "
            f"target, the residual being {reference}; {detail}"
        ),
        detail,
        start,
        verdict.weights,
    )


# ----------------------------------------------------------------------------------------------
# Flow-matching rows (the diagonal s = t) and MeanFlow-type residuals


def _velocity_rows(
    harness: Any, shipped: ShippedLoss, call: CallRecord, rows: Tensor, notes: list[str]
) -> tuple[Tensor, Tensor] | None:
    """The velocity at ``rows`` of ``call`` and the rows where it is known, or ``None`` (with a
    note) where the call's rows cannot be matched to the data."""
    matched = _matched_velocity(harness, shipped, call)
    if isinstance(matched, str):
        notes.append(f"{int(rows.sum())} rows not judged: {matched}")
        return None
    v, known = matched
    return v[rows], known[rows]


def _flow_matching_rows(
    harness: Any, shipped: ShippedLoss, call: CallRecord, rows: Tensor, notes: list[str], part: str
) -> _Rows | None:
    """Diagonal rows ``F(x, t, t)`` against ``F - v``."""
    if not rows.any():
        return None
    matched = _velocity_rows(harness, shipped, call, rows, notes)
    if matched is None:
        return None
    v, known = matched
    x, t = call.x[rows][known], call.t[rows][known]
    with torch.no_grad():
        R = harness.net.ours(x, t, t) - v[known]
    G = _output_grad(call, rows)[known]
    slack = RECOVERY_SLACK if shipped.velocity == "conditional" else 0.0
    return _Rows(part, G, _to_user(harness, R, t, t, "value"), t, t, slack=slack)


def _meanflow_rows(
    harness: Any, shipped: ShippedLoss, call: CallRecord, rows: Tensor, notes: list[str], part: str
) -> _Rows | None:
    """Rows against the MeanFlow residual ``F - [v - (t - s) dF/dt]`` (``dF/dt`` along
    ``(v, 1, 0)``, ``s`` either side of ``t``)."""
    if not rows.any():
        return None
    matched = _velocity_rows(harness, shipped, call, rows, notes)
    if matched is None:
        return None
    v, known = matched
    x, t, s = call.x[rows][known], call.t[rows][known], call.s[rows][known]
    v = v[known]
    with torch.no_grad():
        F, dF = cast(
            tuple[Tensor, Tensor],
            torch.func.jvp(
                harness.net.ours, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s))
            ),
        )
    R = F - v + (t - s)[:, None] * dF
    G = _output_grad(call, rows)[known]
    slack = RECOVERY_SLACK if shipped.velocity == "conditional" else 0.0
    R_user = _to_user(harness, R, t, s, "time_derivative")
    return _Rows(part, G, R_user, t, s, slack=slack)


# ----------------------------------------------------------------------------------------------
# SplitMeanFlow and Shortcut


def split_points(
    call: CallRecord, rows: Tensor, calls: list[CallRecord], tol: float
) -> tuple[Tensor, Tensor]:
    """The split point ``r`` of each of ``rows`` of ``call``: the end time of the row of any
    recorded call (the target's first segment, detached or not, in its own call or concatenated
    with the trained rows) at the same point and start time whose end lies strictly between ``s``
    and ``t``. Returns ``(r, matched)``; a row with no such call, or with calls at different
    ends, is unmatched."""
    x, t, s = call.x[rows], call.t[rows], call.s[rows]
    n = x.shape[0]
    others = [c for c in calls if c.x.shape[1] == x.shape[1]]
    if not others or n == 0:
        return torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool)
    X = torch.cat([c.x for c in others])
    T = torch.cat([c.t for c in others])
    S = torch.cat([c.s for c in others])
    scale = 1.0 + x.abs().amax(1, keepdim=True)
    cand = (torch.cdist(x, X, compute_mode="donot_use_mm_for_euclid_dist") <= tol * scale) & (
        (T[None, :] - t[:, None]).abs() <= tol
    )
    cand &= (S[None, :] > s[:, None] + tol) & (S[None, :] < t[:, None] - tol)
    lo = torch.where(cand, S[None, :], torch.full_like(cand, torch.inf, dtype=S.dtype)).amin(1)
    hi = torch.where(cand, S[None, :], torch.full_like(cand, -torch.inf, dtype=S.dtype)).amax(1)
    matched = cand.any(1) & (hi - lo <= tol)
    return torch.where(matched, lo, torch.zeros_like(lo)), matched


def _split_rows(
    harness: Any, call: CallRecord, rows: Tensor, calls: list[CallRecord], notes: list[str]
) -> _Rows | None:
    """Off-diagonal rows against ``F - F_split`` at the split point the loss's calls used."""
    if not rows.any():
        return None
    r, matched = split_points(call, rows, calls, MATCH_TOL)
    missing = int((~matched).sum())
    if missing:
        notes.append(
            f"{missing} of {int(rows.sum())} rows with s < t not judged: no network call at the "
            "same point and start time ending strictly between s and t (the split point) was "
            "found for them"
        )
    if not matched.any():
        return None
    x, t, s = call.x[rows][matched], call.t[rows][matched], call.s[rows][matched]
    r = r[matched]
    ours = harness.net.ours
    with torch.no_grad():
        F = ours(x, t, s)
        F_tr = ours(x, t, r)
        x_r = x - (t - r)[:, None] * F_tr
        F_rs = ours(x_r, r, s)
        target = ((t - r)[:, None] * F_tr + (r - s)[:, None] * F_rs) / (t - s)[:, None]
    R = F - target
    G = _output_grad(call, rows)[matched]
    extents = torch.stack([target.abs().amax(1), x_r.abs().amax(1)], 1)
    return _Rows("split", G, _to_user(harness, R, t, s, "value"), t, s, extents=extents)


def _check_split(
    method: str, shipped: ShippedLoss, harness: Any, name: str, start: float
) -> CheckResult:
    calls = harness.net.calls
    trained = _trained(calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    blocks: list[_Rows] = []
    notes: list[str] = []
    for call in trained:
        has_grad = _output_grad(call, torch.ones_like(call.t, dtype=torch.bool)).abs().amax(1) > 0
        diag = has_grad & (call.s == call.t)
        off = has_grad & (call.s < call.t)
        later = int((has_grad & (call.s > call.t)).sum())
        if later:
            notes.append(f"{later} rows mapping towards the noise (s > t) not judged")
        fm = _flow_matching_rows(harness, shipped, call, diag, notes, "flow-matching")
        split = _split_rows(harness, call, off, calls, notes)
        blocks += [b for b in (fm, split) if b is not None]
    reference = "F - [(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s) (F - v on s = t)"
    return _finish(name, method, start, harness, blocks, notes, reference)


# ----------------------------------------------------------------------------------------------
# FACM


def _check_facm(
    method: str, shipped: ShippedLoss, harness: Any, name: str, start: float
) -> CheckResult:
    trained = _trained(harness.net.calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    blocks: list[_Rows] = []
    notes: list[str] = []
    for call in trained:
        has_grad = _output_grad(call, torch.ones_like(call.t, dtype=torch.bool)).abs().amax(1) > 0
        cm = has_grad & (call.s.abs() <= 1e-12) & (call.t > 1e-12)
        anchor = has_grad & (call.s == call.t) & ~cm
        other = has_grad & ~cm & ~anchor
        if other.any():
            i = int(other.nonzero()[0, 0])
            return _result(
                name,
                method,
                "fail",
                f"the loss trains a map from t = {float(call.t[i]):.4g} to s = "
                f"{float(call.s[i]):.4g} (ours): FACM trains the consistency function (s = 0) "
                "and the velocity (s = t) only",
                start,
            )
        cm_rows = _meanflow_rows(harness, shipped, call, cm, notes, "consistency")
        if cm_rows is not None:
            cm_rows.clamp = True
            blocks.append(cm_rows)
        if anchor.any() and shipped.distance == "other":
            notes.append(
                f"{int(anchor.sum())} anchor rows reported, not judged (distance='other': "
                "FACM's cosine term is not along F - v)"
            )
        else:
            fm = _flow_matching_rows(harness, shipped, call, anchor, notes, "anchor")
            if fm is not None:
                blocks.append(fm)
    reference = "F - [v - t dF/dt] at s = 0 (F - v on the anchor rows)"
    return _finish(name, method, start, harness, blocks, notes, reference)


# ----------------------------------------------------------------------------------------------
# Align Your Flow


def _check_ayf_emd(
    method: str, shipped: ShippedLoss, harness: Any, name: str, start: float
) -> CheckResult:
    trained = _trained(harness.net.calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    blocks: list[_Rows] = []
    notes: list[str] = []
    for call in trained:
        rows = torch.ones_like(call.t, dtype=torch.bool)
        found = _meanflow_rows(harness, shipped, call, rows, notes, "Eulerian")
        if found is not None:
            blocks.append(found)
    reference = "|t - s| (F - [v - (t - s) dF/dt]) in both directions"
    return _finish(name, method, start, harness, blocks, notes, reference)


def _check_ayf_lmd(
    method: str, shipped: ShippedLoss, harness: Any, name: str, start: float
) -> CheckResult:
    if shipped.velocity != "teacher":
        return _result(
            name,
            method,
            "skip",
            "AYF-LMD's residual needs the velocity at the predicted point x_s, where the "
            "conditional velocity has no value (MATH.md 4); declare velocity='teacher'",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    trained = _trained(harness.net.calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    blocks: list[_Rows] = []
    ours = harness.net.ours
    for call in trained:
        x, t, s = call.x, call.t, call.s
        with torch.no_grad():
            F, dF_ds = cast(
                tuple[Tensor, Tensor],
                torch.func.jvp(
                    ours, (x, t, s), (torch.zeros_like(x), torch.zeros_like(t), torch.ones_like(s))
                ),
            )
            x_s = x + (s - t)[:, None] * F
            R = F + (s - t)[:, None] * dF_ds - harness.teacher.velocity(x_s, s)
        G = _output_grad(call, torch.ones_like(t, dtype=torch.bool))
        blocks.append(_Rows("Lagrangian", G, _to_user(harness, R, t, s, "value"), t, s))
    reference = "|t - s| (F + (s - t) d_s F - v(x_s, s)) in both directions"
    return _finish(name, method, start, harness, blocks, [], reference)


_CHECKS: dict[str, Callable[[str, ShippedLoss, Any, str, float], CheckResult]] = {
    "split_meanflow": _check_split,
    "shortcut": _check_split,
    "facm": _check_facm,
    "ayf_emd": _check_ayf_emd,
    "ayf_lmd": _check_ayf_lmd,
}


def check_target_alignment(method: str, shipped: ShippedLoss, harness: Any) -> CheckResult:
    """``<method>.shipped.alignment`` for SplitMeanFlow, Shortcut, FACM, AYF-EMD and AYF-LMD.

    Arguments:
        method: one of :data:`TARGET_METHODS`.
        shipped: the loss as it ships.
        harness: the torch or JAX harness of :func:`~.shipped.run_shipped_checks`.

    Returns:
        A :class:`CheckResult` that passes when the gradient at every judged trained row points
        along the method's reference residual with a non-negative factor (implied weights in
        ``weights``), fails otherwise, and skips with the reason where the loss's calls cannot be
        matched to its trained rows.
    """
    if method not in _CHECKS:
        raise ValueError(
            f"no target alignment check for method {method!r}; choose one of "
            f"{', '.join(TARGET_METHODS)}"
        )
    name, start = f"{method}.shipped.alignment", time.perf_counter()
    problem = _gradient_at_control(harness, shipped)
    if problem is not None:
        return _result(name, method, "fail", problem, start)
    return _CHECKS[method](method, shipped, harness, name, start)
