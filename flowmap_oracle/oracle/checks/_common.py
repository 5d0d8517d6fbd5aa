"""Building blocks shared by the check modules.

* calling an implementation's target in its conventions and reading the result in ours;
* the reference loss *in the implementation's units*: a regression ``||N - sg(N_tgt)||^2`` on
  the network output ``N = (F - q x) / k`` with ``N_tgt = sg(N) - sg(R) / (w k)`` for our residual
  ``R``, or a gradient-defined surrogate ``1/2 ||g - sg(g - d)||^2`` on the user's flow map ``g``;
* gradients of the reference and of the implementation in the same random network's parameters;
* the stop-gradient test: reverse mode judged, the forward-mode tangent measured by whichever
  route composes with the implementation's JVP API and reported;
* :func:`register_target_checks`: the pointwise checks every average-velocity target gets (random
  network, constant network, exact map).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ...reference_models import ExactAverageVelocity
from ..adapters import TargetKind
from ..cases import CaseSpace, Space
from ..context import Batch, CheckContext, user_warnings
from ..networks import RandomNetwork
from ..registry import check
from ..results import Case, CheckFailure, compare
from ..tolerances import EXACT_MAP, GRADIENT, STANDARD

__all__ = [
    "ConstantNetwork",
    "Term",
    "assert_stop_gradient",
    "call_target",
    "compare_gradients",
    "compare_loss",
    "explain_parts",
    "loss_inputs",
    "our_value",
    "reduce_entries",
    "reference_gradients",
    "register_target_checks",
    "regression_in_user_units",
    "regression_terms_in_user_units",
    "surrogate_in_user_units",
    "target_inputs",
    "user_gradients",
    "user_target",
]


def our_value(net: RandomNetwork | ExactAverageVelocity | Callable, x, t, s) -> Tensor:
    """``F(x, t, s)`` of an oracle network, float64, no graph."""
    with torch.no_grad():
        return net.value(x, t, s) if isinstance(net, ExactAverageVelocity) else net(x, t, s)


def call_target(
    ctx: CheckContext, objective: str, args: list[Any], shape: tuple[int, ...]
) -> Tensor:
    """Call the implementation's ``objective`` target with user-side ``args``; float64 result."""
    out = ctx.call(f"{objective} target", ctx.function(objective, "target"), *args)
    return ctx.to_ours(out, name=f"the {objective} target", shape=shape)


def target_inputs(ctx: CheckContext, x: Tensor, t: Tensor, *times: Tensor, v=None) -> list[Any]:
    """``[x, t, *times[, v]]`` in the implementation's conventions: a target protocol's arguments
    after the network (``v``, the velocity at ``(x, t)``, only where given)."""
    args = [ctx.user_points(x, t), ctx.user_times(t), *(ctx.user_times(a) for a in times)]
    return args if v is None else [*args, ctx.user_velocity(v, x, t)]


def user_target(
    ctx: CheckContext,
    objective: str,
    kind: TargetKind,
    net,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    v: Tensor | None = None,
    extra_times: tuple[Tensor, ...] = (),
    with_end: bool = True,
) -> Tensor:
    """The implementation's target ``(net, x, t[, s][, *extra_times][, v])`` in our convention.

    ``with_end=False`` omits ``s`` from the call (FACM's target at ``s = 0``). The result is
    converted at ``(t, s)`` with the target ``kind``.
    """
    times = ([s] if with_end else []) + list(extra_times)
    args = [ctx.user_network(net), *target_inputs(ctx, x, t, *times, v=v)]
    N_tgt = call_target(ctx, objective, args, tuple(x.shape))
    return ctx.target_to_ours(N_tgt, our_value(net, x, t, s), x, t, s, kind)


def reduce_entries(sq: Tensor, reduction: str) -> Tensor:
    """``sum over dimensions, mean over samples`` or ``mean over entries`` of ``(N, d)``."""
    return sq.sum(dim=1).mean() if reduction == "sum_mean" else sq.mean()


