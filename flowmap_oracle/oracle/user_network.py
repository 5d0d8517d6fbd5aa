"""The user's own network, as it ships: its forward-mode derivative and how it reads its times.

Hand-written derivatives are where real bugs hide: a ``torch.autograd.Function`` whose ``jvp``
returns the primal where the tangent belongs, a placeholder zero derivative left from debugging, a
normalisation layer with a hand-derived tangent. A network that reads its time as ``t[0]`` or
broadcasts it along the wrong axis trains on the wrong times without any error. The user hands
the network over as :class:`UserNetwork` (``Implementation(network=...)``) and two checks run on
it, at random inputs and times inside the declared time range, reproducibly (each draw is seeded
and a failure names its seed, argument, sample and times):

``network.jvp``
    the network's JVP by each declared API (``torch.func.jvp``, ``torch.autograd.functional.jvp``
    (double backward: it exercises a hand-written ``backward``), ``torch.autograd.forward_ad``)
    in ``x`` and in each continuous time argument agrees with central finite differences. The
    difference quotient is fourth order, ``[8 (f(h) - f(-h)) - (f(2h) - f(-2h))] / 12h``, taken
    at several step sizes (``1e-2`` to ``1e-5`` in float64, ``3e-2`` to ``3e-3`` in float32); its
    own error is estimated from two successive steps, so a network
    with fast time features (embeddings with frequencies in the thousands) is judged against an
    honest error bar instead of a fixed one. Tolerance per sample: ``10 *`` the estimated
    difference error ``+ RTOL * scale`` (``scale`` the larger of the tangent's and the output's
    norm): ``RTOL = 1e-6`` in float64 (a fourth-order difference at ``h = 1e-3`` carries
    truncation ``~h^4 = 1e-12`` and rounding ``~eps / h = 2e-13`` relative errors, so ``1e-6``
    leaves six orders of margin while a wrong tangent is off by order 1); a float32 network is
    run in float64 when it can be cast (an ``nn.Module`` copy in ``double()``), and otherwise
    judged in float32 at ``RTOL = 1e-2`` with ``h`` from ``1e-2`` (rounding ``eps_32 / h ~ 1e-5``
    relative). A sample whose difference error estimate exceeds a tenth of its scale is too rough
    to judge at any step size and is left out (reported).
``network.times``
    every time argument changes the output; per-sample times are read per sample (row ``i`` of a
    batched call equals the call on row ``i`` alone: catches ``t[0]`` and a time broadcast along
    the wrong axis); the time shapes the user's code passes (``"vector"`` ``(B,)``, ``"column"``
    ``(B, 1, ..., 1)``, ``"scalar"``) give the same output. Tolerance: rounding of batched
    against single-row kernels, ``1e-9`` (float64) or ``1e-4`` (float32) relative to the output's
    scale; a time read wrongly moves the output by order 1.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor

from .adapters import ConventionAdapter, Conventions
from .results import CheckResult, SkipReason, Status

__all__ = [
    "JVP_APIS",
    "NETWORK_CHECKS",
    "TIME_SHAPES",
    "UserNetwork",
    "check_network_jvp",
    "check_network_times",
    "run_network_checks",
]

JvpApi = Literal["torch.func.jvp", "torch.autograd.functional.jvp", "torch.autograd.forward_ad"]
JVP_APIS: tuple[str, ...] = (
    "torch.func.jvp",
    "torch.autograd.functional.jvp",
    "torch.autograd.forward_ad",
)
"""The forward-mode routes a loss may take through the network."""
TimeShape = Literal["vector", "column", "scalar"]
TIME_SHAPES: tuple[str, ...] = ("vector", "column", "scalar")
"""How a time argument can be passed: ``(B,)``, ``(B, 1, ..., 1)`` (as many dimensions as
``x``), or a 0-d tensor shared by the batch."""
NETWORK_CHECKS = ("network.times", "network.jvp")
"""The names of the network checks (objective ``"network"``)."""

SEEDS = (0, 1, 2)
"""The draws each check runs (a failure names its seed; rerun it with ``seed=``)."""
RTOL = {torch.float64: 1e-6, torch.float32: 1e-2}
STEPS = {torch.float64: (1e-2, 1e-3, 1e-4, 1e-5), torch.float32: (3e-2, 1e-2, 3e-3)}
READ_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
ROUGH = 0.1
"""A sample whose finite-difference error estimate exceeds this fraction of its scale is too
rough to judge (left out, reported)."""


@dataclass(frozen=True)
class UserNetwork:
    """The user's network as it ships, and how to call it.

    Arguments:
        network: an ``nn.Module`` or callable ``network(x, a1, a2, *extra)`` in the declared
            conventions (``network(x, a, *extra)`` for a single-time signature ``"x_t"``, whose
            time input is the declared ``time_input``: the time, or ``log(sigma) / 4`` under EDM
            and consistency preconditioning, times ``time_input_scale``). An ``nn.Module`` is
            checked as a copy in ``eval()`` mode (dropout off, running statistics frozen).
        data_shape: one sample's shape, e.g. ``(3, 8, 8)``; default ``(2,)``.
        make_extra: builds the extra positional arguments from a batch ``x`` (e.g.
            ``lambda x: (labels,)``); tensors with the batch as their first dimension are sliced
            per row for the per-sample check. Default: none.
        jvp_apis: the JVP routes the user's losses take through the network (see
            :data:`JVP_APIS`); default ``("torch.func.jvp",)``.
        time_shapes: the shapes in which the user's code passes time arguments (see
            :data:`TIME_SHAPES`); the first is the one used throughout. Default ``("vector",)``.
        time_range: ``(lo, hi)`` in the user's time variable: the times the network is trained
            and sampled at (default the declared convention's whole domain).
        batch_size: samples per draw.
    """

    network: Callable[..., Any]
    data_shape: tuple[int, ...] | None = None
    make_extra: Callable[[Tensor], Sequence[Any]] | None = None
    jvp_apis: tuple[str, ...] = ("torch.func.jvp",)
    time_shapes: tuple[str, ...] = ("vector",)
    time_range: tuple[float, float] | None = None
    batch_size: int = 6

    def __post_init__(self) -> None:
        if not callable(self.network):
            raise TypeError(
                f"UserNetwork.network must be callable, got {type(self.network).__name__}"
            )
        if self.make_extra is not None and not callable(self.make_extra):
            raise TypeError("UserNetwork.make_extra must be callable (x -> tuple of arguments)")
        object.__setattr__(self, "jvp_apis", _tuple_of("jvp_apis", self.jvp_apis, JVP_APIS))
        object.__setattr__(
            self, "time_shapes", _tuple_of("time_shapes", self.time_shapes, TIME_SHAPES)
        )
        if self.data_shape is not None:
            shape = tuple(self.data_shape)
            if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
                raise ValueError(
                    f"UserNetwork.data_shape must be positive integers, got {self.data_shape!r}"
                )
            object.__setattr__(self, "data_shape", shape)
        if self.time_range is not None:
            lo, hi = (float(v) for v in self.time_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo != hi):
                raise ValueError(
                    f"UserNetwork.time_range must be two different finite times, got "
                    f"{self.time_range!r}"
                )
            object.__setattr__(self, "time_range", (lo, hi))
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"UserNetwork.batch_size must be at least 2, got {self.batch_size}")

    @classmethod
    def of(cls, network: UserNetwork | Callable[..., Any]) -> UserNetwork:
        """``network`` itself, or a bare callable wrapped with the defaults."""
        return network if isinstance(network, UserNetwork) else cls(network)


def _tuple_of(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items:
        raise ValueError(f"UserNetwork.{name} must name at least one of {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise ValueError(
                f"UserNetwork.{name}: unknown {item!r}; choose from {', '.join(allowed)}"
            )
    return items


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass
class _Draw:
    """One seeded draw: points, time arguments (``(B,)``), extras, and which times are
    continuous (differentiable)."""

    seed: int
    x: Tensor
    times: list[Tensor]
    continuous: list[bool]
    extra: tuple[Any, ...]
    tau: Tensor


def _n_time_args(conventions: Conventions) -> int:
    return 1 if conventions.signature == "x_t" else 2


def _our_range(adapter: ConventionAdapter, user: UserNetwork) -> tuple[float, float]:
    lo, hi = adapter.start_domain
    if user.time_range is not None:
        ends = adapter.time_to_ours(torch.tensor(user.time_range, dtype=torch.float64))
        a, b = sorted(float(e) for e in ends)
        lo, hi = max(lo, a), min(hi, b)
    # Keep a margin from the ends, so that difference steps stay inside the domain.
    pad = 0.02 * (hi - lo)
    return lo + pad, hi - pad


def _draw(
    conventions: Conventions, user: UserNetwork, seed: int, dtype: torch.dtype, n: int
) -> _Draw:
    adapter = ConventionAdapter(conventions)
    g = torch.Generator().manual_seed(9173 * seed + 5)
    shape = user.data_shape or (2,)
    lo, hi = _our_range(adapter, user)
    # Spread the times over the range (sorted draws within equal strata): per-sample reads then
    # differ from shared ones by order 1.
    u = torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=g, dtype=torch.float64)
    t = lo + (hi - lo) * u[torch.randperm(n, generator=g)] / n
    frac = torch.rand(n, generator=g, dtype=torch.float64)
    s = lo + (t - lo) * 0.8 * frac
    tau = adapter.time_to_user(t, ops=adapter.torch_ops)
    rho = adapter.time_to_user(s, ops=adapter.torch_ops)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    scale = adapter.scale(t).reshape(n, *([1] * len(shape)))
    x = x * scale
    sig = conventions.signature
    if sig == "x_t":
        times, continuous = [_single_time_input(conventions, tau)], [True]
    elif sig == "shortcut_log2":
        levels = conventions.shortcut_levels or 0
        k = torch.randint(0, levels + 1, (n,), generator=g).to(torch.float64)
        times, continuous = [tau, k], [True, False]
    else:
        a1, a2 = adapter.encode_times(tau, rho, ops=adapter.torch_ops)
        times, continuous = [a1, a2], [True, True]
    extra: tuple[Any, ...] = ()
    if user.make_extra is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            extra = tuple(user.make_extra(x.to(dtype)))
    return _Draw(seed, x.to(dtype), [a.to(dtype) for a in times], continuous, extra, tau)


def _single_time_input(conventions: Conventions, tau: Tensor) -> Tensor:
    """The time input of a single-time network as declared (``time_input``)."""
    kind = str(getattr(conventions, "resolved_time_input", "time"))
    scale = float(getattr(conventions, "time_input_scale", 1.0))
    if kind == "log_time/4":
        return scale * torch.log(tau) / 4
    return scale * tau


def _shaped(a: Tensor, how: str, x: Tensor) -> Tensor:
    if how == "vector":
        return a
    if how == "column":
        return a.reshape(a.shape[0], *([1] * (x.ndim - 1)))
    return a[0]


# ----------------------------------------------------------------------------------------------
# Running the network


class _Runner:
    """Calls the user's network in a chosen dtype (float64 where it can be cast)."""

    def __init__(self, conventions: Conventions, user: UserNetwork) -> None:
        self.conventions = conventions
        self.user = user
        self.user_dtype: torch.dtype = getattr(torch, str(conventions.dtype))
        self.notes: list[str] = []
        self.net = self._prepared(user.network)
        self.dtype = self.user_dtype
        if self.user_dtype != torch.float64:
            self._try_float64()

    def _prepared(self, net: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(net, torch.nn.Module):
            try:
                copied = copy.deepcopy(net)
            except Exception:  # a module that cannot be copied is called as it is
                self.notes.append("the module could not be copied; it was called as handed over")
                return net
            return copied.eval()
        return net

    def _try_float64(self) -> None:
        net = self.user.network
        if not isinstance(net, torch.nn.Module):
            return
        try:
            wide = copy.deepcopy(net).double().eval()
            d = _draw(self.conventions, self.user, 0, torch.float64, 2)
            with torch.no_grad():
                out = wide(d.x, *d.times, *d.extra)
        except Exception:
            return
        if isinstance(out, Tensor) and out.dtype == torch.float64:
            self.net, self.dtype = wide, torch.float64
            self.notes.append("the float32 network was cast to float64 for the comparison")

    def call(self, x: Tensor, times: Sequence[Tensor], extra: Sequence[Any]) -> Tensor:
        out = self.net(x, *times, *extra)
        if not isinstance(out, Tensor):
            raise _NetworkProblem(
                f"the network returned {type(out).__name__}, expected a torch.Tensor"
            )
        return out


class _NetworkProblem(Exception):
    """The network cannot be called as declared (a failure of the check, with this message)."""


def _jvp(api: str, fn: Callable[[Tensor], Tensor], a: Tensor, da: Tensor) -> Tensor:
    if api == "torch.func.jvp":
        return cast(tuple[Tensor, Tensor], torch.func.jvp(fn, (a,), (da,)))[1]
    if api == "torch.autograd.functional.jvp":
        return cast(
            tuple[Tensor, Tensor], torch.autograd.functional.jvp(fn, (a,), (da,), strict=False)
        )[1]
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        out = fn(fwAD.make_dual(a, da))
        tangent = fwAD.unpack_dual(out).tangent
    if tangent is None:
        return torch.zeros_like(out)
    return tangent.detach()


def _difference(fn: Callable[[Tensor], Tensor], a: Tensor, da: Tensor, h: float) -> Tensor:
    with torch.no_grad():
        f1, g1 = fn(a + h * da), fn(a - h * da)
        f2, g2 = fn(a + 2 * h * da), fn(a - 2 * h * da)
    return (8 * (f1 - g1) - (f2 - g2)) / (12 * h)


def _best_difference(
    fn: Callable[[Tensor], Tensor], a: Tensor, da: Tensor, steps: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """The difference quotient per sample at the step whose estimate agrees best with the next
    smaller step's, and that disagreement (the error estimate), both ``(B, D)`` / ``(B,)``."""
    quotients = [_difference(fn, a, da, h).reshape(a.shape[0], -1).double() for h in steps]
    best = quotients[-1]
    err = torch.full((a.shape[0],), math.inf, dtype=torch.float64)
    for q0, q1 in itertools.pairwise(quotients):
        e = (q0 - q1).norm(dim=1)
        better = e < err
        err = torch.where(better, e, err)
        best = torch.where(better[:, None], q1, best)
    return best, err


def _rows(out: Tensor) -> Tensor:
    return out.detach().reshape(out.shape[0], -1).double()


def _result(name: str, status: Status, message: str, start: float, **kw: Any) -> CheckResult:
    return CheckResult(
        name,
        "network",
        status,
        message,
        description=_DESCRIPTIONS[name],
        seconds=time.perf_counter() - start,
        **kw,
    )


_DESCRIPTIONS = {
    "network.jvp": (
        "The network's JVP (by each declared API) in x and in each time argument agrees with "
        "fourth-order central finite differences at seeded random inputs and times."
    ),
    "network.times": (
        "Every time argument changes the network's output, per-sample times are read per "
        "sample, and the declared time shapes give the same output."
    ),
}


def _snippet(spec: str | None, name: str, seed: int) -> str:
    call = f"run_network_checks({{impl}}, only={name!r}, seeds=({seed},))[0].message"
    if spec:
        return (
            "from flowmap_oracle.oracle.implementation import load_implementation\n"
            "from flowmap_oracle.oracle.user_network import run_network_checks\n"
            f"print({call.format(impl=f'load_implementation({spec!r})')})"
        )
    return (
        "from flowmap_oracle.oracle.user_network import run_network_checks\n"
        "# implementation: your Implementation object\n"
        f"print({call.format(impl='implementation')})"
    )


def _arg_names(conventions: Conventions) -> list[str]:
    sig = str(conventions.signature)
    names = {
        "x_t_s": ["t", "s"],
        "x_s_t": ["s", "t"],
        "x_t_dt": ["t", "t - s"],
        "shortcut_log2": ["t", "level"],
        "x_t": ["t"],
    }
    return [f"time argument {i + 1} ({n})" for i, n in enumerate(names.get(sig, ["a1", "a2"]))]


# ----------------------------------------------------------------------------------------------
# The checks


def check_network_jvp(
    conventions: Conventions,
    user: UserNetwork,
    *,
    seeds: Sequence[int] = SEEDS,
    spec: str | None = None,
) -> CheckResult:
    """``network.jvp``: the network's JVP by each declared API agrees with finite differences.

    Arguments:
        conventions: the implementation's declared conventions.
        user: the network and how to call it.
        seeds: the draws (each seeds the points, times and tangent directions).
        spec: the implementation's ``package.module:factory``, for the reproduction snippet.

    Returns:
        The :class:`~.results.CheckResult` (``"fail"`` names the seed, argument, API, sample and
        times of the worst disagreement).
    """
    name, start = "network.jvp", time.perf_counter()
    if conventions.framework != "torch":
        return _result(
            name,
            "skip",
            "the network checks run torch networks; this implementation declares JAX",
            start,
            skip_reason=SkipReason.CONVENTION,
        )
    run = _Runner(conventions, user)
    dtype = run.dtype
    labels = ["x", *_arg_names(conventions)]
    rough, judged = 0, 0
    for seed in seeds:
        d = _draw(conventions, user, seed, dtype, user.batch_size)
        g = torch.Generator().manual_seed(31 * seed + 3)
        args = [d.x, *d.times]
        differentiable = [True, *d.continuous]
        for i, (a, use) in enumerate(zip(args, differentiable, strict=True)):
            if not use:
                continue
            if i == 0:
                da = torch.randn(a.shape, generator=g, dtype=torch.float64).to(dtype)
            else:
                da = torch.ones_like(a)

            def fn(v: Tensor, i: int = i, d: _Draw = d) -> Tensor:
                full = [d.x, *d.times]
                full[i] = v
                return run.call(full[0], full[1:], d.extra)

            try:
                out = fn(a)
                fd, err = _best_difference(fn, a, da, STEPS[dtype])
            except _NetworkProblem as problem:
                return _result(name, "fail", str(problem), start)
            except Exception as exc:
                return _result(
                    name,
                    "fail",
                    f"the network raised {type(exc).__name__}: {exc} (called with x "
                    f"{tuple(d.x.shape)} and {len(d.times)} time argument(s) of shape "
                    f"{tuple(d.times[0].shape)}, {dtype})",
                    start,
                )
            scale = torch.maximum(fd.norm(dim=1), _rows(out).norm(dim=1)).clamp_min(1e-12)
            ok_rows = err <= ROUGH * scale
            rough += int((~ok_rows).sum())
            for api in user.jvp_apis:
                try:
                    tangent = _rows(_jvp(api, fn, a, da))
                except Exception as exc:
                    return _result(
                        name,
                        "fail",
                        f"{api} of the network in {labels[i]} raised {type(exc).__name__}: "
                        f"{exc} (seed {seed})",
                        start,
                        reproduce=_snippet(spec, name, seed),
                    )
                off = (tangent - fd).norm(dim=1)
                tol = 10 * err + RTOL[dtype] * scale
                bad = ok_rows & (off > tol)
                judged += int(ok_rows.sum())
                if bad.any():
                    j = int(torch.argmax(torch.where(bad, off / tol, torch.zeros_like(off))))
                    return _result(
                        name,
                        "fail",
                        _jvp_failure(
                            api, labels[i], seed, j, d, (tangent, fd, _rows(out)), off, tol, dtype
                        ),
                        start,
                        reproduce=_snippet(spec, name, seed),
                    )
    if judged == 0:
        return _result(
            name,
            "skip",
            f"the network is too rough for finite differences at every sampled point ({rough} "
            "samples left out): nothing could be judged",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    notes = "".join(f"; note: {n}" for n in run.notes)
    left = f"; {rough} too-rough samples left out" if rough else ""
    return _result(
        name,
        "pass",
        f"{', '.join(user.jvp_apis)} agree with finite differences in "
        f"{', '.join(labels[: 1 + sum(d.continuous)])} ({len(seeds)} seeded draws of "
        f"{user.batch_size}, {dtype}, rtol {RTOL[dtype]:g}){left}{notes}",
        start,
    )


def _jvp_failure(
    api: str,
    label: str,
    seed: int,
    j: int,
    d: _Draw,
    rows: tuple[Tensor, Tensor, Tensor],
    off: Tensor,
    tol: Tensor,
    dtype: torch.dtype,
) -> str:
    tangent, fd, out = rows
    got, want, primal = tangent[j], fd[j], out[j]
    hint = ""
    if float(got.norm()) == 0.0 and float(want.norm()) > 0:
        hint = " (a zero derivative: a placeholder, or a tangent that never reaches the output)"
    elif float((got + want).norm()) < 0.1 * float(want.norm()):
        hint = " (the negated derivative: a sign error)"
    elif float((got - primal).norm()) <= 1e-6 * max(1.0, float(primal.norm())):
        hint = " (it returns the primal output where the tangent belongs)"
    shown = ", ".join(f"{float(v):.6g}" for v in got[:4])
    expected = ", ".join(f"{float(v):.6g}" for v in want[:4])
    times = ", ".join(f"{float(a[j]):.6g}" for a in d.times)
    more = ", ..." if got.numel() > 4 else ""
    return (
        f"{api} of the network in {label} disagrees with finite differences{hint}\n"
        f"  sample {j} of seed {seed}: times ({times}), {dtype}\n"
        f"  JVP [{shown}{more}]\n"
        f"  finite differences [{expected}{more}]\n"
        f"  error {float(off[j]):.3g} > tolerance {float(tol[j]):.3g} (10 x the difference "
        f"quotient's own error estimate + rtol {RTOL[dtype]:g} x scale)"
    )


def check_network_times(
    conventions: Conventions,
    user: UserNetwork,
    *,
    seeds: Sequence[int] = SEEDS,
    spec: str | None = None,
) -> CheckResult:
    """``network.times``: the network reads its time arguments as declared.

    Arguments and returns as :func:`check_network_jvp`.
    """
    name, start = "network.times", time.perf_counter()
    if conventions.framework != "torch":
        return _result(
            name,
            "skip",
            "the network checks run torch networks; this implementation declares JAX",
            start,
            skip_reason=SkipReason.CONVENTION,
        )
    run = _Runner(conventions, user)
    run.net, run.dtype = run._prepared(user.network), run.user_dtype  # as shipped, its own dtype
    dtype = run.dtype
    labels = _arg_names(conventions)
    shapes = user.time_shapes
    for seed in seeds:
        d = _draw(conventions, user, seed, dtype, user.batch_size)
        other = _draw(conventions, user, seed + 10_000, dtype, user.batch_size)
        first = shapes[0]
        try:
            with torch.no_grad():
                base = _rows(run.call(d.x, [_shaped(a, first, d.x) for a in d.times], d.extra))
                scale = float(base.norm(dim=1).max()) + 1e-12
                tol = READ_TOL[dtype] * scale
                # Every time argument changes the output (unless nothing does: a constant,
                # e.g. zero-initialised, network says nothing about how it reads its times).
                moved_x = _rows(
                    run.call(other.x, [_shaped(a, first, d.x) for a in d.times], d.extra)
                )
                for i, label in enumerate(labels):
                    moved = list(d.times)
                    moved[i] = _moved(d.times[i], other.times[i])
                    if bool((moved[i] == d.times[i]).all()):
                        continue  # a single admissible value (e.g. one Shortcut level)
                    out = _rows(run.call(d.x, [_shaped(a, first, d.x) for a in moved], d.extra))
                    if float((out - base).norm(dim=1).max()) > 10 * tol:
                        continue
                    if float((moved_x - base).norm(dim=1).max()) <= 10 * tol:
                        return _result(
                            name,
                            "skip",
                            "the network's output changes neither with x nor with its times (a "
                            "zero-initialised output layer?): hand over a network with trained or "
                            "random weights",
                            start,
                            skip_reason=SkipReason.NOT_APPLICABLE,
                        )
                    return _result(
                        name,
                        "fail",
                        f"the network's output does not change with its {label}: it is "
                        f"ignored, or overwritten inside the network (seed {seed})",
                        start,
                        reproduce=_snippet(spec, name, seed),
                    )
                # Row i of the batched call equals the call on row i alone.
                per_row = next((h for h in shapes if h != "scalar"), None)
                for j in range(d.x.shape[0] if per_row is not None else 0):
                    assert per_row is not None
                    batched = _rows(
                        run.call(d.x, [_shaped(a, per_row, d.x) for a in d.times], d.extra)
                    )
                    alone = _rows(
                        run.call(
                            d.x[j : j + 1],
                            [_shaped(a[j : j + 1], per_row, d.x) for a in d.times],
                            _row_extra(d.extra, j, d.x.shape[0]),
                        )
                    )
                    off = float((alone[0] - batched[j]).norm())
                    if off > tol:
                        times = ", ".join(f"{float(a[j]):.6g}" for a in d.times)
                        return _result(
                            name,
                            "fail",
                            f"per-sample times are not read per sample: row {j} of a batched "
                            f"call differs from the same row called alone by {off:.3g} "
                            f"(allowed {tol:.2g}; a time read as t[0], or broadcast along the "
                            f"wrong axis)\n  seed {seed}, row {j}, times ({times}), "
                            f"time shape {per_row!r}",
                            start,
                            reproduce=_snippet(spec, name, seed),
                        )
                # The declared shapes agree.
                for how in shapes[1:]:
                    # per-sample times for the batched shapes, one shared time for a scalar
                    ts = d.times
                    if "scalar" in (how, first):
                        ts = [a[:1].expand(a.shape[0]).clone() for a in d.times]
                    want = _rows(run.call(d.x, [_shaped(a, first, d.x) for a in ts], d.extra))
                    got = _rows(run.call(d.x, [_shaped(a, how, d.x) for a in ts], d.extra))
                    off = float((got - want).norm(dim=1).max())
                    if off > tol:
                        return _result(
                            name,
                            "fail",
                            f"time shape {how!r} gives another output than (B,) times: off by "
                            f"{off:.3g} (allowed {tol:.2g}; broadcast along the wrong axis?)\n"
                            f"  seed {seed}",
                            start,
                            reproduce=_snippet(spec, name, seed),
                        )
        except _NetworkProblem as problem:
            return _result(name, "fail", str(problem), start)
        except Exception as exc:
            return _result(
                name,
                "fail",
                f"the network raised {type(exc).__name__}: {exc} (seed {seed}; time shapes "
                f"{', '.join(shapes)})",
                start,
                reproduce=_snippet(spec, name, seed),
            )
    return _result(
        name,
        "pass",
        f"each of {len(labels)} time argument(s) changes the output, per-sample times read per "
        f"sample, time shapes {', '.join(shapes)} agree ({len(seeds)} seeded draws of "
        f"{user.batch_size}, {dtype})",
        start,
    )


def _moved(a: Tensor, b: Tensor) -> Tensor:
    """Other times for the same rows (levels: another level; continuous: other draws)."""
    if bool((a == b).all()):
        return a.flip(0)
    return b


def _row_extra(extra: Sequence[Any], j: int, n: int) -> list[Any]:
    return [
        e[j : j + 1] if isinstance(e, Tensor) and e.ndim and e.shape[0] == n else e for e in extra
    ]


def run_network_checks(
    impl: Any,
    *,
    only: str | None = None,
    seeds: Sequence[int] = SEEDS,
) -> list[CheckResult]:
    """The network checks of ``impl`` (an :class:`~.implementation.Implementation` whose
    ``network`` is set); ``only`` runs one of :data:`NETWORK_CHECKS`.

    Returns:
        One :class:`~.results.CheckResult` per check (none when ``impl.network`` is ``None``).

    Raises:
        ValueError: for an unknown ``only``.
    """
    if only is not None and only not in NETWORK_CHECKS:
        raise ValueError(f"unknown network check {only!r}; choose one of {NETWORK_CHECKS}")
    user = getattr(impl, "network", None)
    if user is None:
        return []
    out = []
    checks = (("network.times", check_network_times), ("network.jvp", check_network_jvp))
    for name, fn in checks:
        if only is None or only == name:
            out.append(fn(impl.conventions, user, seeds=seeds, spec=impl.spec))
    return out
