"""JAX losses and samplers *as they ship*: explicit keys, ``params`` the oracle owns.

JAX research code draws its times and noise from explicit keys and calls its network through a
pure function of its parameters: ``loss_fn(params, batch, key)`` with ``model.apply(params, x,
t, r)``, ``jax.random.split``, ``jax.jvp``, ``jax.lax.stop_gradient``, often ``jax.jit``. The
oracle checks such code through the one thing it owns, the network and its parameters. The
protocol (declared with the torch side's :class:`~.shipped.ShippedLoss` and
:class:`~.shipped.ShippedSampler` under ``framework="jax"`` conventions):

* ``ShippedLoss(make_loss, ...)``: ``make_loss(apply) -> loss_fn(params, batch, key)``
  (``make_loss(apply, teacher)`` with ``velocity="teacher"``, ``teacher(x, tau)`` the teacher's
  velocity in the user's conventions). ``apply(params, x, a1, a2, *extra)`` is the oracle's
  network in the user's conventions (``apply.apply`` is the same function, for code written as
  ``model.apply(params, ...)``; one time argument under signature ``"x_t"``); ``extra``
  (labels, guidance scales) pass through unread. The
  loss receives ``params`` from the oracle and hands them to ``apply`` unchanged; it draws every
  random number from ``key``. It may return the loss, ``(loss, aux)`` or ``{"loss": loss, ...}``.
  ``make_batch``, when declared, receives the data as a JAX array. The other fields of
  :class:`~.shipped.ShippedLoss` mean what they mean for torch.
* ``ShippedSampler(make_sampler, ...)``: ``make_sampler(apply) -> sample(params, noise)``
  (deterministic samplers: there is no key to re-noise with).

Declared float64 needs ``jax_enable_x64`` (a :class:`~.adapters.ConventionError` says so);
float32 runs the oracle's network in float32 too, which the exact map's closed form allows
(:class:`JaxGaussianFlow`).

The network (:class:`JaxInstrumentedNetwork`) is the teacher's exact average velocity ``F*`` plus
``sum_k theta_k phi_k``, the same function as the torch :class:`~.shipped.InstrumentedNetwork`
(the same teacher, :func:`~.shipped.teacher_for_shape`, and the same four perturbation fields,
written here in ``jax.numpy``), evaluated in the declared dtype. ``params`` is
``{"theta": theta, "probes": (p_0, p_1, ...)}``. One gradient of the loss runs it twice with
the same key and batch: once with no probes, to learn how many times and on what shapes the loss
calls the network, then under ``jax.value_and_grad`` with a zero probe ``p_k`` added to the
``k``-th call's output; the key fixes every draw, so both runs make the same calls, and the
gradient in ``p_k`` is ``d loss / d output`` of that call (also for an output computed under
``jax.jvp``: the probe enters outside the tangent).

Recording under ``jax.jit``. Each call sends its inputs and output to the host with
``jax.debug.callback`` (the call's index is fixed when the loss is traced, so a jitted loss that
is not traced again still reports every call, and under ``jax.jvp`` the callback sees the
primal values). The recorded times are therefore concrete numbers whether or not the loss is
jitted, converted to our convention in float64 on the host exactly as the torch harness does.
The network must be called on the whole batch ``(B, *data_shape)``: a call inside ``jax.vmap``
over samples would share one probe across the batch and is refused with a message. A call
inside a ``lax`` loop body is one call site (its probe receives the sum of its iterations'
gradients; losses rarely loop, samplers do, and samplers have no probes).

Errors in the user's code propagate as the user's own exception, with the frames of their code
and without the note JAX appends about the internal frames it removed.

:class:`JaxHarness` has the interface of the torch ``_Harness``, so the check functions of
:mod:`.shipped` (``check_times``, ``check_alignment``, ``check_stationarity``) run on it
unchanged; :func:`check_jax_sampler` is the JAX twin of ``check_sampler``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..reference_models import ExactAverageVelocity, ExactFlowMap, GaussianMixtureTeacher
from ..reference_models.paths import _gl_w, _gl_x
from .adapters import ConventionAdapter, Conventions
from .networks import RandomNetwork
from .results import CheckResult
from .shipped import (
    N_FIELDS,
    CallRecord,
    ShippedLoss,
    ShippedSampler,
    _perturbation_fields,
    _result,
    _UserProblem,
    sampler_call_problem,
    sampler_landing,
    sampler_samples,
    sampler_tolerance,
    shown_calls,
    teacher_for_shape,
)

__all__ = [
    "JaxGaussianFlow",
    "JaxHarness",
    "JaxInstrumentedNetwork",
    "check_jax_sampler",
]

_JAX_NOTE = "JAX has removed its internal frames"


# ----------------------------------------------------------------------------------------------
# The exact map of one Gaussian in jax.numpy


class JaxGaussianFlow:
    """The velocity and exact average velocity of a one-Gaussian teacher in ``jax.numpy``.

    With ``Sigma = Q diag(lambda) Q^T``, ``c(t) = alpha_t^2 lambda + beta_t^2``,
    ``y = Q^T (x - alpha_t mu)`` and ``r = sqrt(c(s) / c(t))``, the flow map is
    ``alpha_s mu + Q (r y)`` and (``flow_map.py``)
    ``F*(x, t, s) = alpha[t, s] mu + Q (c[t, s] / (c_t (1 + r)) y)`` with
    ``c[t, s] = lambda (alpha_t + alpha_s) alpha[t, s] + (beta_t + beta_s) beta[t, s]``: the
    difference ``1 - r`` is rearranged as ``(c_t - c_s) / (c_t (1 + r))`` and ``c_t - c_s`` as a
    product of divided differences, and the divided differences ``alpha[t, s]``,
    ``beta[t, s]`` are Gauss-Legendre quadratures of ``alpha'``, ``beta'`` on ``[s, t]`` (16
    nodes, the torch backend's rule), so nothing cancels on or near the diagonal ``s = t``,
    where ``F* = v``. Every operation is a ``jax.numpy`` primitive: ``jax.jvp`` and ``jax.grad``
    differentiate it exactly, in the dtype of ``x`` (float32 or float64).

    Arguments:
        teacher: a one-component :class:`GaussianMixtureTeacher` whose path has JAX schedules.
    """

    def __init__(self, teacher: GaussianMixtureTeacher) -> None:
        mix = teacher.mixture
        if mix.means.shape[0] != 1:
            raise ValueError(
                f"JaxGaussianFlow needs a one-component teacher, got {mix.means.shape[0]}"
            )
        self.teacher = teacher
        self.path = teacher.path
        self.mu = mix.means[0].detach().cpu().double().numpy()
        self.lam = mix.eigvals[0].detach().cpu().double().numpy()
        self.q = mix.eigvecs[0].detach().cpu().double().numpy()
        self.nodes = 0.5 * (np.asarray(_gl_x) + 1.0)
        self.weights = 0.5 * np.asarray(_gl_w)

    def _consts(self, dtype: Any) -> tuple[Any, Any, Any]:
        import jax.numpy as jnp

        return (
            jnp.asarray(self.mu, dtype=dtype),
            jnp.asarray(self.lam, dtype=dtype),
            jnp.asarray(self.q, dtype=dtype),
        )

    def velocity(self, x: Any, t: Any) -> Any:
        """``v(x, t)`` for ``x`` of shape ``(N, d)`` and ``t`` of shape ``(N,)``."""
        mu, lam, q = self._consts(x.dtype)
        c = self.path.schedule(t[:, None], _jnp())
        y = (x - c.alpha * mu) @ q
        cc = c.alpha**2 * lam + c.beta**2
        g = (c.alpha * c.alpha_dot * lam + c.beta * c.beta_dot) / cc
        return c.alpha_dot * mu + (g * y) @ q.T

    def divided_differences(self, t: Any, s: Any) -> tuple[Any, Any]:
        """``(alpha[t, s], beta[t, s])`` as ``(N, 1)`` columns (``alpha'``, ``beta'`` at s = t)."""
        jnp = _jnp()
        u = jnp.asarray(self.nodes, dtype=t.dtype)
        w = jnp.asarray(self.weights, dtype=t.dtype)
        sigma = t[:, None] + u * (s - t)[:, None]
        c = self.path.schedule(sigma, jnp)
        return (
            (w * c.alpha_dot).sum(-1, keepdims=True),
            (w * c.beta_dot).sum(-1, keepdims=True),
        )

    def average_velocity(self, x: Any, t: Any, s: Any) -> Any:
        """``F*(x, t, s)`` for ``x`` of shape ``(N, d)`` and ``t``, ``s`` of shape ``(N,)``."""
        jnp = _jnp()
        mu, lam, q = self._consts(x.dtype)
        ct, cs = self.path.schedule(t[:, None], jnp), self.path.schedule(s[:, None], jnp)
        a_ts, b_ts = self.divided_differences(t, s)
        c_t = ct.alpha**2 * lam + ct.beta**2
        c_s = cs.alpha**2 * lam + cs.beta**2
        dc = lam * (ct.alpha + cs.alpha) * a_ts + (ct.beta + cs.beta) * b_ts
        r = jnp.sqrt(c_s / c_t)
        y = (x - ct.alpha * mu) @ q
        return a_ts * mu + (dc / (c_t * (1 + r)) * y) @ q.T


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    import jax

    return jax.jit(fn)


def _jnp() -> Any:
    import jax.numpy as jnp

    return jnp


def _jax_fields(
    flow: JaxGaussianFlow, dim: int, dtype: str
) -> list[Callable[[Any, Any, Any], Any]]:
    """The perturbation fields of :func:`.shipped._perturbation_fields` in ``jax.numpy``: the
    teacher ``"gap"`` ``F* - v`` and ``"velocity"`` ``v``, then the random networks with seeds
    1000 and 1001 (tests compare them with the torch fields)."""

    def gap(x: Any, t: Any, s: Any) -> Any:
        return flow.average_velocity(x, t, s) - flow.velocity(x, t)

    def velocity(x: Any, t: Any, s: Any) -> Any:
        return flow.velocity(x, t)

    randoms = []
    for k in range(2):
        net = RandomNetwork(dim, seed=1000 + k, gain=1.0)
        weights = {name: w.numpy() for name, w in net.weights.items()}

        def random_field(x: Any, t: Any, s: Any, weights: dict = weights) -> Any:
            jnp = _jnp()
            params = {name: jnp.asarray(w, dtype=x.dtype) for name, w in weights.items()}
            return RandomNetwork.jax_apply(params, x, t.astype(x.dtype), s.astype(x.dtype))

        randoms.append(random_field)
    return [gap, velocity, *randoms]


# ----------------------------------------------------------------------------------------------
# The instrumented network


@dataclass
class _Raw:
    """What one call sent to the host: the user's inputs and output (numpy)."""

    x: np.ndarray
    times: tuple[np.ndarray, ...]
    out: np.ndarray
    traced: bool


class JaxInstrumentedNetwork:
    """The exact map plus ``sum_k theta_k phi_k`` as a JAX function in the user's conventions.

    Arguments:
        exact: the teacher's exact average velocity (torch; :attr:`ours` is the torch twin the
            checks use for their reference residuals).
        adapter: the user's declared conventions (``framework="jax"``).
        data_shape: the shape of one sample in the user's code.
        flow: the same teacher in ``jax.numpy``.

    :meth:`apply` (also the instance itself, and ``apply.apply``) is what the user's code calls:
    ``apply(params, x, a1, a2, *extra, **extra_kw)`` with ``params = {"theta": ..., "probes":
    (...)}`` as the oracle handed it over. :attr:`calls` lists a :class:`~.shipped.CallRecord`
    for every call since :meth:`reset` (filled in by the harness after each run; a record's
    ``transformed`` says that the call's inputs were JAX tracers: under ``jax.jvp``, ``jax.jit``
    or ``jax.vmap``); :attr:`theta` (torch, float64) is the perturbation of the last run.
    """

    def __init__(
        self,
        exact: ExactAverageVelocity,
        adapter: ConventionAdapter,
        data_shape: tuple[int, ...],
        flow: JaxGaussianFlow,
    ) -> None:
        self.exact = exact
        self.adapter = adapter
        self.data_shape = tuple(data_shape)
        self.flow = flow
        teacher = exact.teacher
        self.fields = _perturbation_fields(exact, teacher)
        self.jax_fields = _jax_fields(flow, teacher.dim, str(adapter.conventions.dtype))
        self.theta = torch.zeros(len(self.fields), dtype=torch.float64)
        self.calls: list[CallRecord] = []
        self._counter = 0
        self._raw: dict[int, _Raw] = {}
        self._all: list[_Raw] = []
        self.apply = _Apply(self)
        # compiled once per shape and dtype: a loss that is not jitted runs it as one unit
        # instead of op by op (differentiated by jax.jvp and jax.grad like any function)
        self._ours_jit = _jit(self.ours_jax)

    # torch twin, our convention ---------------------------------------------------------------
    def ours(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``F_theta(x, t, s)`` in our convention (torch, float64) at :attr:`theta`."""
        out = self.exact(x, t, s)
        for k, phi in enumerate(self.fields):
            out = out + self.theta[k] * phi(x, t, s)
        return out

    def reset(self) -> None:
        self.calls = []

    # JAX side, our convention -----------------------------------------------------------------
    def ours_jax(self, theta: Any, x: Any, t: Any, s: Any) -> Any:
        """``F_theta(x, t, s)`` in our convention, in JAX (the dtype of ``x``)."""
        t, s = t.astype(x.dtype), s.astype(x.dtype)
        out = self.flow.average_velocity(x, t, s)
        for k, phi in enumerate(self.jax_fields):
            out = out + theta[k].astype(x.dtype) * phi(x, t, s)
        return out

    # runs ------------------------------------------------------------------------------------
    def _start(self) -> None:
        self._counter = 0
        self._raw = {}
        self._all = []

    def _call(self, params: Any, x: Any, *args: Any) -> Any:
        import jax
        import jax.numpy as jnp

        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"the network takes a JAX array x, got {type(x).__name__}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.data_shape:
            hint = (
                " (one sample: call the network on the whole batch, not per sample under jax.vmap)"
                if tuple(x.shape) == self.data_shape
                else ""
            )
            raise ValueError(
                f"the network was called with x of shape {tuple(x.shape)}; the data are "
                f"(batch, {', '.join(map(str, self.data_shape))}){hint}"
            )
        try:
            theta = params["theta"]
            probes = params["probes"]
        except (TypeError, KeyError, IndexError):
            raise TypeError(
                "the network's first argument must be the params the oracle handed to the loss "
                "(a dict with 'theta' and 'probes'), passed on unchanged"
            ) from None
        n_times = self.adapter.n_time_args
        if len(args) < n_times:
            raise TypeError(
                f"the network takes params, x and {n_times} time argument(s) under signature "
                f"{self.adapter.conventions.signature.value!r}; got {len(args)} time argument(s)"
            )
        n = x.shape[0]
        times = [_times(a, n, x) for a in args[:n_times]]
        k = self._counter
        self._counter += 1
        user = self.adapter.network_to_user(functools.partial(self._ours_jit, theta))
        out = user(x.reshape(n, -1), *times)
        traced = any(isinstance(a, jax.core.Tracer) for a in (x, *times))
        jax.debug.callback(functools.partial(self._record, k, traced), x, out, *times)
        if len(probes):  # the second run: probes were handed over
            if k >= len(probes) or tuple(probes[k].shape) != tuple(out.shape):
                raise _UserProblem(
                    "the loss called the network differently on two runs with the same key and "
                    f"batch (call {k}): every random number must come from the key (not from "
                    "numpy's or Python's random state)"
                )
            out = out + probes[k]
        return jnp.reshape(out, x.shape)

    def _record(self, k: int, traced: bool, x: Any, out: Any, *times: Any) -> None:
        raw = _Raw(np.asarray(x), tuple(np.asarray(a) for a in times), np.asarray(out), traced)
        self._all.append(raw)
        self._raw.setdefault(k, raw)

    def _records(self, raws: list[_Raw], grads: list[Any] | None) -> list[CallRecord]:
        """:class:`CallRecord` s of ``raws`` (our convention, float64), with the probes'
        gradients ``grads`` (one per raw) where given."""
        o = self.adapter.torch_ops
        out = []
        for i, raw in enumerate(raws):
            n = raw.x.shape[0]
            times = [torch.from_numpy(np.asarray(a, dtype=np.float64).copy()) for a in raw.times]
            x_in = torch.from_numpy(np.asarray(raw.x, dtype=np.float64).reshape(n, -1).copy())
            x, t, s = self.adapter.inputs_to_ours(x_in, *times, ops=o)
            probe = torch.zeros(raw.out.shape, dtype=torch.float64, requires_grad=True)
            if grads is not None:
                probe.grad = torch.from_numpy(np.asarray(grads[i], dtype=np.float64).copy())
            out.append(
                CallRecord(
                    t=t.detach().clone(),
                    s=s.detach().clone(),
                    x=x.detach().clone(),
                    finite=bool(np.isfinite(raw.out).all()),
                    transformed=raw.traced,
                    probe=probe,
                )
            )
        return out


class _Apply:
    """The network as the user's code calls it: ``apply(params, x, a1, a2, *extra)`` (one time
    argument under signature ``"x_t"``; the raw network's ``(c_in x, c_noise)`` under a declared
    preconditioning)."""

    def __init__(self, net: JaxInstrumentedNetwork) -> None:
        self._net = net

    def __call__(self, params: Any, x: Any, *args: Any, **extra_kw: Any) -> Any:
        return self._net._call(params, x, *args)

    @property
    def apply(self) -> _Apply:
        """The same function, for code written as ``model.apply(params, x, t, r)``."""
        return self


def _times(a: Any, n: int, like: Any) -> Any:
    """A time argument as an ``(N,)`` array: scalars and ``(N, 1, ...)`` shapes are common."""
    import jax.numpy as jnp

    a = jnp.asarray(a)
    if a.ndim == 0:
        return jnp.broadcast_to(a, (n,))
    if a.shape[0] == n and a.size == n:
        return a.reshape(n)
    raise ValueError(
        f"a time argument of shape {tuple(a.shape)} cannot be read as one time per sample "
        f"(batch {n})"
    )


# ----------------------------------------------------------------------------------------------
# The harness


def _strip_jax_note(err: BaseException) -> None:
    """Drop the note JAX appends to an exception about the internal frames it removed (the
    user's own frames stay in the traceback)."""
    notes = getattr(err, "__notes__", None)
    if notes:
        kept = [n for n in notes if _JAX_NOTE not in n]
        if kept:
            err.__notes__ = kept
        else:
            del err.__notes__


def _jax_scalar(value: Any, name: str) -> Any:
    import jax.numpy as jnp

    if isinstance(value, tuple | list) and value:
        value = value[0]
    elif isinstance(value, Mapping) and "loss" in value:
        value = value["loss"]
    if not hasattr(value, "shape") or int(np.prod(value.shape)) != 1:
        raise TypeError(
            f"{name} must return a scalar JAX array (or a tuple/dict holding one), got "
            f"{type(value).__name__}{tuple(getattr(value, 'shape', ())) or ''}"
        )
    return jnp.reshape(value, ())


@dataclass
class JaxHarness:
    """The as-shipped harness for JAX losses, with the interface of ``shipped._Harness``.

    Attributes:
        conventions: the declared conventions (``framework="jax"``).
        teacher: the torch teacher (:func:`~.shipped.teacher_for_shape`).
        net: the :class:`JaxInstrumentedNetwork`.
        data_shape: the shape of one data sample.
        user_dtype: the torch dtype of the declared precision (the checks key their
            tolerances on it).
        key: the JAX key the next loss call's key is split from (seeded: runs reproduce).
        last_data: the data of the last :meth:`gradient` (torch, for matching rows).
    """

    conventions: Conventions
    teacher: GaussianMixtureTeacher
    net: JaxInstrumentedNetwork
    data_shape: tuple[int, ...]
    user_dtype: torch.dtype
    key: Any
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    last_data: Tensor | None = None
    _losses: dict[int, tuple[ShippedLoss, Callable[..., Any]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        conventions: Conventions | Mapping[str, Any],
        data_shape: tuple[int, ...] | None,
        *,
        seed: int = 0,
    ) -> JaxHarness:
        """The harness for ``conventions`` and one sample's ``data_shape`` (default ``(2,)``);
        ``seed`` seeds the data and the keys handed to the loss.

        Raises:
            ValueError: the conventions do not declare ``framework="jax"``.
            ConventionError: float64 declared while JAX runs without ``jax_enable_x64``.
        """
        import jax

        conv = Conventions.from_mapping(conventions)
        if conv.framework != "jax":
            raise ValueError(
                f"the JAX harness needs conventions with framework 'jax', got {conv.framework!r}"
            )
        adapter = ConventionAdapter(conv)
        adapter.array_to_user(torch.zeros(1))  # float64 without jax_enable_x64: one clear line
        teacher = teacher_for_shape(data_shape, conv.path)
        shape = (teacher.dim,) if data_shape is None else tuple(data_shape)
        exact = ExactAverageVelocity(ExactFlowMap(teacher))
        net = JaxInstrumentedNetwork(exact, adapter, shape, JaxGaussianFlow(teacher))
        dtype = getattr(torch, str(conv.dtype))
        return cls(
            conv,
            teacher,
            net,
            shape,
            dtype,
            jax.random.PRNGKey(seed),
            generator=torch.Generator().manual_seed(seed),
        )

    def data(self, n: int) -> Tensor:
        """``n`` data samples ``(n, *data_shape)`` in the user's units (times ``sigma_data``;
        torch, the declared precision)."""
        x = self.teacher.mixture.sample(n, generator=self.generator) * self.net.adapter.data_unit
        return x.reshape(n, *self.data_shape).to(self.user_dtype)

    def teacher_velocity(self) -> Callable[[Any, Any], Any]:
        """The teacher's velocity ``v(x, tau)`` in the user's conventions, as a JAX function of
        ``(B, *data_shape)`` points and times (scalar or one per sample)."""
        adapter = self.net.adapter
        flow = self.net.flow
        field_u = adapter.velocity_field_to_user(lambda x, t: flow.velocity(x, t.astype(x.dtype)))
        shape = self.data_shape

        def teacher(x: Any, tau: Any) -> Any:
            n = x.shape[0]
            return field_u(x.reshape(n, -1), _times(tau, n, x)).reshape(n, *shape)

        return teacher

    def _next_key(self) -> Any:
        import jax

        self.key, key = jax.random.split(self.key)
        return key

    def _loss_fn(self, shipped: ShippedLoss) -> Callable[..., Any]:
        """``make_loss(apply)`` (with the teacher for distillation), built once per loss."""
        hit = self._losses.get(id(shipped))
        if hit is not None and hit[0] is shipped:
            return hit[1]
        args: tuple[Any, ...] = (self.net.apply,)
        if shipped.velocity == "teacher":
            args += (self.teacher_velocity(),)
        try:
            loss_fn = shipped.loss(*args)
        except Exception as err:
            _strip_jax_note(err)
            raise
        if not callable(loss_fn):
            raise _UserProblem(
                "a JAX loss is declared as make_loss(apply) -> loss_fn(params, batch, key); "
                f"make_loss returned {type(loss_fn).__name__}, not a function"
            )
        self._losses[id(shipped)] = (shipped, loss_fn)
        return loss_fn

    def gradient(
        self, shipped: ShippedLoss, theta: Tensor, *, batch_size: int | None = None
    ) -> tuple[Tensor, float]:
        """The loss's gradient in ``theta`` at ``theta`` (fresh data and key) and its value.

        Two runs with the same key and batch (module docstring); the second, under
        ``jax.value_and_grad``, records every network call (:attr:`JaxInstrumentedNetwork.calls`)
        with ``d loss / d output``. The data are kept in :attr:`last_data`.

        Raises:
            the user's own exception, when their code raises (without JAX's note).
        """
        import jax
        import jax.numpy as jnp

        net = self.net
        loss_fn = self._loss_fn(shipped)
        dtype = str(self.conventions.dtype)
        data = self.data(batch_size or shipped.batch_size)
        self.last_data = data
        x = jnp.asarray(data.numpy(), dtype=dtype)
        make_batch = cast(Callable[[Any], Any] | None, shipped.make_batch)  # JAX arrays here
        batch = x if make_batch is None else make_batch(x)
        key = self._next_key()
        th = jnp.asarray(theta.detach().cpu().numpy(), dtype=dtype)
        net.theta = theta.detach().to(torch.float64).clone()
        try:
            net._start()
            jax.block_until_ready(loss_fn({"theta": th, "probes": ()}, batch, key))
            jax.effects_barrier()
            layout = [net._raw[k].out for k in sorted(net._raw)]
            if sorted(net._raw) != list(range(len(layout))):
                raise _UserProblem("the network's calls could not be numbered in order")
            probes = tuple(jnp.zeros(o.shape, dtype=o.dtype) for o in layout)
            net._start()

            def scalar(params: Any) -> Any:
                return _jax_scalar(loss_fn(params, batch, key), "the loss")

            value, grads = jax.value_and_grad(scalar)({"theta": th, "probes": probes})
            jax.effects_barrier()
        except _UserProblem:
            raise
        except Exception as err:  # the user's own code raised: theirs to see, as raised
            _strip_jax_note(err)
            raise
        v = float(value)
        if not math.isfinite(v):
            raise _UserProblem(f"the loss returned {v} at the exact map")
        g_theta = np.asarray(grads["theta"], dtype=np.float64)
        g_probes = [np.asarray(g) for g in grads["probes"]]
        if bool(theta.ne(0).any()) and not g_theta.any() and not any(g.any() for g in g_probes):
            raise _UserProblem(
                "the loss does not depend on the network's parameters (no gradient reaches "
                "them): is the model's output wrapped in jax.lax.stop_gradient?"
            )
        raws = [net._raw[k] for k in sorted(net._raw)]
        if len(raws) != len(probes):
            raise _UserProblem(
                "the loss called the network differently on two runs with the same key and "
                f"batch ({len(probes)} calls, then {len(raws)})"
            )
        net.calls += net._records(raws, g_probes)
        return torch.from_numpy(g_theta.copy()), v


# ----------------------------------------------------------------------------------------------
# Samplers


def check_jax_sampler(
    name: str, sampler: ShippedSampler, conventions: Conventions | Mapping[str, Any]
) -> CheckResult:
    """``sampler.<name>.exact_map`` for a JAX sampler ``make_sampler(apply) -> sample(params,
    noise)``: run as shipped on the exact model (``theta = 0``), it starts at the noise end,
    steps towards the data and, when it asks for flow-map steps, lands on the exact flow map
    from its first call's point and time to the data end (the logic of
    :func:`.shipped.check_sampler`; a velocity-only sampler's discretisation error is reported).
    """
    import jax
    import jax.numpy as jnp

    check, start = f"sampler.{name}.exact_map", time.perf_counter()
    harness = JaxHarness.build(conventions, sampler.data_shape)
    net = harness.net
    n = sampler.batch_size
    gen = torch.Generator().manual_seed(11)
    noise_t = torch.randn(n, *harness.data_shape, generator=gen, dtype=torch.float64)
    dtype = str(harness.conventions.dtype)
    noise = jnp.asarray(noise_t.numpy(), dtype=dtype)
    params = {"theta": jnp.zeros(N_FIELDS, dtype=dtype), "probes": ()}
    net.theta = torch.zeros(N_FIELDS, dtype=torch.float64)
    net._start()
    try:
        out = sampler.sample(net.apply)(params, noise)
        out = jax.block_until_ready(out)
        jax.effects_barrier()
    except Exception as err:  # the user's sampler raised
        _strip_jax_note(err)
        return _result(
            check, "sampler", "fail", f"the sampler raised {type(err).__name__}: {err}", start
        )
    calls = net._records(net._all, None)
    if not calls:
        return _result(check, "sampler", "fail", "the sampler never called the network", start)
    if tuple(getattr(out, "shape", ())) != tuple(noise.shape):
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler returned {getattr(out, 'shape', type(out).__name__)}; expected "
            f"{tuple(noise.shape)}",
            start,
        )
    shown = shown_calls(calls, net.adapter)
    wrong = sampler_call_problem(check, calls, net.adapter, sampler.time_range, shown, start)
    if wrong is not None:
        return wrong
    flat = torch.from_numpy(np.asarray(out, dtype=np.float64).reshape(n, -1).copy())
    got, end = sampler_samples(flat, calls, net.adapter, sampler.time_range)
    tol = sampler_tolerance(harness.user_dtype, calls, harness.teacher)
    return sampler_landing(check, calls, got, harness.teacher, tol, shown, start, end=end)
