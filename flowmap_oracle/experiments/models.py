"""Flow-map models ``f_{t->s}(x) = c_skip(t, s) x + c_out(t, s) F(x, t, s)``.

Every model takes points ``x`` of shape ``(N, d)`` and times ``t``, ``s`` of shape ``(N,)`` in the
project's convention (data at 0, noise at 1, ``s < t`` generative). ``forward`` returns the network
output F (for the MeanFlow/AYF parameterisation, the average velocity); :meth:`FlowMapModel.flow`
returns the flow map itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from ..reference_models import ExactAverageVelocity, ExactFlowMap, GaussianMixtureTeacher

__all__ = [
    "FACM",
    "MEANFLOW",
    "CholeskyFlowMap",
    "ExpandedTimeFlowMap",
    "FlowMapModel",
    "MLPFlowMap",
    "Parameterisation",
    "PerturbedFlowMap",
    "TeacherFlowMap",
]


@dataclass(frozen=True)
class Parameterisation:
    """Boundary coefficients of ``f = c_skip x + c_out F``.

    Attributes:
        name: identifier used in reports.
        skip: ``c_skip(t, s)`` as a function of column tensors.
        out: ``c_out(t, s)`` as a function of column tensors.
        valid_for: a short statement of where the parameterisation satisfies ``f_{t->t} = x``.
        skip_dot, out_dot: optional directional derivatives ``(t, s, dt, ds) -> d c`` of the
            coefficients in closed form (``None``: ``torch.func.jvp`` of ``skip``/``out``);
            used by :class:`MLPFlowMap`'s fused flow JVP, and checked against
            ``torch.func.jvp`` in ``tests/test_experiments_fused_jvp.py``.
    """

    name: str
    skip: Callable[[Tensor, Tensor], Tensor]
    out: Callable[[Tensor, Tensor], Tensor]
    valid_for: str = "all (t, s)"
    skip_dot: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None
    out_dot: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None

    def c_skip(self, t: Tensor, s: Tensor) -> Tensor:
        return self.skip(t, s)

    def c_out(self, t: Tensor, s: Tensor) -> Tensor:
        return self.out(t, s)

    def jvp(
        self, t: Tensor, s: Tensor, dt: Tensor, ds: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, d c_skip, d c_out)`` at column tensors ``t``, ``s`` along
        ``(dt, ds)``: by ``skip_dot``/``out_dot`` where given, else by ``torch.func.jvp``."""
        if self.skip_dot is not None:
            skip, dskip = self.skip(t, s), self.skip_dot(t, s, dt, ds)
        else:
            skip, dskip = cast(tuple[Tensor, Tensor], torch.func.jvp(self.skip, (t, s), (dt, ds)))
        if self.out_dot is not None:
            out, dout = self.out(t, s), self.out_dot(t, s, dt, ds)
        else:
            out, dout = cast(tuple[Tensor, Tensor], torch.func.jvp(self.out, (t, s), (dt, ds)))
        return skip, out, dskip, dout


MEANFLOW = Parameterisation(
    name="meanflow",
    skip=lambda t, s: torch.ones_like(t),
    out=lambda t, s: s - t,
    skip_dot=lambda t, s, dt, ds: torch.zeros_like(dt),
    out_dot=lambda t, s, dt, ds: ds - dt,
)
"""MeanFlow / AYF: ``c_skip = 1``, ``c_out = s - t``; F is the average velocity."""

FACM = Parameterisation(
    name="facm",
    skip=lambda t, s: torch.ones_like(t),
    out=lambda t, s: -t,
    valid_for="s = 0 only (c_out(t, t) = -t is not 0 for t > 0)",
    skip_dot=lambda t, s, dt, ds: torch.zeros_like(dt),
    out_dot=lambda t, s, dt, ds: -dt,
)
"""FACM: ``c_skip = 1``, ``c_out = -t``; a valid flow map only towards ``s = 0``."""


