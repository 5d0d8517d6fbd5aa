"""The training loop: reproducible per seed, stops on a non-finite loss naming the step."""

from __future__ import annotations

import pytest
import torch

from flowmap_oracle.experiments.models import MLPFlowMap
from flowmap_oracle.experiments.training import fit, train
from flowmap_oracle.objectives import LossOutput, flow_matching_loss
from flowmap_oracle.reference_models import preset


def _objective(model, x0, x1, t, s):
    return flow_matching_loss(model, x0, x1, t)


def test_train_is_reproducible_per_seed_and_moves_the_model():
    teacher = preset("ring8")
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = MLPFlowMap(2, hidden=8, depth=1)
        start = [p.detach().clone() for p in model.parameters()]
        result = train(model, _objective, teacher, steps=3, batch_size=16, seed=seed)
        assert len(result.losses) == 3 and result.seconds > 0
        assert any(not torch.equal(a, p) for a, p in zip(start, model.parameters(), strict=True))
        runs.append(result.losses)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_fit_stops_on_a_non_finite_loss_naming_the_step():
    torch.manual_seed(0)
    model = MLPFlowMap(2, hidden=8, depth=1)
    steps = []

    def batch_loss(gen: torch.Generator) -> LossOutput:
        x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
        t = torch.full((4,), 0.5, dtype=torch.float64)
        f = model(x, t, t)
        scale = 1.0 if len(steps) < 2 else float("nan")
        steps.append(scale)
        return LossOutput(loss=scale * f.pow(2).mean(), residual=f.detach())

    with pytest.raises(FloatingPointError, match="nan at step 2"):
        fit(model, batch_loss, steps=5, lr=1e-3)
    assert len(steps) == 3
