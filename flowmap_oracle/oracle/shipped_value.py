"""``<method>.shipped.value``: a shipped loss's value against the loss it declares.

The invariant checks in :mod:`~flowmap_oracle.oracle.shipped` accept every weighting, distance
and reduction, so a loss whose declared weighting is wrong (an adaptive weight that squares the
error twice, a pseudo-Huber constant applied to the squared norm, a weight at the wrong time)
passes them. When the loss declares its extras (:class:`~flowmap_oracle.oracle.declared.Declared`)
this check makes them exact:

1. At a perturbed map (every ``theta_k = CONTROL``) the loss is run once as shipped (its own
   times and noise) and the oracle records every network call: times, points, and the gradient
   the loss sends back to each output.
2. From those calls it rebuilds the declared loss with its own network: the residual of each
   trained row (flow matching and MeanFlow: ``F - [v - (t - s) dF/dt]`` in the units of the
   user's output, with the conditional velocity recovered from the data and the point, as the
   alignment check does, and ``dF/dt`` along the declared ``jvp_tangent``: that velocity, or
   the network's own ``F(x_t, t, t)`` as improved MeanFlow takes it; discrete consistency: the
   online minus the target consistency function in the user's data units; sCM: the declared
   tangent ``tangent_scale(t) df/dt``, normalised as declared; AYF-EMD: the flow map's tangent
   ``sign(t - s) df/dt``, normalised as declared, in the user's flow-map units; SplitMeanFlow:
   ``F(x_t, t, s) - [(t - r) F(x_t, t, r) + (r - s) F(x_r, r, s)] / (t - s)`` at the split point
   ``r`` read off the loss's own calls as the alignment check reads it, ``F - v`` on the rows
   with ``s = t``, every trained row of every trained call one batch: the example's
   flow-matching quarter and split rest, each averaged and weighted by its share, is
   ``reduction="mean"``; Shortcut alike, its split point the midpoint), then
   ``weight(t, s) * distance(q)`` per row, reduced as declared. A split loss whose rows differ
   from the declared loss only where their reference target or split point is larger than on
   every agreeing row, those rows fewer than the agreeing ones, is skipped with the reason (a
   clip, as Shortcut's ``[-4, 4]``, never fails); the conditional velocity is recovered on the
   declared path, so a path declared linear that is not (Shortcut's ``sigma_min = 1e-5``) fails
   the value (``examples/shortcut_models.py`` declared: relative 3.2e-6 to 3.1e-3 over seeds
   0-49, ``tests/measure_shipped_value_split.py``), and the message says when the rows with
   ``s = t`` differ: declare the exact path.
3. It compares the value with the user's (float64: relative ``1e-8``; float32: ``1e-4``), and
   the gradient at every network output with the rebuilt loss's (float64: ``1e-6``; float32:
   ``1e-3`` of the largest row). The gradient is what catches a wrong weight whose value happens
   to agree: per row it is the declared weight times the distance's derivative. A mismatch is
   explained: which part of the value differs (:func:`~flowmap_oracle.oracle.checks._common.
   explain_parts`), and whether the ratio of implied to declared weight per row is a constant
   (a reduction), follows the residual's norm (a distance) or the time (a weight).
4. With ``reset_fraction`` declared, the fraction of trained rows on the diagonal ``s = t`` is
   judged by a two-sided binomial test at :data:`~flowmap_oracle.oracle.shipped.FALSE_ALARM`
   (in this check, not in the times check, which reports the fraction for every loss).

Without a declaration the check is skipped with the reason, naming what to declare; the invariant
checks run either way. AYF-EMD is rebuilt in the project's own conventions only (noise at
``t = 1``, ``model(x, t, s)``, the average velocity; others skip with the reason). Torch
losses, and JAX flow-matching, MeanFlow and sCM losses (their calls
are recorded by :class:`~flowmap_oracle.oracle.shipped_jax.JaxHarness` in the same form; the
declared functions receive torch tensors); a JAX discrete consistency loss is skipped with the
reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from .checks._common import explain_parts
from .declared import REDUCTIONS, Declared
from .results import CheckResult, SkipReason
from .shipped import (
    ALIGNED_METHODS,
    CONTROL,
    FALSE_ALARM,
    N_FIELDS,
    NO_GRADIENT,
    CallRecord,
    ShippedLoss,
    _consistency_function,
    _data_in_ours,
    _Harness,
    _matched_velocity,
    _result,
    _trained,
    _UserProblem,
)

__all__ = ["VALUE_METHODS", "check_value", "declared_tangent"]

VALUE_METHODS = (
    "flow_matching",
    "meanflow",
    "consistency",
    "scm",
    "ayf_emd",
    "split_meanflow",
    "shortcut",
)
"""Methods whose declared loss the value check can rebuild."""

VALUE_RTOL = {torch.float64: 1e-8, torch.float32: 1e-4}
"""Relative tolerance on the loss's value, by the user's dtype (float32: the user computes the
residual in float32, the oracle rebuilds it in float64 from the float32 points). Measured on
correct losses (``tests/measure_shipped_value.py``, 10 seeds each of MeanFlow with an adaptive
weight, TrigFlow sCM and ECT): at most 2.0e-15 in float64 and 1.1e-7 in float32."""
GRAD_RTOL = {torch.float64: 1e-6, torch.float32: 1e-3}
"""Tolerance on the gradient at each output, relative to the largest row's norm. Measured as
for :data:`VALUE_RTOL`: at most 2.7e-13 in float64 and 8.8e-6 in float32."""
BETA_FLOOR = {torch.float64: 1e-9, torch.float32: 1e-4}
"""Rows at ``beta(t)`` below this carry no recoverable noise (``x_t`` is the data to rounding);
the loss is then drawn again (the conditional velocity of every row is needed for the value)."""
ATTEMPTS = 5
"""Draws of the loss before the check gives up on rows at the data end."""
SLICE_MARGIN = 1.3
"""A split loss's flow-matching call on a slice of the batch is matched to the head or the
tail of the data by the mean squared noise it implies (1 for the right slice); where both are
plausible the smaller wins only when the other is larger by this factor, else the check skips.
Measured on ``examples/split_meanflow.py`` (64 flow-matching rows of 256, 2-D data, seeds
0-299, ``tests/measure_shipped_value_split.py``): the wrong slice's mean is at least 1.44 times
the right one's (1st percentile 1.54, median 3.8), so the right slice was taken in every seed."""


