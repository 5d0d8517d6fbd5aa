"""The identity machinery: registry, the two checks, the test functions and exact flows, and the
``flowmap-oracle identities`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp

from flowmap_oracle.cli import main
from flowmap_oracle.identities import Claim, Identity, MethodResult, _core, all_identities, get
from flowmap_oracle.identities._functions import (
    GaussianTeacher1D,
    abstract,
    jvp,
    random_exact_flow,
    random_vector_function,
)
from flowmap_oracle.identities._notation import X, s, t
from flowmap_oracle.identities.meanflow import meanflow_residual

FAMILIES = {
    "boundary",
    "meanflow",
    "facm",
    "split",
    "ayf",
    "consistency",
    "paths",
    "reflow",
    "imm",
    "fmm",
}


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_family_with_unique_ids_and_twins():
    idents = all_identities()
    ids = [i.id for i in idents]
    assert len(ids) == len(set(ids))
    assert {i.family for i in idents} == FAMILIES
    for ident in idents:
        assert ident.twins, ident.id
        assert ident.steps, ident.id
        assert ident.assumptions, ident.id
        assert ident.seed_section, ident.id
        assert len({tw.name for tw in ident.twins}) == len(ident.twins), ident.id
    # families appear in the seed's order
    order = [i.family for i in idents]
    assert order.index("boundary") < order.index("meanflow") < order.index("paths")


def test_get_names_the_unknown_id_and_the_known_ones():
    assert get("meanflow.identity").id == "meanflow.identity"
    with pytest.raises(KeyError, match=r"no identity 'meanflow\.nope'.*meanflow\.identity"):
        get("meanflow.nope")


def test_identity_without_twin_is_refused():
    ident = get("meanflow.identity")
    with pytest.raises(ValueError, match="no wrong twin"):
        Identity(
            id="x.y",
            title="t",
            seed_section="s",
            assumptions=("a",),
            statement=ident.statement,
            steps=ident.steps,
            twins=(),
            symbolic=ident.symbolic,
            numeric=ident.numeric,
        )


# --------------------------------------------------------------------------- the checks


def test_symbolic_zero_accepts_identities_and_rejects_the_rest():
    f = sp.Function("f")
    x = sp.Symbol("x", real=True)
    assert _core.symbolic_zero(sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1).passed
    assert _core.symbolic_zero(sp.diff(f(x) ** 2, x) - 2 * f(x) * sp.diff(f(x), x)).passed
    bad = _core.symbolic_zero(sp.diff(f(x), x) - f(x))
    assert not bad.passed and "remainder" in bad.detail


def test_jets_keep_distinct_derivatives_apart():
    f = sp.Function("f")
    x, y = sp.symbols("x y", real=True)
    e = f(x) * sp.diff(f(x), x) - f(y) * sp.diff(f(y), y)
    assert _core.jets(e) != 0  # distinct points: independent jets
    assert _core.jets(e.subs(y, x)) == 0


def test_derivatives_at_different_composite_points_are_not_conflated():
    """A derivative at a composite point stays a ``Subs`` whose inner ``Derivative`` is the same
    object at every point; the simplification must keep F'(x^2 + 1) and F'(x^2 + 2) apart."""
    f = sp.Function("f")
    x = sp.Symbol("x", real=True)

    def d_at(p):
        return sp.Subs(sp.Derivative(f(x), x), x, p).doit()

    assert not _core.symbolic_zero(d_at(x**2 + 1) - d_at(x**2 + 2)).passed
    assert _core.symbolic_zero(d_at(x**2 + 1) - d_at(1 + x**2)).passed


def test_numeric_zero_has_a_tight_tolerance_and_rejects_leftover_symbols():
    x = sp.Symbol("x")
    pts = [(0.3,), (0.7,)]
    assert _core.numeric_zero(sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1, [x], pts, method="m").passed
    # a perturbation far below float64 resolution is still seen at 40 digits
    assert not _core.numeric_zero(sp.Float("1e-20", 40) * x, [x], pts, method="m").passed
    with pytest.raises(ValueError, match="free symbols"):
        _core.numeric_zero(x + sp.Symbol("y"), [x], pts, method="m")
    with pytest.raises(ValueError, match="abstract functions"):
        _core.numeric_zero(sp.Function("g")(x), [x], pts, method="m")


def test_a_claim_off_by_a_tiny_constant_fails_both_checks():
    """The MeanFlow identity's checks reject a residual shifted by 1e-12: the tolerance is not
    loose enough to hide small errors."""
    ident = get("meanflow.identity")
    shifted = Claim(
        "shifted",
        "residual + 1e-12",
        ident.statement.relation,
        lambda F, v, x, t, s: (
            meanflow_residual(F, v, x, t, s) + sp.Matrix([1, 1]) * sp.Float("1e-12", 40)
        ),
    )
    res = ident.check_claim(shifted)
    assert not res.symbolic.passed and not res.numeric.passed
    assert res.numeric.residual == pytest.approx(1e-12, rel=1e-6)


def test_swapping_statement_and_twin_makes_the_check_fail():
    """Every check can fail: with the sign-flipped MeanFlow identity as statement the identity
    fails and its twin (the true statement) is not rejected."""
    ident = get("meanflow.identity")
    swapped = Identity(
        id="meanflow.swapped",
        title="swapped",
        seed_section=ident.seed_section,
        assumptions=ident.assumptions,
        statement=ident.twins[0],
        steps=ident.steps,
        twins=(ident.statement,),
        symbolic=ident.symbolic,
        numeric=ident.numeric,
    )
    res = swapped.check()
    assert res.status == "fail"
    assert not res.twin_rejected


def test_an_exception_in_a_check_is_a_failed_result_naming_it():
    def broken(claim: Claim) -> MethodResult:
        raise ZeroDivisionError("division by zero at t = s")

    ident = get("boundary.facm")
    res = _core._guarded(broken, ident.statement, "numeric")
    assert not res.passed and res.kind == "numeric" and "ZeroDivisionError" in res.detail


def test_taylor_residuals_of_a_known_series():
    h = sp.Symbol("h")
    e = sp.sin(h)
    assert all(sp.simplify(r) == 0 for r in _core.taylor_residuals(e, h, 1, 1))
    assert any(sp.simplify(r) != 0 for r in _core.taylor_residuals(e, h, 0, 1))


def test_limit_checks_accept_the_claimed_order_and_reject_others():
    """``h sin(x) + h^2 x = h sin(x) + O(h^2)``: both checks pass; a wrong order or a wrong
    coefficient fails both."""
    h, x = sp.symbols("h x", real=True)
    expr = h * sp.sin(x) + h**2 * x
    points = [(0.3,), (1.2,)]
    assert _core.symbolic_limit((expr, 1, sp.sin(x)), h, method="m").passed
    assert _core.numeric_limit((expr, 1, sp.sin(x)), [x], h, points, method="m").passed
    for wrong in ((expr, 0, sp.sin(x)), (expr, 1, sp.cos(x))):
        assert not _core.symbolic_limit(wrong, h, method="m").passed
        assert not _core.numeric_limit(wrong, [x], h, points, method="m").passed


def test_flow_points_keep_the_times_apart_in_the_requested_order():
    for p in _core.flow_points(1, n_times=3, ordered=True, extra=[(-1, 1)], n=20):
        assert len(p) == 6 and p[2] - p[3] > 0.05 and p[3] - p[4] > 0.05
        assert all(abs(c) <= 1.5 for c in p[:2]) and abs(p[5]) <= 1
    either = _core.flow_points(1, n=40)
    assert all(abs(p[2] - p[3]) > 0.05 for p in either)
    assert any(p[2] < p[3] for p in either) and any(p[2] > p[3] for p in either)
    assert either == _core.flow_points(1, n=40)  # reproducible


# --------------------------------------------------------------------------- test functions


def test_jvp_is_the_directional_derivative():
    F = abstract("F", 3, 1)
    x, a, b = sp.symbols("x a b", real=True)
    out = jvp(F, [x, a, b], [2, 0, 1])[0]
    Fx = F(x, a, b)[0]
    assert sp.simplify(out - (2 * Fx.diff(x) + Fx.diff(b))) == 0


def test_random_exact_flow_is_the_flow_of_its_velocity():
    """Independent of SymPy's differentiation: integrate dx/ds = v(x, s) with scipy's DOP853 from
    (x, t) to s and compare with the closed-form Phi_{t->s}(x); and the semigroup law."""
    from scipy.integrate import solve_ivp

    flow = random_exact_flow()
    tt, ss, rr = sp.Rational(9, 10), sp.Rational(1, 5), sp.Rational(1, 2)
    x0 = [sp.Rational(3, 10), sp.Rational(-1, 2)]
    v = sp.lambdify([*X, t], list(flow.velocity(X, t)), "numpy")
    sol = solve_ivp(
        lambda u, y: v(y[0], y[1], u),
        (float(tt), float(ss)),
        [float(c) for c in x0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    closed = [float(c) for c in flow.flow_map(sp.Matrix(x0), tt, ss)]
    # float64 ODE solve at rtol = atol = 1e-12 over a unit interval: 1e-9 leaves a margin
    np.testing.assert_allclose(sol.y[:, -1], closed, rtol=0, atol=1e-9)
    semigroup = flow.flow_map(flow.flow_map(sp.Matrix(x0), tt, rr), rr, ss) - flow.flow_map(
        sp.Matrix(x0), tt, ss
    )
    assert max(abs(float(c.evalf(30))) for c in semigroup) < 1e-25


def test_random_exact_flow_is_curved_and_its_jacobian_is_not_symmetric():
    flow = random_exact_flow()
    F = flow.average_velocity()
    pt = {
        X[0]: sp.Rational(1, 3),
        X[1]: sp.Rational(-2, 3),
        t: sp.Rational(4, 5),
        s: sp.Rational(1, 5),
    }
    Fx = F(X, t, s)
    J = Fx.jacobian(X).subs(pt).evalf(30)
    assert abs(float(J[0, 1] - J[1, 0])) > 1e-3
    # dF/dt along the flow is not zero (a straight flow would hide the sign of (t - s) dF/dt)
    DtF = (Fx.jacobian(X) * flow.velocity(X, t) + Fx.diff(t)).subs(pt).evalf(30)
    assert max(abs(float(c)) for c in DtF) > 1e-2


def test_random_smooth_functions_are_reproducible_and_differ_by_seed():
    a = random_vector_function(3, 2, np.random.default_rng(1))
    b = random_vector_function(3, 2, np.random.default_rng(1))
    c = random_vector_function(3, 2, np.random.default_rng(2))
    args = [sp.Rational(1, 3), sp.Rational(1, 2), sp.Rational(1, 5)]
    assert a(*args) == b(*args)
    assert a(*args) != c(*args)


def test_gaussian_teacher_flow_solves_its_ode_on_the_vp_path():
    from scipy.integrate import solve_ivp

    u = sp.Dummy("u")
    teacher = GaussianTeacher1D(
        sp.Lambda(u, sp.cos(sp.pi * u / 2)),
        sp.Lambda(u, sp.sin(sp.pi * u / 2)),
        sp.Rational(1, 2),
        2,
    )
    x = sp.Symbol("x")
    v = sp.lambdify([x, t], teacher.velocity(x, t), "numpy")
    sol = solve_ivp(
        lambda w, y: v(y, w), (0.8, 0.3), [0.4], method="DOP853", rtol=1e-12, atol=1e-12
    )
    closed = teacher.flow_map(sp.Rational(2, 5), sp.Rational(4, 5), sp.Rational(3, 10))
    # float64 ODE solve at rtol = atol = 1e-12: 1e-9 leaves a margin
    assert abs(sol.y[0, -1] - float(closed.evalf(30))) < 1e-9


# --------------------------------------------------------------------------- CLI


def test_cli_json_lists_the_required_fields(capsys):
    assert main(["identities", "--json", "--only", "boundary", "facm.time_shift"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is True
    out = doc["results"]
    assert [o["id"] for o in out] == [
        "boundary.meanflow_ayf",
        "boundary.facm",
        "boundary.consistency_model",
        "facm.time_shift",
    ]
    for o in out:
        assert {"id", "title", "status", "method", "seconds", "twin_rejected"} <= set(o)
        assert o["status"] == "pass" and o["twin_rejected"] is True
        assert all(not tw["symbolic"]["passed"] for tw in o["twins"])


def test_cli_table_and_unknown_id(capsys):
    assert main(["identities", "--only", "facm.time_shift"]) == 0
    out = capsys.readouterr().out
    assert "facm.time_shift" in out and "1/1 pass" in out
    assert main(["identities", "--only", "no.such"]) == 2
    assert "unknown id or family ['no.such']" in capsys.readouterr().err
