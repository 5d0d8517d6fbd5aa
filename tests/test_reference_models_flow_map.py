"""Exact flow maps: closed form vs ODE vs independent solvers, measured error bounds, derived
ground truth (F*, D_t F*, d_s F*), trajectories and couplings, behaviour near t = 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
import torchdiffeq
from helpers import PATHS, general_path

from flowmap_oracle.reference_models import (
    ExactFlowMap,
    GaussianMixture,
    GaussianMixtureTeacher,
    LinearPath,
    TrigPath,
    preset,
)

F64 = torch.float64
# Stated error bound of the default ODE solve (rtol = atol = 1e-12), measured: closed form vs
# ODE <= 3e-13 for x_s, F*, D_t F*, d_s F* on anisotropic_gaussian, every path (1e-10 leaves
# room for other machines' rounding); mixtures against a second solver likewise.
ODE_TOL = 1e-10
# Closed forms against independent formulas: rounding only.
EXACT_TOL = 1e-12

PAIRS = [
    (1.0, 0.0),
    (0.0, 1.0),
    (0.7, 0.2),
    (0.3, 0.9),
    (0.5, 0.499),
    (1.0, 0.999),
    (1e-3, 0.0),
    (0.05, 0.95),
]


def _points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _grid(x: torch.Tensor, pairs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every point at every (t, s) pair, as one batch with per-sample times."""
    n = x.shape[0]
    t = torch.tensor([p[0] for p in pairs], dtype=F64).repeat_interleave(n)
    s = torch.tensor([p[1] for p in pairs], dtype=F64).repeat_interleave(n)
    return x.repeat(len(pairs), 1), t, s


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_closed_form_matches_the_ode_for_every_path(path_name):
    teacher = GaussianMixtureTeacher(preset("anisotropic_gaussian").mixture, PATHS[path_name]())
    closed = ExactFlowMap(teacher, method="closed_form")
    ode = ExactFlowMap(teacher, method="dop853")
    assert ExactFlowMap(teacher).solver == "closed_form"
    x, t, s = _grid(_points(6, 3), PAIRS if path_name == "linear" else PAIRS[:4])
    # derivatives for two paths (the derivative code is path-agnostic given the schedule's
    # second derivatives, which test_paths checks); values for all
    derivatives = path_name in ("linear", "trig")
    a = closed.solve(x, t, s, derivatives=derivatives)
    b = ode.solve(x, t, s, derivatives=derivatives)
    fields = ["x_s", "average_velocity"]
    fields += ["total_derivative", "end_time_derivative"] if derivatives else []
    for f in fields:
        torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=0, atol=ODE_TOL, msg=f)


def test_closed_form_matches_scipy_and_the_brenier_map_and_rejects_cholesky():
    """MATH.md section 3: Phi_{1->0}(x) = mu + Sigma^{1/2} x for every schedule with these
    endpoints; scipy's DOP853 as an independent solver; the Cholesky map L_s L_t^{-1} (same
    marginals, different flow) is the wrong twin."""
    teacher = preset("anisotropic_gaussian")
    mix = teacher.mixture
    mu, cov = mix.means[0].numpy(), mix.covariances[0].numpy()
    x = _points(4, 3, seed=1)
    root = np.real(scipy.linalg.sqrtm(cov))
    brenier = mu + x.numpy() @ root.T
    for path in (LinearPath(), TrigPath(), general_path()):
        closed = ExactFlowMap(GaussianMixtureTeacher(mix, path))
        np.testing.assert_allclose(closed(x, 1.0, 0.0).numpy(), brenier, rtol=0, atol=EXACT_TOL)
    closed = ExactFlowMap(teacher)
    for t, s in ((0.8, 0.1), (0.2, 0.95)):
        for i in range(2):
            sol = scipy.integrate.solve_ivp(
                lambda tt, y: teacher.velocity(torch.from_numpy(y)[None], tt)[0].numpy(),
                (t, s),
                x[i].numpy(),
                method="DOP853",
                rtol=1e-13,
                atol=1e-13,
            )
            np.testing.assert_allclose(
                closed(x[i : i + 1], t, s)[0].numpy(), sol.y[:, -1], rtol=0, atol=1e-10
            )
    # wrong twin: Cholesky factors
    t, s = 0.8, 0.1
    eye = np.eye(3)
    c_t = (1 - t) ** 2 * cov + t**2 * eye
    c_s = (1 - s) ** 2 * cov + s**2 * eye
    l_t, l_s = np.linalg.cholesky(c_t), np.linalg.cholesky(c_s)
    chol = (1 - s) * mu + (x.numpy() - (1 - t) * mu) @ np.linalg.solve(l_t, np.eye(3)).T @ l_s.T
    assert np.abs(chol - closed(x, t, s).numpy()).max() > 1e-2