@dataclass
class _Term:
    """One trained network call of the loss, as the declaration rebuilds it.

    Attributes:
        label: the term's name in messages.
        residual: ``(N, D)`` float64 leaf, the difference the loss compares, user units.
        jac: ``(N,)``, ``d residual / d output`` per row (a scalar per row).
        t_user, s_user: the rows' times in the user's own time variable.
        coef: the term's coefficient in the loss.
        grad: ``(N, D)``, the gradient the user's loss sent to the call's output.
        diagonal: ``(N,)`` rows with ``s = t``.
        extents: ``(N, k)`` magnitudes beyond which a clip in the loss may act (split losses:
            the reference target and split point; ``-inf`` where none may), or ``None``.
    """

    label: str
    residual: Tensor
    jac: Tensor
    t_user: Tensor
    s_user: Tensor
    coef: float
    grad: Tensor
    diagonal: Tensor
    extents: Tensor | None = None


class _Skip(Exception):
    """The calls do not have the structure the declaration describes (a skip, with why)."""


class _Redraw(Exception):
    """A row at the data end: its noise cannot be recovered; draw the loss again."""


def _grad_of(call: CallRecord) -> Tensor:
    g = call.output_grad
    n = call.x.shape[0]
    return torch.zeros_like(call.x) if g is None else g.reshape(n, -1).double()


