"""End-to-end experiments shared by the report, the CLI and the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..objectives import meanflow_loss
from ..reference_models import ExactFlowMap, preset
from .metrics import one_step_error
from .models import MLPFlowMap
from .training import train

__all__ = ["OneStepExperiment", "meanflow_one_step_experiment"]

_SUMMARY_FIELDS = (
    "teacher",
    "objective",
    "velocity",
    "steps",
    "batch_size",
    "error_before",
    "error_after",
    "seconds",
)


@dataclass(frozen=True)
class OneStepExperiment:
    """Result of training a flow map and measuring its one-step error.

    Attributes:
        teacher: preset name of the teacher.
        objective: objective name.
        velocity: ``"teacher"`` (marginal) or ``"conditional"`` (``x1 - x0``).
        steps, batch_size: training settings.
        error_before, error_after: RMSE of ``f(x1, 1, 0)`` against ``Phi_{1->0}(x1)``.
        losses: training loss per step.
        seconds: training wall-clock time.
        noise, exact, predicted: a sample of noise points, their exact images and the
            trained model's one-step images (for figures).
    """

    teacher: str
    objective: str
    velocity: str
    steps: int
    batch_size: int
    error_before: float
    error_after: float
    losses: list[float]
    seconds: float
    noise: Tensor
    exact: Tensor
    predicted: Tensor

    def summary(self) -> dict[str, object]:
        """The scalar results as a JSON-ready dict (settings, errors, time, final loss)."""
        out: dict[str, object] = {k: getattr(self, k) for k in _SUMMARY_FIELDS}
        out["final_loss"] = self.losses[-1] if self.losses else None
        return out


def meanflow_one_step_experiment(
    *,
    teacher_name: str = "ring8",
    steps: int = 2000,
    batch_size: int = 256,
    velocity: str = "teacher",
    seed: int = 0,
    n_eval: int = 1024,
    on_step: Callable[[], None] | None = None,
) -> OneStepExperiment:
    """Train an :class:`MLPFlowMap` with the MeanFlow loss and measure its one-step error.

    Arguments:
        teacher_name: a preset of :mod:`flowmap_oracle.reference_models`.
        steps, batch_size: training settings (Adam, lr 2e-3 with cosine decay).
        velocity: ``"teacher"`` uses the teacher's marginal velocity in the target (distillation),
            ``"conditional"`` uses ``x1 - x0`` (MeanFlow from scratch).
        seed: seeds the initialisation and the training draws.
        n_eval: noise points used for the one-step error.
        on_step: called once per training step (progress displays).
    """
    if velocity not in ("teacher", "conditional"):
        raise ValueError(f"velocity must be 'teacher' or 'conditional', got {velocity!r}")
    teacher = preset(teacher_name)
    flow_map = ExactFlowMap(teacher)
    torch.manual_seed(seed)
    model = MLPFlowMap(teacher.dim)
    before = one_step_error(model, flow_map, n=n_eval)
    v = teacher.velocity if velocity == "teacher" else None

    def objective(m, x0, x1, t, s):
        if on_step is not None:
            on_step()
        return meanflow_loss(m, x0, x1, t, s, velocity=v, path=teacher.path)

    result = train(
        model, objective, teacher, steps=steps, batch_size=batch_size, lr=2e-3, seed=seed
    )
    after = one_step_error(model, flow_map, n=n_eval)
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(512, teacher.dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ones, zeros = torch.ones(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64)
        predicted = model.flow(noise, ones, zeros)
    return OneStepExperiment(
        teacher=teacher_name,
        objective="meanflow",
        velocity=velocity,
        steps=steps,
        batch_size=batch_size,
        error_before=before,
        error_after=after,
        losses=result.losses,
        seconds=result.seconds,
        noise=noise,
        exact=flow_map(noise, 1.0, 0.0),
        predicted=predicted,
    )
