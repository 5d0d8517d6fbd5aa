"""Samplers of a flow-map model: one step, k steps by composition, the DDIM-like traversal through
``x0``, CTM's gamma-sampling, and Euler steps of the instantaneous velocity.

All samplers start from noise ``x1`` (``(N, d)``, time 1) and return points at time 0 in the
project's convention (data at 0). ``model`` is a flow-map model (its ``flow`` gives
``f_{t->s}``) or an average velocity ``F`` in the MeanFlow/AYF parameterisation. ``times`` is a
strictly decreasing sequence in ``[0, 1]`` from 1 to 0, e.g. ``(1.0, 0.5, 0.0)``.

* :func:`one_step`: ``f_{1->0}(x1)``.
* :func:`multi_step`: the composition ``f_{t_{k-1}->t_k} o ... o f_{t_0->t_1}``.
* :func:`ddim_sampler`: the seed's DDIM-like traversal: at each time jump to data,
  ``x0^ = f_{tau_i->0}(x)``, then return to the next time, either with the noise-ward flow map
  ``f_{0->tau_{i+1}}(x0^)`` (the seed's flow-map form; exact for an exact map) or along the
  conditional path with the implied noise ``x1^ = (x - (1 - tau_i) x0^) / tau_i`` (DDIM's own
  form: ``x = (1 - tau_{i+1}) x0^ + tau_{i+1} x1^``, not on the ODE trajectory for curved flows).
* :func:`gamma_sampler`: CTM's gamma-sampling on the linear path. With the noise-to-signal
  ratio ``sigma(u) = u / (1 - u)``, each step jumps to ``s~`` with
  ``sigma(s~) = sqrt(1 - gamma^2) sigma(s)`` and re-noises:
  ``x_s = (1 - s) (x_s~ / (1 - s~) + gamma sigma(s) z)``. ``gamma = 0`` is the deterministic
  composition, ``gamma = 1`` the consistency models' multistep sampler (jump to data, re-noise).
  For an exact map every ``gamma`` gives exact samples of the data (in law).
* :func:`euler_sampler`: Euler steps of ``F(x, t, t)`` (flow matching, ReFlow).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from ..objectives._common import check_points, flow_of

__all__ = ["ddim_sampler", "euler_sampler", "gamma_sampler", "multi_step", "one_step"]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def _times(times: Sequence[float]) -> list[float]:
    ts = [float(t) for t in times]
    if len(ts) < 2:
        raise ValueError(f"times needs at least two entries (start and end), got {ts}")
    if ts[0] != 1.0 or ts[-1] != 0.0:
        raise ValueError(f"times must run from 1 to 0, got {ts}")
    if any(not a > b for a, b in itertools.pairwise(ts)):
        raise ValueError(f"times must be strictly decreasing, got {ts}")
    return ts


def _full(x: Tensor, value: float) -> Tensor:
    return torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)


@torch.no_grad()
def one_step(model: Model, x1: Tensor) -> Tensor:
    """One generative step ``f_{1->0}(x1)``."""
    check_points(x1=x1)
    return flow_of(model)(x1, _full(x1, 1.0), _full(x1, 0.0))


@torch.no_grad()
def multi_step(model: Model, x1: Tensor, times: Sequence[float]) -> Tensor:
    """``k = len(times) - 1`` steps by composition of ``f_{t_i -> t_{i+1}}``."""
    check_points(x1=x1)
    ts, flow, x = _times(times), flow_of(model), x1
    for a, b in itertools.pairwise(ts):
        x = flow(x, _full(x, a), _full(x, b))
    return x


@torch.no_grad()
def ddim_sampler(
    model: Model,
    x1: Tensor,
    times: Sequence[float],
    *,
    renoise: Literal["flow_map", "conditional"] = "flow_map",
) -> Tensor:
    """The DDIM-like traversal through ``x0`` (see the module docstring)."""
    check_points(x1=x1)
    if renoise not in ("flow_map", "conditional"):
        raise ValueError(f"renoise must be 'flow_map' or 'conditional', got {renoise!r}")
    ts, flow, x = _times(times), flow_of(model), x1
    for a, b in itertools.pairwise(ts):
        x0_hat = flow(x, _full(x, a), _full(x, 0.0))
        if b == 0.0:
            return x0_hat
        if renoise == "flow_map":
            x = flow(x0_hat, _full(x, 0.0), _full(x, b))
        else:
            x1_hat = (x - (1 - a) * x0_hat) / a
            x = (1 - b) * x0_hat + b * x1_hat
    return x


@torch.no_grad()
def gamma_sampler(
    model: Model,
    x1: Tensor,
    times: Sequence[float],
    *,
    gamma: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CTM's gamma-sampling (see the module docstring); ``gamma`` in ``[0, 1]``."""
    check_points(x1=x1)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    ts, flow, x = _times(times), flow_of(model), x1
    for a, b in itertools.pairwise(ts):
        if b == 0.0 or gamma == 0.0:
            x = flow(x, _full(x, a), _full(x, b))
            continue
        sigma = b / (1 - b)
        sigma_tilde = math.sqrt(1 - gamma**2) * sigma
        s_tilde = sigma_tilde / (1 + sigma_tilde)
        x_tilde = flow(x, _full(x, a), _full(x, s_tilde))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = (1 - b) * (x_tilde / (1 - s_tilde) + gamma * sigma * z)
    return x


@torch.no_grad()
def euler_sampler(model: Model, x1: Tensor, n_steps: int) -> Tensor:
    """``n_steps`` Euler steps ``x <- x - h F(x, t, t)`` from ``t = 1`` to ``0``."""
    check_points(x1=x1)
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    h, x = 1.0 / n_steps, x1
    for k in range(n_steps):
        t = _full(x, 1.0 - k * h)
        x = x - h * model(x, t, t)
    return x
