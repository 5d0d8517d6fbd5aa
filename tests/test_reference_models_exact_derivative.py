"""The exact average velocity's derivative without finite differences
(``ExactAverageVelocity(derivative="exact")``, the default): closed-form identities away from the
diagonal, integral forms near it, the variational equation for tangents off the trajectories.

The references are independent of the code under test: a variational-equation solve at rtol
1e-13 (:meth:`ExactFlowMap.directional_derivative`, every derivative carried by the ODE), and
fourth-order differences of ODE solves (the former method) as a second, looser witness.
"""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.reference_models import (
    ExactAverageVelocity,
    ExactFlowMap,
    exact_network,
    preset,
)
from flowmap_oracle.reference_models.exact_network import NEAR_DIAGONAL

TIGHT = 1e-10  # the exact route's bound (measured: at most 5e-12, module docstring)


def _inputs(name: str, n: int = 24, seed: int = 0):
    teacher = preset(name)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, teacher.dim, dtype=torch.float64, generator=g)
    t = torch.rand(n, dtype=torch.float64, generator=g)
    s = t * torch.rand(n, dtype=torch.float64, generator=g)
    t[:3], s[:3] = 1.0, 0.0  # the fixed-point checks' corner
    s[3:6] = t[3:6] - 1e-4  # near the diagonal: the integral forms
    s[6:8] = t[6:8]  # on it: a / 2
    s[8:10] = (t[8:10] + 2 * NEAR_DIAGONAL).clamp(max=1.0)  # s > t: the other direction
    return teacher, x, t, s


def _tangents(teacher, x, t, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    one, zero = torch.ones(n, dtype=x.dtype), torch.zeros(n, dtype=x.dtype)
    v = teacher.velocity(x, t)
    general = (
        torch.randn(x.shape, dtype=x.dtype, generator=g),
        torch.randn(n, dtype=x.dtype, generator=g),
        torch.randn(n, dtype=x.dtype, generator=g),
    )
    return {
        "trajectory": (v, one, zero),
        "end time": (torch.zeros_like(x), zero, one),
        "general": general,
    }


@pytest.mark.parametrize("name", ["ring8", "checkerboard"])
def test_exact_derivative_matches_a_tight_variational_solve(name):
    teacher, x, t, s = _inputs(name)
    reference = ExactFlowMap(teacher, rtol=1e-13, atol=1e-13)
    exact = ExactAverageVelocity(teacher)
    exact.value(x, t, s)  # as in the checks: the value first, then its derivative
    for label, (dx, dt, ds) in _tangents(teacher, x, t).items():
        want = reference.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)
        got = exact.directional(x, t, s, dx, dt, ds)
        err = float((got - want).abs().max())
        assert err < TIGHT, f"{name}, {label}: {err:.2e}"


def test_exact_derivative_is_tighter_than_the_differences():
    """Along trajectories the differences were within 1e-8; the exact route is within 1e-10 and
    the two agree to the differences' accuracy (a second witness, independent of the solver
    tolerance of the reference)."""
    teacher, x, t, s = _inputs("ring8")
    exact = ExactAverageVelocity(teacher)
    fd = ExactAverageVelocity(teacher, derivative="differences")
    for label, (dx, dt, ds) in _tangents(teacher, x, t).items():
        if label == "general":
            continue  # the differences lose accuracy off the trajectories (class docstring)
        a = exact.directional(x, t, s, dx, dt, ds)
        b = fd.directional(x, t, s, dx, dt, ds)
        assert float((a - b).abs().max()) < 1e-7, label


def test_closed_form_teacher_takes_the_closed_form():
    teacher, x, t, s = _inputs("anisotropic_gaussian")
    exact = ExactAverageVelocity(teacher)
    assert exact.flow_map.solver == "closed_form"
    ode = ExactFlowMap(teacher, method="dop853", rtol=1e-13, atol=1e-13)
    for label, (dx, dt, ds) in _tangents(teacher, x, t).items():
        want = ode.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)
        got = exact.directional(x, t, s, dx, dt, ds)
        assert float((got - want).abs().max()) < 1e-9, label


@pytest.mark.parametrize(
    "wrong",
    [
        "end_time_dropped",  # the d_s F* ds term left out
        "trajectory_as_spatial",  # J_x F* w taken as D_x v w for every w (no variational solve)
        "no_near_diagonal_solve",  # the identities down to s = t (cancellation)
    ],
)
def test_each_part_is_needed(wrong, monkeypatch):
    """Each part of the exact route, replaced by a plausible wrong variant, fails the same
    comparison the correct code passes."""
    teacher, x, t, s = _inputs("ring8")
    s[3:6] = t[3:6] - 1e-9  # so close to the diagonal that the identities cancel
    reference = ExactFlowMap(teacher, rtol=1e-13, atol=1e-13)
    if wrong == "end_time_dropped":

        class NoEndTime(ExactAverageVelocity):  # the d_s F* ds term left out
            def directional(self, x_, t_, s_, dx, dt, ds):
                return super().directional(x_, t_, s_, dx, dt, torch.zeros_like(ds))

        exact = NoEndTime(teacher)
    elif wrong == "trajectory_as_spatial":
        monkeypatch.setattr(exact_network, "TINY_TANGENT", float("inf"))
        exact = ExactAverageVelocity(teacher)
    else:
        monkeypatch.setattr(exact_network, "NEAR_DIAGONAL", 0.0)
        exact = ExactAverageVelocity(teacher)
    worst = 0.0
    for dx, dt, ds in _tangents(teacher, x, t).values():
        want = reference.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)
        worst = max(worst, float((exact.directional(x, t, s, dx, dt, ds) - want).abs().max()))
    assert worst > TIGHT, f"{wrong}: {worst:.2e}"


def test_jacobian_columns_agree_with_directional_derivatives():
    teacher, x, t, s = _inputs("ring8", n=6)
    exact = ExactAverageVelocity(teacher, cache=False)
    jac, d_t, d_s = exact.jacobian(x, t, s)
    g = torch.Generator().manual_seed(3)
    dx = torch.randn(x.shape, dtype=x.dtype, generator=g)
    dt = torch.randn(6, dtype=x.dtype, generator=g)
    ds = torch.randn(6, dtype=x.dtype, generator=g)
    assembled = (jac @ dx[:, :, None])[:, :, 0] + dt[:, None] * d_t + ds[:, None] * d_s
    want = exact.directional(x, t, s, dx, dt, ds)
    assert float((assembled - want).abs().max()) < TIGHT


def test_unknown_derivative_method_is_refused():
    with pytest.raises(ValueError, match="derivative must be one of"):
        ExactAverageVelocity(preset("ring8"), derivative="forward")
