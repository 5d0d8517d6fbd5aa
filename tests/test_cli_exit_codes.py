"""The command line's exit-code contract: 0 success, 1 failed (or nothing checked), 2 bad usage
or input with one line on stderr and no traceback, 3 internal error, 130 interrupted (the
interrupt tests are in test_cli_interrupt.py). Options and output paths are refused before any
work starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

import flowmap_oracle.oracle as oracle_package
from flowmap_oracle import cli
from flowmap_oracle.cli import EXIT_FAILED, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, main


def _one_line_error(capsys, *fragments: str) -> str:
    """stderr holds exactly one line, naming the problem, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _names_line(line: str, filename: str, lineno: int) -> None:
    """``line`` names ``filename`` and the line number (``file.py:3`` or ``file.py, line 3``)."""
    assert re.search(rf"{re.escape(filename)}(:|, line ){lineno}\b", line), line


# --------------------------------------------------------------------------- bench options


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["bench", "teachers", "--n", "0"], "argument --n: must be at least 1"),
        (["bench", "teachers", "--n", "-5"], "argument --n: must be at least 1"),
        (["bench", "teachers", "--n", "1e8"], "argument --n: at most 1,000,000 points"),
        (["bench", "teachers", "--n", "1.5"], "argument --n: expected an integer"),
        (["bench", "teachers", "--preset", "nope"], "unknown preset 'nope'; known presets: ring8"),
        (["bench", "teachers", "--threads", "-2"], "argument --threads: must be at least 1"),
        (["bench", "teachers", "--threads", "0"], "argument --threads: must be at least 1"),
        (["bench", "teachers", "--rtol", "-1"], "argument --rtol: must be a positive number"),
        (["bench", "teachers", "--rtol", "nan"], "argument --rtol: must be a positive number"),
        (["bench", "teachers", "--atol", "0"], "argument --atol: must be a positive number"),
        (["bench", "teachers", "--repeats", "0"], "argument --repeats: must be at least 1"),
        (["bench", "teachers", "--seed", "-1"], "argument --seed: must be at least 0"),
        (["bench", "teachers", "--device", "tpu"], "argument --device:"),
        (["bench", "meanflow", "--steps", "-3"], "argument --steps: must be at least 1"),
        (["bench", "meanflow", "--steps", "0"], "argument --steps: must be at least 1"),
        (["bench", "meanflow", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bench_options_are_refused_with_one_line(argv, fragment, capsys):
    assert main(argv) == EXIT_USAGE
    line = _one_line_error(capsys, fragment)
    assert line.startswith(f"flowmap-oracle bench {argv[1]}: error: ")


def test_cuda_is_refused_without_cuda(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "teachers", "--device", "cuda"]) == EXIT_USAGE
    _one_line_error(capsys, "CUDA is not available")


def test_the_help_text_states_the_maximum_of_n():
    from flowmap_oracle.experiments.bench_teachers import MAX_N

    assert float(cli.MAX_POINTS_TEXT) == MAX_N
    assert cli.point_count("1e6") == MAX_N and cli.point_count("100_000") == 100_000
    with pytest.raises(ValueError, match="at most"):
        from flowmap_oracle.experiments.bench_teachers import run_teacher_benchmark

        run_teacher_benchmark(MAX_N + 1)


def test_usage_errors_of_argparse_keep_exit_2_on_one_line(capsys):
    assert main(["no-such-command"]) == EXIT_USAGE
    _one_line_error(capsys, "flowmap-oracle: error: argument COMMAND: invalid choice")
    assert main(["check", "x:y", "--profile", "fast"]) == EXIT_USAGE
    _one_line_error(capsys, "argument --profile: invalid choice: 'fast'")
    assert main(["check", "no_colon"]) == EXIT_USAGE
    _one_line_error(capsys, "expected package.module:factory")
    assert main(["objectives", "--only", "fm"]) == EXIT_USAGE
    _one_line_error(capsys, "did you mean 'flow_matching'?")
    assert main(["check", "x:y", "--only", "nope"]) == EXIT_USAGE
    _one_line_error(capsys, "argument --only: unknown method 'nope'")
    assert main(["--help"]) == EXIT_OK


# --------------------------------------------------------------------------- output paths


def _bad_paths(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    return {
        "a file used as a directory": (afile / "out" / "r.json", "is a file, not a directory"),
        "a directory": (tmp_path, "it is a directory"),
        "an unwritable location": ("/proc/flowmap-oracle-test/r.json", "is not writable"),
    }


@pytest.mark.parametrize(
    "kind", ["a file used as a directory", "a directory", "an unwritable location"]
)
@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--out", "{}"],
        ["check", "flowmap_oracle.oracle.reference:implementation", "--json", "{}"],
        ["check", "flowmap_oracle.oracle.reference:implementation", "--pdf", "{}"],
        ["objectives", "--smoke-json", "{}"],
        ["bench", "teachers", "--n", "10", "--json", "{}"],
        ["bench", "meanflow", "--steps", "1", "--json", "{}"],
    ],
    ids=["report", "check-json", "check-pdf", "smoke-json", "bench-teachers", "bench-meanflow"],
)
def test_a_bad_output_path_is_refused_before_any_work(argv, kind, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    import flowmap_oracle.report_job as report_job
    from flowmap_oracle.experiments import bench_teachers, meanflow_one_step, smoke_training

    monkeypatch.setattr(report_job, "build_report", no_work)
    monkeypatch.setattr(oracle_package, "load_implementation", no_work)
    monkeypatch.setattr(smoke_training, "smoke_train", no_work)
    monkeypatch.setattr(bench_teachers, "run_teacher_benchmark", no_work)
    monkeypatch.setattr(meanflow_one_step, "meanflow_one_step_experiment", no_work)
    path, reason = _bad_paths(tmp_path)[kind]
    if kind == "an unwritable location" and not os.path.isdir("/proc"):
        pytest.skip("no /proc on this platform")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    start = time.perf_counter()
    assert main([a.replace("{}", str(path)) for a in argv]) == EXIT_USAGE
    assert time.perf_counter() - start < 5
    _one_line_error(capsys, "cannot write", reason)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_read_only_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        assert main(["report", "--out", str(folder / "sub" / "r.pdf")]) == EXIT_USAGE
        _one_line_error(capsys, "is not writable")
    finally:
        folder.chmod(0o755)


def test_an_output_path_in_a_missing_folder_is_accepted(tmp_path):
    path = cli.output_path(str(tmp_path / "new" / "deeper" / "r.json"))
    assert path.name == "r.json"
    assert not (tmp_path / "new").exists()  # created only when the file is written


def test_check_refuses_the_same_file_for_json_and_pdf(tmp_path, capsys):
    out = str(tmp_path / "r.out")
    spec = "flowmap_oracle.oracle.reference:implementation"
    assert main(["check", spec, "--json", out, "--pdf", out]) == EXIT_USAGE
    _one_line_error(capsys, "--json and --pdf name the same file")


def test_report_refuses_a_file_as_benchmark_directory(tmp_path, capsys):
    afile = tmp_path / "bench.json"
    afile.write_text("{}")
    out = str(tmp_path / "r.pdf")
    assert main(["report", "--out", out, "--benchmarks", str(afile)]) == EXIT_USAGE
    _one_line_error(capsys, "is a file, not a directory")


# --------------------------------------------------------------------------- implementations


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder of the user's modules, importable from the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_an_import_time_error_names_the_users_file_and_line(user_dir, capsys):
    module = user_dir(
        "fo_user_import_error",
        """\
        import math

        SCALE = 1 / 0
        """,
    )
    assert main(["check", f"{module}:implementation"]) == EXIT_USAGE
    line = _one_line_error(capsys, "ZeroDivisionError: division by zero")
    _names_line(line, "fo_user_import_error.py", 3)


def test_a_missing_dependency_and_a_syntax_error_are_bad_input(user_dir, capsys):
    dep = user_dir("fo_user_missing_dep", "import fo_not_installed_anywhere\n")
    assert main(["check", f"{dep}:implementation"]) == EXIT_USAGE
    line = _one_line_error(capsys, "No module named 'fo_not_installed_anywhere'")
    _names_line(line, "fo_user_missing_dep.py", 1)
    syntax = user_dir("fo_user_syntax", "def implementation(:\n    pass\n")
    assert main(["check", f"{syntax}:implementation"]) == EXIT_USAGE
    line = _one_line_error(capsys, "SyntaxError")
    _names_line(line, "fo_user_syntax.py", 1)
    assert main(["check", "fo_user_no_such_module:implementation"]) == EXIT_USAGE
    _one_line_error(capsys, "No module named 'fo_user_no_such_module'")


def test_a_factory_that_raises_is_bad_input(user_dir, capsys):
    module = user_dir(
        "fo_user_factory_raises",
        """\
        def implementation():
            raise RuntimeError("my factory is broken\\non two lines")
        """,
    )
    assert main(["check", f"{module}:implementation"]) == EXIT_USAGE
    line = _one_line_error(capsys, "raised RuntimeError: my factory is broken")
    _names_line(line, "fo_user_factory_raises.py", 2)


def test_jax_float64_without_x64_is_refused_before_any_check(user_dir, capsys, monkeypatch):
    jax = pytest.importorskip("jax")
    module = user_dir(
        "fo_user_jax64",
        """\
        from flowmap_oracle import Implementation

        def implementation():
            return Implementation(
                name="jax float64",
                conventions={"framework": "jax", "dtype": "float64"},
                flow_map=lambda net, x, t, s: x,
            )
        """,
    )

    def no_check(*args, **kwargs):
        raise AssertionError("a check ran")

    monkeypatch.setattr(oracle_package, "run_check", no_check)
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", False)
    try:
        assert main(["check", f"{module}:implementation"]) == EXIT_USAGE
    finally:
        jax.config.update("jax_enable_x64", previous)
    _one_line_error(capsys, "dtype 'float64' was declared for a JAX implementation")


def test_an_implementation_that_provides_nothing_fails(user_dir, tmp_path, capsys):
    module = user_dir(
        "fo_user_provides_nothing",
        """\
        from flowmap_oracle import Implementation

        def implementation():
            return Implementation(name="nothing", conventions={})
        """,
    )
    out = tmp_path / "nothing.json"
    argv = ["check", f"{module}:implementation", "--only", "meanflow", "--json", str(out)]
    assert main(argv) == EXIT_FAILED
    captured = capsys.readouterr()
    assert "nothing was checked" in captured.err
    doc = json.loads(out.read_text())
    assert doc["counts"]["pass"] == 0 and doc["complete"] is True
    assert doc["results"][-1]["status"] == "fail"  # the run's verdict, as run_checks has it
    assert all(r["status"] == "skip" for r in doc["results"][:-1])


def test_check_exit_codes_pass_and_fail(capsys):
    ref = "flowmap_oracle.oracle.reference:implementation"
    assert main(["check", ref, "--only", "flow_matching"]) == EXIT_OK
    bad = "flowmap_oracle.oracle.mutants.meanflow:sign_of_t_minus_s"
    assert main(["check", bad, "--only", "meanflow"]) == EXIT_FAILED
    assert "fail" in capsys.readouterr().out


# --------------------------------------------------------------------------- internal errors


def test_an_internal_error_exits_3_with_the_traceback(capsys, monkeypatch):
    from flowmap_oracle import identities

    def broken():
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(identities, "all_identities", broken)
    assert main(["identities"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug of ours" in err
    assert err.strip().splitlines()[-1].startswith("flowmap-oracle: internal error")


# --------------------------------------------------------------------------- as a process


@pytest.mark.parametrize(
    "argv",
    [["bench", "teachers", "--n", "0"], ["check", "fo_user_boom:implementation"]],
    ids=["bench-n-0", "import-time-error"],
)
def test_the_console_script_prints_one_line_and_exits_2(argv, tmp_path):
    (tmp_path / "fo_user_boom.py").write_text("raise ValueError('boom at import')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flowmap_oracle.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""
