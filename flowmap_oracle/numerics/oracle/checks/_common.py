"""Building blocks shared by the check modules: call a target or loss in the user's conventions,
build the reference loss in the user's units, and test stop-gradients in both AD modes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ...adapters import TargetKind
from ..context import Batch, CheckContext
from ..networks import ExactAverageVelocity, RandomNetwork
from ..results import CheckFailure, compare
from ..tolerances import GRADIENT, STANDARD

__all__ = [
    "assert_stop_gradient",
    "compare_loss",
    "our_value",
    "reference_regression_loss",
    "user_loss_and_gradients",
    "user_target",
]


def our_value(net: RandomNetwork | ExactAverageVelocity, x: Tensor, t: Tensor, s: Tensor):
    """``F(x, t, s)`` of an oracle network, float64, no graph."""
    with torch.no_grad():
        return net.value(x, t, s) if isinstance(net, ExactAverageVelocity) else net(x, t, s)


def user_target(
    ctx: CheckContext,
    objective: str,
    kind: TargetKind,
    net: RandomNetwork | ExactAverageVelocity,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    v: Tensor | None,
    *extra: Any,
) -> Tensor:
    """Call the implementation's ``objective`` target ``(net, x, t, s[, v], *extra)`` in its
    conventions and return the target in ours (float64)."""
    fn = ctx.function(objective, "target")
    args = [ctx.user_network(net), ctx.user_points(x, t), ctx.user_times(t), ctx.user_times(s)]
    if v is not None:
        args.append(ctx.user_velocity(v, x, t))
    out = ctx.call(f"{objective} target", fn, *args, *extra)
    N_tgt = ctx.to_ours(out, name=f"the {objective} target", shape=tuple(x.shape))
    return ctx.target_to_ours(N_tgt, our_value(net, x, t, s), x, t, s, kind)


def _reduce(sq: Tensor, reduction: str) -> Tensor:
    return sq.sum(dim=1).mean() if reduction == "sum_mean" else sq.mean()


def reference_regression_loss(
    ctx: CheckContext,
    net: RandomNetwork,
    batch: Batch,
    residual: Callable[[Callable], tuple[Tensor, Tensor]],
    kind: TargetKind,
    *,
    s: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The reference loss ``reduce(||N - sg(N_tgt)||^2)`` in the implementation's output units,
    and its gradient in the network's parameters.

    ``residual(F_fn) -> (F, R)``: the reference objective's network value (with graph) and its
    residual ``R = F - sg(F_tgt)`` in our convention. In the user's units ``N = (F - q x) / k`` and
    ``N_tgt = sg(N) - sg(R) / (w k)``, exactly the regression the user's loss performs.
    """
    params = net.params(requires_grad=True)
    F, R = residual(net.functional(params))
    end = batch.s if s is None else s
    N = ctx.network_output_in_user_units(F, batch.x, batch.t, end)
    N_tgt = N.detach() - ctx.residual_to_user(R.detach(), batch.t, end, kind)
    loss = _reduce((N - N_tgt).pow(2), ctx.impl.loss_reduction)
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach(), dict(zip(params, grads, strict=True))


def user_loss_and_gradients(
    ctx: CheckContext, objective: str, net: RandomNetwork, batch: Batch, *extra: Any
) -> tuple[Tensor, dict[str, Tensor]]:
    """Call the implementation's ``objective`` loss ``(net, data, noise, t, s, *extra)`` on the
    random network and return its value and its gradient in the network's parameters."""
    fn = ctx.function(objective, "loss")
    args = [
        ctx.to_user(batch.data),
        ctx.to_user(batch.noise),
        ctx.user_times(batch.t),
        ctx.user_times(batch.s),
        *extra,
    ]
    what = f"{objective} loss"
    if ctx.conventions.framework == "torch":
        params = net.params(requires_grad=True)
        params_user = {k: v.to(ctx.adapter.user_dtype) for k, v in params.items()}
        loss = ctx.call(what, fn, ctx.user_network(net, params_user), *args)
        value = ctx.to_ours(loss, name=f"the {what}", shape=())
        if not loss.requires_grad:
            raise CheckFailure(f"the {what} does not depend on the network parameters")
        grads = ctx.call(
            f"{what} backward",
            lambda: torch.autograd.grad(loss, list(params.values()), allow_unused=True),
        )
        out = {k: g for k, g in zip(params, grads, strict=True) if g is not None}
        return value, out
    import jax

    params = net.jax_params(ctx.conventions.dtype)

    def loss_of(p):
        return fn(ctx.user_network(net, p), *args)

    loss, grads = ctx.call(what, lambda: jax.value_and_grad(loss_of)(params))
    value = ctx.to_ours(loss, name=f"the {what}", shape=())
    return value, {
        k: ctx.to_ours(g, name=f"the gradient in {k!r}", shape=tuple(net.weights[k].shape))
        for k, g in grads.items()
    }