def test_closed_form_in_64_dimensions_matches_the_ode():
    big = preset("full64").mixture
    one = GaussianMixture(torch.ones(1, dtype=F64), big.means[:1], big.covariances[:1])
    teacher = GaussianMixtureTeacher(one)
    x = _points(6, 64, seed=2)
    a = ExactFlowMap(teacher).solve(x, 1.0, 0.0)
    b = ExactFlowMap(teacher, method="dop853").solve(x, 1.0, 0.0)
    torch.testing.assert_close(a.x_s, b.x_s, rtol=0, atol=ODE_TOL)
    torch.testing.assert_close(a.average_velocity, b.average_velocity, rtol=0, atol=ODE_TOL)


@pytest.mark.parametrize("name", ["anisotropic_gaussian", "ring8"])
def test_derivatives_match_the_difference_formulas_and_the_diagonal_limit(name):
    """D_t F* = (v(x,t) - F*)/(t-s) and d_s F* = (F* - v(x_s,s))/(t-s) away from the diagonal
    (cancellation-free there); both tend to a(x,t)/2 at s = t."""
    teacher = preset(name)
    fm = ExactFlowMap(teacher)
    x0 = _points(10, teacher.dim, seed=3)
    pairs = [(0.9, 0.2), (0.25, 0.75), (1.0, 0.0), (0.0, 0.0), (0.4, 0.4), (1.0, 1.0)]
    x, t, s = _grid(x0, pairs)
    sol = fm.solve(x, t, s, derivatives=True)
    off = t != s
    v_t, v_s = teacher.velocity(x, t), teacher.velocity(sol.x_s, s)
    gap = (t - s)[:, None]
    dt_ref = (v_t - sol.average_velocity) / gap
    ds_ref = (sol.average_velocity - v_s) / gap
    torch.testing.assert_close(sol.total_derivative[off], dt_ref[off], rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.end_time_derivative[off], ds_ref[off], rtol=0, atol=1e-9)
    on = ~off
    half_a = teacher.acceleration(x, t)[on] / 2
    torch.testing.assert_close(sol.average_velocity[on], v_t[on], rtol=0, atol=EXACT_TOL)
    torch.testing.assert_close(sol.total_derivative[on], half_a, rtol=0, atol=EXACT_TOL)
    torch.testing.assert_close(sol.end_time_derivative[on], half_a, rtol=0, atol=EXACT_TOL)
    x = x0
    # Next to the diagonal the integral forms stay exact: D_t F* differs from a/2 by
    # O(|t - s| |da/dt|) ~ 1e-8 here. Its wrong twin, difference quotients of the flow map,
    # divides rounding errors of x_s by (t - s)^2 and is off by orders of magnitude.
    t, s = 0.4, 0.4 - 1e-9
    near = fm.solve(x, t, s, derivatives=True)
    half_a = teacher.acceleration(x, t) / 2
    torch.testing.assert_close(near.total_derivative, half_a, rtol=0, atol=1e-6)
    naive = (teacher.velocity(x, t) - (x - near.x_s) / (t - s)) / (t - s)
    assert float((naive - near.total_derivative).abs().max()) > 1e-2


