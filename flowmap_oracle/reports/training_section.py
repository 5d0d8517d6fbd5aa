"""Report section: MeanFlow trained against the exact flow map of the ring teacher.

Layout only: the runs come from
:func:`flowmap_oracle.experiments.meanflow_one_step.meanflow_one_step_experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .document import ReportDocument
from .notation import literal, mpl_literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..experiments.meanflow_one_step import OneStepExperiment

__all__ = ["TrainingSectionInputs", "add_training_section", "training_figure"]


@dataclass(frozen=True)
class TrainingSectionInputs:
    """What the training section lays out: the two MeanFlow runs on the ring teacher, with the
    teacher's marginal velocity and with the conditional velocity in the target."""

    runs: tuple[OneStepExperiment, OneStepExperiment]

    def __post_init__(self) -> None:
        if len(self.runs) != 2:
            raise ValueError(f"the training section lays out 2 runs, got {len(self.runs)}")


def training_figure(runs: tuple[OneStepExperiment, ...]) -> Figure:
    """The training losses of ``runs`` (top) and, per run, its one-step samples against the
    exact images of the same noise points (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.7, 6.6))
    grid = fig.add_gridspec(2, len(runs), height_ratios=[1.0, 1.45])
    loss = fig.add_subplot(grid[0, :])
    for r, style in zip(runs, ("-", "--", ":", "-."), strict=False):
        loss.semilogy(r.losses, style, lw=0.8, label=f"$v$ = {mpl_literal(r.velocity)}")
    loss.set(
        xlabel="training step",
        ylabel="MeanFlow loss (log scale)",
        title="MeanFlow training loss per step",
    )
    loss.legend(title="velocity in the target", fontsize=8, title_fontsize=8)
    for k, r in enumerate(runs):
        ax = fig.add_subplot(grid[1, k])
        ex, pr = r.exact.numpy(), r.predicted.numpy()
        ax.scatter(ex[:, 0], ex[:, 1], s=3, c="k", label=r"exact $\Phi_{1\to 0}(x_1)$")
        ax.scatter(
            pr[:, 0], pr[:, 1], s=3, c="tab:red", alpha=0.6, label=r"one step $f(x_1, 1, 0)$"
        )
        ax.set(
            title=f"$v$ = {mpl_literal(r.velocity)}: RMSE {r.error_after:.3f}",
            xlabel="first coordinate of $x$",
            ylabel="second coordinate of $x$",
            aspect="equal",
        )
        ax.legend(loc="lower left", fontsize=7, markerscale=2.5, framealpha=0.85)
    fig.tight_layout()
    return fig


def add_training_section(doc: ReportDocument, results: TrainingSectionInputs) -> None:
    """MeanFlow on the 2-D ring of 8 Gaussians: its one-step error, losses and samples."""
    import matplotlib.pyplot as plt

    runs = results.runs
    doc.heading("One-step error of MeanFlow against the exact flow map")
    doc.paragraph(
        "An MLP $F(x, t, s)$ is trained with the MeanFlow loss on the 2-D mixture of 8 Gaussians "
        "on a ring (linear path), once with the teacher's marginal velocity in the target "
        "(distillation) and once with the conditional velocity $x_1 - x_0$ (training from "
        "scratch). The one-step error is the RMSE of $f(x_1, 1, 0) = x_1 - F(x_1, 1, 0)$ against "
        r"the exact flow map $\Phi_{1\to 0}(x_1)$, an adaptive float64 ODE solve of the "
        "teacher's closed-form velocity, over 1024 noise points."
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
    fig = training_figure(runs)
    names = " and ".join(literal(r.velocity) for r in runs)
    doc.figure(
        fig,
        caption=f"Top: the MeanFlow loss per training step with the {names} velocity in the "
        r"target. Bottom: the one-step samples $f(x_1, 1, 0)$ (red) against the exact images "
        r"$\Phi_{1\to 0}(x_1)$ (black) of the same noise points; the title gives the RMSE.",
    )
    plt.close(fig)