def _velocity(
    harness: Any, shipped: ShippedLoss, call: CallRecord, kind: str | None = None
) -> Tensor:
    """The velocity every row of ``call`` regressed onto (all rows, unlike the alignment check,
    which leaves out rows near the data end), or the ``kind`` named (``"conditional"``,
    ``"teacher"``; default the loss's own): raises :class:`_Skip` when the rows cannot be
    matched to the data, :class:`_Redraw` when a row is too close to the data end."""
    kind = shipped.velocity if kind is None else kind
    if kind == "teacher":
        return cast(Tensor, harness.teacher.velocity(call.x, call.t))
    matched = _matched_velocity(harness, dataclasses.replace(shipped, velocity="conditional"), call)
    if isinstance(matched, str):
        raise _Skip(matched)
    data = _data_in_ours(harness)
    x, t = call.x, call.t
    x0 = data.repeat(x.shape[0] // data.shape[0], 1)
    c = harness.teacher.path.schedule(t)
    if bool((c.beta < BETA_FLOOR[harness.user_dtype]).any()):
        raise _Redraw
    eps = (x - c.alpha[:, None] * x0) / c.beta[:, None]
    return cast(Tensor, c.alpha_dot[:, None] * x0 + c.beta_dot[:, None] * eps)


def _user_times(harness: Any, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    o = harness.net.adapter.torch_ops
    adapter = harness.net.adapter
    return adapter.time_to_user(t, ops=o), adapter.time_to_user(s, ops=o)


def _tangent(
    harness: Any, shipped: ShippedLoss, decl: Declared, call: CallRecord, v: Tensor
) -> Tensor:
    """The velocity along which the loss takes ``dF/dt`` at the rows of ``call`` (our
    convention): the declared ``jvp_tangent``, else ``v``, the velocity it regresses onto.
    ``"model"`` is the network's own ``F(x_t, t, t)`` at its current parameters, the velocity
    the user's network reports on the diagonal whatever its prediction."""
    kind = decl.jvp_tangent
    if kind is None or kind == shipped.velocity:
        return v
    if kind == "model":
        with torch.no_grad():
            return cast(Tensor, harness.net.ours(call.x, call.t, call.t))
    return _velocity(harness, shipped, call, kind)


def declared_tangent(
    harness: Any, shipped: ShippedLoss, call: CallRecord, v: Tensor, rows: Tensor
) -> tuple[Tensor, Tensor]:
    """For the alignment check: the JVP's tangent at the rows of ``call`` as the loss declares
    it (:attr:`~flowmap_oracle.oracle.declared.Declared.jvp_tangent`; ``v``, the velocity it
    regresses onto, when nothing is declared), and the rows where it is known (``rows`` and,
    for a conditional tangent beside the teacher's velocity, the rows whose noise is
    recovered). A reason string from the data matching leaves only ``rows`` of the velocity."""
    kind = None if shipped.declared is None else shipped.declared.jvp_tangent
    if kind is None or kind == shipped.velocity:
        return v, rows
    if kind == "model":
        with torch.no_grad():
            return harness.net.ours(call.x, call.t, call.t), rows
    if kind == "teacher":
        return harness.teacher.velocity(call.x, call.t), rows
    matched = _matched_velocity(harness, dataclasses.replace(shipped, velocity="conditional"), call)
    if isinstance(matched, str):
        return v, torch.zeros_like(rows)
    return matched[0], rows & matched[1]


def _aligned_terms(harness: Any, shipped: ShippedLoss, decl: Declared) -> list[_Term]:
    """Flow matching and MeanFlow: one trained call (two with a declared flow-matching term)."""
    net = harness.net
    trained = _trained(net.calls)
    want = 1 if decl.flow_matching_term is None else 2
    if len(trained) != want:
        hint = (
            " (declare flow_matching_term=... for an extra flow-matching term on a second call)"
            if decl.flow_matching_term is None
            else ""
        )
        raise _Skip(
            f"the loss trains {len(trained)} network call(s), the declaration describes {want}"
            + hint
        )
    if want == 2:
        # the flow-matching term's call is the one entirely on the diagonal s = t
        on_diagonal = [bool((c.t == c.s).all()) for c in trained]
        if not any(on_diagonal):
            raise _Skip(
                "neither trained call is entirely on the diagonal s = t: the declared "
                "flow-matching term cannot be told apart"
            )
        if on_diagonal[0] and not on_diagonal[1]:
            trained = [trained[1], trained[0]]
    o = net.adapter.torch_ops
    coefs = [1.0] if want == 1 else [1.0, cast(float, decl.flow_matching_term)]
    labels = ["the loss"] if want == 1 else ["the MeanFlow term", "the flow-matching term"]
    terms = []
    for call, coef, label in zip(trained, coefs, labels, strict=True):
        v = _velocity(harness, shipped, call)
        x, t, s = call.x, call.t, call.s
        tangent = _tangent(harness, shipped, decl, call, v)
        with torch.no_grad():
            F, dF = cast(
                tuple[Tensor, Tensor],
                torch.func.jvp(
                    net.ours, (x, t, s), (tangent, torch.ones_like(t), torch.zeros_like(s))
                ),
            )
        R = F - v + (t - s)[:, None] * dF
        k = net.adapter.output_gain(t, s, ops=o)
        w = net.adapter.residual_factor(t, s, "time_derivative", ops=o)
        tu, su = _user_times(harness, t, s)
        terms.append(
            _Term(
                label,
                (R / (w * k)[:, None]).detach().requires_grad_(True),
                torch.ones_like(t),
                tu,
                su,
                coef,
                _grad_of(call),
                t == s,
            )
        )
    return terms


def _consistency_terms(harness: Any, shipped: ShippedLoss, decl: Declared) -> list[_Term]:
    """Discrete consistency: the trained online call against its one untrained target call."""
    net = harness.net
    calls = [c for c in net.calls if float(c.s.abs().max()) <= 1e-9]
    trained = _trained(calls)
    if len(trained) != 1:
        raise _Skip(
            f"the loss trains {len(trained)} calls of the consistency function; the declaration "
            "describes one online call against one detached target call"
        )
    online = trained[0]
    targets = [c for c in calls if c is not online and c.x.shape == online.x.shape]
    if len(targets) != 1:
        raise _Skip(
            f"{len(targets)} untrained calls of the online call's batch: the target call cannot "
            "be told apart"
        )
    target = targets[0]
    adapter = net.adapter
    o = adapter.torch_ops
    t, r = online.t, target.t
    zero = torch.zeros_like(t)
    diff = _consistency_function(net, online.x, t) - _consistency_function(net, target.x, r)
    unit = adapter.points_to_user(torch.ones_like(t)[:, None], zero, ops=o)[:, 0]
    gain = adapter.output_gain(t, zero, ops=o)
    tu, ru = _user_times(harness, t, r)
    return [
        _Term(
            "the loss",
            (unit[:, None] * diff).detach().requires_grad_(True),
            -t * gain * unit,
            tu,
            ru,
            1.0,
            _grad_of(online),
            torch.zeros_like(t, dtype=torch.bool),  # no diagonal: every row compares two calls
        )
    ]


def _scm_terms(harness: Any, shipped: ShippedLoss, decl: Declared) -> list[_Term]:
    """sCM: the trained call of the consistency function, regressed onto its own output plus the
    declared tangent ``g = tangent_scale(t) df/dt`` (user units and time), normalised as
    declared; the residual is ``-g_n``."""
    from ..objectives.continuous_consistency import consistency_tangent

    net = harness.net
    trained = _trained(net.calls)
    if len(trained) != 1 or float(trained[0].s.abs().max()) > 1e-9:
        raise _Skip(
            f"the loss trains {len(trained)} network call(s); the declaration describes one call "
            "of the consistency function (s = 0)"
        )
    call = trained[0]
    adapter = net.adapter
    o = adapter.torch_ops
    v = _velocity(harness, shipped, call)
    x, t = call.x, call.t
    zero = torch.zeros_like(t)
    with torch.no_grad():
        _, df = consistency_tangent(net.ours, x, t, v)
    gain = adapter.output_gain(t, zero, ops=o)
    unit = adapter.points_to_user(torch.ones_like(t)[:, None], zero, ops=o)[:, 0]
    tu, su = _user_times(harness, t, zero)
    # d f_user / d tau, oriented as the loss's gradient is (the alignment check: along t k df/dt)
    g = (torch.sign(gain) * unit / adapter.tau_dot(t).abs())[:, None] * df
    if decl.tangent_scale is not None:
        g = _per_row(decl.tangent_scale(tu), t.shape[0], "tangent_scale(t)")[:, None] * g
    if decl.tangent_normalisation is not None:
        g = g / (g.norm(dim=1, keepdim=True) + decl.tangent_normalisation)
    return [
        _Term(
            "the loss",
            (-g).detach().requires_grad_(True),
            torch.ones_like(t),
            tu,
            su,
            1.0,
            _grad_of(call),
            t == zero,
        )
    ]


def _ayf_emd_terms(harness: Any, shipped: ShippedLoss, decl: Declared) -> list[_Term]:
    """AYF-EMD: the trained call of the flow map ``f = x + (s - t) F``, regressed onto its own
    output plus the tangent ``g = sign(t - s) df/dt`` (MATH.md 1d: ``df/dt = -R``, the MeanFlow
    residual, for ``s`` either side of ``t``), normalised as declared, ``g / (||g|| + c)``; the
    residual is ``g`` in the user's flow-map units, ``d f / d output = s - t``."""
    net = harness.net
    adapter = net.adapter
    conv = adapter.conventions
    if not adapter.is_identity or conv.preconditioning != "none":
        raise _Skip(
            "the value check rebuilds AYF-EMD losses written with noise at t = 1, model(x, t, s) "
            f"and the average velocity (f = x + (s - t) F); not yet {conv.describe()}"
        )
    trained = _trained(net.calls)
    if len(trained) != 1:
        raise _Skip(
            f"the loss trains {len(trained)} network call(s); the declaration describes one call "
            "of the flow map regressed onto its own tangent"
        )
    call = trained[0]
    v = _velocity(harness, shipped, call)
    x, t, s = call.x, call.t, call.s
    with torch.no_grad():
        F, dF = cast(
            tuple[Tensor, Tensor],
            torch.func.jvp(net.ours, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s))),
        )
    o = adapter.torch_ops
    R = (F - v + (t - s)[:, None] * dF) / adapter.output_gain(t, s, ops=o)[:, None]
    g = -torch.sign(t - s)[:, None] * R
    if decl.tangent_normalisation is not None:
        g = g / (g.norm(dim=1, keepdim=True) + decl.tangent_normalisation)
    tu, su = _user_times(harness, t, s)
    return [
        _Term(
            "the loss",
            g.detach().requires_grad_(True),
            su - tu,
            tu,
            su,
            1.0,
            _grad_of(call),
            t == s,
        )
    ]


