"""How accurate the analytic teachers' exact flow maps are, measured.

* :func:`measure_flow_map_errors`: the default flow map (rtol = atol = 1e-12) against independent
  computations (closed form, a second solver, a tighter tolerance, the MeanFlow identity, JAX);
* :func:`exact_trajectories`: exact trajectories of a preset teacher (for figures).

The report's teachers section lays these results out; it computes none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..reference_models import (
    PRESETS,
    ExactFlowMap,
    GaussianMixtureTeacher,
    LinearPath,
    LipmanPath,
    TrigPath,
    preset,
)

__all__ = ["ErrorRow", "Trajectories", "exact_trajectories", "measure_flow_map_errors"]


@dataclass(frozen=True)
class ErrorRow:
    """One measured error: ``quantity`` of ``teacher`` computed two ways, max abs difference."""

    teacher: str
    quantity: str
    against: str
    max_error: float
    points: int


@dataclass(frozen=True)
class Trajectories:
    """Exact trajectories of a teacher from noise (t = 1) to data (t = 0).

    Attributes:
        teacher: the preset's name.
        points: ``(len(times), n, d)``: the noise points first, then their images at each time.
        means: ``(K, d)``: the mixture's component means.
    """

    teacher: str
    points: np.ndarray
    means: np.ndarray


def _points(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def measure_flow_map_errors(*, quick: bool) -> list[ErrorRow]:
    """Measure the default flow map (rtol = atol = 1e-12) against independent computations.

    * one Gaussian: the per-sample ODE against the closed form, on three paths (quick: the
      linear path), for ``x_s, F*, D_t F*, d_s F*`` at 6 (t, s) pairs;
    * every mixture preset (quick: ring8): ``x_s`` for t=1 -> 0 against torchdiffeq's dopri8
      (second solver, last step ending at the end point) and against rtol = 1e-13;
    * ring8: the MeanFlow identity ``F* = v - (t - s) D_t F*``, and (not quick) the JAX backend.
    """
    rows: list[ErrorRow] = []
    n = 8 if quick else 64
    pairs = [(1.0, 0.0), (0.0, 1.0), (0.7, 0.2), (0.3, 0.9), (0.5, 0.499), (1.0, 0.999)]
    gauss = preset("anisotropic_gaussian").mixture
    paths = (LinearPath(),) if quick else (LinearPath(), TrigPath(), LipmanPath(sigma_min=0.05))
    for path in paths:
        teacher = GaussianMixtureTeacher(gauss, path)
        x0 = _points(n, 3, 0)
        x = x0.repeat(len(pairs), 1)
        t = torch.tensor([p[0] for p in pairs], dtype=torch.float64).repeat_interleave(n)
        s = torch.tensor([p[1] for p in pairs], dtype=torch.float64).repeat_interleave(n)
        a = ExactFlowMap(teacher, method="closed_form").solve(x, t, s, derivatives=True)
        b = ExactFlowMap(teacher, method="dop853").solve(x, t, s, derivatives=True)
        for f, label in (
            ("x_s", "x_s"),
            ("average_velocity", "F*"),
            ("total_derivative", "D_t F*"),
            ("end_time_derivative", "d_s F*"),
        ):
            err = float((getattr(a, f) - getattr(b, f)).abs().max())
            rows.append(
                ErrorRow(
                    f"anisotropic_gaussian ({path.name})", label, "closed form", err, x.shape[0]
                )
            )
    for name in ("ring8",) if quick else PRESETS:
        teacher = preset(name)
        if teacher.mixture.n_components == 1:
            continue
        m = n if quick else (16 if name == "full64" else 64)
        x = _points(m, teacher.dim, 1)
        ours = ExactFlowMap(teacher)(x, 1.0, 0.0)
        second = ExactFlowMap(teacher, method="dopri8")(x, 1.0, 0.0)
        tight = ExactFlowMap(teacher, rtol=1e-13, atol=1e-13)(x, 1.0, 0.0)
        rows.append(
            ErrorRow(
                name, "x_s (1 -> 0)", "torchdiffeq dopri8", float((ours - second).abs().max()), m
            )
        )
        rows.append(
            ErrorRow(name, "x_s (1 -> 0)", "rtol 1e-13", float((ours - tight).abs().max()), m)
        )
    teacher = preset("ring8")
    fm = ExactFlowMap(teacher)
    x = _points(n, 2, 2)
    sol = fm.solve(x, 0.6, 0.1, derivatives=True)
    if sol.total_derivative is None:
        raise RuntimeError("ExactFlowMap.solve(derivatives=True) returned no total derivative")
    target = teacher.velocity(x, 0.6) - 0.5 * sol.total_derivative
    rows.append(
        ErrorRow(
            "ring8",
            "F* = v - (t-s) D_t F*",
            "MeanFlow identity",
            float((target - sol.average_velocity).abs().max()),
            n,
        )
    )
    if not quick:
        try:
            from ..reference_models.jax_backend import HAS_JAX, JaxFlowMap

            if HAS_JAX:
                j = JaxFlowMap(teacher).solve(x.numpy(), 0.6, 0.1, derivatives=True)
                for f, label in (("x_s", "x_s"), ("total_derivative", "D_t F*")):
                    jax_value = torch.from_numpy(np.array(getattr(j, f)))  # a writable copy
                    err = float((jax_value - getattr(sol, f)).abs().max())
                    rows.append(ErrorRow("ring8", label, "JAX backend (diffrax)", err, n))
        except ImportError:  # pragma: no cover
            pass
    return rows


def exact_trajectories(
    name: str = "ring8", *, n: int = 200, steps: int = 40, seed: int = 3
) -> Trajectories:
    """Exact trajectories of ``n`` noise points of preset ``name`` from t = 1 to t = 0.

    Arguments:
        name: a preset teacher.
        n: noise points (drawn from N(0, I) with ``seed``).
        steps: time steps; the points are recorded at ``steps + 1`` equally spaced times.
        seed: seeds the noise points.
    """
    teacher = preset(name)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    x1 = _points(n, teacher.dim, seed)
    traj = ExactFlowMap(teacher).trajectory(x1, 1.0, times[1:])
    return Trajectories(
        teacher=name,
        points=torch.cat([x1[None], traj]).numpy(),
        means=teacher.mixture.means.numpy(),
    )
