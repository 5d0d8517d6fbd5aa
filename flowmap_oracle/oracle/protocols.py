"""The functions an implementation hands the oracle, as typed protocols.

Every function is called in the *user's* conventions (framework, dtype, time variable, network
signature and prediction; :mod:`flowmap_oracle.oracle.adapters`). Arguments: ``net`` is a network
in the user's signature, ``net(x, a1, a2)``; ``x`` points; ``t`` the start, ``r`` an intermediate
and ``s`` the end time in the user's time variable, ``(N,)`` arrays; ``data`` and ``noise`` are
``(N, d)`` samples of the data and of ``N(0, I)``; ``v`` is the velocity ``dx/dtau`` at ``(x, t)``;
``velocity`` is the teacher's velocity field ``velocity(x, t)`` and ``solver`` a teacher solver
``solver(x, t, s)``, both callables in the user's conventions. Arrays are ``torch.Tensor`` or JAX
arrays (:data:`Array`).

:data:`PROTOCOLS` maps each method (:class:`~flowmap_oracle.conventions.Method`, plus ``"model"``
for the flow-map step) and :class:`Role` to its protocol; :func:`signature_of` prints one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from ..conventions import Method

__all__ = [
    "MODEL",
    "PROTOCOLS",
    "Array",
    "Role",
    "accepts_positional",
    "arity",
    "signature_of",
]

Array = Any
"""A ``torch.Tensor`` or a JAX array in the user's declared dtype."""

Network = Callable[[Array, Array, Array], Array]
"""A network in the user's signature, ``net(x, a1, a2)``."""

MODEL = "model"
"""The group of the flow-map-step check (not a method)."""


class Role(StrEnum):
    """What an implementation provides for a method."""

    TARGET = "target"
    LOSS = "loss"
    FLOW_MAP = "flow_map"


# -- targets ------------------------------------------------------------------------------------


class MeanFlowTarget(Protocol):
    """The regression target ``N_tgt`` of the network output (MeanFlow identity)."""

    def __call__(self, net: Network, x: Array, t: Array, s: Array, v: Array, /) -> Array: ...


class FACMTarget(Protocol):
    """The consistency target at ``s = 0`` (FACM's CM part)."""

    def __call__(self, net: Network, x: Array, t: Array, v: Array, /) -> Array: ...


class SplitTarget(Protocol):
    """The SplitMeanFlow target, ``F_{r->s}`` evaluated at the model's own ``x_r``."""

    def __call__(self, net: Network, x: Array, t: Array, s: Array, r: Array, /) -> Array: ...


class ShortcutTarget(Protocol):
    """The Shortcut target in velocity space (midpoint ``m = (t + s) / 2``)."""

    def __call__(self, net: Network, x: Array, t: Array, s: Array, /) -> Array: ...


class SCMTarget(Protocol):
    """``d f_{t->0} / dt``, the tangent of the stop-gradient model."""

    def __call__(self, net: Network, x: Array, t: Array, v: Array, /) -> Array: ...


class ReFlowTarget(Protocol):
    """The teacher's coupling ``Phi_{1->0}(noise)``."""

    def __call__(self, solver: Callable[..., Array], noise: Array, /) -> Array: ...


# -- losses -------------------------------------------------------------------------------------


class PairLoss(Protocol):
    """A scalar loss on ``(data, noise)`` at start time ``t`` (flow matching, FACM)."""

    def __call__(self, net: Network, data: Array, noise: Array, t: Array, /) -> Array: ...


class TwoTimeLoss(Protocol):
    """A scalar loss at times ``(t, s)`` (MeanFlow, Shortcut)."""

    def __call__(self, net: Network, data: Array, noise: Array, t: Array, s: Array, /) -> Array: ...


class ThreeTimeLoss(Protocol):
    """A scalar loss at times ``(t, r, s)`` (SplitMeanFlow, IMM)."""

    def __call__(
        self, net: Network, data: Array, noise: Array, t: Array, r: Array, s: Array, /
    ) -> Array: ...


class ConsistencyTrainingLoss(Protocol):
    """The consistency-training loss between ``t`` and the earlier time ``t_prev``."""

    def __call__(
        self, net: Network, data: Array, noise: Array, t: Array, t_prev: Array, /
    ) -> Array: ...


class SCMLoss(Protocol):
    """A surrogate whose gradient is ``mean (d_theta f_{t->0})^T d f / dt``."""

    def __call__(
        self, net: Network, data: Array, noise: Array, t: Array, velocity: Callable[..., Array], /
    ) -> Array: ...


class AYFLoss(Protocol):
    """A surrogate whose gradient is AYF's (EMD or LMD) at times ``(t, s)``."""

    def __call__(
        self,
        net: Network,
        data: Array,
        noise: Array,
        t: Array,
        s: Array,
        velocity: Callable[..., Array],
        /,
    ) -> Array: ...


class CTMLoss(Protocol):
    """CTM's loss compared in data space; ``net_sg`` has stop-gradiented parameters."""

    def __call__(
        self,
        net: Network,
        net_sg: Network,
        data: Array,
        noise: Array,
        t: Array,
        r: Array,
        s: Array,
        solver: Callable[..., Array],
        /,
    ) -> Array: ...


