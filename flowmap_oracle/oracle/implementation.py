"""The object an implementation's factory returns, and how the oracle finds the factory.

A factory is any zero-argument callable named as ``package.module:factory``; it returns an
:class:`Implementation` that declares its conventions and what it provides. Each function is
called in the *user's* conventions (framework, dtype, time variable, network signature and
prediction, see :mod:`flowmap_oracle.oracle.adapters`); the oracle converts everything it hands
over and everything it gets back. Nothing is guessed: a check whose function is not provided is
skipped with a reason, and unknown objectives or keys are errors.

Protocols: ``net`` is a network in the user's signature, ``net(x, a1, a2)``; ``x`` points; ``t``
the start, ``r`` an intermediate and ``s`` the end time, in the user's time variable, ``(N,)``
arrays; ``data`` and ``noise`` are ``(N, d)`` samples of the data and of ``N(0, I)`` whatever the
user calls them; ``v`` is the velocity ``dx/dtau`` at ``(x, t)`` as an array; ``velocity`` is the
teacher's velocity field ``velocity(x, t)`` and ``solver`` a teacher solver ``solver(x, t, s)``,
both callables in the user's conventions. The full table is :data:`PROTOCOLS`; for example

* ``targets["meanflow"](net, x, t, s, v) -> N_tgt``, the regression target of the network output;
* ``losses["meanflow"](net, data, noise, t, s) -> scalar`` (conditional velocity, plain L2);
* ``flow_map(net, x, t, s) -> x_s``, the one-step map built from ``net``.

Gradient-defined losses (sCM, AYF) are checked through their gradients only.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .adapters import ConventionAdapter, Conventions

__all__ = [
    "ENV_VAR",
    "LOSS_REDUCTIONS",
    "PROTOCOLS",
    "Implementation",
    "ImplementationError",
    "load_implementation",
]

ENV_VAR = "FLOWMAP_ORACLE_IMPL"
"""Environment variable naming the implementation (``package.module:factory``) under test."""

LOSS_REDUCTIONS = ("sum_mean", "mean")
"""``"sum_mean"``: sum over dimensions, mean over the batch (ours); ``"mean"``: mean over all
entries (``torch.nn.functional.mse_loss``, ``jnp.mean``)."""

PROTOCOLS: dict[str, dict[str, str]] = {
    "fm": {"loss": "(net, data, noise, t) -> scalar: ||net on its diagonal s = t - target||^2"},
    "meanflow": {
        "target": "(net, x, t, s, v) -> N_tgt",
        "loss": "(net, data, noise, t, s) -> scalar (conditional velocity, plain L2)",
    },
    "facm": {
        "target": "(net, x, t, v) -> N_tgt (the consistency target at s = 0)",
        "loss": "(net, data, noise, t) -> scalar (FACM defaults: norm-L2 CM part weighted by "
        "sin(pi t / 2), anchor at 2 - t with L2 + cosine, conditional velocity)",
    },
    "split": {
        "target": "(net, x, t, s, r) -> N_tgt (SplitMeanFlow, F_{r->s} at the model's x_r)",
        "loss": "(net, data, noise, t, r, s) -> scalar (split rule; FM with x1 - x0 where s = t)",
    },
    "shortcut": {
        "target": "(net, x, t, s) -> N_tgt (velocity space, midpoint m = (t + s) / 2)",
        "loss": "(net, data, noise, t, s) -> scalar (FM with x1 - x0 plus the consistency term)",
    },
    "cm": {"loss": "(net, data, noise, t, t_prev) -> scalar (consistency training, L2)"},
    "scm": {
        "target": "(net, x, t, v) -> d f_{t->0} / dt, the tangent of the stop-gradient model",
        "loss": "(net, data, noise, t, velocity) -> surrogate with gradient "
        "mean (d_theta f_{t->0})^T d f / dt",
    },
    "ayf_emd": {
        "loss": "(net, data, noise, t, s, velocity) -> surrogate with gradient "
        "mean sign(t - s) (d_theta f)^T d f / dt",
    },
    "ayf_lmd": {
        "loss": "(net, data, noise, t, s, velocity) -> surrogate with gradient "
        "mean sign(s - t) (d_theta f)^T (d_s f - velocity(f, s))",
    },
    "ctm": {
        "loss": "(net, net_sg, data, noise, t, r, s, solver) -> scalar (compared in data space "
        "through the frozen map f_{s->0}; net_sg has stop-gradiented parameters)",
    },
    "imm": {
        "loss": "(net, data, noise, t, r, s) -> scalar (groups of 4, Laplace kernel, "
        "bandwidth 1, unbiased MMD^2)",
    },
    "reflow": {
        "target": "(solver, noise) -> data: the teacher's coupling Phi_{1->0}(noise)",
        "loss": "(net, coupled_data, noise, t) -> scalar (flow matching on the coupling)",
    },
    "model": {"flow_map": "(net, x, t, s) -> x_s"},
}
"""Objective -> provided function -> its call signature (in the user's conventions)."""


class ImplementationError(ValueError):
    """The implementation spec or the object a factory returned is not usable."""


@dataclass(frozen=True)
class Implementation:
    """An implementation under test: its conventions and the functions it provides.

    Arguments:
        name: shown in reports.
        conventions: a :class:`~flowmap_oracle.oracle.adapters.Conventions` or a mapping with
            its keys (validated; unknown keys are errors).
        targets: objective -> target function (see :data:`PROTOCOLS`).
        losses: objective -> loss function.
        flow_map: the one-step map ``(net, x, t, s) -> x_s`` built from a network.
        loss_reduction: ``"sum_mean"`` or ``"mean"`` (how losses average over entries).
        description: free text for reports.
        spec: ``package.module:factory`` when loaded by :func:`load_implementation`.
    """

    name: str
    conventions: Conventions | Mapping[str, Any] = field(default_factory=Conventions)
    targets: Mapping[str, Callable] = field(default_factory=dict)
    losses: Mapping[str, Callable] = field(default_factory=dict)
    flow_map: Callable | None = None
    loss_reduction: str = "sum_mean"
    description: str = ""
    spec: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ImplementationError("Implementation.name must be a non-empty string")
        object.__setattr__(self, "conventions", Conventions.from_mapping(self.conventions))
        for kind, table in (("targets", self.targets), ("losses", self.losses)):
            if not isinstance(table, Mapping):
                raise ImplementationError(f"{kind} must be a mapping objective -> function")
            role = "target" if kind == "targets" else "loss"
            for objective, fn in table.items():
                if objective not in PROTOCOLS or role not in PROTOCOLS[objective]:
                    known = sorted(o for o, p in PROTOCOLS.items() if role in p)
                    raise ImplementationError(
                        f"unknown objective {objective!r} in {kind}; known: {', '.join(known)}"
                    )
                if not callable(fn):
                    raise ImplementationError(f"{kind}[{objective!r}] is not callable")
        if self.flow_map is not None and not callable(self.flow_map):
            raise ImplementationError("flow_map must be callable")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ImplementationError(
                f"unknown loss_reduction {self.loss_reduction!r}; choose one of {LOSS_REDUCTIONS}"
            )

    @property
    def adapter(self) -> ConventionAdapter:
        return ConventionAdapter(self.conventions)

    def provides(self, objective: str, role: str) -> bool:
        """Whether the implementation provides ``role`` (target/loss/flow_map) for ``objective``."""
        if role == "target":
            return objective in self.targets
        if role == "loss":
            return objective in self.losses
        if role == "flow_map":
            return self.flow_map is not None
        raise ValueError(f"unknown role {role!r}")

    def provided(self) -> list[str]:
        """``objective.role`` for everything provided (for report headers)."""
        out = [f"{o}.target" for o in self.targets] + [f"{o}.loss" for o in self.losses]
        if self.flow_map is not None:
            out.append("model.flow_map")
        return out


def load_implementation(spec: str | None = None) -> Implementation:
    """Import ``package.module:factory``, call the factory and validate what it returns.

    Arguments:
        spec: the factory; ``None`` reads :data:`ENV_VAR` and falls back to the reference
            implementation. Modules in the current directory are importable, as with
            ``python -m``.

    Raises:
        ImplementationError: a malformed spec, a missing module or attribute, a factory that
            raises, or a result that is not an :class:`Implementation`.
    """
    if spec is None:
        spec = os.environ.get(ENV_VAR) or "flowmap_oracle.oracle.reference:implementation"
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ImplementationError(
            f"implementation spec must read 'package.module:factory', got {spec!r}"
        )
    module_name, attr = spec.split(":")
    if not module_name or not attr:
        raise ImplementationError(
            f"implementation spec must read 'package.module:factory', got {spec!r}"
        )
    # As with ``python -m``, modules in the current directory are importable (the console script
    # does not put it on sys.path by itself).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImplementationError(f"cannot import {module_name!r} from {spec!r}: {err}") from err
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ImplementationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ImplementationError(f"{spec!r} is not callable")
    try:
        impl = factory()
    except Exception as err:
        raise ImplementationError(f"factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(impl, Implementation):
        raise ImplementationError(
            f"factory {spec!r} returned {type(impl).__name__}, expected an Implementation"
        )
    if impl.spec is None:
        object.__setattr__(impl, "spec", spec)
    return impl
