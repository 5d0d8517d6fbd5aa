"""Inputs that a check's case space or registration guarantees, though their types allow ``None``.

A missing one is an error of the oracle (a check registered on the wrong space, or without the
velocity it uses), not of the implementation: the runner reports it as an internal error of the
oracle.
"""

from __future__ import annotations

from torch import Tensor

from ..context import Batch


def split_time(b: Batch) -> Tensor:
    """The batch's intermediate time ``r`` (drawn only on the ``"split"`` case space)."""
    if b.r is None:
        raise RuntimeError(
            "the batch has no intermediate time r: a check that uses r must run on the 'split' "
            "case space"
        )
    return b.r


def given_velocity(v: Tensor | None) -> Tensor:
    """The velocity handed to a target function (registered with ``velocity=True``)."""
    if v is None:
        raise RuntimeError(
            "the target function got no velocity: register its checks with velocity=True"
        )
    return v
