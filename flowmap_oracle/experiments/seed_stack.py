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
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .models import MEANFLOW, FlowMapModel, MLPFlowMap, Parameterisation

__all__ = ["StackMode", "StackedMLPFlowMap"]

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