def _slice_velocity(harness: Any, shipped: ShippedLoss, call: CallRecord, rows: Tensor) -> Tensor:
    """The velocity at ``rows`` of ``call`` (split losses). A call on fewer rows than the data
    batch (the flow-matching share ``x_t[:n]`` or ``x_t[n:]``) is matched to the head or the tail
    of the batch, whichever gives standard normal noise; raises :class:`_Skip` when neither or
    both do, :class:`_Redraw` at the data end."""
    if shipped.velocity == "teacher":
        return cast(Tensor, harness.teacher.velocity(call.x[rows], call.t[rows]))
    data = _data_in_ours(harness)
    n, b = call.x.shape[0], data.shape[0]
    if n % b == 0 or n > b:
        return _velocity(harness, shipped, call)[rows]
    x, t = call.x[rows], call.t[rows]
    c = harness.teacher.path.schedule(t)
    if bool((c.beta < BETA_FLOOR[harness.user_dtype]).any()):
        raise _Redraw
    found = []
    for offset in sorted({0, b - n}):
        x0 = data[offset : offset + n][rows]
        eps = (x - c.alpha[:, None] * x0) / c.beta[:, None]
        ok = c.beta >= 0.02
        m2 = float(eps[ok].pow(2).mean()) if ok.any() else float("nan")
        if 0.5 < m2 < 2.0:
            found.append((m2, c.alpha_dot[:, None] * x0 + c.beta_dot[:, None] * eps))
    found.sort(key=lambda f: f[0])
    if len(found) == 2 and found[1][0] > SLICE_MARGIN * found[0][0]:
        found = found[:1]  # the wrong slice adds alpha / beta (x0 - x0') to the noise
    if len(found) != 1:
        raise _Skip(
            f"a flow-matching call on {n} rows for a batch of {b}: its rows match "
            f"{'neither' if not found else 'both'} the head and the tail of the data, so their "
            "velocity is not known"
        )
    return found[0][1]


