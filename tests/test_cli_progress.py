"""Progress on stderr: shown on a terminal (what runs and how far along), absent when stderr is
not a terminal or with ``--quiet``, never on stdout; and a real Ctrl-C (SIGINT) through a
terminal."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from flowmap_oracle.cli import main
from flowmap_oracle.progress import Progress

pty = pytest.importorskip("pty")


def _run_on_a_terminal(
    argv: list[str], *, until: Callable[[str], bool] | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    """Run the console script with stderr on a pseudo-terminal (stdout on a pipe); when
    ``until(stderr so far)`` first holds, send SIGINT. Returns (exit status, stdout, stderr)."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowmap_oracle.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=child_fd,
    )
    os.close(child_fd)
    err, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([main_fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                err += chunk
                if not chunk and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
            if until is not None and not sent and until(err.decode(errors="replace")):
                proc.send_signal(signal.SIGINT)
                sent = True
            assert time.monotonic() < deadline, err.decode(errors="replace")
        out = proc.stdout.read().decode() if proc.stdout else ""
        proc.wait(timeout=30)
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err.decode(errors="replace")


def test_progress_is_off_unless_its_stream_is_a_terminal():
    stream = io.StringIO()
    progress = Progress(stream=stream)
    assert not progress.enabled
    with progress.bar("work", 2) as bar:
        bar.start("first")
        bar.advance()
        bar.add_total(1)
    assert stream.getvalue() == ""
    assert not Progress(stream=stream, enabled=True, quiet=True).enabled


def test_a_bar_shows_what_runs_and_how_far_along():
    stream = io.StringIO()
    with Progress(stream=stream, enabled=True).bar("checks", 3) as bar:
        bar.start("meanflow.target.random_network")
        bar.advance()
        bar.start("model.flow_map.one_step")
        text = stream.getvalue()
    assert "checks" in text and "1/3" in text
    assert "meanflow.target.random_network" in text and "model.flow_map.one_step" in text


def test_no_progress_when_stderr_is_not_a_terminal(capsys):
    assert main(["identities", "--only", "facm.time_shift"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "facm.time_shift" in captured.out


def test_progress_on_a_terminal_and_quiet_turns_it_off():
    argv = ["identities", "--only", "boundary"]
    code, out, err = _run_on_a_terminal(argv)
    assert code == 0, err
    assert "identities" in err and re.search(r"\d/3", err), err  # the bar, with its count
    assert "boundary." in err  # the identity running
    assert "\r" not in out and "3/3 pass" in out  # stdout stays plain
    code, out, err = _run_on_a_terminal([*argv, "--quiet"])
    assert code == 0
    assert err.strip() == "", err
    assert "3/3 pass" in out


def test_ctrl_c_on_a_terminal_writes_the_finished_checks(tmp_path):
    out_json = tmp_path / "check.json"
    argv = [
        "check",
        "flowmap_oracle.oracle.reference:implementation",
        "--only",
        "flow_matching",
        "meanflow",
        "--json",
        str(out_json),
    ]

    def one_check_done(err: str) -> bool:
        return re.search(r"checks:.*\b[1-9]\d*/\d+", err) is not None

    code, _, err = _run_on_a_terminal(argv, until=one_check_done)
    assert code == 130, err
    assert "Traceback" not in err
    last = err.strip().split("\r")[-1].strip()  # after the bar's line is cleared
    assert last.startswith("flowmap-oracle check: interrupted (Ctrl-C); "), err
    assert "checks finished" in last and "marked incomplete" in last
    doc = json.loads(out_json.read_text())
    assert doc["complete"] is False
    from flowmap_oracle.oracle import checks_for

    selected = len(checks_for("flow_matching")) + len(checks_for("meanflow"))
    assert 1 <= len(doc["results"]) < selected  # the finished ones, not all
    assert all("seconds" in r for r in doc["results"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json"]


def test_smoke_json_honours_only(tmp_path, capsys, monkeypatch):
    from flowmap_oracle.experiments import smoke_training

    real = smoke_training.smoke_train
    trained = []

    def short(name, **kwargs):
        trained.append(name)
        return real(name, steps=3, n_eval=32, **kwargs)

    monkeypatch.setattr(smoke_training, "smoke_train", short)
    out = tmp_path / "smoke.json"
    argv = ["objectives", "--smoke-json", str(out), "--only", "meanflow", "flow_matching"]
    assert main(argv) == 0
    assert trained == ["meanflow", "flow_matching"]
    record = json.loads(out.read_text())
    assert record["complete"] is True
    assert [r["name"] for r in record["runs"]] == ["meanflow", "flow_matching"]
    assert record["command"].endswith("--only meanflow flow_matching")
    assert f"wrote {out}" in capsys.readouterr().out


def test_smoke_json_refuses_another_path_and_an_unknown_objective(tmp_path, capsys):
    out = str(tmp_path / "smoke.json")
    assert main(["objectives", "--smoke-json", out, "--path", "trig"]) == 2
    assert "linear path only" in capsys.readouterr().err
    assert main(["objectives", "--smoke-json", out, "--only", "cm"]) == 2
    assert "unknown method 'cm'" in capsys.readouterr().err
    assert main(["objectives", "--smoke-json", out, "--json"]) == 2
    assert "--json does not apply" in capsys.readouterr().err
    assert not os.path.exists(out)
