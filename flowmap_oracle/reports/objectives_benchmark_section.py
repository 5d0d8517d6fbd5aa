"""Report section "Benchmark of objectives", its figures and the README leaderboard.

Layout only: everything here lays out the committed results of ``flowmap-oracle bench
objectives`` as :func:`flowmap_oracle.experiments.bench_objectives.load_objectives_benchmark`
reads them (the cells, their summaries over seeds, the command, device and versions). The
results are described here by protocols (what the layout reads), so that this module imports
nothing from the layers that compute.

The PDF report includes the section with
``ObjectivesBenchmarkSectionInputs(load_objectives_benchmark("benchmarks/objectives_cpu.json"))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .document import ReportDocument
from .notation import literal, mpl_literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class CellSummary(Protocol):
    """One grid point summarised over seeds (what
    :class:`flowmap_oracle.experiments.bench_objectives.CellSummary` holds)."""

    @property
    def objective(self) -> str: ...
    @property
    def teacher(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def steps(self) -> int: ...
    @property
    def n_seeds(self) -> int: ...
    @property
    def rmse_exact(self) -> tuple[float, float, float] | None: ...
    @property
    def w2(self) -> tuple[float, float, float] | None: ...
    @property
    def plateau_reached(self) -> int: ...
    @property
    def baselines(self) -> dict[str, float]: ...


class ObjectivesBenchmark(Protocol):
    """Committed benchmark results (what
    :class:`flowmap_oracle.experiments.bench_objectives.ObjectivesBenchmark` holds)."""

    @property
    def cells(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def failures(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def summaries(self) -> Sequence[CellSummary]: ...
    @property
    def command(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def versions_text(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def plateau_threshold(self) -> float: ...


@dataclass(frozen=True)
class ObjectivesBenchmarkSectionInputs:
    """What the section lays out: the committed results of one ``bench objectives`` run.

    Attributes:
        results: the run, or ``None`` when no committed results were found.
        source: where they were read from (or looked for).
    """

    results: ObjectivesBenchmark | None
    source: str | None = None


__all__ = [
    "CellSummary",
    "ObjectivesBenchmark",
    "ObjectivesBenchmarkSectionInputs",
    "add_objectives_benchmark_section",
    "compute_figure",
    "heatmap_figure",
    "leaderboard_markdown",
    "steps_figure",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(names: Sequence[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten strong colours first
    return {name: cmap(order[i % 20]) for i, name in enumerate(sorted(set(names)))}


def _style(name: str, names: Sequence[str]) -> str:
    """Solid lines for the first ten objectives, dashed beyond (their colours repeat paler)."""
    return "-" if sorted(set(names)).index(name) < 10 else "--"


def _panels(summaries: Sequence[CellSummary]) -> list[tuple[str, str]]:
    return sorted({(r.teacher, r.path) for r in summaries})


def steps_figure(summaries: Sequence[CellSummary]) -> Figure:
    """RMSE against the exact map over sampling steps, one panel per (teacher, path): each
    objective's mean with its 95 % interval over seeds, and the teacher's solvers (Euler, Heun
    at the same steps; the adaptive solve as a horizontal line)."""
    plt = _pyplot()
    panels = _panels(summaries)
    cols = min(2, len(panels)) or 1
    rows = (len(panels) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(7.0, 3.0 * rows + 1.2), squeeze=False)
    colours = _colours([r.objective for r in summaries])
    for ax, (teacher, path) in zip(axes.flat, panels, strict=False):
        cells = [r for r in summaries if (r.teacher, r.path) == (teacher, path)]
        for name in sorted({r.objective for r in cells}):
            pts = sorted(
                (r.steps, r.rmse_exact) for r in cells if r.objective == name and r.rmse_exact
            )
            if not pts:
                continue
            ks = [k for k, _ in pts]
            mean = [s[0] for _, s in pts]
            # a log axis: an interval reaching below 0 (few seeds) is drawn down to mean / 10
            err = [[min(s[0] - s[1], 0.9 * s[0]) for _, s in pts], [s[2] - s[0] for _, s in pts]]
            ax.errorbar(
                ks,
                mean,
                yerr=err,
                color=colours[name],
                ls=_style(name, list(colours)),
                lw=1,
                ms=3,
                marker="o",
                capsize=2,
                label=mpl_literal(name),
            )
        base = sorted({(r.steps, r.baselines["euler"], r.baselines["heun"]) for r in cells})
        ax.plot([b[0] for b in base], [b[1] for b in base], "k--", lw=1.2, label="teacher Euler")
        ax.plot([b[0] for b in base], [b[2] for b in base], "k:", lw=1.5, label="teacher Heun")
        ax.axhline(cells[0].baselines["adaptive"], color="0.5", lw=1, label="teacher dopri5")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set(
            yscale="log",
            xlabel="sampling steps",
            ylabel="RMSE against the exact map",
            title=f"{teacher}, {path} path",
        )
        ax.set_xticks([r.steps for r in cells], [str(r.steps) for r in cells])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=6, frameon=False)
    fig.suptitle(
        "Few-step error against the exact flow map (mean, 95 % interval over seeds)", fontsize=9
    )
    fig.tight_layout(rect=(0, 0.12, 1, 0.96))
    return fig


def _curve_k(cells: Sequence[dict[str, Any]], objective: str) -> int:
    ks = sorted({int(r["steps"]) for r in cells if r["objective"] == objective})
    sampler = next(r["sampler"] for r in cells if r["objective"] == objective)
    return ks[-1] if sampler == "euler" else ks[0]


def compute_figure(cells: Sequence[dict[str, Any]], *, teacher: str, path: str) -> Figure:
    """RMSE against the exact map over training compute (samples seen = step x batch), mean
    over seeds: one line per objective at its fewest steps (velocity models at their most)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    mine = [r for r in cells if (r["teacher"], r["path"]) == (teacher, path)]
    colours = _colours([r["objective"] for r in mine])
    for name in sorted({r["objective"] for r in mine}):
        k = _curve_k(mine, name)
        runs = [r for r in mine if r["objective"] == name and int(r["steps"]) == k]
        curves = [r["curve"]["rmse_exact"] for r in runs if None not in r["curve"]["rmse_exact"]]
        if not curves:
            continue
        steps = runs[0]["curve"]["step"]
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(steps))]
        keep = [i for i, s in enumerate(steps) if s > 0]  # a log axis: the start is left out
        samples = [steps[i] * int(runs[0]["batch"]) for i in keep]
        ax.plot(
            samples,
            [mean[i] for i in keep],
            color=colours[name],
            ls=_style(name, list(colours)),
            lw=1.2,
            label=f"{mpl_literal(name)} ({k} step{'s' if k > 1 else ''})",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training samples seen (step x batch per seed)",
        ylabel="RMSE against the exact map",
        title=f"Error against training compute ({teacher}, {path} path)",
    )
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def heatmap_figure(cells: Sequence[dict[str, Any]], *, teacher: str, path: str) -> Figure:
    """Per objective, the RMSE of its flow map over the grid of start time t and end time s
    (mean over seeds; blank where the objective does not train the pair)."""
    import numpy as np

    plt = _pyplot()
    mine = [r for r in cells if (r["teacher"], r["path"]) == (teacher, path) and r["ts_grid"]]
    names = sorted({r["objective"] for r in mine})
    ts = sorted({row["t"] for r in mine for row in r["ts_grid"]})
    ss = sorted({row["s"] for r in mine for row in r["ts_grid"]})
    cols = 4
    rows = max(1, (len(names) + cols - 1) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(7.0, 2.1 * rows + 0.8), squeeze=False, layout="constrained"
    )
    image = None
    vmax = max((row["rmse"] for r in mine for row in r["ts_grid"]), default=1.0)
    for ax, name in zip(axes.flat, names, strict=False):
        grid = np.full((len(ts), len(ss)), np.nan)
        runs = [r for r in mine if r["objective"] == name and int(r["steps"]) == 1] or [
            r for r in mine if r["objective"] == name
        ]
        for i, t in enumerate(ts):
            for j, s in enumerate(ss):
                vals = [
                    row["rmse"]
                    for r in runs
                    for row in r["ts_grid"]
                    if (row["t"], row["s"]) == (t, s)
                ]
                if vals:
                    grid[i, j] = sum(vals) / len(vals)
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(ss)), [f"{s:g}" for s in ss], fontsize=6)
        ax.set_yticks(range(len(ts)), [f"{t:g}" for t in ts], fontsize=6)
        ax.set_title(mpl_literal(name), fontsize=7)
        ax.set_xlabel("end time $s$", fontsize=6)
        ax.set_ylabel("start time $t$", fontsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="RMSE of $f_{t\\to s}$")
    fig.suptitle(f"Error of $f_{{t\\to s}}$ over $(t, s)$ ({teacher}, {path} path)", fontsize=9)
    return fig


