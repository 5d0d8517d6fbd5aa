"""The networks the oracle hands to an implementation: random MLPs and the exact teacher map.

* :class:`RandomNetwork`: a small MLP ``F(x, t, s)`` with fixed random weights, nonlinear in every
  argument (so ``J_x F``, ``d_t F`` and ``d_s F`` are all non-zero and distinct). It exists as a
  torch function of a parameter dict and as its JAX twin with the same weights, so gradients with
  respect to the parameters can be compared across frameworks.
* :class:`ExactAverageVelocity`: the teacher's exact average velocity
  ``F*(x, t, s) = (x - Phi_{t->s}(x)) / (t - s)`` (``v(x, t)`` at ``s = t``) as a torch function
  that supports ``torch.func.jvp`` and reverse mode, with derivatives by fourth-order central
  differences of the float64 ODE solution (cached: checks reuse their inputs).

Why finite differences and not :meth:`ExactFlowMap.directional_derivative` (the variational
equation, exact up to the solver tolerance): at the checks' batch of 16 points on the ring it
costs 0.5 to 0.9 s per derivative against 90 to 120 ms here (measured on 2 shared CPU cores, after
its right-hand side moved from ``torch.func.jvp`` to the closed-form
:meth:`GaussianMixtureTeacher.velocity_jvp`, which made it 3 to 5 times faster; it was 2.7 to 5 s
and the reference run of all checks went from 5.8 s to 26.5 s). The differences need 8 solves of
the plain average velocity, batched into one solve with the fastest velocity kernel; the exact
route carries four states through a solve whose every stage also evaluates the acceleration.
Along trajectories, the only direction a correct implementation differentiates in, the
differences are accurate (see :class:`ExactAverageVelocity`).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..reference_models import ExactFlowMap, GaussianMixtureTeacher

__all__ = ["ExactAverageVelocity", "RandomNetwork"]


# ----------------------------------------------------------------------------------------------
# Random MLP, torch and JAX twins.


@dataclass(frozen=True, eq=False)
class RandomNetwork:
    """An MLP ``F(x, t, s)`` with weights drawn from ``seed``.

    Features ``[x, t, s, t s, sin(3 t), cos(2 s)]``, two tanh layers of width ``width``, a linear
    output. Weights are float64; :meth:`params` gives fresh leaf tensors for gradient checks.

    Arguments:
        dim: data dimension d.
        seed: weight seed.
        width: hidden width.
        gain: weight scale (1.5 keeps outputs and their derivatives of order one to ten).
    """

    dim: int
    seed: int = 0
    width: int = 24
    gain: float = 1.5
    weights: dict[str, Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(int(self.seed))
        n_in = self.dim + 5
        shapes = {
            "w0": (n_in, self.width),
            "b0": (self.width,),
            "w1": (self.width, self.width),
            "b1": (self.width,),
            "w2": (self.width, self.dim),
            "b2": (self.dim,),
        }
        weights = {}
        for name, shape in shapes.items():
            fan_in = shape[0] if len(shape) == 2 else 1
            scale = self.gain / math.sqrt(fan_in) if len(shape) == 2 else 0.5
            weights[name] = scale * torch.randn(shape, generator=g, dtype=torch.float64)
        object.__setattr__(self, "weights", weights)

    def params(self, *, requires_grad: bool = False) -> dict[str, Tensor]:
        """Fresh copies of the weights (leaf tensors)."""
        return {k: v.clone().requires_grad_(requires_grad) for k, v in self.weights.items()}

    @staticmethod
    def apply(params: dict[str, Tensor], x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``F(x, t, s)`` in torch with the given parameters."""
        tc, sc = t[:, None], s[:, None]
        h = torch.cat([x, tc, sc, tc * sc, torch.sin(3 * tc), torch.cos(2 * sc)], dim=1)
        h = torch.tanh(h @ params["w0"] + params["b0"])
        h = torch.tanh(h @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.apply(self.weights, x, t, s)

    def module(self) -> torch.nn.Module:
        """The network as an ``nn.Module`` whose parameters are fresh copies of the weights (the
        reference objectives freeze modules for ``sg(theta)``, as CTM's ``sg(f_{s->0})``)."""
        return _RandomModule(self)

    def functional(self, params: dict[str, Tensor]) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """``F`` bound to ``params`` (for reverse- and forward-mode derivatives in them)."""
        return lambda x, t, s: self.apply(params, x, t, s)

    # -- JAX twin ---------------------------------------------------------------------------

    def jax_params(self, dtype: str) -> dict[str, Any]:
        """The weights as JAX arrays of ``dtype``."""
        import jax.numpy as jnp

        return {k: jnp.asarray(v.numpy(), dtype=dtype) for k, v in self.weights.items()}

    @staticmethod
    def jax_apply(params: dict[str, Any], x, t, s):
        """``F(x, t, s)`` in JAX, the same function as :meth:`apply`."""
        import jax.numpy as jnp

        tc, sc = t[:, None], s[:, None]
        h = jnp.concatenate([x, tc, sc, tc * sc, jnp.sin(3 * tc), jnp.cos(2 * sc)], axis=1)
        h = jnp.tanh(h @ params["w0"] + params["b0"])
        h = jnp.tanh(h @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]


class _RandomModule(torch.nn.Module):
    def __init__(self, net: RandomNetwork) -> None:
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.clone()) for k, v in net.weights.items()}
        )

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return RandomNetwork.apply(dict(self.params), x, t, s)


