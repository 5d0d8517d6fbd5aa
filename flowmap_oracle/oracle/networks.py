"""The networks the oracle hands to an implementation: random MLPs and the exact teacher map.

* :class:`RandomNetwork`: a small MLP ``F(x, t, s)`` with fixed random weights, nonlinear in every
  argument (so ``J_x F``, ``d_t F`` and ``d_s F`` are all non-zero and distinct). It exists as a
  torch function of a parameter dict and as its JAX twin with the same weights, so gradients with
  respect to the parameters can be compared across frameworks.
* :class:`~flowmap_oracle.reference_models.ExactAverageVelocity`: the teacher's exact average
  velocity ``F*(x, t, s)`` as a torch function that supports ``torch.func.jvp`` and reverse mode.
  It lives in :mod:`flowmap_oracle.reference_models.exact_network` (the experiments wrap the same
  class as a model) and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["RandomModule", "RandomNetwork"]


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

    def module(self) -> RandomModule:
        """The network as an ``nn.Module`` whose parameters are fresh copies of the weights (the
        reference objectives freeze modules for ``sg(theta)``, as CTM's ``sg(f_{s->0})``)."""
        return RandomModule(self)

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


class RandomModule(torch.nn.Module):
    """A :class:`RandomNetwork` as an ``nn.Module`` with its weights in ``params``."""

    params: torch.nn.ParameterDict

    def __init__(self, net: RandomNetwork) -> None:
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.clone()) for k, v in net.weights.items()}
        )

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return RandomNetwork.apply(dict(self.params), x, t, s)
