"""The console script as a user drives it from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_a_closed_pipe_ends_the_command_quietly():
    # ``flowmap-oracle identities --json | head -1``: the reader closes the pipe after one line.
    # The pipe is shrunk to one page so that the ~16 kB of JSON cannot all fit in its buffer
    # (otherwise the writer never sees the closed pipe and the test could not fail).
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("pipe sizes cannot be set on this platform")
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)
    cmd = [sys.executable, "-m", "flowmap_oracle.cli", "identities", "--json", "--only", "meanflow"]
    proc = subprocess.Popen(cmd, stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        first = reader.readline()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.strip() == b"{"
    assert "Traceback" not in err, err
    assert proc.returncode == 1


def test_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "flowmap_oracle.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("report", "identities", "objectives", "check", "mutants", "bench"):
        assert command in out


def test_objectives_on_the_trig_path(capsys):
    from flowmap_oracle.cli import main

    assert main(["objectives", "--path", "trig", "--only", "flow_matching", "ctm", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["name"] for r in rows] == ["flow_matching", "ctm"]
    assert all(r["path"] == "trig" and r["passed"] for r in rows)


def test_objectives_refuses_an_alias_with_the_canonical_name(capsys):
    from flowmap_oracle.cli import main

    assert main(["objectives", "--only", "fm"]) == 2
    assert "did you mean 'flow_matching'?" in capsys.readouterr().err
