"""The README's leaderboard is built from the committed benchmark of objectives: the table between
its markers equals ``leaderboard_markdown`` of ``benchmarks/objectives_cpu.json``."""

from __future__ import annotations

import re
from pathlib import Path

from flowmap_oracle.experiments.bench_objectives import load_objectives_benchmark
from flowmap_oracle.reports.objectives_benchmark_section import leaderboard_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_leaderboard_is_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- leaderboard: (\w+) (\w+) -->\n(.*?)\n<!-- /leaderboard -->", readme, re.S
    )
    assert match, "the README has no leaderboard block"
    teacher, path, table = match.groups()
    bench = load_objectives_benchmark(ROOT / "benchmarks" / "objectives_cpu.json")
    expected = leaderboard_markdown(bench.summaries, teacher=teacher, path=path)
    assert table.strip() == expected.strip()
