"""Measure the split value check over seeds: correct losses pass, wrong ones fail.

Run: ``PYTHONPATH=. python tests/measure_shipped_value_split.py`` (prints, per case, the verdicts
over seeds 0-49 and the largest relative value and gradient differences of the passing runs; then,
for the example's flow-matching slice over seeds 0-299, the ratio of the wrong slice's mean squared
noise to the right one's, behind ``SLICE_MARGIN``).
"""

from __future__ import annotations

import re
from collections import Counter

import torch

from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.declared import Declared
from flowmap_oracle.oracle.shipped import ShippedLoss, _data_in_ours, _Harness, _trained
from flowmap_oracle.oracle.shipped_value import check_value
from tests.test_shipped_value_split import (
    MEAN,
    SHORTCUT,
    WEIGHTED,
    _example,
    _shortcut_loss,
    _split_loss,
    mean_over_entries,
    weighted,
    weighted_twice,
)


def main() -> None:
    ex, conv = _example()
    f32 = Conventions(dtype="float32")
    cases = [
        ("weighted (correct)", lambda m, x: _split_loss(m, x, weigh=weighted), WEIGHTED, None),
        ("weighted float32", lambda m, x: _split_loss(m, x, weigh=weighted), WEIGHTED, f32),
        ("weighted twice", lambda m, x: _split_loss(m, x, weigh=weighted_twice), WEIGHTED, None),
        (
            "mean over entries",
            lambda m, x: _split_loss(m, x, weigh=mean_over_entries),
            WEIGHTED,
            None,
        ),
        ("example (correct)", ex.split_meanflow_loss, Declared(reduction="mean"), conv),
        (
            "example second segment at z_t",
            lambda m, x: ex.split_meanflow_loss(m, x, split_at_z_s=False),
            Declared(reduction="mean"),
            conv,
        ),
    ]
    method = dict.fromkeys([c[0] for c in cases], "split_meanflow")
    shortcut_cases = [
        ("shortcut, clip 4 (correct)", lambda m, x: _shortcut_loss(m, x), MEAN, SHORTCUT),
        (
            "shortcut, no clip (correct)",
            lambda m, x: _shortcut_loss(m, x, clip=1e9),
            MEAN,
            SHORTCUT,
        ),
        (
            "shortcut full-step midpoint",
            lambda m, x: _shortcut_loss(m, x, half=False),
            MEAN,
            SHORTCUT,
        ),
    ]
    from examples import shortcut_models

    shortcut_cases.append(
        (
            "shortcut example as shipped (sigma_min 1e-5, declared linear)",
            shortcut_models.shortcut_loss,
            MEAN,
            Conventions.from_mapping(shortcut_models.implementation().conventions),
        )
    )
    method.update(dict.fromkeys([c[0] for c in shortcut_cases], "shortcut"))
    cases += shortcut_cases
    for label, loss, decl, c in cases:
        verdicts: Counter[str] = Counter()
        worst_v, worst_g = 0.0, 0.0
        fail_v: list[float] = []
        for seed in range(50):
            torch.manual_seed(seed)
            h = _Harness.build(c or Conventions(), None)
            r = check_value(method[label], ShippedLoss(loss, declared=decl), h)
            verdicts[r.status] += 1
            m = re.search(r"relative difference ([0-9.e+-]+).*within ([0-9.e+-]+)", r.message)
            if r.status == "pass" and m is not None:
                worst_v, worst_g = max(worst_v, float(m[1])), max(worst_g, float(m[2]))
            if r.status == "fail" and m is not None:
                fail_v.append(float(m[1]))
        text = (
            f"{label}: {dict(verdicts)}; passing runs: value {worst_v:.1e}, gradient {worst_g:.1e}"
        )
        if fail_v:
            text += f"; failing runs: value differs by {min(fail_v):.1e} to {max(fail_v):.1e}"
        print(text)

    ratios = []
    for seed in range(300):
        torch.manual_seed(seed)
        h = _Harness.build(conv, None)
        check_value("split_meanflow", ShippedLoss(ex.split_meanflow_loss, declared=Declared()), h)
        data = _data_in_ours(h)
        call = next(c for c in _trained(h.net.calls) if c.x.shape[0] < data.shape[0])
        sched = h.teacher.path.schedule(call.t)
        ok = sched.beta >= 0.02
        n = call.x.shape[0]
        m2 = []
        for offset in (0, data.shape[0] - n):  # the head is the right slice
            x0 = data[offset : offset + n]
            eps = (call.x - sched.alpha[:, None] * x0) / sched.beta[:, None]
            m2.append(float(eps[ok].pow(2).mean()))
        ratios.append(m2[1] / m2[0])
    r = torch.tensor(ratios)
    q = r.quantile(torch.tensor([0.01, 0.5], dtype=r.dtype)).tolist()
    print(
        f"wrong / right slice: min {float(r.min()):.3g}, 1st percentile {q[0]:.3g}, median {q[1]:.3g}"
    )


if __name__ == "__main__":
    main()
