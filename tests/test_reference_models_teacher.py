"""Closed forms of the Gaussian-mixture teacher against an independent implementation, for every
path and covariance type; endpoints, stability and the specialised kernels."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import PATHS

from flowmap_oracle.reference_models import (
    PRESETS,
    GaussianMixture,
    GaussianMixtureTeacher,
    LinearPath,
    LipmanPath,
    TrigPath,
    preset,
)

F64 = torch.float64
# float64: closed forms agree with the independent dense-linear-algebra reference to ~1e-13.
TOL = {F64: 1e-11, torch.float32: 1e-4}


def _mixture(kind: str) -> GaussianMixture:
    gen = torch.Generator().manual_seed(3)
    k, d = 4, 3
    mu = 1.5 * torch.randn(k, d, dtype=F64, generator=gen)
    w = torch.rand(k, dtype=F64, generator=gen) + 0.2
    w = w / w.sum()
    if kind == "isotropic":
        return GaussianMixture.isotropic(
            weights=w, means=mu, variances=torch.tensor([0.2, 0.5, 0.05, 1.0], dtype=F64)
        )
    if kind == "isotropic_shared":
        return GaussianMixture.isotropic(weights=w, means=mu, variances=0.1)
    if kind == "diagonal":
        var = torch.rand(k, d, dtype=F64, generator=gen) * 0.8 + 0.02
        return GaussianMixture.diagonal(weights=w, means=mu, variances=var)
    a = torch.randn(k, d, d, dtype=F64, generator=gen)
    cov = a @ a.transpose(1, 2) / d + 0.05 * torch.eye(d, dtype=F64)
    return GaussianMixture(w, mu, 0.5 * (cov + cov.transpose(1, 2)))


KINDS = ["isotropic", "isotropic_shared", "diagonal", "full"]


def _reference(teacher: GaussianMixtureTeacher, x: torch.Tensor, t: torch.Tensor) -> dict:
    """Per-point Gaussian conditioning with dense matrices (no eigenbases, no shortcuts):
    C_k = a^2 Sigma_k + b^2 I, gamma from MultivariateNormal log-densities,
    E[x0|x,k] = mu_k + a Sigma_k C_k^{-1}(x - a mu_k), E[x1|x,k] = b C_k^{-1}(x - a mu_k)."""
    mix, path = teacher.mixture, teacher.path
    out = {k: [] for k in ("v", "score", "logp", "ex0", "ex1")}
    eye = torch.eye(mix.dim, dtype=F64)
    for i in range(x.shape[0]):
        c = path.schedule(t[i])
        a, b, ad, bd = c.alpha, c.beta, c.alpha_dot, c.beta_dot
        logs, ex0, ex1 = [], [], []
        for k in range(mix.n_components):
            ck = a**2 * mix.covariances[k] + b**2 * eye
            m = a * mix.means[k]
            dist = torch.distributions.MultivariateNormal(m, covariance_matrix=ck)
            logs.append(dist.log_prob(x[i]) + mix.weights[k].log())
            sol = torch.linalg.solve(ck, x[i] - m)
            ex0.append(mix.means[k] + a * mix.covariances[k] @ sol)
            ex1.append(b * sol)
        logs = torch.stack(logs)
        gamma = torch.softmax(logs, 0)
        e0 = gamma @ torch.stack(ex0)
        e1 = gamma @ torch.stack(ex1)
        out["ex0"].append(e0)
        out["ex1"].append(e1)
        out["v"].append(ad * e0 + bd * e1)
        out["score"].append(
            -(gamma @ torch.stack(ex1)) / b if float(b) > 0.3 else torch.full_like(e0, float("nan"))
        )
        out["logp"].append(torch.logsumexp(logs, 0))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_closed_forms_match_dense_gaussian_conditioning(kind, path_name):
    teacher = GaussianMixtureTeacher(_mixture(kind), PATHS[path_name]())
    gen = torch.Generator().manual_seed(1)
    n = 12
    x = 2 * torch.randn(n, 3, dtype=F64, generator=gen)
    t = torch.cat(
        [
            torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9], dtype=F64),
            torch.rand(n - 4, dtype=F64, generator=gen),
        ]
    )
    ref = _reference(teacher, x, t)
    tol = TOL[F64]
    torch.testing.assert_close(teacher.velocity(x, t), ref["v"], rtol=0, atol=tol)
    torch.testing.assert_close(teacher.posterior_mean_x0(x, t), ref["ex0"], rtol=0, atol=tol)
    torch.testing.assert_close(teacher.posterior_mean_x1(x, t), ref["ex1"], rtol=0, atol=tol)
    torch.testing.assert_close(teacher.log_prob(x, t), ref["logp"], rtol=0, atol=tol)
    ok = torch.isfinite(ref["score"]).all(1)  # the reference's score divides by beta
    torch.testing.assert_close(teacher.score(x, t)[ok], ref["score"][ok], rtol=0, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_the_comparison_rejects_wrong_teachers(kind):
    """Mutants: the same mixture on another path, and with the weights permuted, do not pass
    the check above (so the check can fail)."""
    mix = _mixture(kind)
    x = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = torch.full((8,), 0.4, dtype=F64)
    ref = _reference(GaussianMixtureTeacher(mix, LinearPath()), x, t)
    assert (
        float((GaussianMixtureTeacher(mix, TrigPath()).velocity(x, t) - ref["v"]).abs().max())
        > 1e-2
    )
    perm = GaussianMixture(mix.weights.flip(0), mix.means, mix.covariances)
    assert float((GaussianMixtureTeacher(perm).velocity(x, t) - ref["v"]).abs().max()) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path_name", ["linear", "trig", "general"])
def test_acceleration_and_score_match_autodiff(kind, path_name):
    teacher = GaussianMixtureTeacher(_mixture(kind), PATHS[path_name]())
    gen = torch.Generator().manual_seed(4)
    x = 2 * torch.randn(30, 3, dtype=F64, generator=gen)
    t = torch.rand(30, dtype=F64, generator=gen)
    v = teacher.velocity(x, t)
    _, auto = torch.func.jvp(teacher.velocity, (x, t), (v, torch.ones_like(t)))
    torch.testing.assert_close(teacher.acceleration(x, t), auto, rtol=0, atol=1e-11)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(teacher.log_prob(xr, t).sum(), xr)
    torch.testing.assert_close(teacher.score(x, t), g, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["isotropic", "isotropic_shared", "diagonal"])
def test_specialised_kernels_match_the_full_kernel(kind):
    mix = _mixture(kind)
    fast = GaussianMixtureTeacher(mix)
    full = GaussianMixtureTeacher(
        GaussianMixture(mix.weights, mix.means, mix.covariances, covariance_type="full")
    )
    assert full.mixture.covariance_type == "full" and fast.mixture.covariance_type != "full"
    gen = torch.Generator().manual_seed(5)
    x = 3 * torch.randn(40, 3, dtype=F64, generator=gen)
    for t in (torch.rand(40, dtype=F64, generator=gen), 0.0, 1.0, 0.37):
        for name in (
            "velocity",
            "acceleration",
            "score",
            "posterior_mean_x0",
            "posterior_mean_x1",
            "log_prob",
            "responsibilities",
        ):
            torch.testing.assert_close(
                getattr(fast, name)(x, t), getattr(full, name)(x, t), rtol=0, atol=1e-12
            )


@pytest.mark.parametrize("kind", KINDS)
def test_endpoint_values(kind):
    """MATH.md section 3: v(x, 0) = (alpha'(0)/alpha(0)) x when beta(0) = 0 (linear: -x, trig: 0);
    v(x, 1) = alpha'(1) E[x0] + beta'(1) x (linear: x - mean, trig: -(pi/2) mean)."""
    mix = _mixture(kind)
    x = torch.randn(10, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    lin, trig = GaussianMixtureTeacher(mix, LinearPath()), GaussianMixtureTeacher(mix, TrigPath())
    torch.testing.assert_close(lin.velocity(x, 0.0), -x, rtol=0, atol=1e-14)
    torch.testing.assert_close(trig.velocity(x, 0.0), torch.zeros_like(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(lin.velocity(x, 1.0), x - mix.mean(), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        trig.velocity(x, 1.0), -(math.pi / 2) * mix.mean().expand_as(x), rtol=0, atol=1e-14
    )
    # continuity at both ends and finiteness slightly outside [0, 1] (solvers probe there)
    for teacher in (lin, trig, GaussianMixtureTeacher(mix, LipmanPath(sigma_min=0.05))):
        for t0, t1 in ((1.0, 1 - 1e-9), (0.0, 1e-9)):
            gap = (teacher.velocity(x, t0) - teacher.velocity(x, t1)).abs().max()
            assert float(gap) < 1e-7
        for t in (-1e-3, 1 + 1e-3):
            for name in ("velocity", "acceleration", "score", "log_prob", "posterior_mean_x0"):
                assert torch.isfinite(getattr(teacher, name)(x, t)).all()


def test_far_points_are_stable():
    """Log-sum-exp: points far from every mode (|x| = 1e3) keep finite, correct values."""
    teacher = preset("ring8")
    x = torch.tensor([[1e3, 0.0], [0.0, -1e3], [700.0, 700.0]], dtype=F64)
    for t in (0.0, 0.3, 1.0):
        v = teacher.velocity(x, t)
        assert torch.isfinite(v).all() and torch.isfinite(teacher.log_prob(x, t)).all()
    # at t = 0 the nearest mode takes all responsibility: v = -x exactly (linear path)
    torch.testing.assert_close(teacher.velocity(x, 0.0), -x, rtol=1e-15, atol=0)


def test_float32_teacher_is_close_to_float64():
    teacher = preset("ring8")
    t32 = GaussianMixtureTeacher(teacher.mixture.to(dtype=torch.float32))
    x = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    t = torch.rand(50, dtype=F64, generator=torch.Generator().manual_seed(8))
    v32 = t32.velocity(x.float(), t.float())
    assert v32.dtype == torch.float32
    torch.testing.assert_close(
        v32.double(), teacher.velocity(x, t), rtol=0, atol=TOL[torch.float32]
    )


def test_presets_are_what_they_say():
    expected = {
        "ring8": (2, 8, "isotropic"),
        "checkerboard": (2, 72, "isotropic"),
        "anisotropic_gaussian": (3, 1, "full"),
        "anisotropic10": (10, 6, "diagonal"),
        "full64": (64, 4, "full"),
    }
    assert set(PRESETS) == set(expected)
    for name, (d, k, kind) in expected.items():
        mix = preset(name).mixture
        assert (mix.dim, mix.n_components, mix.covariance_type) == (d, k, kind), name
    lam = preset("anisotropic10").mixture.eigvals
    assert float(lam.max() / lam.min()) == pytest.approx(100.0)
    assert isinstance(preset("ring8", path=TrigPath()).path, TrigPath)
    # deterministic
    torch.testing.assert_close(
        preset("full64").mixture.covariances, preset("full64").mixture.covariances
    )


def test_samples_have_the_mixture_moments():
    """Monte Carlo: sample mean within 5 standard errors per coordinate (anisotropic10, full)."""
    for name in ("anisotropic10", "full64"):
        mix = preset(name).mixture
        n = 20000
        xs = mix.sample(n, generator=torch.Generator().manual_seed(9))
        se = mix.covariance().diagonal().sqrt() / math.sqrt(n)
        z = (xs.mean(0) - mix.mean()) / se
        assert float(z.abs().max()) < 5, name
        # second moments: 10% relative tolerance, sampling error about 1% at n = 20000
        c_emp = torch.cov(xs.T)
        rel = (c_emp - mix.covariance()).abs().max() / mix.covariance().abs().max()
        assert float(rel) < 0.1, name


@pytest.mark.parametrize("kind", ["ring8", *KINDS])
def test_velocity_is_differentiable_in_reverse_mode(kind):
    """Users differentiate teacher velocities (e.g. loss gradients through v): reverse-mode
    autograd of v w.r.t. x (and t) must agree with finite differences, on the curved ring and on
    every kernel (ring8 uses the shared-variance kernel)."""
    teacher = preset("ring8") if kind == "ring8" else GaussianMixtureTeacher(_mixture(kind))
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(6, teacher.dim, dtype=F64, generator=gen).requires_grad_(True)
    t = (0.05 + 0.9 * torch.rand(6, dtype=F64, generator=gen)).requires_grad_(True)
    assert torch.autograd.gradcheck(teacher.velocity, (x, t))


# velocity_jvp: closed form against forward-mode autodiff of the velocity. float64 atol 1e-12
# relative to the size of the tangent (|dv| reaches ~50 on full64; measured agreement ~4e-13).
JVP_TOL = 1e-12
JVP_CASES = [
    ("ring8", "linear"),
    ("checkerboard", "linear"),
    ("anisotropic10", "linear"),
    ("full64", "linear"),
    ("ring8", "trig"),
    ("anisotropic10", "general"),
]


def _jvp_inputs(teacher: GaussianMixtureTeacher, seed: int = 5) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    n, d = 16, teacher.dim
    x = 1.5 * torch.randn(n, d, dtype=F64, generator=gen)
    t = torch.cat(
        [torch.tensor([0.0, 1.0], dtype=F64), torch.rand(n - 2, dtype=F64, generator=gen)]
    )
    dx = torch.randn(n, d, dtype=F64, generator=gen)
    dt = torch.randn(n, dtype=F64, generator=gen)
    return x, t, dx, dt


def _assert_jvp_matches_autodiff(teacher, jvp, x, t, dx, dt) -> None:
    """``jvp(x, t, dx, dt)`` equals ``torch.func.jvp(teacher.velocity, (x, t), (dx, dt))``."""
    _, auto = torch.func.jvp(teacher.velocity, (x, t), (dx, dt))
    scale = max(1.0, float(auto.abs().max()))
    torch.testing.assert_close(jvp(x, t, dx, dt), auto, rtol=0, atol=JVP_TOL * scale)


def _closed_form_jvp(teacher):
    return lambda x, t, dx, dt: teacher.velocity_jvp(x, t, dx=dx, dt=dt).jvp


@pytest.mark.parametrize(("name", "path_name"), JVP_CASES)
def test_velocity_jvp_matches_autodiff(name, path_name):
    teacher = preset(name, path=PATHS[path_name]())
    x, t, dx, dt = _jvp_inputs(teacher)
    _assert_jvp_matches_autodiff(teacher, _closed_form_jvp(teacher), x, t, dx, dt)
    v, _ = teacher.velocity_jvp(x, t, dx=dx, dt=dt)
    torch.testing.assert_close(v, teacher.velocity(x, t), rtol=0, atol=1e-13)
    # scalar times and a pure time tangent take the broadcasting branches
    ts = torch.tensor(0.35, dtype=F64)
    zero = torch.zeros_like(x)
    for tangent in ((dx, torch.tensor(0.7, dtype=F64)), (zero, torch.tensor(1.0, dtype=F64))):
        _, auto = torch.func.jvp(teacher.velocity, (x, ts), tangent)
        ours = teacher.velocity_jvp(x, 0.35, dx=tangent[0], dt=float(tangent[1])).jvp
        torch.testing.assert_close(ours, auto, rtol=0, atol=JVP_TOL * float(auto.abs().max()))


@pytest.mark.parametrize("kind", KINDS)
def test_velocity_jvp_matches_autodiff_on_every_kernel(kind):
    teacher = GaussianMixtureTeacher(_mixture(kind), PATHS["general"]())
    x, t, dx, dt = _jvp_inputs(teacher, seed=6)
    _assert_jvp_matches_autodiff(teacher, _closed_form_jvp(teacher), x, t, dx, dt)


def _jvp_without_responsibility_term(teacher):
    """Mutant: ``D_x v = sum_k gamma_k 1/2 C_k' C_k^{-1}`` (the ``v_k (s_k - s_bar)^T`` term
    dropped), by dense matrices; the time part is the closed form's."""
    mix, path = teacher.mixture, teacher.path
    eye = torch.eye(mix.dim, dtype=F64)

    def jvp(x, t, dx, dt):
        gamma = teacher.responsibilities(x, t)
        out = []
        for i in range(x.shape[0]):
            c = path.schedule(t[i])
            cov = c.alpha**2 * mix.covariances + c.beta**2 * eye
            cdot = 2 * c.alpha * c.alpha_dot * mix.covariances + 2 * c.beta * c.beta_dot * eye
            half = 0.5 * cdot @ torch.linalg.inv(cov)  # (K, d, d)
            out.append(torch.einsum("k,kij,j->i", gamma[i], half, dx[i]))
        return torch.stack(out) + teacher.velocity_jvp(x, t, dx=torch.zeros_like(dx), dt=dt).jvp

    return jvp


