"""MeanFlow in pure JAX, handed to the oracle as it ships: explicit keys, ``params``, ``jit``.

Written the way JAX training code is: ``loss_fn(params, batch, key)`` splits its key once per
draw, samples logit-normal ``(t, r)`` with a quarter of the batch off the diagonal ``r = t``,
builds ``z = (1 - t) x + t e`` (noise at t = 1), takes ``du/dt`` with ``jax.jvp`` along
``(v, 1, 0)``, stops the target's gradient with ``jax.lax.stop_gradient`` and weights the squared
error with MeanFlow's adaptive L2 weight; the loss is ``jax.jit``-compiled. The network is called
as ``model.apply(params, z, t, r)``. The sampler takes two flow-map steps, 1 -> 0.5 -> 0.

The oracle owns the network: ``make_loss(model)`` receives it and returns the loss function,
``make_sampler(model)`` the sampler (:mod:`flowmap_oracle.oracle.shipped_jax`).

``wrong_implementation()`` carries two bugs seen in practice: the JVP's time tangent put on
``r`` instead of ``t`` (``(v, 0, 1)``: the derivative in the wrong argument) and a two-step
sampler that asks for the map 1 -> 0.5 but moves by a full unit step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler


def sample_t_r(key, batch_size, mu=-0.4, sigma=1.0, data_proportion=0.75):
    """Logit-normal (t, r) with r <= t; ``data_proportion`` of the batch has r = t."""
    k_norm, k_mask = jax.random.split(key)
    samples = jax.nn.sigmoid(mu + sigma * jax.random.normal(k_norm, (batch_size, 2)))
    t, r = samples.max(axis=1), samples.min(axis=1)
    on_diagonal = jax.random.uniform(k_mask, (batch_size,)) < data_proportion
    return t, jnp.where(on_diagonal, t, r)


def adaptive_l2(err, gamma=0.5, c=1e-3):
    sq = jnp.sum(err**2, axis=-1)
    w = jax.lax.stop_gradient(1.0 / (sq + c) ** (1.0 - gamma))
    return jnp.mean(w * sq)


def make_meanflow_loss(model, tangent_on_r=False):
    def loss_fn(params, x, key):
        k_time, k_noise = jax.random.split(key)
        t, r = sample_t_r(k_time, x.shape[0])
        e = jax.random.normal(k_noise, x.shape, dtype=x.dtype)
        t, r = t.astype(x.dtype), r.astype(x.dtype)
        z = (1 - t[:, None]) * x + t[:, None] * e
        v = e - x

        def u_fn(z, t, r):
            return model.apply(params, z, t, r)

        dt, dr = (
            (jnp.zeros_like(t), jnp.ones_like(r))
            if tangent_on_r
            else (jnp.ones_like(t), jnp.zeros_like(r))
        )
        u, dudt = jax.jvp(u_fn, (z, t, r), (v, dt, dr))
        u_tgt = jax.lax.stop_gradient(v - (t - r)[:, None] * dudt)
        loss = adaptive_l2(u - u_tgt)
        return loss, {"mse": jnp.mean((u - u_tgt) ** 2)}

    return jax.jit(loss_fn)


def make_two_step_sampler(model, stride=None):
    @jax.jit
    def sample(params, noise):
        x = noise
        for t_now, t_next in ((1.0, 0.5), (0.5, 0.0)):
            t = jnp.full((x.shape[0],), t_now, dtype=x.dtype)
            r = jnp.full((x.shape[0],), t_next, dtype=x.dtype)
            x = x - (stride or (t_now - t_next)) * model.apply(params, x, t, r)
        return x

    return sample


def implementation(loss=make_meanflow_loss, sampler=make_two_step_sampler) -> Implementation:
    return Implementation(
        name="example: MeanFlow in JAX (keys, jax.jvp, stop_gradient, adaptive L2, jit)",
        conventions={
            "time": "noise_at_1",
            "signature": "x_t_s",
            "framework": "jax",
            "dtype": "float32",
        },
        shipped_losses={"meanflow": ShippedLoss(loss, batch_size=256)},
        samplers={"two_step": ShippedSampler(sampler)},
    )


def wrong_implementation() -> Implementation:
    return implementation(
        loss=lambda model: make_meanflow_loss(model, tangent_on_r=True),
        sampler=lambda model: make_two_step_sampler(model, stride=1.0),
    )