def _split_terms(harness: Any, shipped: ShippedLoss, decl: Declared) -> list[_Term]:
    """SplitMeanFlow and Shortcut: every trained row of every trained call, as one batch. Rows
    with ``s < t`` against ``F_split`` at the split point read off the loss's own calls
    (:func:`~flowmap_oracle.oracle.shipped_targets.split_points`), rows with ``s = t`` against
    the velocity; the residual in the user's output units (``R / k``)."""
    from .shipped_targets import MATCH_TOL, split_points

    net = harness.net
    adapter = net.adapter
    o = adapter.torch_ops
    trained = _trained(net.calls)
    if not trained:
        raise _Skip(NO_GRADIENT)
    res, jac, ts, ss, grads, diags, exts = [], [], [], [], [], [], []
    for call in trained:
        g = _grad_of(call)
        rows = g.abs().amax(1) > 0
        later = int((rows & (call.s > call.t)).sum())
        if later:
            raise _Skip(
                f"{later} trained rows map towards the noise (s > t); the value check rebuilds "
                "split losses on rows with s <= t"
            )
        diag, off = rows & (call.s == call.t), rows & (call.s < call.t)
        R = torch.zeros_like(call.x)
        ext = torch.full((call.x.shape[0], 2), -torch.inf, dtype=torch.float64)
        if diag.any():
            v = _slice_velocity(harness, shipped, call, diag)
            with torch.no_grad():
                R[diag] = net.ours(call.x[diag], call.t[diag], call.t[diag]) - v
        if off.any():
            r, matched = split_points(call, off, net.calls, MATCH_TOL)
            if not bool(matched.all()):  # a split point within MATCH_TOL of s or t: exact match
                r_exact, exact = split_points(call, off, net.calls, 0.0)
                r, matched = torch.where(matched, r, r_exact), matched | exact
            if not bool(matched.all()):
                raise _Skip(
                    f"{int((~matched).sum())} of {int(off.sum())} rows with s < t have no network "
                    "call at the same point and start time ending strictly between s and t (the "
                    "split point), so their target cannot be rebuilt"
                )
            x, t, s = call.x[off], call.t[off], call.s[off]
            with torch.no_grad():
                F_tr = net.ours(x, t, r)
                x_r = x - (t - r)[:, None] * F_tr
                target = (t - r)[:, None] * F_tr + (r - s)[:, None] * net.ours(x_r, r, s)
                R[off] = net.ours(x, t, s) - target / (t - s)[:, None]
            ext[off] = torch.stack(
                [(target / (t - s)[:, None]).abs().amax(1), x_r.abs().amax(1)], 1
            )
        t, s = call.t[rows], call.s[rows]
        res.append(R[rows] / adapter.output_gain(t, s, ops=o)[:, None])
        jac.append(torch.ones_like(t))
        tu, su = _user_times(harness, t, s)
        ts.append(tu)
        ss.append(su)
        grads.append(g[rows])
        diags.append(t == s)
        exts.append(ext[rows])
    return [
        _Term(
            "the loss",
            torch.cat(res).detach().requires_grad_(True),
            torch.cat(jac),
            torch.cat(ts),
            torch.cat(ss),
            1.0,
            torch.cat(grads),
            torch.cat(diags),
            torch.cat(exts),
        )
    ]


