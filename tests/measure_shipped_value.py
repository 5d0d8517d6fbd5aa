"""Measure the errors the value check (``<method>.shipped.value``) sees on correct losses.

For each correct loss (MeanFlow with an adaptive weight, from ``tests/test_shipped_value.py``;
``examples/scm_trigflow.py``; ``examples/consistency_training_ect.py``), in float64 and float32,
over ``N`` seeds of the loss's own random draws: the largest relative difference of the value
and of the per-output gradient against the declared loss rebuilt by the oracle. These set
``VALUE_RTOL`` and ``GRAD_RTOL`` in :mod:`flowmap_oracle.oracle.shipped_value`.

Run (the numbers quoted there): ``python tests/measure_shipped_value.py 10``
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples import consistency_training_ect as ect
from examples import scm_trigflow as scm
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.declared import Declared
from flowmap_oracle.oracle.shipped import ShippedLoss, _Harness
from flowmap_oracle.oracle.shipped_value import check_value
from tests.test_shipped_value import ADAPTIVE, _meanflow, adaptive


def measure(
    name: str,
    method: str,
    loss: Callable[..., Any],
    declared: Declared,
    conventions: Conventions,
    shape: tuple[int, ...] | None,
    seeds: range,
) -> None:
    """Print the worst relative value and gradient differences over ``seeds``."""
    worst_value = worst_grad = 0.0
    for seed in seeds:
        torch.manual_seed(seed)
        harness = _Harness.build(conventions, shape)
        result = check_value(
            method, ShippedLoss(loss, declared=declared, data_shape=shape), harness
        )
        assert result.status == "pass", result.message
        text = result.message.replace("\n", " ")
        found = re.search(r"relative difference ([0-9.e+-]+).*within ([0-9.e+-]+) of", text)
        assert found is not None, text
        worst_value = max(worst_value, float(found.group(1)))
        worst_grad = max(worst_grad, float(found.group(2)))
    print(
        f"{name}: {len(seeds)} seeds, worst value rel {worst_value:.1e}, "
        f"worst gradient rel {worst_grad:.1e}"
    )


def main(n: int) -> None:
    seeds = range(n)
    for dtype in ("float64", "float32"):
        measure(
            f"meanflow adaptive {dtype}",
            "meanflow",
            lambda m, x: _meanflow(m, x, weigh=adaptive),
            ADAPTIVE,
            Conventions(dtype=dtype),
            None,
            seeds,
        )
        conv = Conventions.from_mapping(scm.implementation().conventions)
        conv = dataclasses.replace(conv, dtype=dtype)
        measure(f"scm_trigflow {dtype}", "scm", scm.scm_loss, scm.DECLARED, conv, (3,), seeds)
        conv = Conventions.from_mapping(ect.implementation().conventions)
        conv = dataclasses.replace(conv, dtype=dtype)
        measure(
            f"ect {dtype}", "consistency", ect.ect_loss, ect.DECLARED, conv, ect.IMAGE_SHAPE, seeds
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
