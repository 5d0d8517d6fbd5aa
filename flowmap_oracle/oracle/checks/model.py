"""Checks of the flow-map step an implementation builds from its network (objective-free)."""

from __future__ import annotations

from ..cases import CaseSpace
from ..context import CheckContext
from ..registry import check
from ..results import Case, compare
from ..tolerances import STANDARD
from ._common import our_value


@check(
    "model.flow_map.one_step",
    objective="model",
    role="flow_map",
    space="any",
    description=(
        "The implementation's one-step map from its network equals f_{t->s}(x) = x + (s - t) F, "
        "in both directions of time (catches c_out = t - s and steps in the wrong direction)."
    ),
)
def flow_map_one_step(ctx: CheckContext, case: Case, space: CaseSpace) -> None:
    flow_map = ctx.impl.flow_map
    if flow_map is None:  # the runner skips checks of functions not provided
        raise RuntimeError("model.flow_map.one_step ran on an implementation without a flow_map")
    # Under shortcut_log2 the case space holds only dyadic generative steps.
    b = ctx.batch(case, space)
    net = ctx.random_network(case.seed + 4)
    F = our_value(net, b.x, b.t, b.s)
    expected = b.x + (b.s - b.t)[:, None] * F
    out = ctx.call(
        "flow_map",
        flow_map,
        ctx.user_network(net),
        ctx.user_points(b.x, b.t),
        ctx.user_times(b.t),
        ctx.user_times(b.s),
    )
    x_s_user = ctx.to_ours(out, name="the flow_map result", shape=tuple(b.x.shape))
    got = ctx.adapter.points_to_ours(x_s_user, b.s, ops=ctx.adapter.torch_ops)
    compare(
        expected,
        got,
        ctx.tol(STANDARD),
        quantity="one-step map f_{t->s}(x) (our convention)",
        inputs=b.inputs(),
    )