@dataclass(frozen=True)
class Term:
    """One regression term of a loss in our convention: network value ``F`` (with its graph) at
    ``(x, t, s)`` and the residual ``R = F - sg(F_tgt)``."""

    F: Tensor
    R: Tensor
    x: Tensor
    t: Tensor
    s: Tensor
    kind: TargetKind
    name: str = "regression"


def regression_in_user_units(ctx: CheckContext, terms: list[Term]) -> Tensor:
    """``reduce(sum_terms ||N - sg(N_tgt)||^2)`` in the implementation's output units."""
    total = torch.zeros(())
    for term in terms:
        N = ctx.network_output_in_user_units(term.F, term.x, term.t, term.s)
        N_tgt = N.detach() - ctx.residual_to_user(term.R.detach(), term.t, term.s, term.kind)
        total = total + (N - N_tgt).pow(2)
    return reduce_entries(total, ctx.impl.loss_reduction)


def regression_terms_in_user_units(ctx: CheckContext, terms: list[Term]) -> dict[str, Tensor]:
    """:func:`regression_in_user_units` broken into named parts that sum to it.

    Each :class:`Term` is one part (by its ``name``); a term with rows both on the diagonal
    ``s = t`` (flow-matching rows) and off it is split into those two row sets. Both reductions
    are linear in the squared entries, so the parts add up to the whole loss exactly (up to
    rounding); a loss-value mismatch is then reported per part (:func:`compare_loss`).
    """
    squares = []
    for term in terms:
        N = ctx.network_output_in_user_units(term.F, term.x, term.t, term.s)
        N_tgt = N.detach() - ctx.residual_to_user(term.R.detach(), term.t, term.s, term.kind)
        squares.append((term, (N - N_tgt).pow(2)))
    shape = torch.broadcast_shapes(*(sq.shape for _, sq in squares))
    parts: dict[str, Tensor] = {}
    for term, sq in squares:
        sq = sq.expand(shape)
        diagonal = (term.t == term.s).reshape(-1, *([1] * (sq.ndim - 1)))
        masks = (
            {"": None}
            if bool(diagonal.all()) or not bool(diagonal.any())
            else {
                ": rows with s = t": diagonal,
                ": rows with s != t": ~diagonal,
            }
        )
        for suffix, mask in masks.items():
            part = sq if mask is None else torch.where(mask, sq, torch.zeros_like(sq))
            key = term.name + suffix
            value = reduce_entries(part, ctx.impl.loss_reduction)
            parts[key] = parts[key] + value if key in parts else value
    return parts


def surrogate_in_user_units(ctx: CheckContext, g: Tensor, direction: Tensor) -> Tensor:
    """``reduce(1/2 ||g - sg(g - d)||^2)``: gradient ``mean (d_theta g)^T d`` (user units)."""
    return reduce_entries(0.5 * (g - (g - direction).detach()).pow(2), ctx.impl.loss_reduction)


def reference_gradients(
    net: RandomNetwork, build: Callable[[torch.nn.Module], Tensor | Mapping[str, Tensor]]
) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
    """Evaluate the reference loss ``build(module)`` on ``net`` and its parameter gradients.

    ``build`` returns the loss, or its named parts (which sum to it).

    Returns:
        The loss (detached), its gradient per parameter, and the value of each named part
        (empty when ``build`` returned one tensor).
    """
    module = net.module()
    built = build(module)
    parts = dict(built) if isinstance(built, Mapping) else {}
    loss = sum(parts.values(), torch.zeros(())) if parts else cast(Tensor, built)
    names = list(module.params.keys())
    grads = torch.autograd.grad(loss, [module.params[k] for k in names], allow_unused=True)
    out = {
        k: torch.zeros_like(module.params[k]) if g is None else g
        for k, g in zip(names, grads, strict=True)
    }
    return loss.detach(), out, {k: float(v.detach()) for k, v in parts.items()}


