"""The report's speed machinery: the section cache keyed by the code version (in a user cache
directory, never the working directory), sections computed in parallel processes, ``--full``."""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest

from flowmap_oracle import report_job
from flowmap_oracle.cli import main
from flowmap_oracle.identities import all_identities

pytest.importorskip("pypdf")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("FLOWMAP_ORACLE_CACHE_DIR", str(where))
    return where


def test_cache_dir_is_a_user_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOWMAP_ORACLE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert report_job.report_cache_dir() == tmp_path / "xdg" / "flowmap-oracle"
    monkeypatch.delenv("XDG_CACHE_HOME")
    home = report_job.report_cache_dir()
    assert home.parts[-2:] == (".cache", "flowmap-oracle")
    assert not str(home).startswith(os.getcwd())


def test_code_version_is_a_stable_hash_of_the_source():
    a, b = report_job.code_version(), report_job.code_version()
    assert a == b and len(a) == 20 and int(a, 16) >= 0


def test_a_section_is_read_back_from_the_cache_and_recomputed_without_it(
    tmp_path, cache_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.pdf"
    first: dict = {}
    report_job.build_report(out, sections=["teachers"], cache=True, timings=first)
    assert first["teachers"]["cached"] is False
    stored = list(cache_dir.iterdir())
    assert len(stored) == 1 and stored[0].name.startswith("report-teachers-default-")
    second: dict = {}
    report_job.build_report(out, sections=["teachers"], cache=True, timings=second)
    assert second["teachers"] == {"seconds": 0.0, "cpu_seconds": 0.0, "cached": True}
    third: dict = {}
    report_job.build_report(out, sections=["teachers"], cache=False, timings=third)
    assert third["teachers"]["cached"] is False
    # another mode is another entry; a damaged entry is recomputed, not an error
    stored[0].write_bytes(b"not a pickle")
    fourth: dict = {}
    report_job.build_report(out, sections=["teachers"], cache=True, timings=fourth)
    assert fourth["teachers"]["cached"] is False
    assert pickle.loads(stored[0].read_bytes()) is not None  # rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "r.pdf"]


def test_quick_mode_and_replaced_sections_are_never_cached(tmp_path, cache_dir, monkeypatch):
    real = report_job.identities_inputs
    monkeypatch.setattr(
        report_job, "identities_inputs", lambda **kw: real(all_identities()[:2], **kw)
    )
    timings: dict = {}
    report_job.build_report(
        tmp_path / "r.pdf", sections=["identities"], cache=True, timings=timings
    )
    assert not cache_dir.exists()
    assert report_job.build_report(
        tmp_path / "q.pdf", quick=True, sections=["identities"], cache=True
    ).is_file()
    assert not cache_dir.exists()


def _pid_identities(**kwargs):
    value = report_job._ORIGINALS["identities"](all_identities()[:2], **kwargs)
    return dataclasses.replace(value, seconds=float(os.getpid()))


def test_sections_run_in_parallel_processes(tmp_path, monkeypatch):
    """With jobs=2 two sections run in two other processes (the identities section carries the
    pid of the process that computed it); with jobs=1 in this one."""
    monkeypatch.setattr(report_job, "identities_inputs", _pid_identities)
    seen = {}
    real_write = report_job.write_report

    def spy(path, inputs, **kwargs):
        seen.update(inputs)
        return real_write(path, inputs, **kwargs)

    monkeypatch.setattr(report_job, "write_report", spy)
    timings: dict = {}
    report_job.build_report(
        tmp_path / "p.pdf", quick=True, sections=["identities", "teachers"], jobs=2, timings=timings
    )
    assert set(timings) == {"identities", "teachers"}
    assert int(seen["identities"].seconds) != os.getpid()
    report_job.build_report(tmp_path / "s.pdf", quick=True, sections=["identities"], jobs=1)
    assert int(seen["identities"].seconds) == os.getpid()


def test_report_options_are_checked(tmp_path, capsys):
    assert main(["report", "--quick", "--full", "--out", str(tmp_path / "r.pdf")]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["report", "--jobs", "0", "--out", str(tmp_path / "r.pdf")]) == 2
    with pytest.raises(ValueError, match="quick and full exclude each other"):
        report_job.build_report(tmp_path / "r.pdf", quick=True, full=True)
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        report_job.build_report(tmp_path / "r.pdf", jobs=0)


def test_every_section_has_a_function_and_a_place_in_the_parallel_order():
    from flowmap_oracle.reports.report import SECTIONS

    assert set(report_job._SECTION_FUNCTIONS) == set(SECTIONS)
    assert sorted(report_job._EXPECTED_ORDER) == sorted(SECTIONS)


def test_the_benchmark_sections_run_in_parallel_with_the_committed_records(tmp_path):
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    timings: dict = {}
    report_job.build_report(
        tmp_path / "b.pdf",
        quick=True,
        sections=["teachers", "objectives_benchmark"],
        benchmarks_dir=benchmarks,
        jobs=2,
        timings=timings,
    )
    assert set(timings) == {"teachers", "objectives_benchmark"}
    assert (tmp_path / "b.pdf").stat().st_size > 0
