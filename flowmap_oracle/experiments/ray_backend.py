"""Scale-out of the benchmark of objectives on Ray: every task is a Ray task.

Ray is an optional extra (``pip install 'flowmap-oracle[bench]'``). :func:`run_grid_ray` submits
every unfinished task (GPU tasks request one GPU), and appends each task's records to the
driver's :class:`~flowmap_oracle.experiments.bench_objectives.ResultStore` as soon as it comes
back, so that results stream into one store; a task that raises is recorded with its error.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from .bench_objectives import (
    BenchConfig,
    GridRun,
    ResultStore,
    Task,
    error_records,
    plan_tasks,
    run_task,
)

__all__ = ["INSTALL_HINT", "check_address", "ray_available", "run_grid_ray"]

INSTALL_HINT = "pip install 'flowmap-oracle[bench]' (or pip install 'ray[default]>=2.9')"
"""How to install Ray, as the command line says it."""

_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}$")


def ray_available() -> bool:
    """Whether ``import ray`` works."""
    try:
        importlib.import_module("ray")
    except ImportError:
        return False
    return True


def check_address(text: str) -> str:
    """``auto`` or a cluster address ``HOST:PORT`` / ``ray://HOST:PORT``.

    Raises:
        ValueError: naming the expected forms.
    """
    if text == "auto" or _ADDRESS.match(text):
        return text
    raise ValueError(f"expected auto, HOST:PORT or ray://HOST:PORT, got {text!r}")


def _remote_task(task: Task) -> list[dict[str, Any]]:
    try:
        return run_task(task)
    except Exception as err:
        return error_records(task, err)


def run_grid_ray(
    config: BenchConfig,
    store: ResultStore,
    *,
    address: str = "auto",
    on_done: Callable[[Task, list[dict[str, Any]]], None] | None = None,
    tasks: Sequence[Task] | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> GridRun:
    """Run the unfinished tasks of ``config`` as Ray tasks and stream their records into
    ``store`` as they finish.

    Arguments:
        config: the grid.
        store: the driver's store.
        address: ``"auto"`` (a running cluster named by ``RAY_ADDRESS``, else a new local one)
            or a cluster address.
        on_done: called with each task and its records when they come back.
        tasks: the tasks (default: :func:`plan_tasks` of the store's finished cells).
        init_kwargs: extra arguments of ``ray.init`` (tests pass ``num_cpus``); ignored when
            Ray is already initialised.

    Raises:
        ModuleNotFoundError: when Ray is not installed (the message has the install hint).
    """
    try:
        ray = importlib.import_module("ray")
    except ImportError:
        raise ModuleNotFoundError(f"Ray is not installed; {INSTALL_HINT}") from None
    check_address(address)
    start = time.perf_counter()
    run = GridRun(tasks=list(plan_tasks(config, store.finished()) if tasks is None else tasks))
    if not ray.is_initialized():
        kwargs = dict(init_kwargs or {})
        if address != "auto":
            kwargs["address"] = address
        ray.init(log_to_driver=False, **kwargs)
    pending = {}
    for task in run.tasks:
        remote = ray.remote(num_cpus=1, num_gpus=1 if task.uses_gpu() else 0)(_remote_task)
        pending[remote.remote(task)] = task
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    records = ray.get(ref)
                except Exception as err:  # the worker died: record it and go on
                    records = error_records(task, err)
                if records and records[0].get("status") == "error":
                    run.failed.append((task, records[0]["error"]))
                run.written += store.append(records)
                if on_done is not None:
                    on_done(task, records)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    run.seconds = time.perf_counter() - start
    return run