def _per_row(value: object, n: int, what: str) -> Tensor:
    """A declared function's output as ``(n,)`` float64 (a scalar broadcasts)."""
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value, dtype=torch.float64)
    value = value.double()
    if value.numel() == 1:
        return value.reshape(()).expand(n)
    if value.numel() != n:
        raise ValueError(
            f"the declared {what} returned shape {tuple(value.shape)}; expected one value per "
            f"row ({n},)"
        )
    return value.reshape(n)


def _rebuild(terms: list[_Term], decl: Declared) -> tuple[Tensor, dict[str, float], list[Tensor]]:
    """The declared loss from the terms: its value, its parts (by term and by the diagonal) and
    its gradient at each call's output."""
    total = torch.zeros((), dtype=torch.float64)
    parts: dict[str, float] = {}
    for term in terms:
        n = term.residual.shape[0]
        sq = term.residual.pow(2)
        q = sq.mean(1) if decl.reduction == "mean" else sq.sum(1)
        w = (
            torch.ones(n, dtype=torch.float64)
            if decl.weight is None
            else _per_row(decl.weight(term.t_user, term.s_user), n, "weight(t, s)")
        )
        per = w * decl.distance(q)

        def reduce(a: Tensor) -> Tensor:
            return a.mean() if decl.reduction in ("mean", "sum_mean") else a.sum()

        value = term.coef * reduce(per)
        total = total + value
        diag = term.diagonal
        if bool(diag.all()) or not bool(diag.any()):
            parts[term.label] = float(value.detach())
        else:
            zero = torch.zeros_like(per)
            for mask, what in ((diag, "rows with s = t"), (~diag, "rows with s != t")):
                key = f"{term.label}: {what}"
                parts[key] = float(term.coef * reduce(torch.where(mask, per, zero)).detach())
    leaves = [term.residual for term in terms]
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    out = [
        torch.zeros_like(leaf) if g is None else g * term.jac[:, None]
        for leaf, g, term in zip(leaves, grads, terms, strict=True)
    ]
    return total.detach(), parts, out


def _clipped_rows(terms: list[_Term], expected: list[Tensor], tol: float) -> int | None:
    """Rows whose gradient differs from the rebuilt one only where their reference target or
    split point is larger than on every agreeing row (a clip in the loss, as Shortcut clips to
    ``[-4, 4]``), while fewer than the agreeing rows: their count, else ``None``."""
    scale = max(float(g.norm(dim=1).max()) for g in expected)
    bad_ext, good_ext = [], []
    for term, g in zip(terms, expected, strict=True):
        if term.extents is None:
            return None
        bad = (term.grad - g).norm(dim=1) > tol * scale
        bad_ext.append(term.extents[bad])
        good_ext.append(term.extents[~bad])
    bad_e, good_e = torch.cat(bad_ext), torch.cat(good_ext)
    good_e = good_e[torch.isfinite(good_e).all(1)]  # agreeing rows a clip could have touched
    if bad_e.shape[0] == 0 or bad_e.shape[0] >= good_e.shape[0]:
        return None
    beyond = (bad_e > good_e.amax(0) * (1 + 1e-9)).any(1) & torch.isfinite(bad_e).all(1)
    return int(bad_e.shape[0]) if bool(beyond.all()) else None


def _slope(x: Tensor, y: Tensor) -> float | None:
    """The least-squares slope of ``y`` against ``x`` (``None`` without spread)."""
    if x.numel() < 3 or float(x.std()) < 1e-9:
        return None
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / xc.pow(2).sum())


