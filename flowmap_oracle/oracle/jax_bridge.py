"""The oracle's torch objects seen from JAX: the exact teacher network, velocity fields, solvers.

Only the random networks have a native JAX twin (:meth:`RandomNetwork.jax_apply`). Everything
backed by the float64 ODE teacher is reached through ``jax.pure_callback``: the exact average
velocity as a ``jax.custom_jvp`` function whose tangent is
:meth:`~flowmap_oracle.reference_models.ExactAverageVelocity.directional`, and velocity fields
and solvers as plain callbacks (they are data for the student: differentiating through them is
an error, as it should be without a stop-gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..reference_models import ExactAverageVelocity

__all__ = ["exact_network_jax", "torch_function_jax"]


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64).copy())


def exact_network_jax(exact: ExactAverageVelocity, dtype: str) -> Callable:
    """``F*(x, t, s)`` as a JAX function of our-convention arrays (forward-mode differentiable)."""
    import jax

    def value(x, t, s):
        return exact.value(_t(x), _t(t), _t(s)).numpy().astype(dtype)

    def tangent(x, t, s, dx, dt, ds):
        out = exact.directional(_t(x), _t(t), _t(s), _t(dx), _t(dt), _t(ds))
        return out.numpy().astype(dtype)

    @jax.custom_jvp
    def F(x, t, s):
        shape = jax.ShapeDtypeStruct(x.shape, dtype)
        return jax.pure_callback(value, shape, x, t, s, vmap_method="sequential")

    @F.defjvp
    def F_jvp(primals, tangents):
        x, t, s = primals
        dx, dt, ds = tangents
        shape = jax.ShapeDtypeStruct(x.shape, dtype)
        out = F(x, t, s)
        tan = jax.pure_callback(tangent, shape, x, t, s, dx, dt, ds, vmap_method="sequential")
        return out, tan

    return F


def torch_function_jax(fn: Callable, dtype: str) -> Callable:
    """A torch function ``fn(x, *times) -> (N, d)`` callable from JAX (not differentiable).

    The result has the shape of the first argument and the declared dtype.
    """
    import jax

    def call(*arrays):
        return fn(*(_t(a) for a in arrays)).detach().numpy().astype(dtype)

    def wrapped(x, *rest):
        shape = jax.ShapeDtypeStruct(x.shape, dtype)
        return jax.pure_callback(call, shape, x, *rest, vmap_method="sequential")

    return wrapped
