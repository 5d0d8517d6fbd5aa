"""The object an implementation's factory returns, and how the oracle finds the factory.

A factory is any zero-argument callable named as ``package.module:factory``; it returns an
:class:`Implementation` that declares its conventions and what it provides. Each function is
called in the *user's* conventions (framework, dtype, time variable, network signature and
prediction, see :mod:`flowmap_oracle.oracle.adapters`); the oracle converts everything it hands
over and everything it gets back. Nothing is guessed: a check whose function is not provided is
skipped with a reason, and unknown objectives or keys are errors.

Each function follows a typed protocol of :mod:`.protocols` (the table is
:data:`~.protocols.PROTOCOLS`, keyed by :class:`~flowmap_oracle.conventions.Method`); for example

* ``targets["meanflow"](net, x, t, s, v) -> N_tgt``, the regression target of the network output;
* ``losses["meanflow"](net, data, noise, t, s) -> scalar`` (conditional velocity, plain L2);
* ``flow_map(net, x, t, s) -> x_s``, the one-step map built from ``net``.

Keys are method names (``"flow_matching"``, ``"meanflow"``, ...); a common alias such as ``"fm"``
is refused with the canonical name. A function that cannot take its protocol's positional
arguments is refused when the :class:`Implementation` is built, before any check runs.

Gradient-defined losses (sCM, AYF) are checked through their gradients only.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..conventions import Method
from .adapters import ConventionAdapter, Conventions
from .protocols import MODEL, PROTOCOLS, Role, accepts_positional, arity, signature_of
from .shipped import ShippedLoss, ShippedSampler
from .user_network import UserNetwork

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
        shipped_losses: method -> :class:`~.shipped.ShippedLoss`: training losses as they ship
            (``loss(model, batch)`` drawing their own times and noise), checked through an
            instrumented network (:mod:`.shipped`).
        samplers: name -> :class:`~.shipped.ShippedSampler`: samplers as they ship
            (``sample(model, noise)`` with their own hard-coded times).
        network: the user's own network as it ships, a
            :class:`~.user_network.UserNetwork` (or the bare ``nn.Module`` / callable, taken
            with its defaults): its forward-mode derivative and how it reads its times are
            checked (:mod:`.user_network`).

    After construction ``conventions`` is always a :class:`~.adapters.Conventions` (a mapping is
    converted), and it is typed so. ``dataclasses.replace`` runs the same conversion, but a type
    checker expects a :class:`~.adapters.Conventions` there: pass
    ``Conventions.from_mapping({...})`` to it.
    """

    name: str
    conventions: Conventions = field(default_factory=Conventions)
    targets: Mapping[str, Callable] = field(default_factory=dict)
    losses: Mapping[str, Callable] = field(default_factory=dict)
    flow_map: Callable | None = None
    loss_reduction: str = "sum_mean"
    description: str = ""
    spec: str | None = None
    shipped_losses: Mapping[str, ShippedLoss] = field(default_factory=dict)
    samplers: Mapping[str, ShippedSampler] = field(default_factory=dict)
    network: UserNetwork | None = None

    if TYPE_CHECKING:
        # The signature type checkers see: the generated __init__ (same fields, same order and
        # defaults) accepts a mapping for ``conventions``, which __post_init__ converts.
        def __init__(
            self,
            name: str,
            conventions: Conventions | Mapping[str, Any] = ...,
            targets: Mapping[str, Callable] = ...,
            losses: Mapping[str, Callable] = ...,
            flow_map: Callable | None = ...,
            loss_reduction: str = ...,
            description: str = ...,
            spec: str | None = ...,
            shipped_losses: Mapping[str, ShippedLoss] = ...,
            samplers: Mapping[str, ShippedSampler] = ...,
            network: UserNetwork | Callable[..., Any] | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ImplementationError("Implementation.name must be a non-empty string")
        object.__setattr__(self, "conventions", Conventions.from_mapping(self.conventions))
        _check_runnable(self.conventions)
        for kind, role in (("targets", Role.TARGET), ("losses", Role.LOSS)):
            table = getattr(self, kind)
            if not isinstance(table, Mapping):
                raise ImplementationError(f"{kind} must be a mapping method -> function")
            object.__setattr__(self, kind, _checked_table(kind, role, table))
        if self.flow_map is not None:
            _check_function("flow_map", MODEL, Role.FLOW_MAP, self.flow_map)
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ImplementationError(
                f"unknown loss_reduction {self.loss_reduction!r}; choose one of {LOSS_REDUCTIONS}"
            )
        object.__setattr__(self, "shipped_losses", _checked_shipped(self.shipped_losses))
        if not isinstance(self.samplers, Mapping) or not all(
            isinstance(v, ShippedSampler) for v in self.samplers.values()
        ):
            raise ImplementationError("samplers must be a mapping name -> ShippedSampler")
        object.__setattr__(self, "samplers", dict(self.samplers))
        if self.network is not None:
            if not callable(self.network) and not isinstance(self.network, UserNetwork):
                raise ImplementationError(
                    "network must be a UserNetwork, an nn.Module or a callable, got "
                    f"{type(self.network).__name__}"
                )
            object.__setattr__(self, "network", UserNetwork.of(self.network))

    @property
    def adapter(self) -> ConventionAdapter:
        return ConventionAdapter(self.conventions)

    def provides(self, objective: str, role: Role | str) -> bool:
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
        out += [f"{m}.shipped_loss" for m in self.shipped_losses]
        out += [f"sampler.{name}" for name in self.samplers]
        if self.network is not None:
            out.append("network")
        return out


def _checked_shipped(table: Mapping[str, ShippedLoss]) -> dict[str, ShippedLoss]:
    if not isinstance(table, Mapping):
        raise ImplementationError("shipped_losses must be a mapping method -> ShippedLoss")
    out: dict[str, ShippedLoss] = {}
    for key, value in table.items():
        try:
            method = Method.parse(key)
        except ValueError:
            raise ImplementationError(f"shipped_losses: {Method.unknown(key)}") from None
        if not isinstance(value, ShippedLoss):
            raise ImplementationError(
                f"shipped_losses[{key!r}] must be a ShippedLoss(loss, ...), got "
                f"{type(value).__name__}"
            )
        problem = None if value.declared is None else value.declared.problem_for(method.value)
        if problem is not None:
            raise ImplementationError(f"shipped_losses[{key!r}]: {problem}")
        out[method.value] = value
    return out


def _check_runnable(conventions: Conventions) -> None:
    """Refuse declared conventions that cannot run in this process (before any check runs)."""
    if conventions.framework != "jax":
        return
    try:
        import jax
    except ImportError as err:
        raise ImplementationError(
            f"framework 'jax' was declared, but JAX cannot be imported: {err}"
        ) from None
    if conventions.dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise ImplementationError(
            "dtype 'float64' was declared for a JAX implementation, but JAX runs in float32 "
            "unless jax_enable_x64 is set: call jax.config.update('jax_enable_x64', True) "
            "before building the implementation, or declare dtype 'float32'"
        )


def _check_function(where: str, method: str, role: Role, fn: object) -> None:
    if not callable(fn):
        raise ImplementationError(f"{where} is not callable")
    n = arity(method, role)
    if accepts_positional(fn, n) is False:
        raise ImplementationError(
            f"{where} cannot be called with the {n} positional arguments of its protocol "
            f"{signature_of(method, role)}"
        )


def _checked_table(kind: str, role: Role, table: Mapping[str, Callable]) -> dict[str, Callable]:
    """``table`` with its keys read as :class:`Method` values; unknown keys are errors."""
    known = [m for m, roles in PROTOCOLS.items() if role in roles and m != MODEL]
    out: dict[str, Callable] = {}
    for key, fn in table.items():
        try:
            method = Method.parse(key)
        except ValueError:
            raise ImplementationError(
                f"{kind}: {Method.unknown(key)}; methods with a {role.value}: {', '.join(known)}"
            ) from None
        if method not in known:
            raise ImplementationError(
                f"{kind}: the oracle checks no {role.value} of {method.value!r}; methods with a "
                f"{role.value}: {', '.join(known)}"
            )
        _check_function(f"{kind}[{key!r}]", method, role, fn)
        out[method.value] = fn
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
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise ImplementationError(
                f"cannot import {module_name!r} from {spec!r}: {err}"
            ) from err
        raise ImplementationError(f"importing {module_name!r} failed: {_located(err)}") from err
    except Exception as err:  # the user's module raised while it was imported
        raise ImplementationError(f"importing {module_name!r} failed: {_located(err)}") from err
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ImplementationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ImplementationError(f"{spec!r} is not callable")
    try:
        impl = factory()
    except ImplementationError as err:
        raise ImplementationError(f"factory {spec!r}: {err}") from err
    except Exception as err:
        raise ImplementationError(f"factory {spec!r} raised {_located(err)}") from err
    if not isinstance(impl, Implementation):
        raise ImplementationError(
            f"factory {spec!r} returned {type(impl).__name__}, expected an Implementation"
        )
    if impl.spec is None:
        object.__setattr__(impl, "spec", spec)
    return impl


def _located(err: BaseException) -> str:
    """``Type: message (file:line)``: one line, at the innermost frame of the user's code."""
    from .context import user_frames

    text = str(err).splitlines()[0] if str(err) else ""
    out = type(err).__name__ + (f": {text}" if text else "")
    if isinstance(err, SyntaxError) and err.filename:
        return f"{out} ({err.filename}:{err.lineno})" if err.filename not in out else out
    frames = user_frames(err)
    if frames:
        out += f" ({frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    return out
