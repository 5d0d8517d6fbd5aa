"""Result records: the environment a measurement ran in, and atomic JSON files.

Every number the project quotes is committed as JSON together with the device, the versions of
the libraries involved and the command that produced it. This module is the one place that
gathers that metadata and writes such files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_file", "command_line", "environment", "jsonable", "write_json"]

_PACKAGES = ("flowmap-oracle", "torch", "torchdiffeq", "numpy", "scipy", "sympy", "jax", "diffrax")


def command_line(argv: list[str] | None = None) -> str:
    """The ``flowmap-oracle ...`` command that is running (from ``argv`` or ``sys.argv``)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["flowmap-oracle", *args])


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Describe where a measurement runs: device, library versions, CPU threads, load.

    Arguments:
        device: the torch device the measurement uses.

    Returns:
        A JSON-ready dict with ``device`` (a readable name: the GPU model for CUDA), ``python``,
        ``platform``, ``processor``, ``cpu_count``, ``torch_threads``, ``load_average_1min``
        (other processes on a shared machine inflate wall times) and ``versions`` (installed
        versions of the project's libraries; absent optional ones are left out).
    """
    device = torch.device(device)
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path in the same folder, then rename it.

    An interrupted or failed write never leaves a truncated file at ``path`` (the temporary file
    is removed). The finished file gets the permissions a plain ``open(path, "w")`` would give it
    (``0o666`` less the process umask), not ``mkstemp``'s private ``0o600``, so that CI uploaders
    and other users can read it.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (:func:`atomic_file`), so that an interrupted
    run never leaves a truncated file. Non-finite floats are written as the strings ``"nan"``,
    ``"inf"``, ``"-inf"`` (JSON has no literal for them).

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        json.dump(jsonable(obj), fh, indent=2, allow_nan=False)
        fh.write("\n")
    return path


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``"nan"``, ``"inf"`` or ``"-inf"``, so
    that ``json.dumps(..., allow_nan=False)`` writes standard JSON (used for files and for
    ``--json`` on stdout alike)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj
