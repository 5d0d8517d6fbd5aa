"""Measure ``ctm.shipped.alignment``'s trajectory gap on correct CTM losses and on bugs.

The gap of a row is ``|x_r - Phi_{t->r}(x_t)| / max(|x_r - x_t|, |Phi_{t->r}(x_t) - x_t|)``:
the target point's distance from the teacher's exact trajectory, relative to the distance
travelled (``TRAJECTORY_TOL`` bounds its median). Correct losses: ``examples/ctm_edm.py`` (Heun
on an 18-point Karras grid, 1 to 4 steps), Euler on the same grid, Heun and Euler on coarse grids;
bugs: the example's ``target_at_t`` and ``solver_backwards``.

Run (the committed numbers):
``python tests/measure_ctm_trajectory.py > benchmarks/ctm_trajectory_gaps.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import examples.ctm_edm as ctm
from flowmap_oracle.oracle.adapters import Conventions
from flowmap_oracle.oracle.shipped import CONTROL, N_FIELDS, ShippedLoss, _Harness
from flowmap_oracle.oracle.shipped_ctm import (
    TRAJECTORY_TOL,
    _trajectory_gap,
    find_ctm_calls,
)


@torch.no_grad()
def euler(teacher, x, sigmas, ind, k):
    for j in range(k):
        a, b = sigmas[ind + j], sigmas[ind + j + 1]
        x = x + ctm.bc(b - a, x) * teacher(x, a)
    return x


def grid_loss(n: int, kmax: int, solver: str):
    """CTM compared at s on an ``n``-point Karras grid with 1 to ``kmax`` solver steps."""

    def loss(model, x, teacher):
        sigmas = ctm.karras_sigmas(n).to(x)
        b = x.shape[0]
        k = int(torch.randint(1, kmax + 1, ()))
        ind = torch.randint(0, n - k, (b,))
        s_ind = ind + k + (torch.rand(b) * (n - ind - k)).long()
        t, u, s = sigmas[ind], sigmas[ind + k], sigmas[s_ind]
        x_t = x + ctm.bc(t, x) * torch.randn_like(x)
        step = euler if solver == "euler" else ctm.heun
        x_u = step(teacher, x_t, sigmas, ind, k)
        with torch.no_grad():
            target = ctm.jump(model, x_u, u, s)
        return (ctm.jump(model, x_t, t, s) - target).pow(2).mean()

    return loss


CASES = {
    "example (Heun, 18 points, 1-4 steps)": ctm.ctm_loss,
    "Euler, 18 points, 1-4 steps": grid_loss(18, 4, "euler"),
    "Euler, 10 points, 1-8 steps": grid_loss(10, 8, "euler"),
    "Heun, 8 points, 1-6 steps": grid_loss(8, 6, "heun"),
    "bug: target at t": lambda m, x, v: ctm.ctm_loss(m, x, v, bug="target_at_t"),
    "bug: solver backwards": lambda m, x, v: ctm.ctm_loss(m, x, v, bug="solver_backwards"),
}


def main(seeds: int = 10) -> None:
    torch.set_num_threads(1)
    conv = Conventions.from_mapping(ctm.implementation().conventions)
    out = {}
    for name, loss in CASES.items():
        shipped = ShippedLoss(loss, velocity="teacher", data_shape=ctm.DATA_SHAPE)
        harness = _Harness.build(conv, shipped.data_shape)
        medians, worst = [], 0.0
        for seed in range(seeds):
            torch.manual_seed(seed)
            harness.net.reset()
            harness.gradient(shipped, torch.full((N_FIELDS,), CONTROL, dtype=torch.float64))
            found = find_ctm_calls(harness.net)
            if isinstance(found, str):
                continue
            gap, den = _trajectory_gap(harness, found.online, found.target)
            moved = den > 1e-12 * float(den.max())
            medians.append(float(gap[moved].median()))
            worst = max(worst, float(gap[moved].max()))
        out[name] = {
            "batches": len(medians),
            "largest_median": max(medians),
            "smallest_median": min(medians),
            "worst_row": worst,
        }
    result = {
        "command": "python tests/measure_ctm_trajectory.py > benchmarks/ctm_trajectory_gaps.json",
        "trajectory_tol": TRAJECTORY_TOL,
        "seeds": seeds,
        "batch": 64,
        "cases": out,
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
