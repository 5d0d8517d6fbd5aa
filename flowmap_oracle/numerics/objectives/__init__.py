"""Every distillation objective as a real loss, one module per method."""

from ._common import LossOutput, Velocity
from .meanflow import meanflow_loss, meanflow_target

__all__ = ["LossOutput", "Velocity", "meanflow_loss", "meanflow_target"]
