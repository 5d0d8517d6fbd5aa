"""Several seeds of one :class:`~flowmap_oracle.experiments.models.MLPFlowMap` trained as one model.

The benchmark of objectives trains the seeds of a cell together: the members' parameters are
stacked along a leading dimension (``torch.func.stack_module_state``) and one optimiser steps
them all. A batch of ``S * B`` rows is ``S`` consecutive chunks of ``B`` rows, chunk ``i`` going
through member ``i`` only, so the loss ``S * mean`` (the sum of the members' batch means) gives
every member exactly the gradient of its own batch mean, and Adam (elementwise) treats the
members as ``S`` independent runs.

Two ways to run the stacked members, measured against each other in
:func:`flowmap_oracle.experiments.bench_objectives.measure_throughput`:

* ``"bmm"``: the MLP written with batched matrix products (``torch.baddbmm``) over the member
  dimension;
* ``"vmap"``: ``torch.func.vmap`` of ``torch.func.functional_call`` of the member module over
  the stacked parameters.

The ``"bmm"`` stack has its own forward-mode pass, :meth:`StackedMLPFlowMap.fused_jvp` (the
tangent pushed through the same batched products, as :meth:`MLPFlowMap.fused_jvp
<flowmap_oracle.experiments.models.MLPFlowMap.fused_jvp>` does for one member), and so has its flow
map (:class:`FusedFlow`); :func:`routed_fused_jvp` is that pass for a wrapper that regroups the
rows of several concatenated batches by member first (the benchmark's ``SeedBatches``). The
objectives' ``"jvp"`` route takes these passes in place of ``torch.func.jvp``
(:func:`~flowmap_oracle.objectives.derivatives.directional_derivative`);
``tests/test_seed_stack_fused_jvp.py`` holds them to ``torch.func.jvp``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal, Protocol, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from .models import MEANFLOW, FlowMapModel, MLPFlowMap, Parameterisation

__all__ = ["FusedFlow", "StackMode", "StackedMLPFlowMap", "routed_fused_jvp"]

StackMode = Literal["bmm", "vmap"]


class StackedMLPFlowMap(FlowMapModel):
    """``S`` members (one per seed) of :class:`MLPFlowMap` run as one flow-map model.

    ``forward(x, t, s)`` takes ``S * B`` rows: rows ``i B .. (i + 1) B - 1`` go through member
    ``i``. Each member starts from ``torch.manual_seed(seed)`` followed by ``MLPFlowMap(...)``,
    the initialisation of a single run with that seed.

    Arguments:
        dim: data dimension.
        seeds: one seed per member (their initialisations).
        hidden, depth, n_frequencies, parameterisation, dtype: as :class:`MLPFlowMap`.
        mode: ``"bmm"`` (batched matrix products) or ``"vmap"`` (``torch.func.vmap``).
    """

    def __init__(
        self,
        dim: int,
        *,
        seeds: Sequence[int],
        hidden: int = 64,
        depth: int = 3,
        n_frequencies: int = 3,
        parameterisation: Parameterisation = MEANFLOW,
        dtype: torch.dtype = torch.float64,
        mode: StackMode = "bmm",
    ) -> None:
        super().__init__()
        if not seeds:
            raise ValueError("seeds must name at least one member")
        if mode not in ("bmm", "vmap"):
            raise ValueError(f"mode must be 'bmm' or 'vmap', got {mode!r}")
        self.dim, self.mode, self.seeds = dim, mode, tuple(int(s) for s in seeds)
        self.parameterisation = parameterisation
        self.hidden, self.depth, self.n_frequencies = hidden, depth, n_frequencies
        self.dtype = dtype
        members: list[nn.Module] = []
        for seed in self.seeds:
            torch.manual_seed(seed)
            members.append(self._member())
        params, _ = torch.func.stack_module_state(members)
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[k].detach()) for k in self.names])
        # The template is kept out of the module tree: its own parameters are never trained.
        self._template = [copy.deepcopy(members[0]).to("meta")]
        self.register_buffer("frequencies", self._member().frequencies.clone())

    def _member(self) -> MLPFlowMap:
        return MLPFlowMap(
            self.dim,
            hidden=self.hidden,
            depth=self.depth,
            n_frequencies=self.n_frequencies,
            parameterisation=self.parameterisation,
            dtype=self.dtype,
        )

    @property
    def n_members(self) -> int:
        """The number of stacked members (seeds)."""
        return len(self.seeds)

    frequencies: Tensor  # buffer registered in __init__

    def _input(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        a = t[:, None] * self.frequencies
        b = s[:, None] * self.frequencies
        feats = [a.sin(), a.cos(), b.sin(), b.cos()]
        return torch.cat([x, *feats, t[:, None], (t - s)[:, None]], dim=1)

    def _input_tangent(self, t: Tensor, s: Tensor, dx: Tensor, dt: Tensor, ds: Tensor) -> Tensor:
        """The tangent of :meth:`_input` along ``(dx, dt, ds)`` (``d sin a = cos a da``)."""
        a, da = t[:, None] * self.frequencies, dt[:, None] * self.frequencies
        b, db = s[:, None] * self.frequencies, ds[:, None] * self.frequencies
        feats = [a.cos() * da, -a.sin() * da, b.cos() * db, -b.sin() * db]
        return torch.cat([dx, *feats, dt[:, None], (dt - ds)[:, None]], dim=1)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        n = x.shape[0]
        m = self.n_members
        if n % m:
            raise ValueError(f"{n} rows cannot be split among {m} members")
        if self.mode == "vmap":
            return self._forward_vmap(x, t, s)
        h = self._input(x, t, s).reshape(m, n // m, -1)
        n_layers = len(self.stacked) // 2
        for k in range(n_layers):
            w, b = self.stacked[2 * k], self.stacked[2 * k + 1]
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if k < n_layers - 1:
                h = torch.nn.functional.silu(h)
        return h.reshape(n, -1)

    def _forward_vmap(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        m, n = self.n_members, x.shape[0]
        params = dict(zip(self.names, self.stacked, strict=True))
        template = self._template[0]

        def one(p: dict[str, Tensor], xi: Tensor, ti: Tensor, si: Tensor) -> Tensor:
            buffers = {"frequencies": self.frequencies}
            return torch.func.functional_call(template, (p, buffers), (xi, ti, si))

        out = torch.func.vmap(one)(
            params, x.reshape(m, n // m, -1), t.reshape(m, -1), s.reshape(m, -1)
        )
        return out.reshape(n, -1)

    def _fusable(self) -> bool:
        """Whether :meth:`fused_jvp` computes what :meth:`forward` computes: the ``"bmm"``
        mode, the class's own ``forward`` and ``_input``, the stacked weights and biases
        alternating with matching shapes, and no forward hooks (on the modules or global)."""
        cls = type(self)
        if self.mode != "bmm" or cls.forward is not StackedMLPFlowMap.forward:
            return False
        if cls._input is not StackedMLPFlowMap._input:
            return False
        params = list(self.stacked)
        if len(params) % 2 or not params:
            return False
        for w, b in zip(params[::2], params[1::2], strict=True):
            if w.dim() != 3 or b.shape != w.shape[:2]:
                return False
        return not _hooked(self)

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """``forward(x, t, s)`` and its directional derivative along ``(dx, dt, ds)`` in one pass.

        The tangent goes through the same batched products as the input (``torch.bmm`` with
        each member's weight, no bias; SiLU's tangent ``(sigma + silu (1 - sigma)) dz``), rows
        ``i B .. (i + 1) B - 1`` through member ``i`` as in :meth:`forward`. Both outputs are
        ordinary differentiable tensors (reverse mode reaches every member's parameters); they
        equal what ``torch.func.jvp(self, primals, tangents)`` returns to rounding
        (``tests/test_seed_stack_fused_jvp.py``). The ``"vmap"`` mode, a subclass that
        overrides ``forward`` or ``_input``, changed stacked parameters or a forward hook fall
        back to ``torch.func.jvp``.

        Arguments:
            primals: ``(x, t, s)``, shapes ``(S B, d)``, ``(S B,)``, ``(S B,)``.
            tangents: ``(dx, dt, ds)`` of the same shapes.

        Returns:
            ``(F(x, t, s), J_x F dx + d_t F dt + d_s F ds)``, both of shape ``(S B, d)``.

        Raises:
            ValueError: for other than three primals and three tangents, or rows that cannot be
                split among the members.
        """
        if len(primals) != 3 or len(tangents) != 3:
            raise ValueError(
                f"fused_jvp takes (x, t, s) and three tangents; got {len(primals)} primals and "
                f"{len(tangents)} tangents"
            )
        x, t, s = primals
        dx, dt, ds = tangents
        n, m = x.shape[0], self.n_members
        if n % m:
            raise ValueError(f"{n} rows cannot be split among {m} members")
        if not self._fusable():
            return cast(tuple[Tensor, Tensor], torch.func.jvp(self, primals, tangents))
        h = self._input(x, t, s).reshape(m, n // m, -1)
        dh = self._input_tangent(t, s, dx, dt, ds).reshape(m, n // m, -1)
        n_layers = len(self.stacked) // 2
        for k in range(n_layers):
            w, b = self.stacked[2 * k], self.stacked[2 * k + 1]
            wt = w.transpose(1, 2)
            z = torch.baddbmm(b[:, None, :], h, wt)
            dz = torch.bmm(dh, wt)
            if k < n_layers - 1:
                h = nn.functional.silu(z)
                sig = torch.sigmoid(z)
                dh = dz * torch.addcmul(sig, h, 1 - sig)
            else:
                h, dh = z, dz
        return h.reshape(n, -1), dh.reshape(n, -1)

    @property
    def flow(self) -> FusedFlow:
        """The flow map ``f_{t->s}(x) = c_skip x + c_out F(x, t, s)`` as a callable that also
        offers ``fused_jvp`` (:class:`FusedFlow`), so the objectives that differentiate the flow
        map take the fused pass too; called as ``model.flow(x, t, s)``."""
        return FusedFlow(self)

    def members(self) -> list[MLPFlowMap]:
        """The trained members as separate :class:`MLPFlowMap` models (copies)."""
        out = []
        for i in range(self.n_members):
            model = self._member()
            state = {
                k: p[i].detach().clone() for k, p in zip(self.names, self.stacked, strict=True)
            }
            state["frequencies"] = self.frequencies.clone()
            model.load_state_dict(state)
            out.append(model.to(self.frequencies.device))
        return out


def _hooked(module: nn.Module) -> bool:
    """Whether a forward hook (global, or on ``module`` or a submodule) could change a call."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


class _OffersFusedJvp(Protocol):
    """A network ``F(x, t, s)`` with boundary coefficients and its own forward-mode pass."""

    parameterisation: Parameterisation

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor: ...

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]: ...


