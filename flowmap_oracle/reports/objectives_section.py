"""Report section: every objective, its fixed point at the exact map, and a smoke training run.

* the inventory of :mod:`flowmap_oracle.experiments.fixed_points`: each objective's formula in the
  project's notation, loss type, and fixed-point residual at the exact ring8 map (with the
  tolerance and the perturbed control);
* the smoke-training runs of :mod:`flowmap_oracle.experiments.smoke_training`: sampling error
  against the exact map before and after a few hundred CPU steps.

Layout only: the caller measures (quick mode skips expensive fixed points and shortens the
smoke runs) and says so in :class:`ObjectivesSectionInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .document import ReportDocument
from .notation import auto, literal, mpl_literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..experiments.fixed_points import FixedPointResult, ObjectiveSpec
    from ..experiments.smoke_training import SmokeResult

__all__ = ["FORMULAS", "ObjectivesSectionInputs", "add_objectives_section", "smoke_figure"]

FORMULAS: dict[str, str] = {
    "flow_matching": r"\|F_\theta(x_t,t,t) - v\|^2",
    "meanflow": r"\|F_\theta - \mathrm{sg}(v - (t-s)(J_xF\,v + \partial_tF))\|^2",
    "split_meanflow": r"\|F_\theta(x_t,t,s) - \mathrm{sg}(\frac{(t-r)F(x_t,t,r)"
    r" + (r-s)F(x_r,r,s)}{t-s})\|^2",
    "consistency": r"d(f_\theta(x_t,t,0),\ \mathrm{sg}\,f(\Phi_{t\to t-\Delta}"
    r"(x_t),t-\Delta,0))",
    "scm": r"\nabla_\theta: (\partial_\theta f_\theta)^T\,\frac{d}{dt}f_{\theta^-}(x_t,t,0)",
    "facm": r"\frac{\|F_\theta - F_{tgt}|_{s=0}\|^2}{\sqrt{\|\cdot\|^2+c}}"
    r" + \|F_\theta(x_t,2-t) - v\|^2 + 1 - \cos",
    "ayf_emd": r"\nabla_\theta: \mathrm{sign}(t-s)(\partial_\theta f_\theta)^T"
    r"\frac{d}{dt}f_{\theta^-}(x_t,t,s)",
    "ayf_lmd": r"\nabla_\theta: \mathrm{sign}(s-t)(\partial_\theta f_\theta)^T"
    r"(\partial_s f_{\theta^-} - v(f_{\theta^-},s))",
    "shortcut": r"\|F_\theta(x_t,t,t) - v\|^2 + \|f_\theta(x_t,t,s)"
    r" - \mathrm{sg}(f_{m\to s}\circ f_{t\to m})\|^2",
    "reflow": r"\|F_\theta(x_t,t,t) - (x_1 - \Phi_{1\to 0}(x_1))\|^2",
    "imm": r"\mathrm{MMD}^2(f_\theta(x_t,t,s),\ \mathrm{sg}\,f(x_r,r,s))",
    "ctm": r"d(\mathrm{sg}f_{s\to 0}(f_\theta(x_t,t,s)),\ \mathrm{sg}f_{s\to 0}"
    r"(f(\mathrm{Solver}_{t\to r}(x_t),r,s)))",
    "fmm_lagrangian": r"\|\partial_s f_\theta(x_t,t,s) - v(f_\theta(x_t,t,s),s)\|^2",
    "fmm_eulerian": r"\|\partial_t f_\theta(x_t,t,s) + J_x f_\theta\,v(x_t,t)\|^2",
    "lsd": r"\|\partial_s f_\theta(x_t,t,s) - \mathrm{sg}\,F(\mathrm{sg}\,f_\theta,s,s)\|^2"
    r" \ (s \neq t)",
    "esd": r"\|\partial_t f_\theta + J_x f_\theta\,\mathrm{sg}\,F(x_t,t,t)\|^2 \ (s \neq t)",
    "psd": r"\|f_\theta(x_t,t,s) - \mathrm{sg}(f_{u\to s}\circ f_{t\to u})(x_t)\|^2/(t-s)^2",
}
"""One line per objective in mathtext (``x_t = (1-t)x_0 + t x_1``, ``f = x + (s-t)F``)."""


@dataclass(frozen=True)
class ObjectivesSectionInputs:
    """What the objectives section lays out.

    Attributes:
        objectives: the inventory (formula, loss type, teacher input and tolerance of each).
        fixed_points: the measured fixed points, in inventory order.
        skipped_fixed_points: objectives whose fixed point was not measured (quick mode).
        smoke_runs: the smoke-training runs.
        smoke_preview: ``(steps, evaluation points)`` when the smoke runs were shortened to a
            preview (quick mode), else ``None``.
    """

    objectives: tuple[ObjectiveSpec, ...]
    fixed_points: tuple[FixedPointResult, ...]
    smoke_runs: tuple[SmokeResult, ...]
    skipped_fixed_points: tuple[str, ...] = ()
    smoke_preview: tuple[int, int] | None = None


def smoke_figure(runs: tuple[SmokeResult, ...]) -> Figure:
    """Bars of each smoke run's sampling error against the exact map, before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.7, 3.3))
    xs = range(len(runs))
    steps = sorted({r.steps for r in runs})
    after = f"after {steps[0]} steps" if len(steps) == 1 else "after training"
    ax.bar([x - 0.2 for x in xs], [r.error_before for r in runs], 0.4, label="before training")
    ax.bar([x + 0.2 for x in xs], [r.error_after for r in runs], 0.4, label=after)
    ax.set_xticks(list(xs), [mpl_literal(r.name) for r in runs], rotation=35, ha="right")
    ax.tick_params(axis="x", labelsize=8)
    ax.set(
        xlabel="objective",
        ylabel="RMSE against the exact map",
        title="Smoke training: sampling error before and after",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def add_objectives_section(doc: ReportDocument, results: ObjectivesSectionInputs) -> None:
    """The inventory table with fixed-point residuals, and the smoke-training results."""
    import matplotlib.pyplot as plt

    doc.heading("Objectives at the exact flow map")
    doc.paragraph(
        "Every objective of the seed document is implemented as a loss in the project's "
        "convention (module flowmap_oracle.objectives, one module per method). Each "
        "is evaluated on the 2-D ring of eight Gaussians in float64 with the exact teacher flow "
        "map in the student's place and, where it takes a velocity, the teacher's marginal "
        "velocity (a teacher solver is the exact map). A pointwise fixed point is a zero of "
        "every residual the loss penalises (the largest $|r|$ over terms, samples and "
        "components); IMM's is statistical (the absolute mean of $\\mathrm{MMD}^2$ over groups "
        "of particles, held to 4 standard errors). The control adds a smooth perturbation "
        "(IMM: doubles $F^*$), and must be far above the tolerance. Loss types follow the seed: "
        "(a) forward, (b) backward, (c) self-consistency."
    )
    doc.table(
        [
            [
                r.name,
                r.loss_type,
                r.fixed_point_kind,
                f"{r.fixed_point_residual:.2e}",
                f"{r.tolerance:.1e}",
                f"{r.perturbed_residual:.2e}",
                "yes" if r.passed else "NO",
            ]
            for r in results.fixed_points
        ],
        header=["objective", "type", "fixed point", "residual", "tolerance", "control", "holds"],
    )
    if results.skipped_fixed_points:
        skipped = " and ".join(literal(name) for name in results.skipped_fixed_points)
        doc.paragraph(f"(quick mode: the fixed points of {skipped} skipped)")
    doc.heading(
        r"Formulas ($x_t = (1-t)\,x_0 + t\,x_1$, $f = x + (s-t)\,F$, "
        r"$\mathrm{sg}$ = stop-gradient)",
        level=2,
    )
    for spec in results.objectives:
        doc.paragraph(
            f"{literal(spec.name)} ({literal(spec.loss_type)}); teacher input: {auto(spec.teacher)}"
        )
        doc.formula(FORMULAS[spec.name], fontsize=10)
    reasons = {
        f"{s.tolerance:g}: {auto(s.tolerance_reason)}"
        if s.fixed_point_kind == "pointwise"
        else f"{literal(s.name)}: {auto(s.tolerance_reason)}"
        for s in results.objectives
    }
    doc.paragraph("Tolerances. " + "; ".join(sorted(reasons)) + ".")

    doc.heading("Smoke training on the ring", level=2)
    runs = results.smoke_runs
    preview = results.smoke_preview
    doc.paragraph(
        "Each objective trains a fresh MLP $F(x, t, s)$ (3 hidden layers of 64, Adam, lr 3e-3 "
        "with cosine decay, batch 128, seed 0, single CPU thread) with the teacher's velocity or "
        "a Heun teacher solver where it distils. The error is the RMSE against the exact map "
        r"$\Phi_{1\to 0}$ over 512 fixed noise points: one step $f_{1\to 0}(x_1)$ for flow-map "
        "methods, Euler steps of $F(x, t, t)$ for flow matching (4 steps) and ReFlow (1 step)."
        + (
            f" Quick mode: {preview[0]} steps, {preview[1]} points: a preview only."
            if preview
            else ""
        )
    )
    doc.table(
        [
            [
                r.name,
                r.metric,
                str(r.steps),
                f"{r.error_before:.3f}",
                f"{r.error_after:.3f}",
                f"{r.error_after / r.error_before:.2f}",
                f"{r.seconds:.1f}",
            ]
            for r in runs
        ],
        header=["objective", "error", "steps", "before", "after", "ratio", "train s"],
    )
    fig = smoke_figure(runs)
    doc.figure(
        fig,
        caption="Smoke training: the sampling error (RMSE against the exact flow map "
        r"$\Phi_{1\to 0}$) of each objective's model before and after its training run.",
    )
    plt.close(fig)