def _jvp_with_flipped_time_part(teacher):
    """Mutant: ``D_x v dx - d_t v dt``."""
    return lambda x, t, dx, dt: teacher.velocity_jvp(x, t, dx=dx, dt=-dt).jvp


@pytest.mark.parametrize(("name", "path_name"), [("ring8", "linear"), ("anisotropic10", "trig")])
@pytest.mark.parametrize("mutant", [_jvp_without_responsibility_term, _jvp_with_flipped_time_part])
def test_velocity_jvp_comparison_rejects_wrong_variants(name, path_name, mutant):
    teacher = preset(name, path=PATHS[path_name]())
    x, t, dx, dt = _jvp_inputs(teacher)
    with pytest.raises(AssertionError):
        _assert_jvp_matches_autodiff(teacher, mutant(teacher), x, t, dx, dt)


@pytest.mark.parametrize(("name", "path_name"), [("anisotropic10", "linear"), ("ring8", "trig")])
def test_velocity_jacobian_is_symmetric(name, path_name):
    """Why the VJP ``J^T dx`` is no mutant of ``J dx``: with Gaussian noise,
    ``v = (alpha'/alpha) x + beta^2 (alpha'/alpha - beta'/beta) grad log p_t`` is a gradient field,
    so ``D_x v`` is symmetric; the comparison above cannot (and need not) tell them apart."""
    teacher = preset(name, path=PATHS[path_name]())
    x, t, _, _ = _jvp_inputs(teacher, seed=7)
    for i in range(4):
        jac = torch.func.jacrev(lambda z, i=i: teacher.velocity(z[None], t[i : i + 1])[0])(x[i])
        scale = max(1.0, float(jac.abs().max()))
        torch.testing.assert_close(jac, jac.T, rtol=0, atol=1e-13 * scale)


def test_velocity_jvp_rejects_bad_tangents():
    teacher = preset("ring8")
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="dx must have the shape"):
        teacher.velocity_jvp(x, 0.5, dx=torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="dx must have the shape"):
        teacher.velocity_jvp(x, 0.5, dx=torch.zeros(3, 2, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"dx must be a torch\.Tensor"):
        teacher.velocity_jvp(x, 0.5, dx=[[0.0, 0.0]] * 3)
    with pytest.raises(ValueError, match="dt contains non-finite"):
        teacher.velocity_jvp(x, 0.5, dx=x, dt=float("nan"))
