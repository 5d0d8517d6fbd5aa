"""Inductive Moment Matching (IMM; Zhou et al. 2025).

Loss type (c), self-consistency (in distribution). For ``s <= r <= t`` the laws of
``f_{t->s}(x_t)`` and ``f_{r->s}(x_r)`` must agree, where ``x_t`` and ``x_r`` lie on the
conditional path of the *same* pair ``(x0, x1)``::

    x_t = (1 - t) x0 + t x1,      x_r = (1 - r) x0 + r x1
    a_i = f_theta(x_t^i, t, s),   b_i = sg(f_theta-(x_r^i, r, s))
    L   = E_{t, r, s} [ w(t, s) MMD^2_k({a_i}, {b_i}) ]

MMD is estimated in groups of ``M`` particles sharing one ``(t, r, s)``, with the unbiased
U-statistic over pairs ``i != j`` (the pairs ``(a_i, b_i)`` are coupled, so the cross term also
excludes ``i = j``)::

    MMD^2_u = 1/(M (M-1)) sum_{i != j} [k(a_i, a_j) + k(b_i, b_j) - k(a_i, b_j) - k(a_j, b_i)]

and a characteristic kernel ``k``: Laplace ``exp(-||x - y|| / l)`` (IMM's choice) or Gaussian
``exp(-||x - y||^2 / (2 l^2))``.

Fixed point, *statistical*: at the exact map both laws are the teacher's marginal ``p_s``, so the
population MMD^2 is zero while each particle's gap ``a_i - b_i`` is not (MATH.md 4.4, about 0.3);
the finite-sample estimate is zero only in mean. The objective does not see which flow carries
``p_r`` to ``p_s``: any marginal-preserving family (the Cholesky family of MATH.md 3) is a fixed
point too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..conventions import LINEAR, interpolant
from ..reference_models.paths import ProbabilityPath
from ._common import (
    LossOutput,
    check_order,
    check_points,
    check_times,
    flow_of,
)

__all__ = ["imm_loss", "kernel_matrix", "mmd2_unbiased"]

Kernel = Literal["laplace", "gaussian"]


def kernel_matrix(a: Tensor, b: Tensor, *, kernel: Kernel, bandwidth: float) -> Tensor:
    """``k(a_i, b_j)`` for batched point sets ``a``, ``b`` of shape ``(G, M, d)``; ``(G, M, M)``."""
    if not bandwidth > 0:
        raise ValueError(f"kernel bandwidth must be positive, got {bandwidth}")
    sq = (a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(-1)
    if kernel == "laplace":
        # sqrt has an infinite derivative at 0; the clamp keeps gradients finite on the
        # diagonal, which the U-statistic excludes anyway.
        return torch.exp(-sq.clamp_min(1e-30).sqrt() / bandwidth)
    if kernel == "gaussian":
        return torch.exp(-sq / (2 * bandwidth**2))
    raise ValueError(f"kernel must be 'laplace' or 'gaussian', got {kernel!r}")


def mmd2_unbiased(a: Tensor, b: Tensor, *, kernel: Kernel, bandwidth: float) -> Tensor:
    """The unbiased U-statistic ``MMD^2_u`` per group for coupled samples; ``(G,)``.

    Arguments:
        a, b: shape ``(G, M, d)``, ``M >= 2``; ``(a[g, i], b[g, i])`` is one coupled pair.
    """
    m = a.shape[1]
    if m < 2:
        raise ValueError(f"MMD needs at least 2 particles per group, got {m}")
    kaa = kernel_matrix(a, a, kernel=kernel, bandwidth=bandwidth)
    kbb = kernel_matrix(b, b, kernel=kernel, bandwidth=bandwidth)
    kab = kernel_matrix(a, b, kernel=kernel, bandwidth=bandwidth)
    h = kaa + kbb - kab - kab.transpose(1, 2)
    off = 1 - torch.eye(m, dtype=a.dtype, device=a.device)
    return (h * off).sum(dim=(1, 2)) / (m * (m - 1))


def imm_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    r: Tensor,
    s: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    group_size: int,
    kernel: Kernel = "laplace",
    bandwidth: float = 1.0,
    weight: Tensor | None = None,
) -> LossOutput:
    """The IMM loss over groups of ``group_size`` consecutive samples.

    Arguments:
        model: a flow-map model or an average velocity ``F``.
        x0, x1: data and noise samples, shape ``(N, d)`` with ``N`` a multiple of ``group_size``.
        t, r, s: times in ``[0, 1]`` with ``s <= r <= t``, shape ``(N,)``, constant within each
            group (see :func:`~flowmap_oracle.objectives.time_sampling.imm_times`).
        group_size: particles per group ``M >= 2``.
        kernel, bandwidth: the characteristic kernel and its length scale ``l``.
        weight: optional per-group weight ``w(t, s)``, shape ``(N / M,)``.
        path: the probability path of ``x_t`` and of the conditional velocity (default the
            linear path; pass the teacher's ``teacher.path``).

    Returns:
        :class:`LossOutput`; ``residual`` is the per-particle gap ``a_i - b_i`` (not zero at the
        exact map), ``target`` the ``b_i``, ``per_sample`` the per-group ``MMD^2_u``, shape
        ``(N / M,)``.
    """
    n, d, dtype = check_points(x0=x0, x1=x1)
    check_times(n, dtype, t=t, r=r, s=s)
    check_order("t >= r >= s", t, r, s)
    if group_size < 2 or n % group_size:
        raise ValueError(f"batch size {n} must be a positive multiple of group_size >= 2")
    g = n // group_size
    for name, tau in (("t", t), ("r", r), ("s", s)):
        grouped = tau.reshape(g, group_size)
        if (grouped != grouped[:, :1]).any():
            raise ValueError(f"{name} must be constant within each group of {group_size}")
    flow = flow_of(model)
    x_t, x_r = interpolant(path, x0, x1, t), interpolant(path, x0, x1, r)
    both = flow(torch.cat([x_t, x_r]), torch.cat([t, r]), torch.cat([s, s]))
    a, b = both[:n], both[n:].detach()
    mmd2 = mmd2_unbiased(
        a.reshape(g, group_size, d),
        b.reshape(g, group_size, d),
        kernel=kernel,
        bandwidth=bandwidth,
    )
    if weight is None:
        loss = mmd2.mean()
    else:
        if weight.shape != (g,):
            raise ValueError(
                f"weight must have shape ({g},) (one per group), got {tuple(weight.shape)}"
            )
        loss = (weight.detach() * mmd2).mean()
    return LossOutput(loss=loss, residual=(a - b).detach(), target=b, per_sample=mmd2.detach())
