"""ReFlow (Liu et al. 2023, rectified flow): new noise-data couplings, then flow matching.

Loss type (a), forward (it is flow matching on a new coupling). The teacher's exact one-step map
``T = Phi_{1->0}`` pairs each noise sample with its image, and the student is trained by flow
matching on the straight interpolation of these pairs::

    x1 ~ N(0, I),   x0^ = T(x1)                     (deterministic coupling from the teacher)
    x_t = (1 - t) x0^ + t x1
    L   = E [ w(t) || F_theta(x_t, t, t) - (x1 - x0^) ||^2 ]

The fixed point is *not* the teacher's flow map but the rectified flow of the coupling: its
velocity ``v'(x, t) = E[x1 - x0^ | x_t = x]``. Where the straight segments do not cross (the
interpolation ``psi_t(y) = (1 - t) T(y) + t y`` is injective) the conditional expectation is
deterministic, ``v'(psi_t(y), t) = y - T(y)``, the ReFlow residual vanishes pointwise, and the
rectified flow reaches ``T(x1)`` from ``x1`` in one Euler step: its one-step map is the teacher's.
:func:`rectified_velocity` evaluates ``v'`` by Newton inversion of ``psi_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..conventions import LINEAR, conditional_velocity
from ..reference_models.paths import ProbabilityPath
from ._common import LossOutput, col
from .flow_matching import flow_matching_loss

__all__ = ["RectifiedVelocity", "rectified_velocity", "reflow_couplings", "reflow_loss"]

OneStepMap = Callable[[Tensor], Tensor]


def reflow_couplings(flow_map: Callable[[Tensor, Tensor, Tensor], Tensor], x1: Tensor) -> Tensor:
    """The teacher's images ``x0^ = Phi_{1->0}(x1)`` of noise samples ``x1`` (detached).

    Arguments:
        flow_map: the teacher's flow map ``flow_map(x, t, s)`` (e.g. an ``ExactFlowMap``).
        x1: noise samples, shape ``(N, d)``.
    """
    n = x1.shape[0]
    ones, zeros = torch.ones(n, dtype=x1.dtype), torch.zeros(n, dtype=x1.dtype)
    with torch.no_grad():
        return flow_map(x1.detach(), ones, zeros).detach()


def reflow_loss(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    x0_hat: Tensor,
    x1: Tensor,
    t: Tensor,
    *,
    path: ProbabilityPath = LINEAR,
    weight: Tensor | None = None,
) -> LossOutput:
    """Flow matching on the ReFlow coupling ``(x0^, x1)``.

    Arguments:
        model: ``F(x, t, s)``; its diagonal ``F(x, t, t)`` is trained.
        x0_hat: the teacher's images of ``x1`` (:func:`reflow_couplings`), shape ``(N, d)``.
        x1: the noise samples they were made from, shape ``(N, d)``.
        t: times in ``[0, 1]``, shape ``(N,)``.
        path: the path that connects each coupled pair (default linear: straight segments, as in
            rectified flow).
        weight: optional per-sample weight ``w(t)``.
    """
    return flow_matching_loss(
        model, x0_hat, x1, t, velocity="conditional", path=path, weight=weight
    )


@dataclass(frozen=True)
class RectifiedVelocity:
    """Result of :func:`rectified_velocity`.

    Attributes:
        velocity: ``v'(x, t) = alpha'(t) T(y) + beta'(t) y`` (``y - T(y)`` on the linear
            path), shape ``(N, d)``.
        noise: the preimage ``y`` with ``psi_t(y) = x``.
        inversion_error: ``max_i ||psi_t(y_i) - x_i||`` after the last Newton step.
        iterations: Newton iterations used.
    """

    velocity: Tensor
    noise: Tensor
    inversion_error: float
    iterations: int


def rectified_velocity(
    one_step_map: OneStepMap,
    x: Tensor,
    t: Tensor,
    *,
    initial_noise: Tensor,
    path: ProbabilityPath = LINEAR,
    tol: float = 1e-11,
    max_iterations: int = 20,
    fd_step: float = 1e-5,
) -> RectifiedVelocity:
    """The rectified flow's velocity at ``(x, t)`` for the coupling ``(T(y), y)``.

    Solves ``psi_t(y) = alpha(t) T(y) + beta(t) y = x`` (``(1 - t) T(y) + t y`` on the linear
    path) by Newton's method with the Jacobian ``alpha(t) DT + beta(t) I`` from central
    differences (all ``2d + 1`` evaluations of ``T`` batched in one call), then returns
    ``v' = alpha'(t) T(y) + beta'(t) y`` (``y - T(y)`` on the linear path).

    Arguments:
        one_step_map: ``T(y)``, acting per sample.
        x: points, shape ``(N, d)``; t: times in ``[0, 1]``, shape ``(N,)``.
        initial_noise: the Newton starting point (for instance ``Phi_{t->1}(x)``, exact at
            ``t = 0`` and ``t = 1``).
        tol: stop when ``max ||psi_t(y) - x|| < tol``.
        max_iterations: give up (``RuntimeError``) after this many steps.
        path: the path of the coupling (default linear).
        fd_step: the central-difference step for ``DT``.
    """
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    y = initial_noise.detach().clone()
    c = path.schedule(t)
    a, b = col(c.alpha), col(c.beta)
    for it in range(1, max_iterations + 1):
        probes = torch.cat([y] + [y + fd_step * e for e in eye] + [y - fd_step * e for e in eye])
        images = one_step_map(probes).detach()
        ty = images[:n]
        plus = images[n : (d + 1) * n].reshape(d, n, d)
        minus = images[(d + 1) * n :].reshape(d, n, d)
        jac_t = ((plus - minus) / (2 * fd_step)).permute(1, 2, 0)  # (N, out, in)
        gap = a * ty + b * y - x
        err = float(gap.norm(dim=1).max())
        if err < tol:
            velocity = conditional_velocity(path, ty, y, t)
            return RectifiedVelocity(velocity, y, err, it - 1)
        jac = c.alpha[:, None, None] * jac_t + c.beta[:, None, None] * eye
        y = y - torch.linalg.solve(jac, gap[..., None])[..., 0]
    raise RuntimeError(
        f"Newton inversion of the ReFlow interpolation did not reach {tol} in "
        f"{max_iterations} iterations (last error {err:.3g}); the segments may cross"
    )
