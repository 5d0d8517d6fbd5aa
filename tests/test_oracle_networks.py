"""The exact average velocity the oracle hands to implementations: its finite-difference
derivatives against the teacher's variational equation, and reverse mode against forward mode.

The fixed-point checks differentiate ``F*`` along trajectories (tangents ``(v, 1, 0)``, giving
``D_t F* = J_x F* v + d_t F*``); :meth:`ExactFlowMap.solve` with ``derivatives=True`` integrates
``D_t F*`` and ``d_s F*`` with the flow, without finite differences, so it is an independent
reference at the checks' own inputs.
"""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.oracle import OracleSettings, load_implementation
from flowmap_oracle.oracle.context import CheckContext
from flowmap_oracle.oracle.tolerances import EXACT_MAP
from flowmap_oracle.reference_models import ExactAverageVelocity, ExactFlowMap, preset

# The derivative error may use a tenth of the float64 tolerance of the fixed-point checks.
DERIVATIVE_TOL = EXACT_MAP["float64"].atol / 10
# d_s F* at s = 0 uses a one-sided stencil (measured 1.5e-8 at these inputs); no fixed-point
# check differentiates in s, so this only bounds what an implementation in other conventions sees.
END_TIME_TOL = 5e-8
# Along general directions (not along trajectories) F* of the ring bends sharply where the flow
# contracts onto the narrow modes, and the differences lose accuracy: forward and reverse mode
# (different stencils) measured 2.0e-7 apart at (t, s) = (0.7, 0.2).
GENERAL_DIRECTION_TOL = 1e-6


@pytest.fixture(scope="module")
def ctx():
    return CheckContext(load_implementation(), OracleSettings())


def _batches(ctx, space_name):
    """The batches of the exact-map checks' explicit cases in ``space_name``."""
    space = ctx.space(space_name)
    return [ctx.batch(case, space) for case in space.explicit()]


@pytest.mark.parametrize("space_name", ["forward", "to_zero"])
def test_finite_differences_match_the_variational_equation_at_the_checks_inputs(ctx, space_name):
    exact = ExactAverageVelocity(ctx.teacher)
    reference = ExactFlowMap(ctx.teacher)
    slots_apart = 0.0
    for b in _batches(ctx, space_name):
        v = ctx.teacher.velocity(b.x, b.t)
        one, zero = torch.ones_like(b.t), torch.zeros_like(b.t)
        sol = reference.solve(b.x, b.t, b.s, derivatives=True)
        _, along_trajectory = torch.func.jvp(exact, (b.x, b.t, b.s), (v, one, zero))
        torch.testing.assert_close(
            along_trajectory, sol.total_derivative, rtol=0, atol=DERIVATIVE_TOL
        )
        _, in_s = torch.func.jvp(exact, (b.x, b.t, b.s), (torch.zeros_like(b.x), zero, one))
        torch.testing.assert_close(in_s, sol.end_time_derivative, rtol=0, atol=END_TIME_TOL)
        slots_apart = max(slots_apart, float((along_trajectory - in_s).abs().max()))
    # the comparison tells the slots apart: d_s F* is far from D_t F* off the diagonal s = t
    # (where both equal a / 2)
    assert slots_apart > 1e-2


def test_reverse_mode_is_the_transpose_of_forward_mode(ctx):
    """``<g, J u> = <J^T g, u>`` per sample, at interior times (both sides central differences)."""
    exact = ExactAverageVelocity(ctx.teacher)
    b = _batches(ctx, "forward")[1]  # (t, s) = (0.7, 0.2)
    gen = torch.Generator().manual_seed(3)
    dx, g = torch.randn(2, *b.x.shape, generator=gen, dtype=torch.float64)
    dt, ds = 0.3 * torch.randn(2, b.t.shape[0], generator=gen, dtype=torch.float64)
    _, Ju = torch.func.jvp(exact, (b.x, b.t, b.s), (dx, dt, ds))
    x, t, s = (a.clone().requires_grad_() for a in (b.x, b.t, b.s))
    gx, gt, gs = torch.autograd.grad((exact(x, t, s) * g).sum(), (x, t, s))
    forward = (g * Ju).sum(1)
    reverse = (gx * dx).sum(1) + gt * dt + gs * ds
    torch.testing.assert_close(reverse, forward, rtol=0, atol=GENERAL_DIRECTION_TOL)
    # a wrong twin: J_x F* g in place of its transpose J_x F*^T g
    jac_x = exact.jacobian(b.x, b.t, b.s)[0]
    twin = ((jac_x @ g[:, :, None])[:, :, 0] * dx).sum(1) + gt * dt + gs * ds
    assert float((twin - forward).abs().max()) > 1e-2


def test_values_are_memoised_per_row_in_a_bounded_store():
    """Only rows not seen before are solved (once each, in one batch); the store holds at most
    ``cache_rows`` rows and drops the least recently used; ``cache=False`` solves every call."""
    teacher = preset("anisotropic_gaussian")  # closed form: fast
    exact = ExactAverageVelocity(ExactFlowMap(teacher), cache_rows=6)
    solved = []
    inner = exact._solve

    def spy(x, t, s):
        solved.append(x.shape[0])
        return inner(x, t, s)

    exact._solve = spy
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    t = 0.2 + 0.7 * torch.rand(8, generator=gen, dtype=torch.float64)
    s = t * torch.rand(8, generator=gen, dtype=torch.float64)
    first = exact.value(x[:4], t[:4], s[:4])
    idx = torch.tensor([1, 4, 3, 4, 5])  # two rows seen, one new row twice, one more new row
    again = exact.value(x[idx], t[idx], s[idx])
    assert solved == [4, 2]
    assert torch.equal(again[[0, 2]], first[[1, 3]]) and torch.equal(again[1], again[3])
    exact.value(x[6:], t[6:], s[6:])  # two more rows: rows 0 and 2 (least recently used) go
    assert solved == [4, 2, 2] and len(exact._rows) == 6
    exact.value(x[[1]], t[[1]], s[[1]])
    assert solved == [4, 2, 2]
    exact.value(x[[0]], t[[0]], s[[0]])
    assert solved == [4, 2, 2, 1]

    off = ExactAverageVelocity(teacher, cache=False)
    direct = ExactFlowMap(teacher).average_velocity(x, t, s)
    assert torch.equal(off.value(x, t, s), direct) and torch.equal(off.value(x, t, s), direct)
    assert off.n_solves == 2 and not off._rows


def test_exact_network_refuses_tolerances_beside_a_flow_map_and_bad_cache_sizes():
    teacher = preset("anisotropic_gaussian")
    with pytest.raises(ValueError, match="rtol and atol belong to the ExactFlowMap"):
        ExactAverageVelocity(ExactFlowMap(teacher), rtol=1e-8)
    with pytest.raises(ValueError, match="cache_rows must be a positive int"):
        ExactAverageVelocity(teacher, cache_rows=0)
    with pytest.raises(TypeError, match="GaussianMixtureTeacher or an ExactFlowMap"):
        ExactAverageVelocity("ring8")  # type: ignore[arg-type]