PART_FACTORS = (0.0, 2.0, 0.5, -1.0, 4.0, 0.25)
"""Factors on one part of a loss tried as explanations of a loss-value mismatch: the part
missing, counted twice, halved, with its sign flipped, squared-norm/mean confusions (4, 1/4)."""


def explain_parts(expected: float, got: float, parts: Mapping[str, float], atol: float) -> str:
    """A loss-value mismatch in terms of the reference's named parts.

    Lists each part's value and, when changing a single part by one of :data:`PART_FACTORS`
    reproduces ``got`` within ``atol``, names it (``"your loss equals the reference with the
    part 'x' counted twice"``). Returns ``""`` when there is nothing to say (fewer than two
    parts and no factor explains the gap).
    """
    if not parts:
        return ""
    words = {
        0.0: "left out",
        2.0: "counted twice",
        0.5: "halved",
        -1.0: "with its sign flipped",
        4.0: "multiplied by 4",
        0.25: "divided by 4",
    }
    explained = [
        f"the part '{name}' {words[c]}"
        for name, value in parts.items()
        for c in PART_FACTORS
        if abs(value) > atol and abs(expected + (c - 1.0) * value - got) <= atol
    ]
    listing = ", ".join(f"'{k}' {v:.6g}" for k, v in parts.items())
    text = f"the reference's parts: {listing} (sum {expected:.6g}; yours {got:.6g})"
    if explained:
        text = f"your loss equals the reference with {' or '.join(explained)}; " + text
    return text if explained or len(parts) > 1 else ""


