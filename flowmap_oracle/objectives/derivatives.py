"""Directional derivatives of flow-map networks: forward-mode JVP or central differences.

The objectives need derivatives of ``F(x, t, s)`` (or of ``f_{t->s}``) along one direction in
``(x, t, s)``:

* the total derivative along the ODE, ``D_t F = J_x F v + d_t F``: tangents ``(v, 1, 0)`` for the
  argument order ``F(x, t, s)`` (MATH.md 1a: the MeanFlow code's ``(v, 0, 1)`` belongs to the
  order ``fn(z, r, t)``);
* the endpoint derivative ``d_s F``: tangents ``(0, 0, 1)`` (AYF-LMD).

Two routes give the same number: :func:`torch.func.jvp` (one forward-mode pass, exact up to
rounding) and a central difference ``(G(p + h u) - G(p - h u)) / 2h`` (error ``O(h^2)`` plus
rounding / ``h``), which also works for models that forward-mode AD cannot see through, such as
the exact teacher map behind an adaptive ODE solver.

A network may offer its own forward-mode pass: a ``fused_jvp(primals, tangents)`` method
(:class:`FusedJvp`) that returns what ``torch.func.jvp(net, primals, tangents)`` returns, computed
in the same pass as the output. The ``"jvp"`` route uses it whenever the function handed to it has
one, and ``torch.func.jvp`` otherwise. On a small MLP the cost of ``torch.func.jvp`` is mostly
per-operation overhead, not arithmetic (``experiments/objectives_throughput.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Derivative",
    "FiniteDifference",
    "FusedJvp",
    "directional_derivative",
    "s_derivative",
    "total_derivative",
]


@dataclass(frozen=True)
class FiniteDifference:
    """Central differences with step ``step``.

    The function must act on each sample independently (true of every model here): the three
    evaluations ``p``, ``p + h u``, ``p - h u`` are batched into one call of ``3N`` samples.
    The error is ``h^2 |G'''| / 6`` plus rounding and solver noise over ``h``. For the exact ODE
    teacher the batched points are solved together, so most solver error cancels in the
    difference: on the ring teacher the MeanFlow residual of the exact map measured 1.9e-7,
    1.7e-8, 1.9e-9, 1.7e-10 for h = 1e-4, 3e-5, 1e-5, 3e-6 (pure ``h^2``).
    """

    step: float = 1e-4

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError(f"finite-difference step must be positive, got {self.step}")


@runtime_checkable
class FusedJvp(Protocol):
    """A network that computes its forward-mode derivative in the pass that computes its output.

    ``fused_jvp(primals, tangents)`` must return what ``torch.func.jvp(self, primals, tangents)``
    returns -- ``(self(*primals), derivative)`` -- with both outputs differentiable in reverse
    mode (in the inputs and the parameters) and composable with ``torch.func`` transforms.
    :func:`directional_derivative` uses it in place of ``torch.func.jvp`` whenever the function
    it is given offers it.
    """

    def fused_jvp(
        self, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """Return ``(self(*primals), d/de self(*(primals + e * tangents)) at e = 0)``."""
        ...


Derivative = Literal["jvp"] | FiniteDifference
"""How an objective differentiates the network: ``"jvp"`` or a :class:`FiniteDifference`."""


def directional_derivative(
    fn: Callable[..., Tensor],
    primals: tuple[Tensor, ...],
    tangents: tuple[Tensor, ...],
    *,
    derivative: Derivative = "jvp",
) -> tuple[Tensor, Tensor]:
    """Return ``fn(*primals)`` and ``d/de fn(*(primals + e * tangents))`` at ``e = 0``.

    Arguments:
        fn: a function of tensors whose first dimension is the batch.
        primals, tangents: matching tuples of tensors.
        derivative: ``"jvp"`` (forward mode: ``fn.fused_jvp`` when ``fn`` is a
            :class:`FusedJvp`, else ``torch.func.jvp``) or :class:`FiniteDifference`.

    Returns:
        ``(value, derivative)``; ``value`` keeps its autograd graph (the derivative is not
        detached here: the objectives detach their targets).
    """
    if len(primals) != len(tangents):
        raise ValueError(f"{len(primals)} primals but {len(tangents)} tangents")
    if isinstance(derivative, str):
        if derivative != "jvp":
            raise ValueError(f"derivative must be 'jvp' or a FiniteDifference, got {derivative!r}")
        if isinstance(fn, FusedJvp):
            return fn.fused_jvp(primals, tangents)
        # torch types jvp's result as a 2- or 3-tuple (3 only with has_aux=True); without
        # has_aux it is (fn(*primals), jvp_out).
        return cast(tuple[Tensor, Tensor], torch.func.jvp(fn, primals, tangents))
    if not isinstance(derivative, FiniteDifference):
        raise TypeError(f"derivative must be 'jvp' or a FiniteDifference, got {derivative!r}")
    h = derivative.step
    n = primals[0].shape[0]
    stacked = [torch.cat([p, p + h * u, p - h * u]) for p, u in zip(primals, tangents, strict=True)]
    out = fn(*stacked)
    value, plus, minus = out[:n], out[n : 2 * n], out[2 * n :]
    return value, (plus - minus) / (2 * h)


def total_derivative(
    F: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    t: Tensor,
    s: Tensor,
    v: Tensor,
    *,
    derivative: Derivative = "jvp",
) -> tuple[Tensor, Tensor]:
    """``F(x, t, s)`` and its total derivative along the ODE ``D_t F = J_x F v + d_t F``.

    ``s`` is held fixed (tangents ``(v, 1, 0)`` for the argument order ``F(x, t, s)``).
    """
    return directional_derivative(
        F, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)), derivative=derivative
    )


def s_derivative(
    G: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    derivative: Derivative = "jvp",
) -> tuple[Tensor, Tensor]:
    """``G(x, t, s)`` and its partial derivative in the endpoint time, ``d_s G``."""
    return directional_derivative(
        G,
        (x, t, s),
        (torch.zeros_like(x), torch.zeros_like(t), torch.ones_like(s)),
        derivative=derivative,
    )
