"""One module of checks per objective family; importing this package registers them all."""

from . import (
    align_your_flow,
    consistency,
    facm,
    flow_map_matching,
    flow_matching,
    imm,
    meanflow,
    model,
    self_consistency,
)

__all__ = [
    "align_your_flow",
    "consistency",
    "facm",
    "flow_map_matching",
    "flow_matching",
    "imm",
    "meanflow",
    "model",
    "self_consistency",
]