def user_gradients(
    ctx: CheckContext,
    objective: str,
    net: RandomNetwork,
    args: list[Any],
    *,
    frozen_copy: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Call the implementation's ``objective`` loss ``(net[, net_sg], *args)`` and return its
    value and its gradient in the random network's parameters.

    ``frozen_copy`` passes a second network with the same, stop-gradiented parameters (CTM's
    ``sg(theta)``).
    """
    fn = ctx.function(objective, "loss")
    what = f"{objective} loss"
    if ctx.conventions.framework == "torch":
        # The oracle's network computes in float64 whatever the declared dtype; its wrapper casts
        # inputs and outputs to the implementation's dtype.
        params = net.params(requires_grad=True)
        nets = [ctx.user_network(net, params)]
        if frozen_copy:
            nets.append(ctx.user_network(net, {k: v.detach() for k, v in params.items()}))
        loss = ctx.call(what, fn, *nets, *args)
        value = ctx.to_ours(loss, name=f"the {what}", shape=())
        if not loss.requires_grad:
            raise CheckFailure(f"the {what} does not depend on the network parameters")
        grads = ctx.call(
            f"{what} backward",
            lambda: torch.autograd.grad(loss, list(params.values()), allow_unused=True),
        )
        return value, {
            k: torch.zeros_like(params[k]) if g is None else g.detach().double()
            for k, g in zip(params, grads, strict=True)
        }
    import jax

    params = net.jax_params(ctx.conventions.dtype)

    def loss_of(p):
        nets = [ctx.user_network(net, p)]
        if frozen_copy:
            nets.append(ctx.user_network(net, jax.lax.stop_gradient(p)))
        return fn(*nets, *args)

    loss, grads = ctx.call(what, lambda: jax.value_and_grad(loss_of)(params))
    value = ctx.to_ours(loss, name=f"the {what}", shape=())
    return value, {
        k: ctx.to_ours(g, name=f"the gradient in {k!r}", shape=tuple(net.weights[k].shape))
        for k, g in grads.items()
    }


def compare_gradients(
    ctx: CheckContext, what: str, expected: dict[str, Tensor], got: dict[str, Tensor]
) -> None:
    """Compare every parameter gradient (each must be present)."""
    for name, e in expected.items():
        if name not in got:
            raise CheckFailure(f"no gradient of the {what} reached network parameter {name!r}")
        compare(
            e,
            got[name].to(e.dtype),
            ctx.tol(GRADIENT),
            quantity=f"gradient of the {what} in network parameter {name!r}",
        )


def loss_inputs(ctx: CheckContext, b: Batch, *times: Tensor) -> list[Any]:
    """``[data, noise, *times]`` of ``b`` in the implementation's conventions: the leading
    arguments of every loss protocol."""
    return [ctx.to_user(b.data), ctx.to_user(b.noise), *(ctx.user_times(a) for a in times)]


def compare_loss(
    ctx: CheckContext,
    objective: str,
    net: RandomNetwork,
    build: Callable[[torch.nn.Module], Tensor | Mapping[str, Tensor]],
    args: list[Any],
    *,
    what: str,
    value: bool = True,
    frozen_copy: bool = False,
) -> None:
    """The implementation's ``objective`` loss against the reference on the random network ``net``.

    Arguments:
        objective: the objective whose loss is called as ``(net[, net_sg], *args)``.
        net: the random network both sides differentiate in.
        build: ``build(module) -> loss``, the reference loss on ``net`` as a module (in the
            implementation's units and reduction), or its named parts (a mapping whose values
            sum to the loss, e.g. :func:`regression_terms_in_user_units`): a value mismatch is
            then reported part by part (:func:`explain_parts`).
        args: the loss's arguments after the network(s), in the implementation's conventions.
        what: the loss's name in failure messages.
        value: compare loss values too (``False`` for gradient-defined losses, whose values are
            arbitrary); gradients in every parameter are always compared.
        frozen_copy: pass a stop-gradiented copy of the network as well (CTM's ``sg(theta)``).
    """
    e_loss, e_grads, parts = reference_gradients(net, build)
    g_loss, g_grads = user_gradients(ctx, objective, net, args, frozen_copy=frozen_copy)
    if value:
        tol = ctx.tol(STANDARD)
        try:
            compare(
                e_loss.reshape(1),
                g_loss.reshape(1).to(e_loss.dtype),
                tol,
                quantity=f"{what} value (implementation units, reduction "
                f"{ctx.impl.loss_reduction!r})",
            )
        except CheckFailure as failure:
            expected, got = float(e_loss), float(g_loss)
            note = explain_parts(expected, got, parts, tol.atol + tol.rtol * abs(expected))
            if note:
                failure.message = f"{failure.message}; {note}"
                failure.args = (failure.message,)
            raise
    compare_gradients(ctx, what, e_grads, g_grads)


def _forward_tangent_torch(
    ctx: CheckContext, fn: Callable, net: RandomNetwork, args: list[Any], directions: dict
) -> tuple[float | None, list[str]]:
    """The largest forward-mode tangent of the torch target ``fn(net, *args)`` along
    ``directions`` in the network parameters, by the first forward-mode route that runs the
    implementation's own derivative code; ``(None, why each route failed)`` when none does.

    * ``torch.func.jvp``: composes with a target that differentiates by ``torch.func.jvp``;
    * ``torch.autograd.forward_ad`` (dual parameters): composes with
      ``torch.autograd.functional.jvp`` (its double-backward trick calls ``requires_grad_``, which
      no ``torch.func`` transform allows) and with plain autograd.

    A target that uses ``torch.autograd.forward_ad`` itself runs under neither (torch does not
    nest forward-mode levels). The target already ran outside any transform (reverse mode), so an
    error here comes from composing the transforms, not from the implementation.
    """
    import torch.autograd.forward_ad as fwAD

    def functorch() -> Tensor:
        return torch.func.jvp(
            lambda p: fn(ctx.user_network(net, p), *args), (net.params(),), (directions,)
        )[1]

    def dual() -> Tensor:
        with fwAD.dual_level():
            params = {k: fwAD.make_dual(w, directions[k]) for k, w in net.params().items()}
            tangent = fwAD.unpack_dual(fn(ctx.user_network(net, params), *args)).tangent
        return torch.zeros(()) if tangent is None else tangent

    errors = []
    for name, route in (("torch.func.jvp", functorch), ("torch.autograd.forward_ad", dual)):
        try:
            with user_warnings():
                tangent = route()
        except Exception as err:  # the route does not compose with the implementation's AD
            first = (str(err).splitlines() or [""])[0]
            errors.append(f"{name}: {type(err).__name__}: {first[:100]}")
            continue
        return float(tangent.detach().abs().max()), errors
    return None, errors


def assert_stop_gradient(
    ctx: CheckContext, objective: str, net: RandomNetwork, args: list[Any]
) -> None:
    """The ``objective`` target, called as ``(net, *args)``, must not depend on the network
    parameters in reverse mode (what training differentiates): a nonzero gradient fails.

    Its forward-mode tangent is measured too, by whichever route composes with the target's own
    JVP API (``torch.func.jvp``, ``torch.autograd.functional.jvp``, ``jax.jvp``). A target that
    carries a tangent but no reverse-mode gradient (built under ``torch.no_grad()`` and not
    detached) is harmless in reverse-mode training: the check passes and says so, as it says
    when no forward-mode route runs with the target's AD."""
    fn = ctx.function(objective, "target")
    what = f"{objective} target"
    g = torch.Generator().manual_seed(1234)
    directions = {
        k: torch.randn(w.shape, generator=g, dtype=w.dtype) for k, w in net.weights.items()
    }
    forward: float | None
    if ctx.conventions.framework == "torch":
        params = net.params(requires_grad=True)
        out = ctx.call(what, fn, ctx.user_network(net, params), *args)
        ctx.to_ours(out, name=f"the {what}", shape=None)
        reverse = 0.0
        if out.requires_grad:
            grads = ctx.call(
                f"{what} backward",
                lambda: torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True),
            )
            reverse = max((float(gr.abs().max()) for gr in grads if gr is not None), default=0.0)
        forward, errors = _forward_tangent_torch(ctx, fn, net, args, directions)
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
        forward, errors = float(jnp.abs(tangent).max()), []
    if reverse > 0:
        fix = (
            "detach the target: torch.no_grad() does not stop a derivative taken with "
            "create_graph=True (torch.autograd.functional.jvp records its graph inside)"
            if ctx.conventions.framework == "torch"
            else "wrap the target in jax.lax.stop_gradient"
        )
        raise CheckFailure(
            f"the {what} is not stop-gradiented: its reverse-mode gradient in the network "
            f"parameters reaches {reverse:.3e} (expected exactly 0); {fix}"
        )
    if forward is None:
        ctx.note(
            "forward_unprobed",
            "forward mode not probed: no forward-mode route composes with the target's own "
            f"derivative code ({'; '.join(errors)}); reverse mode, what training "
            "differentiates, carries no gradient",
        )
    elif forward > 0:
        ctx.note(
            "forward_only",
            f"the {what} carries a forward-mode tangent in the network parameters (up to "
            f"{forward:.3e}) but no reverse-mode gradient (built under torch.no_grad() and not "
            "detached?): harmless in reverse-mode training (loss.backward, torch.func.grad); "
            "detach it if the loss is ever differentiated in forward mode",
        )


class ConstantNetwork:
    """The network ``F(x, t, s) = c`` with ``c ~ N(0, I)`` drawn from ``seed`` (a fixed point of
    every self-consistency target)."""

    def __init__(self, dim: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.c = torch.randn(1, dim, generator=g, dtype=torch.float64)

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.c.expand(x.shape[0], -1) + 0 * x


TargetFunction = Callable[[CheckContext, Any, Batch, "Tensor | None"], Tensor]
"""``target(ctx, net, b, v)``: a target of the network ``net`` on the batch ``b`` with the
velocity ``v`` (``None`` for targets without one), float64, in our convention."""


def register_target_checks(
    objective: str,
    *,
    space: Space,
    target: str,
    formula: str,
    user: TargetFunction,
    reference: TargetFunction,
    seed: int,
    velocity: bool = False,
    prepare: Callable[[CheckContext, CaseSpace], CaseSpace] | None = None,
    constant_network: bool = False,
) -> None:
    """Register the pointwise checks of an average-velocity target ``F_tgt``:

    * ``<objective>.target.random_network``: on a random network (seed ``case.seed + seed``) the
      implementation's target equals the reference;
    * ``<objective>.target.constant_network`` (with ``constant_network``): for a constant ``F``
      the target is that constant (a degenerate fixed point of the self-consistency targets);
    * ``<objective>.target.exact_map_fixed_point``: at the exact average velocity ``F*`` of the
      teacher (a float64 ODE solve) the target equals ``F*``: the exact map is a fixed point.

    Arguments:
        objective: the objective.
        space: the times the checks run on.
        target: the target's name in descriptions and failure messages.
        formula: the target's definition, for the random-network check's description.
        user: the implementation's target, read back into our convention.
        reference: the reference target.
        seed: offset of the random network's seed from the case's.
        velocity: the target takes the velocity at ``(x_t, t)``: both sides get the teacher's
            marginal velocity (with it, and only with it, ``F*`` is a fixed point). Otherwise
            ``v`` is ``None``.
        prepare: ``prepare(ctx, space) -> space``: the target's requirements on the declared
            conventions (raising :class:`~..results.CheckSkipped`) and its restriction of the
            case space.
    """
    with_v = " with the teacher's marginal velocity v(x_t, t)" if velocity else ""

    def inputs(ctx: CheckContext, case: Case, space: CaseSpace) -> tuple[Batch, Tensor | None]:
        b = ctx.batch(case, space if prepare is None else prepare(ctx, space))
        return b, ctx.teacher.velocity(b.x, b.t) if velocity else None

    def random_network(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
        b, v = inputs(ctx, case, space)
        net = ctx.random_network(case.seed + seed)
        compare(
            reference(ctx, net, b, v),
            user(ctx, net, b, v),
            ctx.tol(STANDARD),
            quantity=f"{target} (our convention) on a random network"
            + (" with v = v_teacher" if velocity else ""),
            inputs=b.inputs(),
            gain=ctx.rounding_gain(b.t, b.s),
        )

    def constant(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
        b, v = inputs(ctx, case, space)
        net = ConstantNetwork(ctx.teacher.dim, case.seed)
        compare(
            net(b.x, b.t, b.s),
            user(ctx, net, b, v),
            ctx.tol(STANDARD),
            quantity=f"{target} of a constant network (should equal the constant)",
            inputs=b.inputs(),
            gain=ctx.rounding_gain(b.t, b.s),
        )

    def exact_map(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
        b, v = inputs(ctx, case, space)
        compare(
            ctx.exact.value(b.x, b.t, b.s),
            user(ctx, ctx.exact, b, v),
            ctx.tol(EXACT_MAP),
            quantity=f"{target} at the exact map (should equal F*, our convention)",
            inputs=b.inputs(),
            gain=ctx.rounding_gain(b.t, b.s),
        )

    name = f"{objective}.target"
    check(
        f"{name}.random_network",
        objective=objective,
        role="target",
        space=space,
        description=f"On a random network{with_v}, {formula} equals the reference.",
    )(random_network)
    if constant_network:
        check(
            f"{name}.constant_network",
            objective=objective,
            role="target",
            space=space,
            description=f"For a constant F the {target} is that constant (a degenerate fixed "
            "point).",
            draws=False,
        )(constant)
    check(
        f"{name}.exact_map_fixed_point",
        objective=objective,
        role="target",
        space=space,
        description=f"At the exact average velocity F* of the teacher (a float64 ODE solve){with_v}"
        f", the {target} equals F* itself: the exact map is a fixed point.",
        draws=False,
        cost=5,
    )(exact_map)
