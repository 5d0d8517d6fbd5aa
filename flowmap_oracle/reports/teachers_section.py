"""Report section: the analytic teachers, the measured error of their exact flow maps, and the
flow-map benchmark (committed JSON records, read by the caller from an explicit directory).

Layout only: :func:`add_teachers_section` lays out a :class:`TeachersSectionInputs`; the numbers
come from :mod:`flowmap_oracle.experiments.teacher_accuracy` and the benchmark files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .document import ReportDocument
from .notation import auto, literal, mpl_literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..experiments.teacher_accuracy import ErrorRow, Trajectories

__all__ = [
    "BenchmarkRecord",
    "PresetSummary",
    "TeachersSectionInputs",
    "add_teachers_section",
    "trajectory_figure",
]


@dataclass(frozen=True)
class PresetSummary:
    """One row of the presets table."""

    name: str
    dim: int
    n_components: int
    covariance_type: str


@dataclass(frozen=True)
class BenchmarkRecord:
    """One committed ``teachers*.json`` benchmark file: its name and its parsed content."""

    name: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class TeachersSectionInputs:
    """What the teachers section lays out.

    Attributes:
        error_rows: the measured flow-map errors.
        error_seconds: how long that measurement took.
        quick: whether it ran in quick mode.
        presets: the preset teachers.
        trajectories: exact trajectories for the figure.
        benchmarks: the benchmark records found in ``benchmarks_dir`` (sorted by name), or
            ``None`` when that directory is missing (or none was given).
        benchmarks_dir: the directory searched (as given), ``None`` when none was given.
    """

    error_rows: tuple[ErrorRow, ...]
    error_seconds: float
    quick: bool
    presets: tuple[PresetSummary, ...]
    trajectories: Trajectories
    benchmarks: tuple[BenchmarkRecord, ...] | None
    benchmarks_dir: str | None = None


def _benchmark_tables(
    records: tuple[BenchmarkRecord, ...],
) -> list[tuple[str, list[list[str]]]]:
    """One (caption, rows) per benchmark record: runs as columns."""
    tables = []
    for bench in records:
        r = bench.record
        env = r.get("environment", {})
        # records.environment keeps versions in "versions"; files written before it, at the top
        torch_version = env.get("versions", env).get("torch", "?")
        runs = r.get("runs", {})
        matched = r["matched_error"]
        cols = [
            runs.get("ours", {}),
            runs.get("baseline", {}),
            runs.get("baseline_same_velocity", {}),
            matched,
        ]

        def cell(run: Mapping[str, Any], key: str, fmt: str) -> str:
            return format(run[key], fmt) if key in run else "-"

        rows = [
            [
                "rtol",
                f"{r['rtol']:g}",
                f"{r['rtol']:g}",
                f"{r['rtol']:g}",
                cell(matched, "rtol", "g"),
            ],
            ["wall seconds", *(cell(c, "seconds", ".2f") for c in cols)],
            ["CPU seconds", *(cell(c, "cpu_seconds", ".2f") for c in cols)],
            ["max error", *(cell(c, "max_error", ".1e") for c in cols)],
            ["velocity calls", *(cell(c, "n_velocity_evals", "d") for c in cols)],
            ["evals per point", *(cell(c, "mean_point_evals", ".0f") for c in cols)],
            [
                "peak MiB",
                *(
                    cell(
                        {"m": c["peak_memory_bytes"] / 2**20} if "peak_memory_bytes" in c else {},
                        "m",
                        ".0f",
                    )
                    for c in cols
                ),
            ],
        ]
        caption = (
            f"{literal(bench.name)}: $n = {r['n']:g}$, {literal(r['device'])}, "
            f"{env.get('torch_threads', '?')} "
            f"thread(s), torch {torch_version}. Speed-up over the plain baseline: "
            f"{r['speedup']:.1f}x wall ({r.get('speedup_cpu_time', float('nan')):.1f}x CPU) at the "
            f"same rtol, {matched['speedup']:.1f}x at matched error; over dopri5 on the same "
            f"velocity: {r['speedup_same_velocity']:.1f}x"
            + (
                f" at the same rtol, {r['speedup_same_velocity_matched_error']:.1f}x at matched "
                "error."
                if r.get("speedup_same_velocity_matched_error") is not None
                else "."
            )
            + (
                f" Ours: {literal(runs['ours']['solver'])}."
                if "solver" in runs.get("ours", {})
                else ""
            )
        )
        tables.append((caption, rows))
    return tables


def _no_benchmarks_sentence(results: TeachersSectionInputs) -> str:
    where = results.benchmarks_dir
    if results.benchmarks is None:
        if where is None:
            return (
                "No benchmark directory was given (flowmap-oracle report --benchmarks DIR; "
                "default: ./benchmarks when it exists), so no committed benchmark results are "
                "shown."
            )
        return (
            f"The benchmark directory {literal(where)} does not exist, so no committed benchmark "
            "results are shown."
        )
    where = literal(str(where))
    return (
        f"No benchmark results found under {where}; run 'flowmap-oracle bench teachers "
        f"--n 100000 --json {where}/teachers_cpu.json'."
    )


def trajectory_figure(traj: Trajectories) -> Figure:
    """The exact trajectories of ``traj`` in the plane, from the noise points (``t = 1``) to
    their images under the exact flow map (``t = 0``), with the component means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 5.0))
    paths = traj.points
    for i in range(paths.shape[1]):
        ax.plot(
            paths[:, i, 0],
            paths[:, i, 1],
            lw=0.6,
            c="tab:blue",
            alpha=0.7,
            label=r"trajectory from $t = 1$ to $t = 0$" if i == 0 else None,
        )
    ax.scatter(
        paths[0, :, 0],
        paths[0, :, 1],
        s=7,
        facecolors="none",
        edgecolors="tab:gray",
        zorder=3,
        label=r"noise point $x_1$",
    )
    ax.scatter(
        paths[-1, :, 0],
        paths[-1, :, 1],
        s=7,
        c="k",
        zorder=3,
        label=r"exact image $\Phi_{1\to 0}(x_1)$",
    )
    ax.scatter(
        traj.means[:, 0],
        traj.means[:, 1],
        marker="x",
        c="tab:red",
        zorder=4,
        label=r"component mean $\mu_k$",
    )
    ax.set(
        aspect="equal",
        xlabel="first coordinate of $x$",
        ylabel="second coordinate of $x$",
        title=f"{mpl_literal(traj.teacher)}: exact flow-map trajectories",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def add_teachers_section(doc: ReportDocument, results: TeachersSectionInputs) -> None:
    """Teachers, measured flow-map error bounds, benchmark numbers and a trajectory figure."""
    doc.heading("Analytic teachers and their exact flow maps")
    doc.paragraph(
        "Every numeric check rests on Gaussian-mixture teachers "
        r"$\sum_k w_k\,N(\mu_k, \Sigma_k)$ carried along a path "
        r"$x_t = \alpha(t)\,x_0 + \beta(t)\,x_1$ (linear, trigonometric/VP, Lipman's path with "
        r"$\sigma_{\min}$ in this project's convention, or any user schedule). Each component stays "
        r"Gaussian, $N(\alpha\mu_k, C_k)$ with $C_k = \alpha^2\Sigma_k + \beta^2 I$, and the "
        r"marginal velocity is evaluated in the $C_k^{-1}$ form, exact at $t = 0$ and $t = 1$:"
    )
    doc.formula(
        r"v(x,t)=\sum_k \gamma_k(x,t)\,\left[\dot\alpha\,\mu_k+\frac{1}{2}\dot C_k C_k^{-1}(x-\alpha\mu_k)\right]"
    )
    doc.paragraph(
        "For one Gaussian the flow map is closed form (symmetric square roots, not Cholesky "
        "factors); the average velocity and its derivatives are divided differences computed "
        "without cancellation near $s = t$:"
    )
    doc.formula(r"\Phi_{t\to s}(x)=\alpha_s\mu+C_s^{1/2}C_t^{-1/2}(x-\alpha_t\mu)")
    doc.formula(
        r"D_tF^*=\int_0^1(1-u)\,a(\sigma(u))\,du,\quad \partial_sF^*=\int_0^1 u\,a(\sigma(u))\,du,\quad \sigma(u)=t+u(s-t)"
    )
    doc.paragraph(
        "For mixtures the flow map is an adaptive float64 solve (DOP853 with a step size per "
        "sample and PI step control) of the velocity together with the quadratures of $v$ and "
        r"of the closed-form acceleration $a = J_x v\,v + \partial_t v$, so $F^*$, $D_t F^*$ and "
        r"$\partial_s F^*$ need no finite differences. The presets:"
    )
    doc.table(
        [[p.name, str(p.dim), str(p.n_components), p.covariance_type] for p in results.presets],
        header=["preset", "$d$", "$K$", "covariances"],
    )
    doc.heading("Measured flow-map errors (default rtol = atol = 1e-12)", level=2)
    doc.table(
        [
            [r.teacher, auto(r.quantity), r.against, f"{r.max_error:.1e}", str(r.points)]
            for r in results.error_rows
        ],
        header=["teacher", "quantity", "compared with", "max abs error", "points"],
    )
    doc.paragraph(
        f"Measured while building this report ({results.error_seconds:.1f} s, "
        f"{'quick' if results.quick else 'full'} mode). The tests assert these differences below "
        "1e-10 for the ODE solve, and torch against JAX below 1e-9."
    )
    doc.heading("Speed: exact flow map against a plain torchdiffeq baseline", level=2)
    tables = _benchmark_tables(results.benchmarks or ())
    if tables:
        doc.paragraph(
            r"$t = 1 \to 0$ for $n$ noise points of ring8 at rtol = atol = 1e-9 (float64). Ours: "
            "the per-sample DOP853 solve. Baseline: torchdiffeq.odeint(dopri5) of the closed-form "
            "velocity evaluated plainly (generic eigenbasis einsum). Same $v$: dopri5 on the "
            "teacher's specialised velocity kernel (the solver's own share). Matched error: ours "
            "at the loosest tolerance whose measured error is still at most the baseline's. "
            "Errors against a rtol 1e-13 reference; the minimum over interleaved repeats. Produced "
            "by 'flowmap-oracle bench teachers' (command, versions and device in each JSON file)."
        )
        for caption, rows in tables:
            doc.table(rows, header=["", "ours", "baseline", "same $v$", "matched error"])
            doc.paragraph(caption, style="Caption")
    else:
        doc.paragraph(_no_benchmarks_sentence(results))
    fig = trajectory_figure(results.trajectories)
    doc.figure(
        fig,
        caption=f"Exact flow-map trajectories of the {literal(results.trajectories.teacher)} "
        r"teacher: each noise point $x_1$ (hollow) is carried from $t = 1$ to its exact image "
        r"$\Phi_{1\to 0}(x_1)$ (black) at $t = 0$; crosses mark the component means $\mu_k$.",
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
