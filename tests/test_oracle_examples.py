"""The independent example implementations (other conventions, torch and JAX) pass every check
that applies to them: no false alarm from the adapters or the checks."""

from __future__ import annotations

import pytest

from flowmap_oracle.oracle import load_implementation, run_checks
from flowmap_oracle.reports.oracle_section import EXAMPLES

MINIMUM_PASSES = {
    "examples.jax_meanflow:implementation": 7,
    "examples.torch_edm_consistency:implementation": 6,
    "examples.torch_shortcut:implementation": 5,
}


@pytest.mark.parametrize("spec", EXAMPLES)
def test_example_passes_every_applicable_check(spec):
    if "jax" in spec:
        pytest.importorskip("jax")
    impl = load_implementation(spec)
    results = run_checks(impl)
    failures = [r.report() for r in results if r.status == "fail"]
    assert not failures, "\n\n".join(failures)
    passed = [r.check for r in results if r.status == "pass"]
    # every function the example provides is exercised by at least one check
    assert len(passed) >= MINIMUM_PASSES[spec], passed
    provided = {p.split(".")[0] for p in impl.provided()}
    assert provided <= {r.objective for r in results if r.status == "pass"}


def test_a_wrong_convention_declaration_is_caught():
    """The JAX example declared with noise at t = 1 instead of t = 0 must fail (the oracle
    reads conventions from the declaration and never guesses them)."""
    pytest.importorskip("jax")
    from dataclasses import replace

    impl = load_implementation("examples.jax_meanflow:implementation")
    wrong = replace(impl, conventions={**impl.conventions.as_dict(), "time": "noise_at_1"})
    results = run_checks(wrong, objectives=["meanflow"])
    assert any(r.status == "fail" for r in results)


def _trigflow_epsilon():
    """A hand-written TrigFlow implementation with an epsilon (noise) prediction:
    x_theta = cos(theta) data + sin(theta) noise; the network predicts the noise; one step is the
    DDIM step in the angle; flow matching regresses the noise."""
    import torch

    from flowmap_oracle.oracle import Implementation

    def fm_loss(net, data, noise, theta):
        x = torch.cos(theta)[:, None] * data + torch.sin(theta)[:, None] * noise
        return (net(x, theta, theta) - noise).pow(2).sum(dim=1).mean()

    def step(net, x, theta, rho):
        eps = net(x, theta, rho)
        x0 = (x - torch.sin(theta)[:, None] * eps) / torch.cos(theta)[:, None]
        return torch.cos(rho)[:, None] * x0 + torch.sin(rho)[:, None] * eps

    return Implementation(
        "trigflow epsilon",
        conventions={"time": "trigflow_angle", "prediction": "epsilon", "signature": "x_s_t"},
        losses={"flow_matching": fm_loss},
        flow_map=lambda net, x, t, s: step(lambda a, b, c: net(a, c, b), x, t, s),
    )


def test_a_trigflow_epsilon_implementation_passes():
    results = run_checks(_trigflow_epsilon())
    assert [r.check for r in results if r.status == "pass"] == [
        "flow_matching.loss.value_and_gradient",
        "model.flow_map.one_step",
    ], [r.report() for r in results if r.status != "skip"]
