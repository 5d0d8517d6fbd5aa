"""One module of checks per objective; importing this package registers them all."""

from . import meanflow, model

__all__ = ["meanflow", "model"]
