"""Report section: MeanFlow trained against the exact flow map of the ring teacher.

Layout only: the runs come from
:func:`flowmap_oracle.experiments.meanflow_one_step.meanflow_one_step_experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .document import ReportDocument

if TYPE_CHECKING:
    from ..experiments.meanflow_one_step import OneStepExperiment

__all__ = ["TrainingSectionInputs", "add_training_section"]


@dataclass(frozen=True)
class TrainingSectionInputs:
    """What the training section lays out: the two MeanFlow runs on the ring teacher, with the
    teacher's marginal velocity and with the conditional velocity in the target."""

    runs: tuple[OneStepExperiment, OneStepExperiment]

    def __post_init__(self) -> None:
        if len(self.runs) != 2:
            raise ValueError(f"the training section lays out 2 runs, got {len(self.runs)}")


def add_training_section(doc: ReportDocument, results: TrainingSectionInputs) -> None:
    """MeanFlow on the 2-D ring of 8 Gaussians: its one-step error, losses and samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results.runs
    doc.heading("One-step error of MeanFlow against the exact flow map")
    doc.paragraph(
        "An MLP F(x, t, s) is trained with the MeanFlow loss on the 2-D mixture of 8 Gaussians on "
        "a ring (linear path), once with the teacher's marginal velocity in the target "
        "(distillation) and once with the conditional velocity x1 - x0 (training from scratch). "
        "The one-step error is the RMSE of f(x1, 1, 0) = x1 - F(x1, 1, 0) against the exact flow "
        "map Phi_{1->0}(x1), an adaptive float64 ODE solve of the teacher's closed-form velocity, "
        "over 1024 noise points."
    )
    doc.table(
        [
            [
                r.velocity,
                str(r.steps),
                f"{r.error_before:.4f}",
                f"{r.error_after:.4f}",
                f"{r.seconds:.1f}",
            ]
            for r in runs
        ],
        header=["velocity in target", "steps", "error before", "error after", "train s (CPU)"],
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for r, style in zip(runs, ("-", "--"), strict=True):
        axes[0].semilogy(r.losses, style, lw=0.8, label=f"v = {r.velocity}")
    axes[0].set(xlabel="step", ylabel="loss", title="MeanFlow training loss")
    axes[0].legend()
    for ax, r in zip(axes[1:], runs, strict=True):
        ex, pr = r.exact.numpy(), r.predicted.numpy()
        ax.scatter(ex[:, 0], ex[:, 1], s=4, c="k", label="exact $\\Phi_{1\\to 0}(x_1)$")
        ax.scatter(pr[:, 0], pr[:, 1], s=4, c="tab:red", alpha=0.6, label="one step $f(x_1,1,0)$")
        ax.set(title=f"v = {r.velocity}: RMSE {r.error_after:.3f}", aspect="equal")
        ax.legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    doc.figure(fig, caption="Left: loss. Middle, right: one-step samples against exact images.")
    plt.close(fig)
