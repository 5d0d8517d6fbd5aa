"""Time samplers of the objectives, separate from the losses (which take explicit times).

Every sampler returns ``(N,)`` tensors in ``[0, 1]`` with data at 0 and noise at 1, and the
generative order ``s <= r <= t``. Each draws from a ``torch.Generator`` for reproducibility.

* :func:`pair_times`: MeanFlow/AYF ``(t, s)``: two draws (uniform or logit-normal, MeanFlow's
  ``lognorm(-0.4, 1.0)``) sorted, with a fraction set to ``s = t`` (flow matching).
* :func:`split_times`: SplitMeanFlow ``(t, r, s)`` with ``r = (1 - lambda) t + lambda s``.
* :func:`consistency_times`: discrete CM ``t = k / K``, ``k = 1..K``, ``Dt = 1 / K``.
* :func:`shortcut_times`: Shortcut's dyadic step sizes ``t - s = 2^-k`` on the step's grid.
* :func:`ctm_times`: CTM's ``s <= r <= t`` with ``r`` uniform in ``[s, t]``.
* :func:`imm_times`: IMM's ``(t, r, s)`` shared by groups of particles, with
  ``r = t - (t - s) * gap`` for a relative gap ``gap``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "consistency_times",
    "ctm_times",
    "imm_times",
    "pair_times",
    "shortcut_times",
    "split_times",
]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _draw(
    n: int,
    *,
    distribution: Literal["uniform", "logit_normal"],
    mean: float,
    std: float,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> Tensor:
    if distribution == "uniform":
        return torch.rand(n, generator=generator, dtype=dtype)
    if distribution == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator, dtype=dtype))
    raise ValueError(f"distribution must be 'uniform' or 'logit_normal', got {distribution!r}")


def pair_times(
    n: int,
    *,
    equal_fraction: float = 0.75,
    distribution: Literal["uniform", "logit_normal"] = "logit_normal",
    mean: float = -0.4,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """MeanFlow's ``(t, s)``: two draws sorted into ``s <= t``; ``s = t`` for ``equal_fraction``.

    MeanFlow's defaults: logit-normal with mean -0.4 and std 1.0, and 75% of the batch on the
    diagonal ``s = t`` (its "ratio of r != t" of 25%).
    """
    _check_fraction("equal_fraction", equal_fraction)
    u = torch.stack(
        [
            _draw(
                n, distribution=distribution, mean=mean, std=std, generator=generator, dtype=dtype
            )
            for _ in range(2)
        ],
        dim=1,
    )
    t, s = u.max(dim=1).values, u.min(dim=1).values
    diag = torch.rand(n, generator=generator, dtype=dtype) < equal_fraction
    return t, torch.where(diag, t, s)


def split_times(
    n: int,
    *,
    boundary_fraction: float = 0.25,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """SplitMeanFlow's ``(t, r, s)``: ``s <= t`` uniform, ``r = (1 - lambda) t + lambda s`` with
    ``lambda ~ U(0, 1)``; a ``boundary_fraction`` of samples has ``s = r = t``."""
    _check_fraction("boundary_fraction", boundary_fraction)
    u = torch.rand(n, 2, generator=generator, dtype=dtype)
    t, s = u.max(dim=1).values, u.min(dim=1).values
    lam = torch.rand(n, generator=generator, dtype=dtype)
    r = (1 - lam) * t + lam * s
    r = torch.minimum(torch.maximum(r, s), t)  # rounding can leave r a hair outside [s, t]
    boundary = torch.rand(n, generator=generator, dtype=dtype) < boundary_fraction
    return t, torch.where(boundary, t, r), torch.where(boundary, t, s)


def consistency_times(
    n: int,
    *,
    n_steps: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Discrete CM times ``t = k / K`` (``k`` uniform in ``1..K``) and ``Dt = 1 / K``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    k = torch.randint(1, n_steps + 1, (n,), generator=generator)
    t = k.to(dtype) / n_steps
    return t, torch.full((n,), 1.0 / n_steps, dtype=dtype)


def shortcut_times(
    n: int,
    *,
    max_log2_steps: int = 7,
    fm_fraction: float = 0.75,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Shortcut's ``(t, s)``: step ``t - s = 2^-k`` with ``k`` uniform in ``0..K-1`` and ``t``
    uniform on the grid of that step (``t in {2^-k, 2 * 2^-k, ..., 1}``); ``s = t`` for
    ``fm_fraction`` of the batch (Shortcut trains 3/4 of it on flow matching)."""
    _check_fraction("fm_fraction", fm_fraction)
    if max_log2_steps < 1:
        raise ValueError(f"max_log2_steps must be at least 1, got {max_log2_steps}")
    k = torch.randint(0, max_log2_steps, (n,), generator=generator)
    step = 2.0 ** (-k.to(dtype))
    n_grid = (1 / step).round().long()
    j = (torch.rand(n, generator=generator, dtype=dtype) * n_grid).floor().long() + 1
    t = (j.to(dtype) * step).clamp(max=1.0)
    s = (t - step).clamp(min=0.0)
    fm = torch.rand(n, generator=generator, dtype=dtype) < fm_fraction
    return t, torch.where(fm, t, s)


def ctm_times(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """CTM's ``(t, r, s)``: ``s <= t`` uniform, ``r`` uniform in ``[s, t]``."""
    u = torch.rand(n, 2, generator=generator, dtype=dtype)
    t, s = u.max(dim=1).values, u.min(dim=1).values
    r = s + (t - s) * torch.rand(n, generator=generator, dtype=dtype)
    return t, torch.minimum(torch.maximum(r, s), t), s


def imm_times(
    n_groups: int,
    group_size: int,
    *,
    gap: float = 0.25,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """IMM's ``(t, r, s)``, one draw per group repeated ``group_size`` times.

    ``s <= t`` uniform and ``r = t - gap (t - s)``: IMM takes ``r`` a fixed step below ``t``
    (its ``r(s, t)`` schedule); a relative gap keeps ``s <= r <= t``.
    """
    if not 0.0 < gap <= 1.0:
        raise ValueError(f"gap must lie in (0, 1], got {gap}")
    u = torch.rand(n_groups, 2, generator=generator, dtype=dtype)
    t, s = u.max(dim=1).values, u.min(dim=1).values
    r = torch.maximum(t - gap * (t - s), s)
    rep = lambda a: a.repeat_interleave(group_size)  # noqa: E731
    return rep(t), rep(r), rep(s)
