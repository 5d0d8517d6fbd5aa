"""The exact average velocity of a teacher, wrapped as a network ``F*(x, t, s)``.

:class:`ExactAverageVelocity` is the teacher's exact average velocity
``F*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s)`` (``v(x, t)`` at ``s = t``) as a torch function
that supports ``torch.func.jvp`` and reverse mode. Its values are memoised per sample row (exact
bit patterns of ``(x_i, t_i, s_i)``; only rows not seen before are solved, in one batch), so
repeated evaluations at the same points -- several checks or objectives on one batch -- cost one
solve. It is the one home of this network: the oracle hands it to implementations, and the
experiments' ``TeacherFlowMap`` is a thin model adapter around it.

Derivatives are exact by default (no finite differences): along a tangent ``(dx, dt, ds)``,
with ``w = dx - dt v(x, t)``, ``J_x F* w + dt D_t F* + ds d_s F*`` where

* ``D_t F* = (v(x, t) - F*) / (t - s)`` and ``d_s F* = (F* - v(Phi_{t->s}(x), s)) / (t - s)``
  cost two closed-form velocity evaluations given the memoised ``F*`` (error: the solve's error
  of ``F*`` over ``|t - s|``, measured 5e-15 / |t - s| on ring8, 1e-13 / |t - s| on full64);
  for ``|t - s| <`` :data:`NEAR_DIAGONAL` the integral forms are solved instead
  (:meth:`ExactFlowMap.solve` with ``derivatives=True``), and at ``s = t`` both are ``a / 2``;
* ``J_x F* w`` comes from the variational equation solved with the flow
  (:meth:`ExactFlowMap.jacobian_vector_product`) unless ``w`` is negligible
  (:data:`TINY_TANGENT`: tangents along the trajectory up to rounding, what a correct
  implementation passes).

Measured against a variational solve at rtol 1e-13 (``tests/test_reference_models_exact_
derivative.py`` and 64 points with ``|t - s|`` down to the 1e-3 switch): within 5e-12 along
every tested tangent on ring8 and checkerboard, where the former fourth-order differences
(``derivative="differences"``, kept to cross-check) were 5e-9 (ring8) to 6e-7 (checkerboard)
off along trajectories, 7e-8 in ``d_s`` and 2e-5 along general directions. Cost at those 64
points, value memoised, on a quiet 2-core machine: 1 ms along trajectories and in ``d_s``
(no solve away from the diagonal) against 41 to 56 ms for the differences (8 solves); 135 to
187 ms along general directions (the variational solve) against 45 to 69 ms.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .flow_map import ExactFlowMap
from .gmm import GaussianMixtureTeacher

__all__ = ["DERIVATIVES", "ExactAverageVelocity"]

DERIVATIVES = ("exact", "differences")
"""How :meth:`ExactAverageVelocity.directional` differentiates: ``"exact"`` (closed-form
identities and the variational equation, the default) or ``"differences"`` (fourth-order central
differences of ODE solves, the former method, kept to cross-check)."""

NEAR_DIAGONAL = 1e-3
"""Below this ``|t - s|`` the time derivatives come from the integral forms carried by an
ODE solve; above it from the identities ``D_t F* = (v(x, t) - F*) / (t - s)`` and
``d_s F* = (F* - v(Phi, s)) / (t - s)``, whose error is the solve's error of ``F*`` divided by
``|t - s|`` (measured in ``tests/test_reference_models_exact_derivative.py``)."""

TINY_TANGENT = 1e-13
"""A spatial tangent ``w = dx - dt v(x, t)`` with ``|w|_inf <= TINY_TANGENT (1 + |dx|_inf +
|dt| |v|_inf)`` (a tangent along the trajectory up to rounding, a few 1e-16 relative) gets
``J_x F* w ~ D_x v(x, t) w`` (closed form) instead of a variational solve: the difference is at
most ``(|J_x F*| + |D_x v|) |w|``, under ``1e-11 (1 + |dx| + |dt| |v|)`` for Jacobians under
50."""


class ExactAverageVelocity:
    """The exact average velocity ``F*`` of a teacher, differentiable by forward and reverse mode.

    Values come from :class:`~flowmap_oracle.reference_models.ExactFlowMap` (float64, adaptive
    solve of the teacher's closed-form velocity, or the closed form for one Gaussian; the average
    velocity is integrated directly, so it is exact on and near the diagonal ``s = t``).
    Directional derivatives are exact by default (module docstring). With
    ``derivative="differences"``, a directional derivative along ``u = (dx, dt, ds)`` is the
    fourth-order central difference
    ``[8 (F(p + h u) - F(p - h u)) - (F(p + 2h u) - F(p - 2h u))] / (12 h)`` along the per-sample
    normalised direction (one-sided fourth-order stencils where a time would leave ``[0, 1]``):
    truncation error ``O(h^4)``, rounding ``O(eps_ode / h)``, with ``h = 1e-3`` and an ODE solved
    to 1e-12. All evaluations of one derivative run as one batched solve.

    The differences, measured against the variational equation on the ring teacher
    (``tests/test_oracle_networks.py`` at the checks' inputs, and 512 random points at each of
    ``(t, s) = (1, 0), (0.7, 0.2), (0.5, 0), (0.99, 0)``): along trajectories, tangents
    ``(v, 1, 0)``, the error is at most 7e-10 at the checks' inputs and 1.4e-9 on the random
    points; ``d_s F*`` (tangent ``(0, 0, 1)``) 1.5e-8 and 2.3e-8. Along *general* directions
    ``F*`` bends sharply where the flow contracts onto the narrow modes (``s`` near 0) or where
    trajectories part towards different modes (``x`` near 0 at ``t = 1``), and the differences
    lose accuracy: forward and reverse mode differ by 2e-7 at ``(0.7, 0.2)`` and 1.2e-4 at
    ``s = 0``, and ``J_x F* dx`` was 1.4e-2 off at ``x = (0.05, 0.01)``, ``(t, s) = (1, 0)``. A
    correct implementation differentiates only along trajectories (in any of the conventions the
    adapters map), so the fixed-point checks see the accurate case.

    Whichever JVP API does the differentiating sees the same numbers: ``torch.func.jvp`` and
    ``torch.autograd.forward_ad`` call the forward-mode rule, and a JVP taken in reverse mode by
    the double-backward trick (``torch.autograd.functional.jvp``, ``torch.func.vjp`` of a VJP)
    differentiates the VJP in its cotangent, which is the same directional difference along the
    same tangent (:class:`_ExactVJP`; the two agree exactly at the checks' inputs). Assembling
    ``J_x F* v`` from the Jacobian's columns instead (``jacrev``, ``jacfwd``) meets the general
    directions' error above (5.3e-7 at ``(t, s) = (1, 0)``).

    Caches. Values are memoised per sample row, keyed by the exact bit patterns of
    ``(x_i, t_i, s_i)``: a call solves only the rows it has not seen (each once, in one batch) and
    reads the others back, a least-recently-used store of at most ``cache_rows`` rows. The flow
    map's solver is per sample (the per-sample DOP853, or the closed form), so a row's value does
    not depend on the batch it was solved in, and the memo returns the same bits as a fresh
    solve. Directional derivatives are memoised per batch (keyed by all six inputs' bytes and
    shapes), at most ``cache_batches`` of them. ``cache=False`` turns both off: every call solves.

    Arguments:
        teacher: a Gaussian-mixture teacher, or an :class:`ExactFlowMap` of one (to choose its
            tolerances or solver; ``rtol`` and ``atol`` must then be left unset).
        rtol, atol: tolerances of the ODE solve when ``teacher`` is a teacher (default 1e-12).
        step: the finite-difference step ``h`` (``derivative="differences"`` only).
        derivative: ``"exact"`` (default) or ``"differences"`` (:data:`DERIVATIVES`).
        cache: memoise values per row and directional derivatives per batch.
        cache_rows: rows of values kept (least recently used dropped first).
        cache_batches: directional derivatives kept, one per batch of inputs.

    Calling it with ``(x, t, s)`` of the teacher's dtype (float64 for every ODE teacher; shapes
    ``(N, d)``, ``(N,)``, ``(N,)``) returns ``F*``; ``torch.func.jvp`` and ``backward`` see its
    derivatives. Second derivatives are not available (no check needs them).
    """

    def __init__(
        self,
        teacher: GaussianMixtureTeacher | ExactFlowMap,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        step: float = 1e-3,
        derivative: str = "exact",
        cache: bool = True,
        cache_rows: int = 1 << 16,
        cache_batches: int = 512,
    ) -> None:
        if isinstance(teacher, ExactFlowMap):
            if rtol is not None or atol is not None:
                raise ValueError(
                    "rtol and atol belong to the ExactFlowMap passed in; set them there"
                )
            self.flow_map = teacher
        elif isinstance(teacher, GaussianMixtureTeacher):
            self.flow_map = ExactFlowMap(
                teacher,
                rtol=1e-12 if rtol is None else rtol,
                atol=1e-12 if atol is None else atol,
            )
        else:
            raise TypeError(
                "teacher must be a GaussianMixtureTeacher or an ExactFlowMap, got "
                f"{type(teacher).__name__}"
            )
        for name, size in (("cache_rows", cache_rows), ("cache_batches", cache_batches)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{name} must be a positive int, got {size!r}")
        if not step > 0:
            raise ValueError(f"step must be positive, got {step!r}")
        if derivative not in DERIVATIVES:
            raise ValueError(f"derivative must be one of {DERIVATIVES}, got {derivative!r}")
        self.derivative = derivative
        self.teacher: GaussianMixtureTeacher = self.flow_map.teacher
        self.step = step
        self.cache = bool(cache)
        self.cache_rows = cache_rows
        self.cache_batches = cache_batches
        self._rows: OrderedDict[bytes, Tensor] = OrderedDict()
        self._batches: OrderedDict[bytes, Tensor] = OrderedDict()
        self.n_solves = 0

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return _ExactFunction.apply(x, t, s, self)

    def __repr__(self) -> str:
        return (
            f"ExactAverageVelocity({self.flow_map!r}, derivative={self.derivative!r}, "
            f"step={self.step!r}, cache={self.cache}, "
            f"cache_rows={self.cache_rows}, cache_batches={self.cache_batches})"
        )

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The teacher's marginal velocity ``v(x, t)``."""
        return self.teacher.velocity(x, t)

    def clear_cache(self) -> None:
        """Forget every memoised value and derivative."""
        self._rows.clear()
        self._batches.clear()

    def _validate(self, x: Tensor, t: Tensor, s: Tensor) -> None:
        dtype = self.teacher.mixture.dtype
        for name, a in (("x", x), ("t", t), ("s", s)):
            if a.dtype != dtype:
                raise TypeError(
                    f"the exact teacher map runs in {str(dtype).removeprefix('torch.')}; "
                    f"{name} is {a.dtype}"
                )
            if not torch.isfinite(a).all():
                raise ValueError(f"{name} contains non-finite values")
        n = x.shape[0]
        if x.ndim != 2 or t.shape != (n,) or s.shape != (n,):
            raise ValueError(
                f"expected x (N, d), t (N,), s (N,); got {tuple(x.shape)}, {tuple(t.shape)}, "
                f"{tuple(s.shape)}"
            )

    def value(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``F*(x, t, s)`` (memoised per row)."""
        with _outside_transforms():
            x, t, s = (_plain(a) for a in (x, t, s))
            self._validate(x, t, s)
            if not self.cache:
                return self._solve(x, t, s)
            return self._memoised_rows(x, t, s)

    def _memoised_rows(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        rows = torch.cat([x, t[:, None], s[:, None]], dim=1).contiguous().cpu().numpy()
        keys = [r.tobytes() for r in rows]
        store = self._rows
        values: dict[bytes, Tensor] = {}
        todo: dict[bytes, int] = {}  # first index of each key not in the store, in order
        for i, key in enumerate(keys):
            if key in values or key in todo:
                continue
            hit = store.get(key)
            if hit is None:
                todo[key] = i
            else:
                store.move_to_end(key)
                values[key] = hit
        if todo:
            idx = torch.tensor(list(todo.values()), dtype=torch.long, device=x.device)
            solved = self._solve(x[idx], t[idx], s[idx])
            for key, row in zip(todo, solved.unbind(0), strict=True):
                # a copy, so that a kept row does not hold its whole batch in memory
                values[key] = store[key] = row.clone()
            while len(store) > self.cache_rows:
                store.popitem(last=False)
        return torch.stack([values[key] for key in keys])

    def directional(
        self, x: Tensor, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor
    ) -> Tensor:
        """``J_x F* dx + d_t F* dt + d_s F* ds`` per sample (memoised per batch)."""
        with _outside_transforms():
            x, t, s, dx, dt, ds = (_plain(a) for a in (x, t, s, dx, dt, ds))
            self._validate(x, t, s)
            if not self.cache:
                return self._derivative(x, t, s, dx, dt, ds)
            parts = (x, t, s, dx, dt, ds)
            key = b"".join(a.contiguous().cpu().numpy().tobytes() for a in parts)
            key += repr(tuple(a.shape for a in parts)).encode()
            hit = self._batches.get(key)
            if hit is not None:
                self._batches.move_to_end(key)
                return hit
            out = self._derivative(x, t, s, dx, dt, ds)
            self._batches[key] = out
            if len(self._batches) > self.cache_batches:
                self._batches.popitem(last=False)
            return out

    def _solve(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        self.n_solves += 1
        return self.flow_map.average_velocity(x, t, s)

    def _derivative(
        self, x: Tensor, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor
    ) -> Tensor:
        if self.derivative == "differences":
            return self._fd(x, t, s, dx, dt, ds)
        return self._exact(x, t, s, dx, dt, ds)

    def _exact(self, x: Tensor, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor) -> Tensor:
        """``J_x F* dx + d_t F* dt + d_s F* ds`` without finite differences.

        With ``w = dx - dt v(x, t)`` it is ``J_x F* w + dt D_t F* + ds d_s F*``. For one Gaussian
        everything is in closed form (:meth:`ExactFlowMap.directional_derivative`). Otherwise,
        per row: a spatial tangent ``w`` that is not negligible (:data:`TINY_TANGENT`) is
        integrated by the variational equation with the flow
        (:meth:`ExactFlowMap.jacobian_vector_product`), a negligible one gets
        ``J_x F* w ~ D_x v w``; the time derivatives come from the memoised ``F*`` by the
        identities of :data:`NEAR_DIAGONAL`, near the diagonal from one solve of their integral
        forms, and on it (``s = t``) from the acceleration: ``a / 2``.
        """
        fm, teacher = self.flow_map, self.teacher
        if fm.solver == "closed_form":
            return fm.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)
        tc, dtc, dsc = t[:, None], dt[:, None], ds[:, None]
        v = teacher._velocity(x, tc)
        w = dx - dtc * v
        size = 1 + dx.abs().amax(1) + dt.abs() * v.abs().amax(1)
        big = w.abs().amax(1) > TINY_TANGENT * size
        out = teacher.velocity_jvp(x, t, dx=w).jvp  # D_x v w: rows with a negligible w
        if bool(big.any()):
            out[big] = fm.jacobian_vector_product(x[big], t[big], s[big], dx=w[big])
        timed = ((dt != 0) | (ds != 0)) & (t != s)
        on_diagonal = (t == s) & ((dt != 0) | (ds != 0))
        if bool(on_diagonal.any()):  # D_t F* = d_s F* = a / 2 at s = t
            acc = teacher.acceleration(x[on_diagonal], t[on_diagonal]) / 2
            out[on_diagonal] += (dtc[on_diagonal] + dsc[on_diagonal]) * acc
        span = t - s
        near = timed & (span.abs() < NEAR_DIAGONAL)
        far = timed & ~near
        if bool(near.any()):
            sol = fm.solve(x[near], t[near], s[near], derivatives=True)
            assert sol.total_derivative is not None and sol.end_time_derivative is not None
            out[near] += dtc[near] * sol.total_derivative + dsc[near] * sol.end_time_derivative
        if bool(far.any()):
            xf, tf, sf = x[far], t[far], s[far]
            avg = self.value(xf, tf, sf)
            gap = (tf - sf)[:, None]
            d_t = (v[far] - avg) / gap
            end = xf - gap * avg  # Phi_{t->s}(x) = x + (s - t) F*
            d_s = (avg - teacher._velocity(end, sf[:, None])) / gap
            out[far] += dtc[far] * d_t + dsc[far] * d_s
        return out

    def _fd(self, x: Tensor, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor) -> Tensor:
        # The direction is split into (dx, dt, 0) and (0, 0, ds) so that only one time moves in
        # each part; near an end of [0, 1] that part uses a one-sided stencil into the interval.
        zx, zt = torch.zeros_like(x), torch.zeros_like(t)
        parts = [(dx, dt, zt, dt), (zx, zt, ds, ds)]
        parts = [
            p for p in parts if bool((p[0] != 0).any() or (p[1] != 0).any() or (p[2] != 0).any())
        ]
        if not parts:
            return torch.zeros_like(x)
        h = self.step
        xs, ts, ss, plans = [], [], [], []
        for px, pt, ps, moving in parts:
            scale = torch.stack([px.abs().amax(dim=1), pt.abs(), ps.abs()], dim=1).amax(dim=1)
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            ux, ut, us, um = px / safe[:, None], pt / safe, ps / safe, moving / safe
            base = t if moving is dt else s
            central = (base - 2 * h * um.abs() >= 0) & (base + 2 * h * um.abs() <= 1)
            forward = (base + 4 * h * um >= 0) & (base + 4 * h * um <= 1)
            sigma = torch.where(forward, 1.0, -1.0).to(x.dtype)
            offsets = torch.where(
                central[:, None],
                torch.tensor([h, -h, 2 * h, -2 * h], dtype=x.dtype),
                sigma[:, None] * torch.tensor([h, 2 * h, 3 * h, 4 * h], dtype=x.dtype),
            )  # (N, 4)
            for j in range(4):
                o = offsets[:, j]
                xs.append(x + o[:, None] * ux)
                ts.append(t + o * ut)
                ss.append(s + o * us)
            w_c = torch.tensor([8.0, -8.0, -1.0, 1.0], dtype=x.dtype) / 12
            w_o = torch.tensor([48.0, -36.0, 16.0, -3.0], dtype=x.dtype) / 12
            weights = torch.where(central[:, None], w_c, sigma[:, None] * w_o)
            w0 = torch.where(central, 0.0, -25.0 / 12 * sigma)
            plans.append((weights, w0, scale))
        n = x.shape[0]
        f = self._solve(torch.cat(xs), torch.cat(ts), torch.cat(ss)).split(n)
        f0 = self.value(x, t, s) if any(bool((p[1] != 0).any()) for p in plans) else None
        out = torch.zeros_like(x)
        for i, (weights, w0, scale) in enumerate(plans):
            acc = sum(weights[:, j, None] * f[4 * i + j] for j in range(4))
            if f0 is not None:
                acc = acc + w0[:, None] * f0
            out = out + acc / h * scale[:, None]
        return out

    def jacobian(self, x: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(J_x F*, d_t F*, d_s F*)`` with shapes ``(N, d, d)``, ``(N, d)``, ``(N, d)``."""
        n, d = x.shape
        zx, zt = torch.zeros_like(x), torch.zeros_like(t)
        if self.derivative == "differences":
            cols = []
            for j in range(d):
                e = zx.clone()
                e[:, j] = 1
                cols.append(self.directional(x, t, s, e, zt, zt))
            d_t = self.directional(x, t, s, zx, torch.ones_like(t), zt)
            d_s = self.directional(x, t, s, zx, zt, torch.ones_like(s))
            return torch.stack(cols, dim=2), d_t, d_s
        # every column in one batch: d unit tangents in x, then (0, 1, 0) and (0, 0, 1)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        dxs = torch.cat([eye[j].expand(n, d) for j in range(d)] + [zx, zx])
        one, zero = torch.ones_like(t), zt
        dts = torch.cat([zero] * d + [one, zero])
        dss = torch.cat([zero] * d + [zero, one])
        rep = d + 2
        cols_all = self.directional(
            x.repeat(rep, 1), t.repeat(rep), s.repeat(rep), dxs, dts, dss
        ).split(n)
        return torch.stack(cols_all[:d], dim=2), cols_all[d], cols_all[d + 1]


@contextlib.contextmanager
def _outside_transforms() -> Iterator[None]:
    """Run plain tensor code (the ODE solve, byte keys) with torch.func's transforms set aside."""
    try:
        from torch._functorch.pyfunctorch import temporarily_clear_interpreter_stack
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with temporarily_clear_interpreter_stack(), torch.no_grad():
        yield


def _plain(a: Tensor) -> Tensor:
    """The value of ``a`` without autograd or functorch wrappers."""
    a = a.detach()
    try:
        from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

        while is_functorch_wrapped_tensor(a):
            a = get_unwrapped(a)
    except ImportError:  # pragma: no cover - older torch
        pass
    return a


class _ExactFunction(torch.autograd.Function):
    """``F*(x, t, s)`` whose JVP and VJP come from :meth:`ExactAverageVelocity.directional`."""

    @staticmethod
    def forward(x: Tensor, t: Tensor, s: Tensor, exact: ExactAverageVelocity) -> Tensor:
        return exact.value(x, t, s).clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, t, s, exact = inputs
        ctx.primals = tuple(_plain(a) for a in (x, t, s))
        ctx.exact = exact

    @staticmethod
    def jvp(ctx, dx: Tensor, dt: Tensor, ds: Tensor, _exact: Any) -> Tensor:
        x, t, s = ctx.primals
        dx = torch.zeros_like(x) if dx is None else dx
        dt = torch.zeros_like(t) if dt is None else dt
        ds = torch.zeros_like(s) if ds is None else ds
        return ctx.exact.directional(x, t, s, dx, dt, ds)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, t, s = ctx.primals
        if torch.is_grad_enabled() and g.requires_grad:
            # a graph of the VJP itself is being recorded (double backward): see _ExactVJP
            return (*_ExactVJP.apply(g, x, t, s, ctx.exact), None)
        return (*_vjp(g, x, t, s, ctx.exact), None)


def _vjp(
    g: Tensor, x: Tensor, t: Tensor, s: Tensor, exact: ExactAverageVelocity
) -> tuple[Tensor, Tensor, Tensor]:
    """``(J_x^T g, d_t F*^T g, d_s F*^T g)`` per sample (Jacobian by differences)."""
    jac_x, d_t, d_s = exact.jacobian(x, t, s)
    gx = (jac_x.transpose(1, 2) @ g[:, :, None])[:, :, 0]
    return gx, (g * d_t).sum(1), (g * d_s).sum(1)


class _ExactVJP(torch.autograd.Function):
    """The VJP ``g -> (J_x^T g, d_t F*^T g, d_s F*^T g)`` of ``F*`` at fixed primals, as a
    function of the cotangent ``g`` that is itself differentiable in ``g``.

    Its own derivative in ``g`` (the transpose of the transpose) is the JVP: the double-backward
    route of ``torch.autograd.functional.jvp`` (and any reverse-over-reverse JVP) differentiates
    it along the user's tangent ``u = (dx, dt, ds)``. That derivative is taken here as
    :meth:`ExactAverageVelocity.directional` along ``u`` itself, the same differences along the
    same direction as forward mode, rather than as ``J u`` assembled from the Jacobian's columns
    (differences along each coordinate, which lose accuracy where ``F*`` bends off the
    trajectories: 5.3e-7 off at the fixed-point check's corner ``(t, s) = (1, 0)`` for MeanFlow,
    2.8e-4 for MeanFlow in EDM time, where the tangent's time component is small). The derivative
    in the primals (second derivatives of ``F*``) is not available, as for :class:`_ExactFunction`.
    """

    @staticmethod
    def forward(
        g: Tensor, x: Tensor, t: Tensor, s: Tensor, exact: ExactAverageVelocity
    ) -> tuple[Tensor, Tensor, Tensor]:
        if not bool(_plain(g).any()):
            # the double-backward trick's placeholder cotangent: no Jacobian needed
            return torch.zeros_like(x), torch.zeros_like(t), torch.zeros_like(s)
        return _vjp(g, x, t, s, exact)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, x, t, s, exact = inputs
        ctx.primals = (x, t, s)
        ctx.exact = exact

    @staticmethod
    def backward(ctx, ux: Tensor, ut: Tensor, us: Tensor):
        x, t, s = ctx.primals
        ux = torch.zeros_like(x) if ux is None else ux
        ut = torch.zeros_like(t) if ut is None else ut
        us = torch.zeros_like(s) if us is None else us
        return ctx.exact.directional(x, t, s, ux, ut, us), None, None, None, None

    @staticmethod
    def jvp(ctx, dg: Tensor | None, *_: Any) -> tuple[Tensor, Tensor, Tensor]:
        # linear in g: the tangent of the VJP is the VJP of the tangent
        x, t, s = ctx.primals
        if dg is None:
            return torch.zeros_like(x), torch.zeros_like(t), torch.zeros_like(s)
        return _ExactVJP.forward(dg, x, t, s, ctx.exact)
