"""MeanFlow in JAX with noise at t = 0 and a network that takes (x, t, t - s).

Written the way a JAX user would, in *their* convention: x_t = t * data + (1 - t) * noise (data
at t = 1, Lipman's convention), velocity dx/dt = data - noise, and the average velocity
u(x, t, s) with x_s = x_t + (s - t) u; generation runs from t = 0 to t = 1. The network sees
(x, t, t - s). The MeanFlow identity in this convention is u = v - (t - s) du/dt with s held
fixed; because the network's third input is t - s, holding s fixed means the tangent on that
input is 1 as well, which the wrapper ``u_of(net)`` takes care of.

Check it with ``flowmap-oracle check examples.jax_meanflow:implementation``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowmap_oracle import Implementation


def u_of(net):
    """The average velocity as a function of (x, t, s) for a network taking (x, t, t - s)."""
    return lambda x, t, s: net(x, t, t - s)


def meanflow_target(net, x, t, s, v):
    """u_tgt = v - (t - s) (du/dx v + du/dt), stop-gradiented."""
    _, du_dt = jax.jvp(u_of(net), (x, t, s), (v, jnp.ones_like(t), jnp.zeros_like(s)))
    return jax.lax.stop_gradient(v - (t - s)[:, None] * du_dt)


def meanflow_loss(net, data, noise, t, s):
    """Mean squared error (over all entries) to the target with v = data - noise."""
    x = t[:, None] * data + (1 - t)[:, None] * noise
    v = data - noise
    u = u_of(net)(x, t, s)
    return jnp.mean((u - meanflow_target(net, x, t, s, v)) ** 2)


def flow_matching_loss(net, data, noise, t):
    x = t[:, None] * data + (1 - t)[:, None] * noise
    return jnp.mean((u_of(net)(x, t, t) - (data - noise)) ** 2)


def one_step(net, x, t, s):
    return x + (s - t)[:, None] * u_of(net)(x, t, s)


def implementation() -> Implementation:
    return Implementation(
        name="example: JAX MeanFlow, noise at t = 0, network (x, t, t - s)",
        conventions={
            "time": "noise_at_0",
            "signature": "x_t_dt",
            "prediction": "average_velocity",
            "framework": "jax",
            "dtype": "float32",
        },
        targets={"meanflow": meanflow_target},
        losses={"meanflow": meanflow_loss, "flow_matching": flow_matching_loss},
        flow_map=one_step,
        loss_reduction="mean",
    )
