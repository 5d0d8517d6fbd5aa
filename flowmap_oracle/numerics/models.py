"""Flow-map models ``f_{t->s}(x) = c_skip(t, s) x + c_out(t, s) F(x, t, s)``.

Every model takes points ``x`` of shape ``(N, d)`` and times ``t``, ``s`` of shape ``(N,)`` in the
project's convention (data at 0, noise at 1, ``s < t`` generative). ``forward`` returns the network
output F (for the MeanFlow/AYF parameterisation, the average velocity); :meth:`FlowMapModel.flow`
returns the flow map itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..reference_models import ExactFlowMap

__all__ = [
    "FACM",
    "MEANFLOW",
    "FlowMapModel",
    "MLPFlowMap",
    "Parameterisation",
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
    """

    name: str
    skip: object
    out: object
    valid_for: str = "all (t, s)"

    def c_skip(self, t: Tensor, s: Tensor) -> Tensor:
        return self.skip(t, s)

    def c_out(self, t: Tensor, s: Tensor) -> Tensor:
        return self.out(t, s)


MEANFLOW = Parameterisation(
    name="meanflow",
    skip=lambda t, s: torch.ones_like(t),
    out=lambda t, s: s - t,
)
"""MeanFlow / AYF: ``c_skip = 1``, ``c_out = s - t``; F is the average velocity."""

FACM = Parameterisation(
    name="facm",
    skip=lambda t, s: torch.ones_like(t),
    out=lambda t, s: -t,
    valid_for="s = 0 only (c_out(t, t) = -t is not 0 for t > 0)",
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


class TeacherFlowMap(FlowMapModel):
    """The exact teacher flow map behind the model interface (no parameters).

    ``forward`` returns the exact average velocity ``F*(x, t, s)``, so that ``flow`` is
    ``Phi_{t->s}``. It is not differentiable in ``t`` or ``s`` by autograd; use finite
    differences or the teacher's closed forms for derivatives.
    """

    def __init__(self, flow_map: ExactFlowMap) -> None:
        super().__init__()
        self.flow_map = flow_map

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.flow_map.average_velocity(x, t, s)