def compare_loss(
    ctx: CheckContext,
    what: str,
    expected: tuple[Tensor, dict[str, Tensor]],
    got: tuple[Tensor, dict[str, Tensor]],
) -> None:
    """Compare loss values and every parameter gradient."""
    (e_loss, e_grads), (g_loss, g_grads) = expected, got
    compare(
        e_loss.reshape(1),
        g_loss.reshape(1).to(e_loss.dtype),
        ctx.tol(STANDARD),
        quantity=f"{what} value (implementation units, reduction {ctx.impl.loss_reduction!r})",
    )
    for name, e in e_grads.items():
        if name not in g_grads:
            raise CheckFailure(f"no gradient of the {what} reached network parameter {name!r}")
        compare(
            e,
            g_grads[name].to(e.dtype),
            ctx.tol(GRADIENT),
            quantity=f"gradient of the {what} in network parameter {name!r}",
        )


def assert_stop_gradient(
    ctx: CheckContext,
    objective: str,
    net: RandomNetwork,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    v: Tensor | None,
    *extra: Any,
) -> None:
    """The target must not depend on the network parameters in reverse or in forward mode."""
    fn = ctx.function(objective, "target")
    args = [ctx.user_points(x, t), ctx.user_times(t), ctx.user_times(s)]
    if v is not None:
        args.append(ctx.user_velocity(v, x, t))
    args += list(extra)
    what = f"{objective} target"
    g = torch.Generator().manual_seed(1234)
    directions = {
        k: torch.randn(w.shape, generator=g, dtype=w.dtype) for k, w in net.weights.items()
    }
    if ctx.conventions.framework == "torch":
        dtype = ctx.adapter.user_dtype
        params = {k: w.to(dtype).requires_grad_(True) for k, w in net.params().items()}
        out = ctx.call(what, fn, ctx.user_network(net, params), *args)
        ctx.to_ours(out, name=f"the {what}", shape=tuple(x.shape))
        reverse = 0.0
        if out.requires_grad:
            grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
            reverse = max(float(gr.abs().max()) for gr in grads if gr is not None)
        plain = {k: w.to(dtype) for k, w in net.params().items()}
        tangents = {k: d.to(dtype) for k, d in directions.items()}
        _, tangent = ctx.call(
            what,
            lambda: torch.func.jvp(
                lambda p: fn(ctx.user_network(net, p), *args), (plain,), (tangents,)
            ),
        )
        forward = float(tangent.abs().max())
    else:
        import jax
        import jax.numpy as jnp

        params = net.jax_params(ctx.conventions.dtype)
        tangents = {
            k: jnp.asarray(d.numpy(), dtype=ctx.conventions.dtype) for k, d in directions.items()
        }

        def target_of(p):
            return fn(ctx.user_network(net, p), *args)

        grads = ctx.call(what, lambda: jax.grad(lambda p: jnp.sum(target_of(p)))(params))
        reverse = max(float(jnp.abs(gr).max()) for gr in jax.tree_util.tree_leaves(grads))
        _, tangent = ctx.call(what, lambda: jax.jvp(target_of, (params,), (tangents,)))
        forward = float(jnp.abs(tangent).max())
    if reverse > 0:
        raise CheckFailure(
            f"the {what} is not stop-gradiented: its reverse-mode gradient in the network "
            f"parameters reaches {reverse:.3e} (expected exactly 0)"
        )
    if forward > 0:
        raise CheckFailure(
            f"the {what} is not stop-gradiented in forward mode: its tangent along a direction in "
            f"the network parameters reaches {forward:.3e} (expected exactly 0). torch.no_grad "
            "stops reverse-mode gradients only; detach the target (or use stop_gradient in JAX)"
        )