class FlowMapModel(nn.Module):
    """Base class: subclasses implement ``forward(x, t, s) -> F``."""

    parameterisation: Parameterisation = MEANFLOW

    def flow(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Return ``f_{t->s}(x) = c_skip x + c_out F(x, t, s)``."""
        tc, sc = t[:, None], s[:, None]
        p = self.parameterisation
        return p.c_skip(tc, sc) * x + p.c_out(tc, sc) * self(x, t, s)


class MLPFlowMap(FlowMapModel):
    """An MLP ``F(x, t, s)`` with Fourier features of ``t`` and ``s``.

    Arguments:
        dim: data dimension d.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        n_frequencies: Fourier frequencies per time input.
        parameterisation: boundary coefficients (default MeanFlow/AYF).
    """

    frequencies: Tensor  # buffer registered in __init__

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 128,
        depth: int = 3,
        n_frequencies: int = 3,
        parameterisation: Parameterisation = MEANFLOW,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.parameterisation = parameterisation
        freqs = math.pi * 2.0 ** torch.arange(n_frequencies, dtype=dtype) / 2
        self.register_buffer("frequencies", freqs)
        layers: list[nn.Module] = []
        width = dim + 2 * 2 * n_frequencies + 2
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim, dtype=dtype))
        self.net = nn.Sequential(*layers)

    def _features(self, t: Tensor) -> Tensor:
        a = t[:, None] * self.frequencies
        return torch.cat([a.sin(), a.cos()], dim=1)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        h = torch.cat(
            [x, self._features(t), self._features(s), t[:, None], (t - s)[:, None]], dim=1
        )
        return self.net(h)

    def _fusable(self) -> bool:
        """Whether :meth:`fused_jvp` computes what :meth:`forward` computes: the class's own
        ``forward``, ``net`` still alternating plain ``nn.Linear`` and ``nn.SiLU`` (not
        subclasses), and no forward hooks (on the modules or global)."""
        if type(self).forward is not MLPFlowMap.forward or type(self.net) is not nn.Sequential:
            return False
        layers = list(self.net)
        if len(layers) % 2 != 1:
            return False
        for k, layer in enumerate(layers):
            if type(layer) is not (nn.SiLU if k % 2 else nn.Linear):
                return False
        if _global_forward_hooks or _global_forward_pre_hooks:
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in self.modules())

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """``F(x, t, s)`` and its directional derivative along ``(dx, dt, ds)`` in one pass.

        The tangent is pushed through the same layers as the input (forward-mode by hand: the
        tangent of ``Linear`` is the product with its weight, that of SiLU is
        ``silu'(z) dz = (sigma + silu (1 - sigma)) dz``), with ordinary differentiable torch
        operations, so both outputs support reverse mode and ``torch.func`` transforms. It
        returns what ``torch.func.jvp(self, primals, tangents)`` returns (equal to rounding;
        ``tests/test_experiments_fused_jvp.py``) at a fraction of its per-operation overhead, and
        is what :func:`~flowmap_oracle.objectives.derivatives.directional_derivative` uses for
        this network. A subclass that overrides ``forward``, a changed ``net`` or a module hook
        falls back to ``torch.func.jvp``.

        Arguments:
            primals: ``(x, t, s)``, shapes ``(N, d)``, ``(N,)``, ``(N,)``.
            tangents: ``(dx, dt, ds)`` of the same shapes.

        Returns:
            ``(F(x, t, s), J_x F dx + d_t F dt + d_s F ds)``, both of shape ``(N, d)``.
        """
        if len(primals) != 3 or len(tangents) != 3:
            raise ValueError(
                f"fused_jvp takes (x, t, s) and three tangents; got {len(primals)} primals and "
                f"{len(tangents)} tangents"
            )
        if not self._fusable():
            return cast(tuple[Tensor, Tensor], torch.func.jvp(self, primals, tangents))
        x, t, s = primals
        dx, dt, ds = tangents
        ft, dft = self._features_and_tangent(t, dt)
        fs, dfs = self._features_and_tangent(s, ds)
        h = torch.cat([x, ft, fs, t[:, None], (t - s)[:, None]], dim=1)
        dh = torch.cat([dx, dft, dfs, dt[:, None], (dt - ds)[:, None]], dim=1)
        layers = cast(list[nn.Linear], list(self.net)[::2])
        for layer in layers[:-1]:
            z = nn.functional.linear(h, layer.weight, layer.bias)
            dz = nn.functional.linear(dh, layer.weight)
            h = nn.functional.silu(z)
            sig = torch.sigmoid(z)
            dh = dz * torch.addcmul(sig, h, 1 - sig)
        last = layers[-1]
        return nn.functional.linear(h, last.weight, last.bias), nn.functional.linear(
            dh, last.weight
        )

    @property
    def flow(self) -> _FusedFlow:
        """The flow map ``f_{t->s}(x) = c_skip x + c_out F(x, t, s)`` as a callable that also
        offers ``fused_jvp`` (so the objectives that differentiate the flow map -- Align Your
        Flow, flow map matching, sCM, self-distillation -- take the fused pass too); called as
        ``model.flow(x, t, s)`` like :meth:`FlowMapModel.flow`."""
        return _FusedFlow(self)

    def _features_and_tangent(self, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        a = t[:, None] * self.frequencies
        da = dt[:, None] * self.frequencies
        sin, cos = a.sin(), a.cos()
        return torch.cat([sin, cos], dim=1), torch.cat([cos * da, -sin * da], dim=1)


class _FusedFlow:
    """The flow map of an :class:`MLPFlowMap` with its forward-mode pass.

    ``fused_jvp`` differentiates ``c_skip x + c_out F``: the coefficients (functions of ``t``
    and ``s`` alone) by :meth:`Parameterisation.jvp`, ``F`` by :meth:`MLPFlowMap.fused_jvp`.
    """

    def __init__(self, model: MLPFlowMap) -> None:
        self.model = model

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return FlowMapModel.flow(self.model, x, t, s)

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """``f_{t->s}(x)`` and its directional derivative along ``(dx, dt, ds)``."""
        F, dF = self.model.fused_jvp(primals, tangents)
        x, t, s = primals
        dx, dt, ds = tangents
        p = self.model.parameterisation
        skip, out, dskip, dout = p.jvp(t[:, None], s[:, None], dt[:, None], ds[:, None])
        return skip * x + out * F, dskip * x + skip * dx + dout * F + out * dF


class TeacherFlowMap(FlowMapModel):
    """The exact teacher flow map behind the model interface (no parameters).

    A thin adapter: ``forward`` calls an
    :class:`~flowmap_oracle.reference_models.ExactAverageVelocity` (the one implementation of the
    exact network, shared with the oracle), so ``forward`` is the exact average velocity
    ``F*(x, t, s)`` and ``flow`` is ``Phi_{t->s}``. ``torch.func.jvp`` and ``backward`` through it
    see fourth-order central differences of the ODE solution (see that class); objectives
    evaluated on it take ``derivative=FiniteDifference(...)``, and the exact derivatives are
    ``flow_map.directional_derivative`` / ``flow_map.total_derivative`` (variational equation).

    Arguments:
        flow_map: the exact flow map (its tolerances and solver are used as given).
        cache: memoise ``F*`` per sample row ``(x_i, t_i, s_i)`` (exact bit patterns, a bounded
            least-recently-used store), so that repeated evaluations at the same points --
            several objectives checked on one batch -- cost one ODE solve. Only rows not seen
            before are solved, in one batch.
    """

    def __init__(self, flow_map: ExactFlowMap, *, cache: bool = False) -> None:
        super().__init__()
        self.exact = ExactAverageVelocity(flow_map, cache=cache)

    @property
    def flow_map(self) -> ExactFlowMap:
        """The exact flow map whose average velocity ``forward`` returns."""
        return self.exact.flow_map

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.exact(x, t, s)


class ExpandedTimeFlowMap(FlowMapModel):
    """FACM's *expanded time interval* put in front of a flow-map model.

    FACM trains one network on two tasks and tells them apart by the time input: the
    consistency task at ``tau = t in [0, 1]`` and the flow-matching anchor at ``tau = 2 - t in
    [1, 2]``. This wrapper gives any flow map that encoding::

        forward(x, tau, sigma) = inner(x, tau, sigma)            for tau <= 1
                               = inner(x, 2 - tau, 2 - tau)      for tau > 1 (the velocity)

    so that the exact teacher can be evaluated by FACM's loss in its own encoding. The two
    branches meet discontinuously at ``tau = 1`` (as in FACM's network): derivatives in ``t`` by
    finite differences need ``t + h <= 1``.
    """

    parameterisation = FACM

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        anchor = t > 1
        t_in = torch.where(anchor, 2 - t, t)
        s_in = torch.where(anchor, 2 - t, s)
        return self.inner(x, t_in, s_in)


class CholeskyFlowMap(FlowMapModel):
    """A wrong flow with the right marginals: the Cholesky family of a single Gaussian teacher.

    For data ``N(mu, Sigma)`` on the path ``x_t = alpha x0 + beta x1`` the marginal is
    ``N(m_t, C_t)`` with ``m_t = alpha_t mu`` and ``C_t = alpha_t^2 Sigma + beta_t^2 I``. With
    ``L_t`` the lower Cholesky factor of ``C_t``::

        f_{t->s}(x) = m_s + L_s L_t^{-1} (x - m_t)

    carries ``N(m_t, C_t)`` exactly to ``N(m_s, C_s)``, satisfies ``f_{t->t} = x`` and the
    semigroup property, and is the flow of ``v~ = m' + L' L^{-1} (x - m)`` -- but it is not the
    teacher's flow (that uses the symmetric root, MATH.md section 3) unless ``Sigma`` is diagonal.
    Teacher-free objectives (split, Shortcut consistency, MeanFlow/EMD with the model's own
    velocity, IMM) cannot tell it from the exact map. ``forward`` returns the average velocity
    (``v~`` on the diagonal ``s = t``); it is differentiable by autograd and ``torch.func.jvp``.

    Arguments:
        teacher: a single-component Gaussian teacher.
    """

    mean: Tensor  # buffers registered in __init__
    cov: Tensor

    def __init__(self, teacher: GaussianMixtureTeacher) -> None:
        super().__init__()
        mix = teacher.mixture
        if mix.n_components != 1:
            raise ValueError(
                f"the Cholesky family needs a single Gaussian; got {mix.n_components} components"
            )
        self.path = teacher.path
        self.register_buffer("mean", mix.means[0].clone())
        self.register_buffer("cov", mix.covariances[0].clone())

    def _factor(self, t: Tensor) -> Tensor:
        a, b = self.path.alpha(t), self.path.beta(t)
        eye = torch.eye(self.cov.shape[0], dtype=self.cov.dtype, device=self.cov.device)
        cov_t = a[:, None, None] ** 2 * self.cov + b[:, None, None] ** 2 * eye
        return torch.linalg.cholesky(cov_t)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        l_t = self._factor(t)
        l_s = self._factor(s)
        y = torch.linalg.solve_triangular(
            l_t, (x - self.path.alpha(t)[:, None] * self.mean)[..., None], upper=False
        )
        f = self.path.alpha(s)[:, None] * self.mean + (l_s @ y)[..., 0]
        gap = (t - s)[:, None]
        same = gap == 0
        avg = (x - f) / torch.where(same, torch.ones_like(gap), gap)
        if not bool(same.any()):
            return avg
        # torch types jvp's result as a 2- or 3-tuple (3 only with has_aux=True)
        _, l_dot = cast(
            tuple[Tensor, Tensor], torch.func.jvp(self._factor, (t,), (torch.ones_like(t),))
        )
        vel = self.path.alpha_dot(t)[:, None] * self.mean + (l_dot @ y)[..., 0]
        return torch.where(same, vel, avg)


class PerturbedFlowMap(FlowMapModel):
    """A control: ``F(x, t, s) + eps * delta(x, t, s)`` with a fixed smooth, non-constant field

    ``delta_k(x, t, s) = sin(x_{(k+1) mod d} + 2 t - s + k)``.

    It breaks the flow-map identities (MeanFlow, semigroup, boundary velocity) and the marginals,
    so every objective evaluated on it must be clearly positive -- the check that the fixed-point
    checks can fail. ``delta`` is smooth in ``(x, t, s)``, so derivative routes stay accurate.

    Arguments:
        inner: the flow-map model to perturb (usually the exact teacher map).
        eps: the amplitude.
    """

    def __init__(self, inner: nn.Module, *, eps: float) -> None:
        super().__init__()
        self.inner = inner
        self.eps = eps
        self.parameterisation = getattr(inner, "parameterisation", MEANFLOW)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        d = x.shape[1]
        shifted = torch.roll(x, shifts=-1, dims=1)
        phase = (2 * t - s)[:, None] + torch.arange(d, dtype=x.dtype, device=x.device)
        return self.inner(x, t, s) + self.eps * torch.sin(shifted + phase)