def _ci(stat: tuple[float, float, float] | None) -> str:
    if stat is None:
        return "-"
    mean, low, high = stat
    return f"{mean:.3f} ± {(high - low) / 2:.3f}" if high > low else f"{mean:.3f}"


def leaderboard_markdown(
    summaries: Sequence[CellSummary], *, teacher: str = "ring8", path: str = "linear"
) -> str:
    """The README leaderboard: objectives on ``teacher`` and ``path`` sorted by one-step RMSE
    against the exact map (mean ± half the 95 % interval over seeds), each step count in a
    column, W2 at the fewest steps, and the teacher's own solvers as the last rows."""
    rows = [r for r in summaries if (r.teacher, r.path) == (teacher, path)]
    if not rows:
        return f"(no results for {teacher} on the {path} path)"
    ks = sorted({r.steps for r in rows})
    by_obj: dict[str, dict[int, CellSummary]] = {}
    for r in rows:
        by_obj.setdefault(r.objective, {})[r.steps] = r
    k0, kmax = ks[0], ks[-1]

    def first(name: str) -> float:
        cell = by_obj[name].get(k0)
        return cell.rmse_exact[0] if cell and cell.rmse_exact else float("inf")

    euler_line = by_obj[next(iter(by_obj))][kmax].baselines["euler"]
    head = [
        "objective",
        *[f"RMSE, {k} step{'s' if k > 1 else ''}" for k in ks],
        f"W2, {k0} step",
        f"{k0}-step <= Euler {kmax}",
        "seeds at plateau",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(by_obj, key=first):
        cells = by_obj[name]
        some = next(iter(cells.values()))
        w2 = cells[k0].w2 if k0 in cells else None
        beats = "yes" if first(name) <= euler_line else "no"
        plateau = (
            f"{some.plateau_reached}/{some.n_seeds}"
            if k0 not in cells
            else (f"{cells[k0].plateau_reached}/{cells[k0].n_seeds}")
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{name}`",
                    *[_ci(cells[k].rmse_exact) if k in cells else "-" for k in ks],
                    "-" if w2 is None else f"{w2[0]:.3f}",
                    beats,
                    plateau,
                ]
            )
            + " |"
        )
    some = rows[0]
    by_k = {r.steps: r.baselines for r in rows}
    for solver in ("euler", "heun"):
        lines.append(
            "| "
            + " | ".join(
                [
                    f"teacher {solver.capitalize()}",
                    *[f"{by_k[k][solver]:.3f}" for k in ks],
                    "",
                    "",
                    "",
                ]
            )
            + " |"
        )
    lines.append(
        "| "
        + " | ".join(
            [
                "teacher dopri5 (rtol 1e-3)",
                *[f"{some.baselines['adaptive']:.3f}"] * len(ks),
                "",
                "",
                "",
            ]
        )
        + " |"
    )
    return "\n".join(lines)


def add_objectives_benchmark_section(
    doc: ReportDocument, results: ObjectivesBenchmarkSectionInputs
) -> None:
    """The section "Benchmark of objectives": how the grid was run, the table of one-step errors,
    the error against steps and against training compute, the (t, s) heatmaps, and failures."""
    doc.heading("Benchmark of objectives")
    if results.results is None:
        where = results.source or "no benchmarks directory"
        doc.paragraph(
            literal(
                f"No committed results of 'flowmap-oracle bench objectives' were found ({where}); "
                "run 'flowmap-oracle bench objectives --json benchmarks/objectives_cpu.json' "
                "to make them."
            )
        )
        return
    plt = _pyplot()
    bench = results.results
    cfg = bench.config
    doc.paragraph(
        "Every objective trains an MLP $F(x, t, s)$ at the same budget "
        f"({cfg['train_steps']} Adam steps of {cfg['batch']} samples per seed, "
        f"{cfg['seeds']} seeds trained together as one stacked model) and is measured against "
        r"the teacher's exact flow map $\Phi_{t \to s}$: the RMSE of its $k$-step sampler "
        r"against $\Phi_{1 \to 0}(x_1)$ on fixed noise points, the RMSE of $f_{t \to s}$ over a "
        "grid of times, and the Wasserstein-2 distance (POT) and MMD of its samples to the "
        "teacher's data. The teacher's own solvers at the same numbers of steps are the "
        "baselines. A run has reached its plateau when its error fell by less than "
        f"{100 * bench.plateau_threshold:.0f} % over the last quarter of its budget."
    )
    doc.paragraph(literal(f"Command: {bench.command}"))
    doc.paragraph(literal(f"Device: {bench.device}; versions: {bench.versions_text}"))
    for teacher, path in _panels(bench.summaries):
        text = leaderboard_markdown(bench.summaries, teacher=teacher, path=path)
        table = [line.strip("|").split("|") for line in text.splitlines()]
        header = [c.strip() for c in table[0]]
        body = [[c.strip().strip("`") for c in row] for row in table[2:]]
        doc.paragraph(literal(f"{teacher}, {path} path: mean ± half the 95 % interval."))
        doc.table(body, header=header)
    fig = steps_figure(bench.summaries)
    doc.figure(
        fig,
        caption="RMSE of each objective's sampler against the exact map over the "
        "number of sampling steps; the black lines are the teacher's Euler and Heun "
        "solvers at the same steps, the grey line its adaptive solve.",
    )
    plt.close(fig)
    for teacher, path in _panels(bench.summaries)[:2]:
        fig = compute_figure(bench.cells, teacher=teacher, path=path)
        doc.figure(
            fig,
            caption="Error against training compute: the curves the plateau "
            "criterion reads, mean over seeds.",
        )
        plt.close(fig)
        fig = heatmap_figure(bench.cells, teacher=teacher, path=path)
        doc.figure(
            fig,
            caption=r"RMSE of $f_{t \to s}$ against $\Phi_{t \to s}$ on points "
            "drawn from the marginal at the start time t, per pair of times.",
        )
        plt.close(fig)
    if bench.failures:
        doc.paragraph("Cells that failed (recorded with their error; a rerun retries them):")
        doc.table(
            [
                [f["objective"], f["teacher"], f["path"], literal(f["error"])]
                for f in bench.failures
            ],
            header=["objective", "teacher", "path", "error"],
        )
