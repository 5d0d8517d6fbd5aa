"""The oracle framework: the reference passes, a wrong MeanFlow target fails with a message that
says what differs and where, and the reproduction snippet reruns the failing case."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.conventions import Method
from flowmap_oracle.oracle import (
    CheckFailure,
    Implementation,
    ImplementationError,
    OracleSettings,
    checks_for,
    load_implementation,
    reproduce,
    run_check,
    run_checks,
)


@pytest.fixture(scope="module")
def reference():
    return load_implementation("flowmap_oracle.oracle.reference:implementation")


def _sign_flipped_target(net, x, t, s, v):
    # The (t - s) term with the wrong sign: F_tgt = v + (t - s) dF/dt.
    _, dF = torch.func.jvp(net, (x, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
    return (v + (t - s)[:, None] * dF).detach()


def test_reference_passes_every_check(reference):
    # tests/oracle runs the same checks against --impl when one is given; this asserts the
    # reference itself (explicit corner cases plus two hypothesis draws per check).
    results = run_checks(reference, OracleSettings(max_examples=2))
    assert len(results) == len(checks_for()) >= 25
    bad = [r.report() for r in results if r.status != "pass"]
    assert not bad, "\n\n".join(bad)


def test_every_check_is_collected_by_the_oracle_test_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent / "oracle" / "test_oracle_checks.py"
    spec = importlib.util.spec_from_file_location("_oracle_checks_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (mark,) = [m for m in module.test_oracle_check.pytestmark if m.name == "parametrize"]
    parametrised = [c.name for c in mark.args[1]]
    assert parametrised == [c.name for c in checks_for()]
    assert len(set(parametrised)) == len(parametrised)
    assert module.pytestmark.name == "flowmap_oracle"  # the plugin then adds no items of its own


def test_sign_flipped_meanflow_target_fails_with_what_differs_and_where():
    impl = Implementation(name="sign flip", targets={"meanflow": _sign_flipped_target})
    result = run_check("meanflow.target.random_network", impl)
    assert result.status == "fail"
    msg = result.message
    assert "MeanFlow target F_tgt" in msg and "differs from the reference" in msg
    assert "largest error" in msg and "expected" in msg and "got" in msg
    assert result.mismatch is not None and result.mismatch.max_error > 1e-2
    assert result.mismatch.n_bad > 0
    # The first explicit case is the corner (t, s) = (1, 0), where the (t - s) term is largest.
    assert result.case is not None and (result.case.t, result.case.s) == (1.0, 0.0)
    assert (
        "reproduce(" in result.reproduce and "'meanflow.target.random_network'" in result.reproduce
    )
    # The fixed point at the exact ring8 map also rejects it (the flow is curved).
    exact = run_check("meanflow.target.exact_map_fixed_point", impl)
    assert exact.status == "fail" and exact.mismatch.max_error > 1e-2


def test_reproduce_reruns_the_failing_case():
    impl = Implementation(name="sign flip", targets={"meanflow": _sign_flipped_target})
    result = run_check("meanflow.target.random_network", impl)
    with pytest.raises(CheckFailure) as info:
        reproduce("meanflow.target.random_network", impl, **result.case.kwargs())
    assert info.value.mismatch.max_error == pytest.approx(result.mismatch.max_error)
    reference = load_implementation()
    reproduce("meanflow.target.random_network", reference, **result.case.kwargs())


def test_missing_function_is_skipped_with_a_reason():
    impl = Implementation(name="targets only", targets={"meanflow": _sign_flipped_target})
    result = run_check("meanflow.loss.value_and_gradient", impl)
    assert result.status == "skip" and "provides no meanflow loss" in result.message


def test_a_run_that_checks_nothing_fails():
    from flowmap_oracle.oracle.runner import NOTHING_CHECKED

    results = run_checks(Implementation("provides nothing"))
    assert [r.status for r in results[:-1]] == ["skip"] * len(checks_for())
    last = results[-1]
    assert (last.check, last.status) == (NOTHING_CHECKED, "fail")
    assert last.message.splitlines()[0] == (
        f"nothing was checked: all {len(checks_for())} selected checks were skipped"
    )
    assert last.to_json()["status"] == "fail"
    # a selection that holds nothing the implementation provides checks nothing either
    impl = Implementation("targets only", targets={"meanflow": _sign_flipped_target})
    results = run_checks(impl, objectives=["flow_matching"])
    assert (
        results[-1].check == NOTHING_CHECKED and "provides: meanflow.target" in results[-1].message
    )


def test_an_implementation_that_raises_fails_with_its_error():
    def broken(net, x, t, s, v):
        raise RuntimeError("shape mismatch in my code")

    result = run_check(
        "meanflow.target.random_network", Implementation("broken", targets={"meanflow": broken})
    )
    assert result.status == "fail"
    assert "raised RuntimeError: shape mismatch in my code" in result.message


def test_nan_and_wrong_dtype_are_named():
    def nan_target(net, x, t, s, v):
        out = v.clone()
        out[3, 1] = float("nan")
        return out

    res = run_check(
        "meanflow.target.random_network", Implementation("nan", targets={"meanflow": nan_target})
    )
    assert res.status == "fail" and "non-finite" in res.message and "(3, 1)" in res.message

    def f32_target(net, x, t, s, v):
        return v.float()

    res = run_check(
        "meanflow.target.random_network", Implementation("f32", targets={"meanflow": f32_target})
    )
    assert res.status == "fail" and "dtype float64 as declared" in res.message


def test_factory_spec_errors_are_clear():
    with pytest.raises(ImplementationError, match=r"package\.module:factory"):
        load_implementation("no_colon_here")
    with pytest.raises(ImplementationError, match="cannot import"):
        load_implementation("surely_not_a_module_xyz:factory")
    with pytest.raises(ImplementationError, match="has no attribute"):
        load_implementation("flowmap_oracle.oracle.reference:nope")
    with pytest.raises(
        ImplementationError, match="unknown method 'meanfloww'; methods with a target: meanflow"
    ):
        Implementation("typo", targets={"meanfloww": _sign_flipped_target})
    with pytest.raises(ValueError, match="unknown convention key"):
        Implementation("typo", conventions={"time": "noise_at_1", "signatur": "x_t_s"})


def test_method_aliases_are_refused_with_the_canonical_name():
    with pytest.raises(
        ImplementationError, match=r"unknown method 'fm' \(did you mean 'flow_matching'\?\)"
    ):
        Implementation("alias", losses={"fm": lambda net, data, noise, t: 0.0})
    with pytest.raises(ImplementationError, match="checks no target of 'flow_matching'"):
        Implementation("no such role", targets={"flow_matching": _sign_flipped_target})
    impl = Implementation("enum keys", losses={Method.FLOW_MATCHING: lambda net, d, n, t: 0.0})
    assert impl.provides("flow_matching", "loss")


def test_functions_that_cannot_take_their_protocols_arguments_are_refused_up_front():
    # MeanFlow's target takes (net, x, t, s, v); a four-argument function is a wiring bug.
    with pytest.raises(
        ImplementationError, match=r"targets\['meanflow'\] cannot be called with the 5"
    ):
        Implementation("arity", targets={"meanflow": lambda net, x, t, s: x})
    with pytest.raises(ImplementationError, match="flow_map cannot be called with the 4"):
        Implementation("arity", flow_map=lambda net, x: x)
    # Extra optional parameters, *args and partials are fine.
    Implementation("ok", targets={"meanflow": lambda net, x, t, s, v, scale=1.0: x})
    Implementation("ok", flow_map=lambda *args: args[1])


def test_the_public_surface_is_flat_and_lazy():
    import subprocess
    import sys

    import flowmap_oracle

    assert sorted(flowmap_oracle.__all__) == sorted(flowmap_oracle._EXPORTS)
    for name in flowmap_oracle.__all__:
        assert getattr(flowmap_oracle, name).__name__ == name
    assert flowmap_oracle.Implementation is Implementation
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        flowmap_oracle.nope  # noqa: B018
    # the symbolic layer alone does not pull in torch
    code = "import sys, flowmap_oracle.identities; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