def test_meanflow_identity_and_finite_differences_on_the_curved_ring():
    """F* = v - (t - s) D_t F* pointwise (the MeanFlow identity with the exact F*); its sign
    twin v + (t - s) D_t F* is rejected; D_t F* and d_s F* agree with central differences of
    F* along the trajectory and in s (h = 1e-4: truncation ~1e-9, rounding ~1e-12/h)."""
    teacher = preset("ring8")
    fm = ExactFlowMap(teacher)
    x = _points(24, 2, seed=4)
    t, s, h = 0.6, 0.1, 1e-4
    sol = fm.solve(x, t, s, derivatives=True)
    v = teacher.velocity(x, t)
    target = v - (t - s) * sol.total_derivative  # what fm.meanflow_target returns
    torch.testing.assert_close(target, sol.average_velocity, rtol=0, atol=1e-9)
    twin = v + (t - s) * sol.total_derivative
    assert float((twin - sol.average_velocity).abs().max()) > 1e-1
    n = x.shape[0]
    ones = torch.ones(n, dtype=F64)
    xpm = fm(
        torch.cat([x, x]), t * torch.cat([ones, ones]), torch.cat([ones * (t + h), ones * (t - h)])
    )
    # four average velocities in one batch: along the trajectory (t +- h) and in s (s +- h)
    pts = torch.cat([xpm, x, x])
    ts = torch.cat([ones * (t + h), ones * (t - h), ones * t, ones * t])
    ss = torch.cat([ones * s, ones * s, ones * (s + h), ones * (s - h)])
    f = fm.average_velocity(pts, ts, ss).split(n)
    torch.testing.assert_close(sol.total_derivative, (f[0] - f[1]) / (2 * h), rtol=0, atol=1e-6)
    torch.testing.assert_close(sol.end_time_derivative, (f[2] - f[3]) / (2 * h), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ring8", "checkerboard", "anisotropic10", "full64"])
def test_ode_agrees_with_a_second_solver_and_a_tighter_tolerance(name):
    """Isotropic (ring8, checkerboard), diagonal (anisotropic10) and full (full64) mixtures."""
    teacher = preset(name)
    x = _points(4 if name == "full64" else 12, teacher.dim, seed=5)
    ours = ExactFlowMap(teacher).solve(x, 1.0, 0.0)
    tighter = ExactFlowMap(teacher, rtol=1e-13, atol=1e-13)(x, 1.0, 0.0)
    second = ExactFlowMap(teacher, method="dopri8")(x, 1.0, 0.0)
    torch.testing.assert_close(ours.x_s, tighter, rtol=0, atol=ODE_TOL)
    torch.testing.assert_close(ours.x_s, second, rtol=0, atol=ODE_TOL)
    assert ours.n_velocity_evals > 0 and ours.n_point_evals > 0 and (ours.n_steps > 0).all()


def test_torchdiffeq_interpolation_pitfall_is_avoided():
    """Why the lead measured dopri8 at rtol 1e-11 off by 1.6e-7: torchdiffeq returns the end
    point by 4th-order interpolation inside an overshooting step. ExactFlowMap passes
    step_t=[1] so the last step ends there."""
    teacher = preset("anisotropic_gaussian")
    x = _points(50, 3, seed=6)
    exact = ExactFlowMap(teacher)(x, 1.0, 0.0)
    plain = torchdiffeq.odeint(
        lambda tau, y: -teacher.velocity(y, 1.0 - tau),
        x,
        torch.tensor([0.0, 1.0], dtype=F64),
        rtol=1e-11,
        atol=1e-11,
        method="dopri8",
    )[-1]
    assert float((plain - exact).abs().max()) > 1e-9
    fixed = ExactFlowMap(teacher, method="dopri8", rtol=1e-11, atol=1e-11)(x, 1.0, 0.0)
    torch.testing.assert_close(fixed, exact, rtol=0, atol=ODE_TOL)


def test_semigroup_and_round_trip_on_a_curved_path():
    teacher = preset("ring8", path=TrigPath())
    fm = ExactFlowMap(teacher)
    x = _points(32, 2, seed=7)
    direct = fm(x, 0.9, 0.05)
    torch.testing.assert_close(fm(fm(x, 0.9, 0.4), 0.4, 0.05), direct, rtol=0, atol=ODE_TOL)
    # noise-ward maps amplify errors by cond(D Phi): 1e-8 measured margin
    torch.testing.assert_close(fm(direct, 0.05, 0.9), x, rtol=0, atol=1e-8)


def test_per_sample_times_in_both_directions_with_some_on_the_diagonal():
    teacher = preset("ring8")
    fm = ExactFlowMap(teacher)
    x = _points(6, 2, seed=8)
    t = torch.tensor([1.0, 0.0, 0.3, 0.5, 1e-12, 1.0], dtype=F64)
    s = torch.tensor([0.0, 1.0, 0.3, 0.2, 0.0, 1 - 1e-12], dtype=F64)
    sol = fm.solve(x, t, s, derivatives=True)
    for i in (3, 5):
        row = fm.solve(x[i : i + 1], float(t[i]), float(s[i]), derivatives=True)
        for f in ("x_s", "average_velocity", "total_derivative"):
            torch.testing.assert_close(
                getattr(sol, f)[i : i + 1], getattr(row, f), rtol=0, atol=ODE_TOL
            )
    # near t = 0 and t = 1 the average velocity is the velocity there
    torch.testing.assert_close(
        sol.average_velocity[4], teacher.velocity(x[4:5], 0.0)[0], rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        sol.average_velocity[5], teacher.velocity(x[5:6], 1.0)[0], rtol=0, atol=1e-10
    )
    assert (sol.error_estimate >= 0).all()


def test_error_estimate_tracks_the_measured_error():
    """At rtol = atol = 1e-8 on ring8 the summed local error estimates were within a factor
    0.3..4 of the measured error of the worst trajectory; asserted with a factor 20 margin."""
    teacher = preset("ring8")
    x = _points(300, 2, seed=9)
    loose = ExactFlowMap(teacher, rtol=1e-8, atol=1e-8).solve(x, 1.0, 0.0)
    exact = ExactFlowMap(teacher, rtol=1e-13, atol=1e-13)(x, 1.0, 0.0)
    err = float((loose.x_s - exact).abs().max())
    assert 1e-12 < err < 1e-6
    assert err < 20 * float(loose.error_estimate.max())
    closed = ExactFlowMap(preset("anisotropic_gaussian")).solve(_points(3, 3), 1.0, 0.0)
    assert closed.n_velocity_evals == 0 and (closed.error_estimate == 0).all()


def test_trajectory_and_couplings():
    teacher = preset("ring8")
    fm = ExactFlowMap(teacher)
    x = _points(8, 2, seed=10)
    times = torch.tensor([0.75, 0.5, 0.0], dtype=F64)
    traj = fm.trajectory(x, 1.0, times)
    assert traj.shape == (3, 8, 2)
    for j, tj in enumerate(times):
        torch.testing.assert_close(traj[j], fm(x, 1.0, float(tj)), rtol=0, atol=ODE_TOL)
    gen = torch.Generator().manual_seed(11)
    pair = fm.coupling(2000, generator=gen)
    assert pair.source == "noise"
    torch.testing.assert_close(pair.x0[:5], fm(pair.x1[:5], 1.0, 0.0), rtol=0, atol=ODE_TOL)
    # the exact map pushes N(0, I) to the data: mean within 5 standard errors
    mix = teacher.mixture
    z = (pair.x0.mean(0) - mix.mean()) / (mix.covariance().diagonal().sqrt() / 2000**0.5)
    assert float(z.abs().max()) < 5
    target = fm.meanflow_target(x[:4], 0.7, 0.2)  # v - (t - s) D_t F* = F* (exact F*)
    torch.testing.assert_close(target, fm.average_velocity(x[:4], 0.7, 0.2), rtol=0, atol=1e-9)
    data = fm.coupling(5, source="data", generator=gen)
    torch.testing.assert_close(fm(data.x1, 1.0, 0.0), data.x0, rtol=0, atol=1e-8)


def _directions(n: int, d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x, dx = torch.randn(2, n, d, dtype=F64, generator=gen)
    t = torch.tensor([0.7, 0.9, 0.3, 0.6, 0.5, 0.55], dtype=F64)[:n]
    s = torch.tensor([0.2, 0.1, 0.8, 0.05, 0.5, 0.45], dtype=F64)[:n]  # one on the diagonal
    dt, ds = torch.randn(2, n, dtype=F64, generator=gen)
    return x, dx, t, s, dt, ds


def test_directional_derivative_of_the_closed_form_matches_autodiff_and_the_ode():
    """J_x F* dx + d_t F* dt + d_s F* ds: closed form vs torch.func.jvp through the closed-form
    map, and vs the variational equation solved with the ODE."""
    teacher = preset("anisotropic_gaussian", path=TrigPath())
    closed = ExactFlowMap(teacher)
    x, dx, t, s, dt, ds = _directions(6, 3, 12)
    ours = closed.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)

    def average_velocity(a, b, c):
        return closed._solve_closed_form(a, b[:, None], c[:, None], False).average_velocity

    _, auto = torch.func.jvp(average_velocity, (x, t, s), (dx, dt, ds))
    torch.testing.assert_close(ours, auto, rtol=0, atol=EXACT_TOL)
    ode = ExactFlowMap(teacher, method="dop853").directional_derivative(
        x, t, s, dx=dx, dt=dt, ds=ds
    )
    torch.testing.assert_close(ode, ours, rtol=0, atol=ODE_TOL)
    # a wrong twin: d_t F* taken as the total derivative D_t F* (ignoring J_x F* v)
    sol = closed.solve(x, t, s, derivatives=True)
    jx = closed.directional_derivative(x, t, s, dx=dx)
    twin = jx + dt[:, None] * sol.total_derivative + ds[:, None] * sol.end_time_derivative
    assert float((twin - ours).abs().max()) > 1e-2


def test_directional_derivative_on_the_ring_matches_finite_differences():
    """Fourth-order central differences with h = 1e-3 (truncation ~1e-10, rounding ~1e-12/h)."""
    teacher = preset("ring8")
    fm = ExactFlowMap(teacher, rtol=1e-10, atol=1e-10)  # ample for a 1e-7 comparison
    x, dx, t, s, dt, ds = _directions(6, 2, 13)
    dt, ds = 0.2 * dt, 0.2 * ds  # keep t +- 2h dt and s +- 2h ds inside [0, 1]
    ours = fm.directional_derivative(x, t, s, dx=dx, dt=dt, ds=ds)
    h = 1e-3
    steps = torch.tensor([h, -h, 2 * h, -2 * h], dtype=F64).repeat_interleave(6)
    f = fm.average_velocity(
        x.repeat(4, 1) + steps[:, None] * dx.repeat(4, 1),
        t.repeat(4) + steps * dt.repeat(4),
        s.repeat(4) + steps * ds.repeat(4),
    ).split(6)
    fd = (8 * (f[0] - f[1]) - (f[2] - f[3])) / (12 * h)
    torch.testing.assert_close(ours, fd, rtol=0, atol=1e-7)