def _explain_rows(terms: list[_Term], expected: list[Tensor], decl: Declared) -> str:
    """What the per-row ratio of the loss's implied weight to the declared one says."""
    ratios, qs, ts, gaps = [], [], [], []
    for term, g_exp in zip(terms, expected, strict=True):
        norm2 = g_exp.pow(2).sum(1)
        ok = norm2 > 1e-24 * float(norm2.max().clamp_min(1e-300))
        ratios.append(((term.grad * g_exp).sum(1) / norm2.clamp_min(1e-300))[ok])
        qs.append(term.residual.detach().pow(2).sum(1)[ok])
        ts.append(term.t_user[ok])
        gaps.append((term.t_user - term.s_user).abs()[ok])
    rho = torch.cat(ratios)
    if rho.numel() == 0:
        return ""
    text = (
        f"per row, the loss's implied weight is {float(rho.min()):.4g} to {float(rho.max()):.4g} "
        "times the declared one"
    )
    if bool((rho <= 0).any()):
        return text + " (some rows are trained in the opposite direction)"
    if float(rho.std() / rho.mean().abs()) < 1e-3:
        return (
            text + f": a constant factor {float(rho.mean()):.4g} (another reduction than the "
            f"declared {decl.reduction!r}, or a coefficient)"
        )
    log_rho = rho.log()
    q, tt, gap = torch.cat(qs), torch.cat(ts), torch.cat(gaps)
    fits = {}
    for name, x in (
        ("the residual's squared norm", q),
        ("the time t", tt.abs()),
        ("the gap |t - s|", gap),
    ):
        ok = x > 0
        s = _slope(x[ok].log(), log_rho[ok]) if int(ok.sum()) >= 3 else None
        if s is not None:
            resid = log_rho[ok] - s * (x[ok].log() - x[ok].log().mean()) - log_rho[ok].mean()
            fits[name] = (float(resid.pow(2).mean() / log_rho[ok].var().clamp_min(1e-300)), s)
    if fits:
        name, (_, s) = min(fits.items(), key=lambda kv: kv[1][0])
        kind = (
            "the distance differs from the declared one"
            if name.startswith("the residual")
            else "the weight differs from the declared weight(t, s)"
        )
        text += f"; the ratio follows {name} (log-log slope {s:.3g}): {kind}"
    return text


def _reset_fraction(terms: list[_Term], declared: float) -> tuple[str | None, str]:
    """The binomial test of the first term's diagonal share against the declared one."""
    from scipy.stats import binomtest

    diag = terms[0].diagonal
    n, k = int(diag.numel()), int(diag.sum())
    p = float(binomtest(k, n, declared).pvalue)
    text = (
        f"{k} of {n} rows on the diagonal s = t ({k / n:.1%}, declared {declared:.1%}; binomial "
        f"p = {p:.2g}, false-alarm rate {FALSE_ALARM:g})"
    )
    if p < FALSE_ALARM:
        return f"the loss resets another fraction of its pairs to s = t than declared: {text}", text
    return None, text


def _matching_reduction(
    terms: list[_Term], decl: Declared, got: float, dtype: torch.dtype
) -> str | None:
    """Another reduction under which the rebuilt loss matches the user's value and gradient."""
    for other in REDUCTIONS:
        if other == decl.reduction:
            continue
        value, _, grads = _rebuild(terms, dataclasses.replace(decl, reduction=cast(Any, other)))
        ref = float(value)
        scale = max(float(g.norm(dim=1).max()) for g in grads)
        err = max(float((t.grad - g).norm(dim=1).max()) for t, g in zip(terms, grads, strict=True))
        if abs(got - ref) <= VALUE_RTOL[dtype] * abs(ref) and err <= GRAD_RTOL[dtype] * scale:
            return other
    return None


