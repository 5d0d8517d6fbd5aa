"""Result records: environment metadata and atomic JSON files."""

from __future__ import annotations

import json

import pytest

from flowmap_oracle.experiments.records import command_line, environment, write_json


def test_environment_names_device_and_versions():
    env = environment("cpu")
    assert env["device"] == "cpu"
    assert env["versions"]["torch"]
    assert env["cpu_count"] >= 1


def test_write_json_round_trips_and_writes_non_finite_floats_as_strings(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": [1.5, float("nan")], "b": float("inf")})
    assert json.loads(path.read_text()) == {"a": [1.5, "nan"], "b": "inf"}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_write_json_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_command_line_prefixes_the_program_name():
    assert (
        command_line(["bench", "teachers", "--n", "10"]) == "flowmap-oracle bench teachers --n 10"
    )


def test_written_files_get_the_users_normal_permissions(tmp_path):
    import os

    from flowmap_oracle.experiments.records import write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
        assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
        os.umask(0o077)
        path = write_json(tmp_path / "private.json", {"a": 1})
        assert path.stat().st_mode & 0o777 == 0o600  # a stricter umask is respected
    finally:
        os.umask(old)


def test_an_interrupted_atomic_write_leaves_nothing(tmp_path):
    import pytest

    from flowmap_oracle.experiments.records import atomic_file

    target = tmp_path / "out.pdf"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