class ReFlowLoss(Protocol):
    """Flow matching on the teacher's coupling ``(coupled_data, noise)``."""

    def __call__(self, net: Network, coupled_data: Array, noise: Array, t: Array, /) -> Array: ...


class FlowMapStep(Protocol):
    """The one-step map ``x_s`` built from ``net``."""

    def __call__(self, net: Network, x: Array, t: Array, s: Array, /) -> Array: ...


PROTOCOLS: dict[str, dict[Role, tuple[type, str]]] = {
    Method.FLOW_MATCHING: {
        Role.LOSS: (PairLoss, "||net on its diagonal s = t - target||^2"),
    },
    Method.MEANFLOW: {
        Role.TARGET: (MeanFlowTarget, "N_tgt"),
        Role.LOSS: (TwoTimeLoss, "conditional velocity, plain L2"),
    },
    Method.FACM: {
        Role.TARGET: (FACMTarget, "N_tgt, the consistency target at s = 0"),
        Role.LOSS: (
            PairLoss,
            "FACM defaults: norm-L2 CM part weighted by sin(pi t / 2), anchor at 2 - t with "
            "L2 + cosine, conditional velocity",
        ),
    },
    Method.SPLIT_MEANFLOW: {
        Role.TARGET: (SplitTarget, "N_tgt, F_{r->s} at the model's x_r"),
        Role.LOSS: (ThreeTimeLoss, "split rule; flow matching with x1 - x0 where s = t"),
    },
    Method.SHORTCUT: {
        Role.TARGET: (ShortcutTarget, "N_tgt in velocity space, midpoint m = (t + s) / 2"),
        Role.LOSS: (TwoTimeLoss, "flow matching with x1 - x0 plus the consistency term"),
    },
    Method.CONSISTENCY: {
        Role.LOSS: (ConsistencyTrainingLoss, "consistency training, L2"),
    },
    Method.SCM: {
        Role.TARGET: (SCMTarget, "d f_{t->0} / dt, the tangent of the stop-gradient model"),
        Role.LOSS: (SCMLoss, "surrogate with gradient mean (d_theta f_{t->0})^T d f / dt"),
    },
    Method.AYF_EMD: {
        Role.LOSS: (AYFLoss, "surrogate with gradient mean sign(t - s) (d_theta f)^T d f / dt"),
    },
    Method.AYF_LMD: {
        Role.LOSS: (
            AYFLoss,
            "surrogate with gradient mean sign(s - t) (d_theta f)^T (d_s f - velocity(f, s))",
        ),
    },
    Method.CTM: {
        Role.LOSS: (CTMLoss, "compared in data space through the frozen map f_{s->0}"),
    },
    Method.IMM: {
        Role.LOSS: (ThreeTimeLoss, "groups of 4, Laplace kernel, bandwidth 1, unbiased MMD^2"),
    },
    Method.REFLOW: {
        Role.TARGET: (ReFlowTarget, "the teacher's coupling Phi_{1->0}(noise)"),
        Role.LOSS: (ReFlowLoss, "flow matching on the coupling"),
    },
    Method.FMM_LAGRANGIAN: {
        Role.LOSS: (AYFLoss, "mean ||d_s f - velocity(f, s)||^2, no stop-gradient"),
    },
    Method.FMM_EULERIAN: {
        Role.LOSS: (AYFLoss, "mean ||d_t f + J_x f velocity(x_t, t)||^2, no stop-gradient"),
    },
    Method.LSD: {Role.LOSS: (TwoTimeLoss, "flow matching where s = t, else Lagrangian SD")},
    Method.ESD: {Role.LOSS: (TwoTimeLoss, "flow matching where s = t, else Eulerian SD")},
    Method.PSD: {Role.LOSS: (ThreeTimeLoss, "flow matching where s = t, else ||F - sg(F_tgt)||^2")},
    MODEL: {Role.FLOW_MAP: (FlowMapStep, "x_s")},
}
"""Method (or ``"model"``) -> role -> (protocol, what the function returns)."""


def _parameters(protocol: type) -> list[str]:
    params = list(inspect.signature(protocol.__call__).parameters)
    return params[1:]  # drop self


def signature_of(method: str, role: Role | str) -> str:
    """The call signature of ``method``'s ``role`` function, e.g. ``(net, x, t, s, v) -> N_tgt``."""
    protocol, returns = PROTOCOLS[method][Role(role)]
    return f"({', '.join(_parameters(protocol))}) -> {returns}"


def accepts_positional(fn: Callable[..., Any], n: int) -> bool | None:
    """Whether ``fn`` can be called with ``n`` positional arguments (``None``: not inspectable).

    Used to reject, before any check runs, a function whose arity cannot match its protocol.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*range(n))
    except TypeError:
        return False
    return True


def arity(method: str, role: Role | str) -> int:
    """How many positional arguments ``method``'s ``role`` function takes."""
    return len(_parameters(PROTOCOLS[method][Role(role)][0]))