def check_value(method: str, shipped: ShippedLoss, harness: Any) -> CheckResult:
    """``<method>.shipped.value``: the loss's value and per-output gradient at a perturbed map
    against the loss its :class:`~flowmap_oracle.oracle.declared.Declared` describes.

    Arguments:
        method: the method name (``flow_matching``, ``meanflow``, ``consistency``, ``scm``,
            ``ayf_emd``, ``split_meanflow``, ``shortcut``).
        shipped: the loss, with ``declared`` (without it the check is skipped with the reason).
        harness: the as-shipped harness (torch, or JAX for every method but discrete
            consistency; declared functions receive torch tensors either way).

    Returns:
        The check's result: pass, fail (what differs) or skip (why).
    """
    name, start = f"{method}.shipped.value", time.perf_counter()
    decl = shipped.declared

    def skip(reason: str) -> CheckResult:
        return _result(name, method, "skip", reason, start, skip_reason=SkipReason.NOT_APPLICABLE)

    if method not in VALUE_METHODS:
        return skip(f"the value check rebuilds {', '.join(VALUE_METHODS)} losses; not yet {method}")
    if decl is None:
        return skip(
            "nothing declared, so the loss's value is not checked: declare its extras with "
            "ShippedLoss(..., declared=Declared(distance=L2() | Adaptive(p, c) | PseudoHuber(c), "
            "weight=..., reduction=..., tangent_normalisation=..., jvp_tangent=...)) (the invariant "
            "checks ran)"
        )
    problem = decl.problem_for(method)
    if problem is not None:
        raise ValueError(problem)
    if decl.jvp_tangent == "teacher" and shipped.velocity != "teacher":
        raise ValueError(
            "jvp_tangent='teacher' declares the teacher's velocity as the JVP's tangent, but the "
            "loss is not handed a teacher: declare ShippedLoss(..., velocity='teacher')"
        )
    if not isinstance(harness, _Harness) and not (
        method != "consistency" and type(harness).__name__ == "JaxHarness"
    ):
        return skip(
            "the value check rebuilds torch losses, and JAX flow-matching, MeanFlow and sCM "
            "losses; not this one"
        )
    adapter = harness.net.adapter
    if (
        method in (*ALIGNED_METHODS, "split_meanflow", "shortcut")
        and adapter.conventions.preconditioning != "none"
    ):
        return skip(
            "a preconditioned flow-matching or MeanFlow loss compares the wrapped output, which "
            "the value check does not rebuild yet"
        )
    build = {
        "consistency": _consistency_terms,
        "scm": _scm_terms,
        "ayf_emd": _ayf_emd_terms,
        "split_meanflow": _split_terms,
        "shortcut": _split_terms,
    }.get(method, _aligned_terms)
    control = torch.full((N_FIELDS,), CONTROL, dtype=torch.float64)
    n = max(shipped.batch_size, 256)
    terms: list[_Term] | None = None
    for _ in range(ATTEMPTS):
        harness.net.reset()
        try:
            _, got = harness.gradient(shipped, control, batch_size=n)
            terms = build(harness, shipped, decl)
            break
        except _UserProblem as err:
            return _result(name, method, "fail", str(err), start)
        except _Skip as reason:
            return skip(str(reason))
        except _Redraw:
            continue
    if terms is None:
        return skip(
            f"in {ATTEMPTS} draws the loss always had rows at the data end (t = 0), whose noise "
            "cannot be recovered from the point"
        )
    dtype = harness.user_dtype
    expected, parts, grads = _rebuild(terms, decl)  # a bad declaration raises
    ref = float(expected)
    rel = abs(got - ref) / max(abs(ref), 1e-300)
    g_scale = max(float(g.norm(dim=1).max()) for g in grads)
    g_err = max(
        float((term.grad - g).norm(dim=1).max()) for term, g in zip(terms, grads, strict=True)
    )
    g_rel = g_err / max(g_scale, 1e-300)
    rows = sum(int(term.residual.shape[0]) for term in terms)
    if g_rel > GRAD_RTOL[dtype]:
        clipped = _clipped_rows(terms, grads, GRAD_RTOL[dtype])
        if clipped is not None:
            return skip(
                f"{clipped} of {rows} rows differ from the declared loss only where their "
                "reference target or split point is larger than on every agreeing row (a clip "
                "in the loss, as Shortcut clips to [-4, 4]): the value is not judged"
            )
    detail = (
        f"value {got:.8g} against the declared {ref:.8g} (relative difference {rel:.1e}, allowed "
        f"{VALUE_RTOL[dtype]:g}); gradient at the outputs within {g_rel:.1e} of the largest row "
        f"(allowed {GRAD_RTOL[dtype]:g}); {rows} rows; declared: {decl.describe()}"
    )
    problems = []
    if not math.isfinite(ref):
        problems.append(f"the declared loss is not finite here ({ref})")
    if rel > VALUE_RTOL[dtype]:
        parts_text = explain_parts(ref, got, parts, VALUE_RTOL[dtype] * max(abs(ref), 1e-300))
        problems.append(
            "the loss's value is not the declared loss's"
            + (f" ({parts_text})" if parts_text else "")
        )
    if g_rel > GRAD_RTOL[dtype]:
        problems.append(
            "the gradient it sends to the network's outputs is not the declared loss's ("
            + _explain_rows(terms, grads, decl)
            + ")"
        )
    if problems and method in ("split_meanflow", "shortcut") and shipped.velocity != "teacher":
        bad = torch.cat(
            [
                (term.grad - g).norm(dim=1) > GRAD_RTOL[dtype] * g_scale
                for term, g in zip(terms, grads, strict=True)
            ]
        )
        diag = torch.cat([term.diagonal for term in terms])
        ext = torch.cat([cast(Tensor, term.extents) for term in terms])
        good = ext[~bad & ~diag]
        bound = good.amax(0) if good.shape[0] else torch.full((ext.shape[1],), torch.inf)
        beyond = (ext > bound * (1 + 1e-9)).any(1)  # as _clipped_rows
        if bool((bad & diag).any()) and bool((diag | beyond)[bad].all()):
            problems.append(
                "the rows with s = t differ (besides rows a clip may explain), whose velocity is "
                "recovered from the data on the declared path: a path other than the declared "
                "one (Shortcut's sigma_min = 1e-5 declared linear) moves it"
            )
    if decl.reset_fraction is not None:
        wrong, text = _reset_fraction(terms, decl.reset_fraction)
        detail += f"; {text}"
        if wrong:
            problems.append(wrong)
    if problems and (rel > VALUE_RTOL[dtype] or g_rel > GRAD_RTOL[dtype]):
        other = _matching_reduction(terms, decl, got, dtype)
        if other:
            problems.append(f"the loss matches the declaration with reduction={other!r}")
    if problems:
        return _result(name, method, "fail", "; ".join(problems) + f" ({detail})", start)
    return _result(name, method, "pass", detail, start)
