"""Network mutants: the user's own network with a bug in a hand-written derivative or in how it
reads its times (killed by ``network.jvp`` and ``network.times``, :mod:`..user_network`).

The network is a small ``(x, t, s)`` MLP in the project's convention (float64) with a sinusoidal
time embedding and a normalisation layer, both written as ``torch.autograd.Function`` with
``forward``, ``setup_context``, ``backward`` and ``jvp``, as fused layers are in research code.
Each mutant changes one piece; the correct network passes both checks (``tests/test_mutants.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..user_network import UserNetwork
from ._registry import mutant

FREQS = (1.0, 2.0, 4.0)


def _embedding_tangent(wt: Tensor, freqs: Tensor, t_dot: Tensor) -> Tensor:
    """The tangent of ``[sin(w t), cos(w t)]``: ``[w cos(w t), -w sin(w t)] dt``."""
    return torch.cat([freqs * wt.cos(), -freqs * wt.sin()], dim=1) * t_dot[:, None]


def _embedding(
    tangent: Callable[[Tensor, Tensor, Tensor], Tensor] = _embedding_tangent,
    backward_factor: float = 1.0,
) -> type[torch.autograd.Function]:
    """``[sin(w t), cos(w t)]`` as an ``autograd.Function`` with ``jvp = tangent(w t, w, dt)``
    and its ``backward`` scaled by ``backward_factor`` (1: correct)."""

    class Embedding(torch.autograd.Function):
        @staticmethod
        def forward(t: Tensor, freqs: Tensor) -> Tensor:
            wt = t[:, None] * freqs
            return torch.cat([wt.sin(), wt.cos()], dim=1)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            t, freqs = ctx.saved_tensors
            d = _embedding_tangent(t[:, None] * freqs, freqs, torch.ones_like(t))
            return backward_factor * (grads[0] * d).sum(dim=1), None

        @staticmethod
        def jvp(ctx: Any, *tangents: Any) -> Any:
            t, freqs = ctx.saved_tensors
            return tangent(t[:, None] * freqs, freqs, tangents[0])

    return Embedding


def _norm_tangent(x: Tensor, y: Tensor, sigma: Tensor, dx: Tensor) -> Tensor:
    """The tangent of ``y = (x - mean x) / sigma``: ``(dx - mean dx - y mean(y dx)) / sigma``."""
    return (dx - dx.mean(1, keepdim=True) - y * (y * dx).mean(1, keepdim=True)) / sigma


def _normalisation(
    tangent: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] = _norm_tangent,
) -> type[torch.autograd.Function]:
    """Layer normalisation without affine parameters, with ``jvp = tangent(x, y, sigma, dx)``."""

    class Normalisation(torch.autograd.Function):
        @staticmethod
        def forward(x: Tensor) -> Tensor:
            mean = x.mean(1, keepdim=True)
            sigma = ((x - mean).pow(2).mean(1, keepdim=True) + 1e-5).sqrt()
            return (x - mean) / sigma

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            (x,) = inputs
            sigma = ((x - x.mean(1, keepdim=True)).pow(2).mean(1, keepdim=True) + 1e-5).sqrt()
            ctx.save_for_backward(x, output, sigma)
            ctx.save_for_forward(x, output, sigma)

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            _, y, sigma = ctx.saved_tensors
            g = grads[0]
            return (g - g.mean(1, keepdim=True) - y * (g * y).mean(1, keepdim=True)) / sigma

        @staticmethod
        def jvp(ctx: Any, *tangents: Any) -> Any:
            x, y, sigma = ctx.saved_tensors
            return tangent(x, y, sigma, tangents[0])

    return Normalisation


class Net(nn.Module):
    """``F(x, t, s)``: ``[x, emb(t), emb(s)] -> linear -> norm -> SiLU -> linear``.

    Arguments:
        embedding, normalisation: the ``autograd.Function`` layers.
        read: how the times are read: ``"right"``, ``"t0"`` (the batch's first time for every
            row), ``"drop_s"`` (the end time never reaches the output), ``"column_axis"``
            (a ``(B, 1)`` time is flattened along the wrong axis).
    """

    def __init__(
        self,
        embedding: type[torch.autograd.Function] | None = None,
        normalisation: type[torch.autograd.Function] | None = None,
        read: str = "right",
        dim: int = 2,
        hidden: int = 24,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        n_in = dim + 4 * len(FREQS)
        self.w1 = nn.Parameter(torch.randn(n_in, hidden, generator=g, dtype=torch.float64) / 3)
        self.w2 = nn.Parameter(torch.randn(hidden, dim, generator=g, dtype=torch.float64) / 5)
        self.register_buffer("freqs", torch.tensor(FREQS, dtype=torch.float64))
        self.embedding = embedding or _embedding()
        self.normalisation = normalisation or _normalisation()
        self.read = read

    def _time(self, a: Tensor, n: int) -> Tensor:
        if a.ndim == 0:
            return a.expand(n)
        if self.read == "column_axis" and a.ndim == 2:
            return a.T.reshape(-1).flip(0)  # bug: (B, 1) read along the wrong axis
        return a.reshape(n)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        n = x.shape[0]
        t, s = self._time(t, n), self._time(s, n)
        if self.read == "t0":
            t = t[0].expand(n)  # bug: one time for the whole batch
        if self.read == "drop_s":
            s = torch.zeros_like(s)  # bug: the end time is overwritten
        emb = self.embedding.apply
        h = torch.cat([x, emb(t, self.freqs), emb(s, self.freqs)], dim=1) @ self.w1
        h = nn.functional.silu(self.normalisation.apply(h))
        return h @ self.w2


def _network(net: Net, **kw: Any) -> dict[str, Any]:
    return {"network": UserNetwork(net, **kw)}


@mutant(
    "network.jvp_returns_primal",
    objective="network",
    description=(
        "the time embedding's hand-written jvp returns the primal [sin(w t), cos(w t)] where "
        "its tangent belongs"
    ),
    inherit=False,
)
def jvp_returns_primal() -> dict[str, Any]:
    def primal(wt: Tensor, freqs: Tensor, t_dot: Tensor) -> Tensor:
        return torch.cat([wt.sin(), wt.cos()], dim=1)

    return _network(Net(embedding=_embedding(primal)))


@mutant(
    "network.placeholder_jvp",
    objective="network",
    description="the time embedding's jvp is a placeholder zero ('TODO: derive the tangent')",
    inherit=False,
)
def placeholder_jvp() -> dict[str, Any]:
    def zero(wt: Tensor, freqs: Tensor, t_dot: Tensor) -> Tensor:
        return torch.zeros_like(torch.cat([wt, wt], dim=1))

    return _network(Net(embedding=_embedding(zero)))


@mutant(
    "network.jvp_chain_factor_dropped",
    objective="network",
    description=(
        "the embedding's tangent [cos(w t), -sin(w t)] dt without the chain-rule factor w (right "
        "only for the lowest frequency w = 1)"
    ),
    inherit=False,
)
def jvp_chain_factor_dropped() -> dict[str, Any]:
    def no_factor(wt: Tensor, freqs: Tensor, t_dot: Tensor) -> Tensor:
        return torch.cat([wt.cos(), -wt.sin()], dim=1) * t_dot[:, None]

    return _network(Net(embedding=_embedding(no_factor)))


@mutant(
    "network.jvp_cos_sign",
    objective="network",
    description="the embedding's tangent of cos(w t) written +w sin(w t) dt (sign error)",
    inherit=False,
)
def jvp_cos_sign() -> dict[str, Any]:
    def plus(wt: Tensor, freqs: Tensor, t_dot: Tensor) -> Tensor:
        return torch.cat([freqs * wt.cos(), freqs * wt.sin()], dim=1) * t_dot[:, None]

    return _network(Net(embedding=_embedding(plus)))


@mutant(
    "network.norm_tangent_without_variance_term",
    objective="network",
    description=(
        "the normalisation layer's hand-derived tangent (dx - mean dx) / sigma treats sigma as "
        "a constant: the -y mean(y dx) term of the variance's tangent is missing"
    ),
    inherit=False,
)
def norm_tangent_without_variance_term() -> dict[str, Any]:
    def no_variance(x: Tensor, y: Tensor, sigma: Tensor, dx: Tensor) -> Tensor:
        return (dx - dx.mean(1, keepdim=True)) / sigma

    return _network(Net(normalisation=_normalisation(no_variance)))


@mutant(
    "network.backward_half_scaled",
    objective="network",
    description=(
        "the embedding's hand-written backward is half the true one; the losses take "
        "torch.autograd.functional.jvp (double backward), which runs through it"
    ),
    inherit=False,
)
def backward_half_scaled() -> dict[str, Any]:
    net = Net(embedding=_embedding(backward_factor=0.5))
    return _network(net, jvp_apis=("torch.autograd.functional.jvp",))


@mutant(
    "network.time_read_as_t0",
    objective="network",
    description="the network reads the batch's first time t[0] for every row",
    inherit=False,
)
def time_read_as_t0() -> dict[str, Any]:
    return _network(Net(read="t0"))


@mutant(
    "network.end_time_dropped",
    objective="network",
    description="the end time s is overwritten inside the network: it computes F(x, t, 0)",
    inherit=False,
)
def end_time_dropped() -> dict[str, Any]:
    return _network(Net(read="drop_s"))


@mutant(
    "network.column_time_wrong_axis",
    objective="network",
    description=(
        "times passed as (B, 1) columns (the sampler's shape) are flattened along the wrong "
        "axis, so rows get other rows' times; (B,) times are read right"
    ),
    inherit=False,
)
def column_time_wrong_axis() -> dict[str, Any]:
    return _network(Net(read="column_axis"), time_shapes=("vector", "column"))
