"""The as-shipped examples: MeanFlow distillation in float32, SplitMeanFlow, Shortcut models and
AYF-EMD. Each ``implementation()`` passes every check as shipped; each ``wrong_implementation()``
carries bugs seen in practice, and exactly the checks meant to catch them fail.

The losses draw their times and noise from torch's global random state, as training code does;
each test seeds it (and restores it afterwards) so that a run is reproducible. The statistical
checks were also run over 60 seeds at ``repeats=16`` (no false alarm, every bug caught).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from flowmap_oracle.oracle.shipped import run_shipped_checks

CAUGHT_BY = {
    # tangents (v, 0, 1) on a (z, t, r) network; a one-step sampler from t = 0.994 stepping by 1
    "examples.meanflow_distillation_float32": {
        "meanflow.shipped.alignment",
        "meanflow.shipped.stationarity",
        "sampler.one_step.exact_map",
    },
    # the second segment at z_t instead of z_s; a one-step sampler adding the average velocity
    "examples.split_meanflow": {
        "split_meanflow.shipped.alignment",
        "split_meanflow.shipped.stationarity",
        "split_meanflow.shipped.descent",
        "sampler.one_step.exact_map",
    },
    # the self-consistency half step moved by the full step d; level 2 stepped by 2^-3
    "examples.shortcut_models": {
        "shortcut.shipped.alignment",
        "shortcut.shipped.stationarity",
        "sampler.four_steps.exact_map",
    },
    # JAX with explicit keys: the JVP's time tangent on r instead of t; a two-step sampler
    # asking for 1 -> 0.5 and stepping by 1
    "examples.jax_meanflow_shipped": {
        "meanflow.shipped.alignment",
        "meanflow.shipped.stationarity",
        "sampler.two_step.exact_map",
    },
    # the JVP of F instead of f = x + (s - t) F; a sampler on a time grid from 0 to 1
    "examples.ayf_emd_distillation": {
        "ayf_emd.shipped.alignment",
        "ayf_emd.shipped.stationarity",
        "sampler.four_steps.exact_map",
    },
}


def _run(module: str, factory: str):
    impl = getattr(importlib.import_module(module), factory)()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return run_shipped_checks(
            impl.conventions, losses=impl.shipped_losses, samplers=impl.samplers, repeats=16
        )


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_example_passes_every_check_as_shipped(module):
    results = _run(module, "implementation")
    undeclared = {
        f"{m}.shipped.value"
        for m in importlib.import_module(module).implementation().shipped_losses
    }
    assert results and all(
        r.status == "pass" or (r.check in undeclared and r.status == "skip") for r in results
    ), [(r.check, r.status, r.message) for r in results if r.status != "pass"]
    # every loss gets its checks and every sampler its own
    impl = importlib.import_module(module).implementation()
    expected = {f"sampler.{name}.exact_map" for name in impl.samplers}
    expected |= {f"{method}.shipped.stationarity" for method in impl.shipped_losses}
    assert expected <= {r.check for r in results}


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_bugs_of_the_wrong_variant_are_caught_by_the_intended_checks(module):
    results = _run(module, "wrong_implementation")
    failed = {r.check for r in results if r.status == "fail"}
    assert failed == CAUGHT_BY[module], [(r.check, r.status, r.message) for r in results]


@pytest.mark.parametrize("module", sorted(CAUGHT_BY))
def test_the_factory_hands_the_code_over_in_at_most_25_lines(module):
    source = inspect.getsource(importlib.import_module(module).implementation)
    assert len(source.rstrip().splitlines()) <= 25, source