# ----------------------------------------------------------------------------------------------
# The exact average velocity, differentiable along any direction.


class ExactAverageVelocity:
    """The exact average velocity ``F*`` of a teacher, differentiable by forward and reverse mode.

    Values come from :class:`~flowmap_oracle.reference_models.ExactFlowMap` (float64, adaptive
    solve of the teacher's closed-form velocity; the average velocity is integrated directly, so
    it is exact on and near the diagonal ``s = t``). A directional derivative along
    ``u = (dx, dt, ds)`` is the fourth-order central difference
    ``[8 (F(p + h u) - F(p - h u)) - (F(p + 2h u) - F(p - 2h u))] / (12 h)`` along the per-sample
    normalised direction (one-sided fourth-order stencils where a time would leave ``[0, 1]``):
    truncation error ``O(h^4)``, rounding ``O(eps_ode / h)``, with ``h = 1e-3`` and an ODE solved
    to 1e-12. All evaluations run as one batched solve.

    Measured against the variational equation on the ring teacher
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

    Arguments:
        teacher: a Gaussian-mixture teacher (float64).
        rtol, atol: tolerances of the ODE solve.
        step: the finite-difference step ``h``.
        cache_size: solutions kept, keyed by the exact input bytes (checks reuse inputs).

    Calling it with float64 ``(x, t, s)`` (``(N, d)``, ``(N,)``, ``(N,)``) returns ``F*``;
    ``torch.func.jvp`` and ``backward`` see its derivatives. Second derivatives are not available
    (no check needs them).
    """

    def __init__(
        self,
        teacher: GaussianMixtureTeacher,
        *,
        rtol: float = 1e-12,
        atol: float = 1e-12,
        step: float = 1e-3,
        cache_size: int = 512,
    ) -> None:
        self.teacher = teacher
        self.flow_map = ExactFlowMap(teacher, rtol=rtol, atol=atol)
        self.step = step
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self._cache_size = cache_size
        self.n_solves = 0

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return _ExactFunction.apply(x, t, s, self)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The teacher's marginal velocity ``v(x, t)``."""
        return self.teacher.velocity(x, t)

    def _validate(self, x: Tensor, t: Tensor, s: Tensor) -> None:
        for name, a in (("x", x), ("t", t), ("s", s)):
            if a.dtype != torch.float64:
                raise TypeError(f"the exact teacher map runs in float64; {name} is {a.dtype}")
            if not torch.isfinite(a).all():
                raise ValueError(f"{name} contains non-finite values")
        n = x.shape[0]
        if x.ndim != 2 or t.shape != (n,) or s.shape != (n,):
            raise ValueError(
                f"expected x (N, d), t (N,), s (N,); got {tuple(x.shape)}, {tuple(t.shape)}, "
                f"{tuple(s.shape)}"
            )

    def _cached(self, key_parts: tuple[Tensor, ...], compute: Callable[[], Tensor]) -> Tensor:
        key = b"".join(a.contiguous().cpu().numpy().tobytes() for a in key_parts)
        key += repr(tuple(a.shape for a in key_parts)).encode()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        value = compute()
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def value(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``F*(x, t, s)`` (cached)."""
        with _outside_transforms():
            x, t, s = (_plain(a) for a in (x, t, s))
            self._validate(x, t, s)
            return self._cached((x, t, s), lambda: self._solve(x, t, s))

    def directional(
        self, x: Tensor, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor
    ) -> Tensor:
        """``J_x F* dx + d_t F* dt + d_s F* ds`` per sample (cached)."""
        with _outside_transforms():
            x, t, s, dx, dt, ds = (_plain(a) for a in (x, t, s, dx, dt, ds))
            self._validate(x, t, s)
            return self._cached((x, t, s, dx, dt, ds), lambda: self._fd(x, t, s, dx, dt, ds))

    def _solve(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        self.n_solves += 1
        return self.flow_map.average_velocity(x, t, s)

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
        d = x.shape[1]
        zx, zt = torch.zeros_like(x), torch.zeros_like(t)
        cols = []
        for j in range(d):
            e = zx.clone()
            e[:, j] = 1
            cols.append(self.directional(x, t, s, e, zt, zt))
        d_t = self.directional(x, t, s, zx, torch.ones_like(t), zt)
        d_s = self.directional(x, t, s, zx, zt, torch.ones_like(s))
        return torch.stack(cols, dim=2), d_t, d_s


@contextlib.contextmanager
def _outside_transforms():
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
        jac_x, d_t, d_s = ctx.exact.jacobian(*ctx.primals)
        gx = (jac_x.transpose(1, 2) @ g[:, :, None])[:, :, 0]
        return gx, (g * d_t).sum(1), (g * d_s).sum(1), None
