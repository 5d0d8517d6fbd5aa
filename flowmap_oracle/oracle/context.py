"""What a check body works with: the implementation behind its adapter, teachers, networks.

:class:`CheckContext` converts in both directions so that check bodies are written once, in our
convention: it hands our networks, points, times and velocities to the implementation in *its*
declared conventions, calls it (turning anything it raises, or a wrong type, dtype, shape or a
NaN, into a :class:`~.results.CheckFailure` that names the problem), and reads what it returns
back into our convention.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..conventions import LINEAR, conditional_velocity, interpolant, path_named
from ..reference_models import ExactAverageVelocity, GaussianMixtureTeacher, preset
from ..reference_models.paths import ProbabilityPath
from .adapters import ConventionAdapter, ConventionError, TargetKind
from .cases import CaseSpace, Space, case_space
from .implementation import Implementation
from .networks import RandomNetwork
from .results import Case, CheckFailure, CheckSkipped, SkipReason
from .tolerances import Tolerance, tolerance

__all__ = ["Batch", "CheckContext", "OracleSettings", "exact_network", "teacher"]

PROFILES = {
    # Deterministic (derandomised hypothesis, no example database) and short: for CI and for
    # the mutant table. No shrinking: a failure reports the first failing draw.
    "ci": {"max_examples": 6, "shrink": False},
    # More draws and a shrunk (minimal) failing example, for a user's own investigation.
    "thorough": {"max_examples": 60, "shrink": True},
}


@dataclass(frozen=True)
class OracleSettings:
    """How thoroughly to check.

    Attributes:
        profile: ``"ci"`` (deterministic, few draws) or ``"thorough"``.
        batch: points per evaluation.
        teacher: the curved multi-modal teacher (a preset name, default the 8-mode ring).
        max_examples: hypothesis draws per check (``None``: the profile's default).
    """

    profile: str = "ci"
    batch: int = 16
    teacher: str = "ring8"
    max_examples: int | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}")
        if self.batch < 2:
            raise ValueError(f"batch must be at least 2, got {self.batch}")

    @property
    def examples(self) -> int:
        return self.max_examples or PROFILES[self.profile]["max_examples"]

    @property
    def shrink(self) -> bool:
        return bool(PROFILES[self.profile]["shrink"])

    def describe(self) -> str:
        return (
            f"profile={self.profile}, batch={self.batch}, teacher={self.teacher}, "
            f"hypothesis examples={self.examples}"
        )


@functools.cache
def teacher(name: str, path: str = "linear") -> GaussianMixtureTeacher:
    """The named preset teacher on the named path (cached for the process)."""
    return preset(name, path=path_named(path))


@functools.cache
def exact_network(name: str, path: str = "linear") -> ExactAverageVelocity:
    """The exact average velocity of the named teacher (cached with its solutions)."""
    return ExactAverageVelocity(teacher(name, path))


@dataclass(frozen=True)
class Batch:
    """One evaluation's inputs in our convention (float64).

    Attributes:
        data, noise: ``x0 ~ p_data`` and ``x1 ~ N(0, I)``.
        t, s, r: times (``r`` only for split spaces).
        x: ``x_t = alpha(t) x0 + beta(t) x1`` on ``path``.
        path: the probability path (the declared one; the teacher lives on it).
    """

    data: Tensor
    noise: Tensor
    t: Tensor
    s: Tensor
    r: Tensor | None
    x: Tensor
    path: ProbabilityPath = LINEAR

    @classmethod
    def build(
        cls,
        data: Tensor,
        noise: Tensor,
        t: Tensor,
        s: Tensor,
        r: Tensor | None,
        *,
        path: ProbabilityPath = LINEAR,
    ) -> Batch:
        """The batch with ``x_t = alpha(t) x0 + beta(t) x1`` on ``path``."""
        return cls(data, noise, t, s, r, interpolant(path, data, noise, t), path)

    def replace(self, **changes: Tensor | None) -> Batch:
        """A copy with some of ``data, noise, t, s, r`` changed and ``x_t`` recomputed."""
        fields = {"data": self.data, "noise": self.noise, "t": self.t, "s": self.s, "r": self.r}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Batch.replace: unknown fields {sorted(unknown)}")
        return Batch.build(**{**fields, **changes}, path=self.path)  # type: ignore[arg-type]

    @property
    def conditional_velocity(self) -> Tensor:
        """``alpha'(t) x0 + beta'(t) x1`` (``x1 - x0`` on the linear path)."""
        return conditional_velocity(self.path, self.data, self.noise, self.t)

    def inputs(self) -> dict[str, Tensor]:
        out = {"t": self.t, "s": self.s}
        if self.r is not None:
            out["r"] = self.r
        return out


class CheckContext:
    """The implementation under test, its adapter, and the oracle's fixtures.

    Arguments:
        impl: the implementation.
        settings: the oracle settings.
    """

    def __init__(self, impl: Implementation, settings: OracleSettings) -> None:
        self.impl = impl
        self.settings = settings
        self.adapter = ConventionAdapter(impl.conventions)
        self.conventions = self.adapter.conventions

    # -- requirements ------------------------------------------------------------------------

    def require_continuous_steps(self, why: str) -> None:
        if not self.adapter.continuous_steps:
            raise CheckSkipped(
                f"{why}; the declared signature 'shortcut_log2' has only dyadic steps",
                reason=SkipReason.CONVENTION,
            )

    def require_linear_time(self, why: str) -> None:
        if self.conventions.time not in ("noise_at_1", "noise_at_0"):
            raise CheckSkipped(
                f"{why}; declared time convention {self.conventions.time.value!r}",
                reason=SkipReason.CONVENTION,
            )

    # -- fixtures ------------------------------------------------------------------------------

    @property
    def teacher(self) -> GaussianMixtureTeacher:
        """The settings' teacher on the declared path."""
        return teacher(self.settings.teacher, self.conventions.path)

    @property
    def exact(self) -> ExactAverageVelocity:
        return exact_network(self.settings.teacher, self.conventions.path)

    def space(self, space: Space) -> CaseSpace:
        if not self.adapter.continuous_steps and space in ("to_zero", "split", "strict"):
            raise CheckSkipped(
                f"the check needs {space!r} times, which the declared signature 'shortcut_log2' "
                "(dyadic steps only) cannot express",
                reason=SkipReason.CONVENTION,
            )
        try:
            return case_space(space, self.adapter)
        except ValueError as err:
            raise CheckSkipped(str(err), reason=SkipReason.CONVENTION) from None

    def batch(self, case: Case, space: CaseSpace) -> Batch:
        """Points of the teacher at the case's times (data, noise and ``x_t`` from its seed)."""
        n = self.settings.batch
        t, s, r = space.times(case, n)
        g = torch.Generator().manual_seed(case.seed)
        data = self.teacher.mixture.sample(n, generator=g)
        noise = torch.randn(data.shape, generator=g, dtype=data.dtype)
        return Batch.build(data, noise, t, s, r, path=self.teacher.path)

    def random_network(self, seed: int) -> RandomNetwork:
        return RandomNetwork(self.teacher.dim, seed=seed)

    def tol(self, table: dict[str, Tolerance]) -> Tolerance:
        return tolerance(table, self.conventions.dtype)

    # -- arrays and networks for the implementation -------------------------------------------

    def to_user(self, a: Tensor):
        return self.adapter.array_to_user(a)

    def to_ours(self, a: Any, *, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
        try:
            return self.adapter.array_to_ours(a, name=name, shape=shape)
        except (TypeError, ValueError) as err:
            got = tuple(getattr(a, "shape", ()))
            hint = ""
            if shape is not None and len(got) == 2 and got == tuple(shape)[::-1] != got[::-1]:
                hint = " (transposed?)"
            raise CheckFailure(f"bad value: {err}{hint}") from None

    def user_network(
        self, net: RandomNetwork | ExactAverageVelocity | Callable, params: Any = None
    ):
        """``net`` as a network in the user's signature, framework and dtype.

        ``params``: parameters of a :class:`RandomNetwork` in the user's framework (torch tensors
        or JAX arrays) to differentiate through; ``None`` uses its fixed weights. Any other
        torch callable ``F(x, t, s)`` is passed as is for torch and as a non-differentiable
        callback for JAX.
        """
        if self.conventions.framework == "torch":
            if isinstance(net, RandomNetwork):
                fn = net if params is None else net.functional(params)
            else:
                fn = net
            return self.adapter.network_to_user(fn)
        from . import jax_bridge

        if callable(net) and not isinstance(net, RandomNetwork | ExactAverageVelocity):
            fn = jax_bridge.torch_function_jax(net, self.conventions.dtype)
        elif isinstance(net, RandomNetwork):
            p = net.jax_params(self.conventions.dtype) if params is None else params
            fn = functools.partial(RandomNetwork.jax_apply, p)
        else:
            fn = jax_bridge.exact_network_jax(net, self.conventions.dtype)
        return self.adapter.network_to_user(fn)

    def user_times(self, t: Tensor) -> Any:
        return self.to_user(self.adapter.time_to_user(t, ops=self.adapter.torch_ops))

    def user_points(self, x: Tensor, t: Tensor) -> Any:
        return self.to_user(self.adapter.points_to_user(x, t, ops=self.adapter.torch_ops))

    def user_velocity(self, v: Tensor, x: Tensor, t: Tensor) -> Any:
        return self.to_user(self.adapter.velocity_to_user(v, x, t, ops=self.adapter.torch_ops))

    def user_field(self, fn: Callable[..., Tensor], kind: str) -> Callable:
        """A torch function of ours as a callable in the user's conventions and framework.

        ``kind="velocity"``: ``fn(x, t) -> v`` becomes ``v_u(x_u, tau)``;
        ``kind="solver"``: ``fn(x, t, s) -> x_s`` becomes ``solver_u(x_u, tau, rho)``.
        The callable returns the declared dtype and is not differentiable (teacher data).
        """
        ad, o = self.adapter, self.adapter.torch_ops

        def in_torch(x_u: Tensor, *taus: Tensor) -> Tensor:
            x_u = x_u.detach().double()
            times = [ad.time_to_ours(a.detach().double(), ops=o) for a in taus]
            x = ad.points_to_ours(x_u, times[0], ops=o)
            with torch.no_grad():
                out = fn(x, *times)
            if kind == "velocity":
                return ad.velocity_to_user(out, x, times[0], ops=o)
            return ad.points_to_user(out, times[-1], ops=o)

        if kind not in ("velocity", "solver"):
            raise ValueError(f"kind must be 'velocity' or 'solver', got {kind!r}")
        if self.conventions.framework == "torch":
            dtype = self.adapter.user_dtype
            return lambda x_u, *taus: in_torch(x_u, *taus).to(dtype)
        from .jax_bridge import torch_function_jax

        return torch_function_jax(in_torch, self.conventions.dtype)

    def network_output_in_user_units(self, F: Tensor, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``N = (F - q x) / k``: what the user's network outputs where ours gives ``F``."""
        q, k = self.adapter.output_coefficients(t, s, ops=self.adapter.torch_ops)
        return (F - q[:, None] * x) / k[:, None]

    def target_to_ours(
        self, N_tgt: Tensor, F: Tensor, x: Tensor, t: Tensor, s: Tensor, kind: TargetKind
    ) -> Tensor:
        N = self.network_output_in_user_units(F, x, t, s)
        return self.adapter.target_to_ours(N_tgt, N, x, t, s, kind)

    def residual_to_user(self, R: Tensor, t: Tensor, s: Tensor, kind: TargetKind) -> Tensor:
        """Our residual ``F - F_tgt`` in the user's output units, ``R / (w k)``."""
        o = self.adapter.torch_ops
        _, k = self.adapter.output_coefficients(t, s, ops=o)
        w = self.adapter.residual_factor(t, s, kind, ops=o)
        return R / (w * k)[:, None]

    # -- calling the implementation ------------------------------------------------------------

    def call(self, what: str, fn: Callable, *args: Any) -> Any:
        """Call the implementation's ``fn``; anything it raises becomes a :class:`CheckFailure`."""
        try:
            return fn(*args)
        except CheckFailure:
            raise
        except ConventionError as err:
            raise CheckFailure(
                f"the implementation's {what} called the network with inputs its declared "
                f"conventions cannot express: {err}"
            ) from None
        except Exception as err:
            tb = traceback.format_exception_only(type(err), err)[-1].strip()
            raise CheckFailure(f"the implementation's {what} raised {tb}") from None

    def function(self, objective: str, role: str) -> Callable:
        """The implementation's ``role`` function for ``objective`` (the runner skips a check
        whose function is not provided, so a missing one here is the oracle's own error)."""
        if role == "flow_map":
            fn = self.impl.flow_map
        elif role in ("target", "loss"):
            fn = (self.impl.targets if role == "target" else self.impl.losses).get(objective)
        else:
            raise ValueError(f"unknown role {role!r}")
        if fn is None:
            raise RuntimeError(f"the implementation provides no {objective} {role} function")
        return fn
