"""flowmap-oracle: a verification suite for diffusion distillation."""

__version__ = "0.1.0"