class FusedFlow:
    """The flow map ``f_{t->s}(x) = c_skip x + c_out F(x, t, s)`` of a network that offers
    ``fused_jvp``, with a forward-mode pass of its own.

    ``fused_jvp`` differentiates the coefficients (functions of ``t`` and ``s`` alone) by
    :meth:`~flowmap_oracle.experiments.models.Parameterisation.jvp` and ``F`` by the network's
    ``fused_jvp``.

    Arguments:
        model: the network (its ``parameterisation`` gives ``c_skip`` and ``c_out``).
    """

    def __init__(self, model: _OffersFusedJvp) -> None:
        self.model = model

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Return ``f_{t->s}(x)``, as :meth:`FlowMapModel.flow
        <flowmap_oracle.experiments.models.FlowMapModel.flow>` computes it."""
        tc, sc = t[:, None], s[:, None]
        p = self.model.parameterisation
        return p.c_skip(tc, sc) * x + p.c_out(tc, sc) * self.model(x, t, s)

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """``f_{t->s}(x)`` and its directional derivative along ``(dx, dt, ds)``.

        Arguments:
            primals: ``(x, t, s)``; tangents: ``(dx, dt, ds)`` of the same shapes.

        Returns:
            ``(f, df)``, both of the shape of ``x``.
        """
        F, dF = self.model.fused_jvp(primals, tangents)
        x, t, s = primals
        dx, dt, ds = tangents
        p = self.model.parameterisation
        skip, out, dskip, dout = p.jvp(t[:, None], s[:, None], dt[:, None], ds[:, None])
        return skip * x + out * F, dskip * x + skip * dx + dout * F + out * dF


def routed_fused_jvp(
    wrapper: nn.Module,
    primals: tuple[Tensor, ...],
    tangents: tuple[Tensor, ...],
    *,
    stacked: StackedMLPFlowMap,
    batch: int,
    plain: bool,
) -> tuple[Tensor, Tensor]:
    """The forward-mode pass of a wrapper that routes ``k`` concatenated copies of an
    ``S * B``-row batch per member: the rows of every copy (and their tangents) are regrouped by
    member, pushed through ``stacked.fused_jvp`` and put back in the wrapper's row order, as the
    benchmark's ``SeedBatches.forward`` routes its rows.

    Arguments:
        wrapper: the routing module (``torch.func.jvp`` of it is the fallback).
        primals, tangents: ``(x, t, s)`` and ``(dx, dt, ds)``, ``k S B`` rows each.
        stacked: the ``S`` stacked members the wrapper calls.
        batch: rows per member in one copy (``B``).
        plain: whether the wrapper's ``forward`` is this routing (``False``, e.g. for a
            subclass that overrides it: ``torch.func.jvp`` of the wrapper).

    Returns:
        ``(wrapper(x, t, s), its directional derivative)``, both ``(k S B, d)``.

    Raises:
        ValueError: for other than three primals and three tangents, or rows that are not
            whole copies of the stacked batch.
    """
    if len(primals) != 3 or len(tangents) != 3:
        raise ValueError(
            f"fused_jvp takes (x, t, s) and three tangents; got {len(primals)} primals and "
            f"{len(tangents)} tangents"
        )
    n, m = primals[0].shape[0], stacked.n_members
    if n % (m * batch):
        raise ValueError(
            f"{n} rows are not whole copies of the stacked batch ({m} members x {batch} rows)"
        )
    if not plain or _hooked(wrapper):
        return cast(tuple[Tensor, Tensor], torch.func.jvp(wrapper, primals, tangents))
    k = n // (m * batch)

    def by_member(a: Tensor) -> Tensor:
        return a.reshape(k, m, batch, *a.shape[1:]).transpose(0, 1).reshape(a.shape)

    def back(out: Tensor) -> Tensor:
        return out.reshape(m, k, batch, -1).transpose(0, 1).reshape(n, -1)

    value, tangent = stacked.fused_jvp(
        tuple(by_member(a) for a in primals), tuple(by_member(a) for a in tangents)
    )
    return back(value), back(tangent)
