"""What a check body works with: the implementation behind its adapter, teachers, networks.

:class:`CheckContext` converts in both directions so that check bodies are written once, in our
convention: it hands our networks, points, times and velocities to the implementation in *its*
declared conventions, calls it (turning anything it raises, or a wrong type, dtype, shape or a
NaN, into a :class:`~.results.CheckFailure` that names the problem), and reads what it returns
back into our convention.

Warnings: the oracle's own machinery (reference computations, conversions, the networks it hands
over) runs under :func:`oracle_warnings`, where deprecation warnings are ignored and others are
shown but never raised, whatever the session's filters (``-W error``, ``filterwarnings = error``):
a third-party warning inside the oracle is not the implementation's failure. The implementation's
own code runs under the filters that were in force when the check started (:func:`user_warnings`),
so its warnings keep the user's configured behaviour.

Errors: when the implementation raises, the failure names the exception and the implementation's
own frames (file, line, function; the oracle's, the frameworks' and the standard library's frames
left out, see :func:`user_frames`); a network called with the wrong arguments says so in terms of
the declared signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import linecache
import os
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Callable, Iterator
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

__all__ = [
    "Batch",
    "CheckContext",
    "OracleSettings",
    "exact_network",
    "oracle_warnings",
    "teacher",
    "user_frames",
    "user_warnings",
]

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


# -- warnings: the oracle's machinery against the implementation's code --------------------------

_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

_USER_FILTERS: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar(
    "flowmap_oracle_user_warning_filters", default=None
)


@contextlib.contextmanager
def oracle_warnings() -> Iterator[None]:
    """Run the oracle's own machinery: deprecation warnings ignored, every other warning shown
    (``"default"``) and never turned into an error. The filters in force on entry are kept for
    :func:`user_warnings` inside."""
    token = _USER_FILTERS.set(tuple(warnings.filters))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            for category in _DEPRECATIONS:
                warnings.simplefilter("ignore", category)
            yield
    finally:
        _USER_FILTERS.reset(token)


@contextlib.contextmanager
def user_warnings() -> Iterator[None]:
    """Run the implementation's code under the filters that were in force when the enclosing
    :func:`oracle_warnings` began (the user's configuration); outside one, change nothing."""
    saved = _USER_FILTERS.get()
    if saved is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, message, category, module, lineno in saved:
            warnings.filterwarnings(
                action,
                getattr(message, "pattern", message) or "",
                category,
                getattr(module, "pattern", module) or "",
                lineno,
                append=True,
            )
        yield


@functools.cache
def _load_lazy_framework_modules() -> None:
    """Import what torch loads on first use of forward-mode AD (its JVP decompositions, which
    call the deprecated ``torch.jit.script``) under the oracle's filters, once: otherwise the
    first ``torch.func.jvp`` fails under ``-W error`` wherever it happens to run."""
    with oracle_warnings():
        torch.func.jvp(lambda a: a, (torch.zeros(1),), (torch.ones(1),))


# -- the implementation's own frames -------------------------------------------------------------

_FRAMEWORKS = (
    "torch",
    "functorch",
    "jax",
    "jaxlib",
    "numpy",
    "scipy",
    "torchdiffeq",
    "diffrax",
    "equinox",
    "optax",
    "flax",
    "hypothesis",
    "pluggy",
    "_pytest",
    "pytest",
)


def _package_dir(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    return None if path is None else os.path.dirname(os.path.abspath(path)) + os.sep


def _internal_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(directories of the oracle, the frameworks and the standard library; site directories,
    which are never internal as a whole)."""
    import flowmap_oracle

    roots = [_package_dir(flowmap_oracle)]
    roots += [_package_dir(sys.modules[name]) for name in _FRAMEWORKS if name in sys.modules]
    paths = sysconfig.get_paths()
    stdlib = {os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths}
    sites = {os.path.abspath(paths[k]) + os.sep for k in ("purelib", "platlib") if k in paths}
    return tuple(r for r in [*roots, *stdlib] if r), tuple(sites)


def _is_internal(filename: str, roots: tuple[str, ...], sites: tuple[str, ...]) -> bool:
    if filename.startswith("<frozen") or filename.startswith("<__array_function__"):
        return True
    path = os.path.abspath(filename)
    for root in roots:
        if path.startswith(root):
            # A site directory inside the standard library's folder (virtual environments, conda)
            # holds user packages too: only the frameworks' own folders there are internal.
            inside_site = any(path.startswith(site) and not root.startswith(site) for site in sites)
            if not inside_site:
                return True
    return False


def _frame_text(frame: traceback.FrameSummary) -> str:
    filename = frame.filename
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(filename)
        if not rel.startswith(".."):
            filename = rel
    return f"{filename}:{frame.lineno} in {frame.name}"


def user_frames(err: BaseException, fn: Callable | None = None) -> list[traceback.FrameSummary]:
    """The frames of ``err``'s traceback that are the implementation's own, outermost first.

    Frames of the oracle, of torch, JAX and the other frameworks, of pytest and of the standard
    library are left out (JAX already filters its own frames from tracebacks; with
    ``JAX_TRACEBACK_FILTERING=off`` they are left out here). The file defining ``fn`` always
    counts as the implementation's, even inside this package (the mutants, the reference). When
    ``err`` itself has none, its ``__cause__`` and then its ``__context__`` are searched.
    """
    roots, sites = _internal_roots()
    own = getattr(getattr(fn, "__code__", None), "co_filename", None)
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        exc = pending.pop(0)
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if f.filename == own or not _is_internal(f.filename, roots, sites)
        ]
        if frames:
            return frames
        pending += [exc.__cause__, None if exc.__suppress_context__ else exc.__context__]
    return []


def _exception_text(err: BaseException) -> str:
    """``Type: message`` without notes (JAX adds one about its removed frames)."""
    name = type(err).__qualname__
    module = type(err).__module__
    if module not in ("builtins", "__main__") and not module.startswith(_FRAMEWORKS):
        name = f"{module}.{name}"
    text = str(err)
    return f"{name}: {text}" if text else name


def _describe_raise(what: str, err: BaseException, fn: Callable) -> tuple[str, list[str]]:
    """The failure message for ``err`` raised by the implementation's ``what``, and its frames."""
    text = _exception_text(err)
    first, *rest = text.splitlines() or [text]
    if len(first) > 160:
        rest = [first, *rest]
        first = first[:157] + "..."
    lines = [f"the implementation's {what} raised {first}"]
    if rest:
        lines.append("  message:")
        lines += [f"    {line}" for line in (rest if len(rest) < 20 else [*rest[:19], "..."])]
    frames = user_frames(err, fn)
    if frames:
        lines.append("  in your code (innermost last):")
        for frame in frames[-6:]:
            lines.append(f"    {_frame_text(frame)}")
            source = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
            if source:
                lines.append(f"      {source}")
    return "\n".join(lines), [_frame_text(f) for f in frames]


_SIGNATURE_ARGS = {
    "x_t_s": "(x, t, s)",
    "x_s_t": "(x, s, t)",
    "x_t_dt": "(x, t, t - s)",
    "shortcut_log2": "(x, t, level)",
    "x_t": "(x, t)",
}


def _guarded(fn: Callable, what: str, n: int, takes: str) -> Callable:
    """``fn`` for the implementation to call: the arguments are checked against what it takes
    (a wrong call says what the user did, not which wrapper refused it), and the call runs as
    the oracle's machinery under :func:`oracle_warnings`."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(
                f"{what} was called with keyword arguments ({', '.join(kwargs)}); it takes "
                f"{n} positional arguments: {takes}"
            )
        if len(args) != n:
            raise TypeError(
                f"{what} was called with {len(args)} argument{'s' * (len(args) != 1)}; {takes}"
            )
        with oracle_warnings():
            return fn(*args)

    return call


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
        merged = {**fields, **changes}
        data, noise, t, s = (merged[k] for k in ("data", "noise", "t", "s"))
        if data is None or noise is None or t is None or s is None:
            raise TypeError("Batch.replace: data, noise, t and s cannot be None")
        return Batch.build(data, noise, t, s, merged["r"], path=self.path)

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
        self._notes: dict[str, str] = {}
        _load_lazy_framework_modules()

    # -- notes on a passing check --------------------------------------------------------------

    def note(self, key: str, text: str) -> None:
        """Say something about the implementation that is not a defect (a passing check reports
        it after ``passed``); the first text under each ``key`` is kept, so a note seen in every
        case is said once."""
        self._notes.setdefault(key, text)

    @property
    def notes(self) -> list[str]:
        """The notes of this check, in the order first seen."""
        return list(self._notes.values())

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
            return self._guarded_network(self.adapter.network_to_user(fn))
        from . import jax_bridge

        if callable(net) and not isinstance(net, RandomNetwork | ExactAverageVelocity):
            fn = jax_bridge.torch_function_jax(net, self.conventions.dtype)
        elif isinstance(net, RandomNetwork):
            p = net.jax_params(self.conventions.dtype) if params is None else params
            fn = functools.partial(RandomNetwork.jax_apply, p)
        else:
            fn = jax_bridge.exact_network_jax(net, self.conventions.dtype)
        return self._guarded_network(self.adapter.network_to_user(fn))

    def _guarded_network(self, network: Callable) -> Callable:
        signature = self.conventions.signature.value
        takes = f"your declared signature {signature!r} takes {_SIGNATURE_ARGS[signature]}"
        return _guarded(network, "the network", 1 + self.adapter.n_time_args, takes)

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

            def field(x_u, *taus):
                return in_torch(x_u, *taus).to(dtype)

        else:
            from .jax_bridge import torch_function_jax

            field = torch_function_jax(in_torch, self.conventions.dtype)
        if kind == "velocity":
            return _guarded(field, "the teacher velocity", 2, "it takes (x, t)")
        return _guarded(field, "the teacher solver", 3, "it takes (x, t, s)")

    def network_output_in_user_units(self, F: Tensor, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``N = (F - q x) / k``: what the user's network outputs where ours gives ``F``."""
        q, k = self.adapter.output_coefficients(t, s, ops=self.adapter.torch_ops)
        return (F - q[:, None] * x) / k[:, None]

    def target_to_ours(
        self, N_tgt: Tensor, F: Tensor, x: Tensor, t: Tensor, s: Tensor, kind: TargetKind
    ) -> Tensor:
        N = self.network_output_in_user_units(F, x, t, s)
        return self.adapter.target_to_ours(N_tgt, N, x, t, s, kind)

    def rounding_gain(self, t: Tensor, s: Tensor) -> Tensor | None:
        """How much converting a float32 implementation's target into our units amplifies its
        rounding, per sample: ``max(1, |k| max(1, |w|))`` with ``F = q x + k N`` and ``w`` the
        time-derivative factor (EDM's sigma near 49 gives about 2500). ``None`` for float64, whose
        tolerances are set in our units already."""
        if self.conventions.dtype != "float32":
            return None
        o = self.adapter.torch_ops
        _, k = self.adapter.output_coefficients(t, s, ops=o)
        w = self.adapter.residual_factor(t, s, "time_derivative", ops=o)
        return (k.abs() * w.abs().clamp_min(1.0)).clamp_min(1.0)

    def residual_to_user(self, R: Tensor, t: Tensor, s: Tensor, kind: TargetKind) -> Tensor:
        """Our residual ``F - F_tgt`` in the user's output units, ``R / (w k)``."""
        o = self.adapter.torch_ops
        _, k = self.adapter.output_coefficients(t, s, ops=o)
        w = self.adapter.residual_factor(t, s, kind, ops=o)
        return R / (w * k)[:, None]

    # -- calling the implementation ------------------------------------------------------------

    def call(self, what: str, fn: Callable, *args: Any) -> Any:
        """Call the implementation's ``fn`` under the user's warning filters; anything it raises
        becomes a :class:`CheckFailure` that names the exception and the implementation's own
        frames (and is chained to the original exception)."""
        try:
            with user_warnings():
                return fn(*args)
        except CheckFailure:
            raise
        except ConventionError as err:
            raise CheckFailure(
                f"the implementation's {what} called the network with inputs its declared "
                f"conventions cannot express: {err}",
                traceback=[_frame_text(f) for f in user_frames(err, fn)],
            ) from err
        except Exception as err:
            message, frames = _describe_raise(what, err, fn)
            raise CheckFailure(message, traceback=frames) from err

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
