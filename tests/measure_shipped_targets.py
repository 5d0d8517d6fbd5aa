"""Seeds 0..N-1 of the target alignment checks (``oracle/shipped_targets.py``) on the correct
losses and the wrong variants of ``tests/test_shipped_targets.py``: how often each gets the
verdict it should.

Run from the repository root: ``PYTHONPATH=. python tests/measure_shipped_targets.py 100
[name filter]``. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import collections
import sys
import time

sys.path.insert(0, "tests")

import test_shipped_targets as T

from flowmap_oracle.oracle.shipped import ShippedLoss


def cases() -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for m in T.EXAMPLES:
        out[f"ok {m}"] = ("pass", *T._example(m))
    for bug, (m, sw) in T.WRONG.items():
        out[f"bug {bug}"] = ("fail", *T._example(m, **sw))
    out["ok shortcut clipped 2.5"] = (
        "pass",
        "shortcut",
        ShippedLoss(T.shortcut_clipped, velocity="teacher"),
        None,
    )
    for bug in (False, True):

        def batched(model, x, teacher, bug=bug):
            return T.split_in_one_batched_call(model, x, teacher, second_at_start=bug)

        out[f"{'bug' if bug else 'ok'} split batched call"] = (
            "fail" if bug else "pass",
            "split_meanflow",
            ShippedLoss(batched, velocity="teacher"),
            None,
        )
    out["ok facm clamp"] = ("pass", "facm", ShippedLoss(T._facm()), None)
    out["ok facm cosine other"] = (
        "pass",
        "facm",
        ShippedLoss(T._facm(cosine=True), distance="other"),
        None,
    )
    for sw in ({"sign": 1.0}, {"t_factor": False}, {"anchor_reversed": True}):
        out[f"bug facm {sw}"] = ("fail", "facm", ShippedLoss(T._facm(**sw)), None)
    out["ok lmd"] = ("pass", "ayf_lmd", T._lmd(), None)
    for sw in ({"teacher_at_start": True}, {"sign_t_minus_s": True}):
        out[f"bug lmd {sw}"] = ("fail", "ayf_lmd", T._lmd(**sw), None)
    return out


def main(n: int, name_filter: str = "") -> None:
    start = time.time()
    for name, (want, method, shipped, conv) in cases().items():
        if name_filter not in name:
            continue
        got: collections.Counter[str] = collections.Counter()
        wrong = []
        for seed in range(n):
            r = T._align(method, shipped, conv, seed)
            got[r.status] += 1
            if r.status != want:
                wrong.append((seed, r.message.splitlines()[0][:120]))
        print(f"{name}: want {want}, got {dict(got)}", wrong[:2], flush=True)
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
