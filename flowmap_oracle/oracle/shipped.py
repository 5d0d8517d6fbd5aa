"""Losses and samplers *as they ship*: black boxes checked through a network the oracle owns.

Research code does not hand over targets. A training loss draws its own times and noise, weights
and reduces as its authors chose, and keeps its target in a local variable; a sampler hard-codes
its times. The oracle therefore checks such code through the one thing it controls, the network:

* :class:`InstrumentedNetwork` is an ``nn.Module`` in the user's declared conventions (time
  variable, signature, prediction, dtype; data of any shape such as ``(B, C, H, W)``; extra
  arguments such as class labels or guidance scales pass through). Its output is the teacher's
  exact average velocity ``F*`` plus ``sum_k theta_k phi_k`` for a few smooth random fields
  ``phi_k``, with ``theta`` its only parameter (zero: the exact map). It records every call: the
  times in our convention, whether the output was finite, and whether the loss's gradient reached
  it.
* :class:`ShippedLoss` declares a loss ``loss(model, batch)`` (``loss(model, batch, teacher)``
  for distillation from the teacher's velocity); :class:`ShippedSampler` declares a sampler
  ``sample(model, noise)``.

The checks hold for every correct weighting, metric, reduction and time distribution:

``<method>.shipped.times``
    every network call runs in the generative direction (``s <= t`` in our convention, unless
    the loss declares both directions), at finite times on the path, with finite outputs, and
    inside the loss's declared ``time_range`` (in the user's own time variable); the range the
    loss actually used and the fraction of calls on the diagonal ``s = t`` are reported.
``<method>.shipped.alignment`` (flow matching and MeanFlow)
    at each network output the loss trains, the gradient it sends back points along the
    reference residual ``F - [v - (t - s) dF/dt]`` at the same inputs, with a non-negative
    weight per sample: pointwise, for every weighting, distance of the residual's norm and
    time distribution. The conditional velocity of each row is recovered from the data the
    oracle handed over and the point the loss built. The implied weights are reported.
``consistency.shipped.alignment`` (discrete consistency training and distillation)
    the loss calls the network twice per row: online at ``(x_t, t)`` and as the target at
    ``(x_r, r)``. At a perturbed map the gradient at each online output points along
    ``-t k (f_online - f_target)`` (``f(x, t) = x - t F(x, t, 0)``, ``k`` the adapter's output
    gain, the raw network's under a declared preconditioning) with a non-negative factor per
    row: every distance of the difference's norm (L2, pseudo-Huber), weight such as ``1 /
    (sigma_t - sigma_r)`` and reduction keeps it. It fails a target call that receives gradient
    ("the target is not detached"), a target later than the online call (``r > t``), and, with
    the conditional velocity, two points built from different noise. The implied weights and
    their log-log slope against ``t - r`` are reported.
``scm.shipped.alignment`` (continuous-time consistency, sCM)
    the gradient at each trained output points along ``-t k df/dt``, the tangent of the
    consistency function along the velocity (total derivative, ``t`` increasing in ours; the
    explicit-input reference :func:`~flowmap_oracle.objectives.continuous_consistency.consistency_tangent`)
    with a non-negative factor per row, whatever the weight ``w(t)`` or tangent normalisation
    ``g / (||g|| + c)``. Hand the loss over past its tangent warm-up (coefficient 1): during
    warm-up sCM's tangent is deliberately partial and is not ``df/dt``.
``<method>.shipped.alignment`` (SplitMeanFlow, Shortcut, FACM, AYF-EMD, AYF-LMD)
    the same against each method's own residual, rebuilt with the oracle's network at the split
    point the loss's own target calls used (:mod:`.shipped_targets`).
``<method>.shipped.stationarity``
    at the exact map, the loss's gradient in ``theta`` vanishes. With the teacher's velocity the
    residual is zero pointwise, so the gradient vanishes for every weighting (to the exact
    network's finite-difference accuracy). With the conditional velocity only its expectation
    vanishes: a t-test over repeated draws (each from the user's own random state) at a stated
    false-alarm rate. The teacher here is one anisotropic Gaussian (:func:`teacher_for_shape`):
    its flows are curved, and its conditional noise is symmetric, so every distance that is a
    function of the residual's norm (L2, adaptive weights, pseudo-Huber, normalised tangents)
    keeps the exact map as its expected fixed point. A loss that declares another distance
    (``distance="other"``: cosine, per-component clamps) gets the measured bias reported,
    never a failure (MATH.md section 4). Where the method itself does not have the exact map
    as its fixed point (:data:`BIASED_METHODS`: discrete consistency training, whose target
    shares the noise and not the trajectory, with a bias of order ``(t - r)^2``; IMM with the
    biased MMD estimator), a nonzero gradient is reported as a property of the method, never
    failed.
``<method>.shipped.descent``
    at a perturbed map, the loss's expected gradient points away from the exact map, so a
    small step moves towards it (``g . theta_c > 0``, a one-sided t-test that fails only a
    significantly negative mean): the exact map attracts. A sign error that keeps the fixed
    point (a maximised loss) fails here only; AYF's flipped or dropped ``sign`` fails here and in
    its alignment check.
``<method>.shipped.value``
    with the loss's extras declared (:class:`~flowmap_oracle.oracle.declared.Declared`: its
    distance, weight, reduction, sCM tangent normalisation, reset fraction), the declared loss
    is rebuilt from the recorded calls and its value and per-output gradient compared with the
    user's (:mod:`~flowmap_oracle.oracle.shipped_value`); skipped, with the reason, when nothing
    is declared.
``sampler.<name>.exact_map``
    the sampler, run as shipped on the exact model, starts at the noise end, steps towards the
    data and, when it asks for flow-map steps (``s < t``), lands on the exact flow map from its
    first network call's point and time to the data end. A sampler that only asks for the
    velocity ``F(x, t, t)`` is an ODE solver: its discretisation error is reported, not judged.
    A sampler that draws fresh noise (a second run on the same noise differs: multistep
    consistency sampling) is judged call by call on a larger batch: each call's point must be the
    previous call's exact end carried to the call's time by the path's own noising (the noise
    recovered there passes a chi-square test at :data:`FALSE_ALARM`: a sampler that re-noises to
    another time than it asks for fails), and the samples must be the last call's exact map.
    Calls outside the sampler's declared ``time_range`` fail.

Data are handed over in the user's units (times ``sigma_data``), and the network takes the
user's declared signature, one time argument for ``"x_t"``, the raw network's inputs under a
declared preconditioning (:mod:`~flowmap_oracle.oracle.adapters`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor

from ..conventions import Method
from ..reference_models import ExactAverageVelocity, ExactFlowMap, GaussianMixtureTeacher
from ..reference_models.gmm import GaussianMixture
from .adapters import ConventionAdapter, Conventions
from .declared import Declared
from .networks import RandomNetwork
from .results import CheckResult, ImpliedWeights, SkipReason, Status

__all__ = [
    "CallRecord",
    "InstrumentedNetwork",
    "ShippedLoss",
    "ShippedSampler",
    "run_shipped_checks",
    "teacher_for_shape",
]

Velocity = Literal["conditional", "teacher"]

N_FIELDS = 4
"""Perturbation fields ``phi_k``: two built from the teacher (:class:`_TeacherField`) and two
random tanh MLPs in ``(x, t, s)``."""
CONTROL = 0.05
"""The control perturbation ``theta_k = CONTROL`` for every k: a map clearly off the exact one."""
DATA_SEED = 0x5EED_DA7A_F10A
"""The seed of the harness's own data generator. It must not be a seed users pick for their
global random state (0, 42, ...): with the same seed, the data's standard normal draws and the
noise a loss draws after a ``torch.rand`` of the same size come out of identical streams, and
the data and noise are then correlated (a false alarm in the stationarity test: flow matching
seeded with ``torch.manual_seed(0)`` failed at |t| = 28 before this seed was changed from 0)."""
STOCHASTIC_BATCH = 1024
"""Noise samples for a sampler that draws fresh noise: the chi-square test on the noise
recovered at each re-noised call has ``STOCHASTIC_BATCH * d`` entries (a standard deviation of
``0.026`` on the mean of ``n^2`` for ``d = 3``)."""
FALSE_ALARM = 1e-4
"""The probability that the statistical stationarity test fails a correct loss in one run (the
loss draws its own times and noise, from the user's random state, which the oracle leaves
alone)."""


@dataclass(frozen=True)
class ShippedLoss:
    """A training loss as it ships.

    Arguments:
        loss: ``loss(model, batch) -> scalar`` (``loss(model, batch, teacher)`` when
            ``velocity="teacher"``). It draws its own times and noise. It may return a tuple or
            list whose first element is the loss, or a mapping with a ``"loss"`` entry (logs
            ride along).
        velocity: what the loss regresses onto: ``"conditional"`` (``x1 - x0`` on the linear
            path; training from data) or ``"teacher"`` (a teacher's velocity ``teacher(x, t)`` in
            the user's conventions, passed as the third argument; distillation).
        distance: ``"radial"`` (default) when each sample's loss is a function of its
            residual's norm, with weights that may depend on the times and on that norm: L2,
            MeanFlow's adaptive weight, pseudo-Huber, sCM/AYF's normalised tangents;
            ``"other"`` for anything else (a cosine distance, per-component clamps). With the
            conditional velocity, an ``"other"`` distance can move the expected fixed point away
            from the exact map (MATH.md section 4), so its stationarity is reported, not judged.
        both_directions: the loss trains maps with ``s > t`` as well (AYF).
        data_shape: the shape of one data sample, e.g. ``(3, 4, 4)``; default the teacher's
            ``(d,)`` (then the ring teacher, ``d = 2``). Any other shape gets a Gaussian-mixture
            teacher of dimension ``prod(data_shape)``.
        make_batch: builds the loss's ``batch`` from a data tensor ``(B, *data_shape)`` (e.g.
            ``lambda x: (x, labels)``); default the tensor itself.
        batch_size: the data samples per call (the statistical test uses at least 256).
        time_range: ``(lo, hi)``, the times the loss may call the network at, in the user's own
            time variable (e.g. ``(0.002, 80.0)`` for EDM's sigma, ``(0, 0.994)``); the times
            check fails a loss whose calls leave it. Default: no declared range.
        declared: the loss's extras (:class:`~flowmap_oracle.oracle.declared.Declared`: its
            distance, per-sample weight, reduction, sCM tangent normalisation, reset fraction,
            extra flow-matching term); the value check ``<method>.shipped.value`` then rebuilds
            the loss and compares value and gradient exactly. ``None``: that check is skipped.
    """

    loss: Callable[..., Any]
    velocity: Velocity = "conditional"
    distance: Literal["radial", "other"] = "radial"
    both_directions: bool = False
    data_shape: tuple[int, ...] | None = None
    make_batch: Callable[[Tensor], Any] | None = None
    batch_size: int = 64
    time_range: tuple[float, float] | None = None
    declared: Declared | None = None

    def __post_init__(self) -> None:
        _check_range(self.time_range)
        if self.declared is not None and not isinstance(self.declared, Declared):
            raise TypeError(
                "ShippedLoss.declared must be a Declared(...) from flowmap_oracle.oracle.declared, "
                f"got {type(self.declared).__name__}"
            )
        if not callable(self.loss):
            raise TypeError("ShippedLoss.loss must be callable")
        if self.velocity not in ("conditional", "teacher"):
            raise ValueError(f"velocity must be 'conditional' or 'teacher', got {self.velocity!r}")
        if self.distance not in ("radial", "other"):
            raise ValueError(f"distance must be 'radial' or 'other', got {self.distance!r}")
        tangent = None if self.declared is None else self.declared.jvp_tangent
        if tangent == "teacher" and self.velocity != "teacher":
            raise ValueError(
                "jvp_tangent='teacher' declares the teacher's velocity as the JVP's tangent, but "
                "the loss is not handed a teacher: declare ShippedLoss(..., velocity='teacher')"
            )
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {self.batch_size}")


@dataclass(frozen=True)
class ShippedSampler:
    """A sampler as it ships: ``sample(model, noise) -> samples`` with its own hard-coded times.

    Arguments:
        sample: the sampler; ``noise`` is a ``(B, *data_shape)`` tensor of standard normal
            samples in the user's dtype (scale it inside if the sampler's convention needs it).
        data_shape: as for :class:`ShippedLoss`.
        batch_size: noise samples per run.
        time_range: as for :class:`ShippedLoss`: the check fails a sampler that calls the
            network outside it.
    """

    sample: Callable[..., Any]
    data_shape: tuple[int, ...] | None = None
    batch_size: int = 32
    time_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_range(self.time_range)
        if not callable(self.sample):
            raise TypeError("ShippedSampler.sample must be callable")


def _check_range(time_range: Any) -> None:
    if time_range is None:
        return
    ok = isinstance(time_range, tuple | list) and len(time_range) == 2
    if ok:
        lo, hi = time_range
        ok = all(isinstance(a, int | float) and not isinstance(a, bool) for a in (lo, hi))
        ok = ok and math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if not ok:
        raise ValueError(
            f"time_range must be a pair (lo, hi) of finite numbers with lo < hi, got {time_range!r}"
        )


def _outside_range(
    calls: list[CallRecord], adapter: ConventionAdapter, time_range: tuple[float, float] | None
) -> tuple[str | None, str]:
    """Whether the calls' times (``t``, and ``s`` where the network reads it) leave the declared
    range in the user's time variable: ``(problem or None, the range actually used)``."""
    o = adapter.torch_ops
    user = [adapter.time_to_user(c.t, ops=o) for c in calls]
    if adapter.n_time_args == 2:
        user += [adapter.time_to_user(c.s, ops=o) for c in calls]
    tau = torch.cat(user)
    lo, hi = float(tau.min()), float(tau.max())
    used = f"user times in [{lo:.4g}, {hi:.4g}]"
    if time_range is None:
        return None, used
    a, b = time_range
    slack = 1e-6 * max(1.0, abs(a), abs(b))
    if lo < a - slack or hi > b + slack:
        return (
            f"the network was called at user times [{lo:.4g}, {hi:.4g}], outside the declared "
            f"time_range [{a:g}, {b:g}]",
            used,
        )
    return None, used


# ----------------------------------------------------------------------------------------------
# The instrumented network


@dataclass
class CallRecord:
    """One call of the instrumented network.

    Attributes:
        t, s: the map's start and end time in our convention (``(N,)``, float64).
        x: the input points in our convention, ``(N, d)`` float64 (detached).
        finite: whether every output entry was finite.
        transformed: the call ran under ``torch.func`` transforms (e.g. ``jvp``).
        probe: a zero leaf tensor added to the call's output (outside any transform), so that a
            backward pass leaves ``d loss / d output`` in its ``grad``, also for outputs computed
            under ``torch.func.jvp``.
    """

    t: Tensor
    s: Tensor
    x: Tensor
    finite: bool
    transformed: bool
    probe: Tensor

    @property
    def output_grad(self) -> Tensor | None:
        """``d loss / d output`` per sample, ``(N, D)`` in the user's output units (``None``
        when no backward pass reached this call)."""
        return self.probe.grad


def _plain(a: Tensor) -> Tensor:
    from ..reference_models.exact_network import _plain as unwrap

    return unwrap(a)


def _under_transform(a: Tensor) -> bool:
    try:
        from torch._C._functorch import is_functorch_wrapped_tensor
    except ImportError:  # pragma: no cover - older torch
        return False
    return bool(is_functorch_wrapped_tensor(a))


class InstrumentedNetwork(torch.nn.Module):
    """The exact map plus ``sum_k theta_k phi_k`` as a network in the user's conventions.

    Arguments:
        exact: the teacher's exact average velocity ``F*``.
        adapter: the user's declared conventions.
        data_shape: the shape of one sample in the user's code.
        fields: the perturbation fields ``phi_k`` (our convention).

    Calls take ``(x, a1[, a2], *extra, **extra_kw)`` in the user's signature (one time
    argument for ``"x_t"``; the raw network's ``(c_in x, c_noise)`` under a declared
    preconditioning); ``extra`` (labels,
    guidance scales, ...) are accepted and ignored. :attr:`calls` lists the :class:`CallRecord`
    of every call since the last :meth:`reset`.
    """

    def __init__(
        self,
        exact: ExactAverageVelocity,
        adapter: ConventionAdapter,
        data_shape: tuple[int, ...],
        fields: list[Callable[[Tensor, Tensor, Tensor], Tensor]],
    ) -> None:
        super().__init__()
        self.exact = exact
        self.adapter = adapter
        self.data_shape = tuple(data_shape)
        self.fields = fields
        self.theta = torch.nn.Parameter(torch.zeros(len(fields), dtype=torch.float64))
        self.calls: list[CallRecord] = []
        self._user = adapter.network_to_user(self.ours)

    def ours(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``F_theta(x, t, s)`` in our convention (float64)."""
        out = self.exact(x, t, s)
        for k, phi in enumerate(self.fields):
            out = out + self.theta[k] * phi(x, t, s)
        return out

    def reset(self) -> None:
        self.calls = []

    def forward(self, x: Tensor, *args: Any, **extra_kw: Any) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"the network takes a torch.Tensor x, got {type(x).__name__}")
        n = x.shape[0]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"the network was called with x of shape {tuple(x.shape)}; the data are "
                f"(batch, {', '.join(map(str, self.data_shape))})"
            )
        n_times = self.adapter.n_time_args
        if len(args) < n_times:
            raise TypeError(
                f"the network takes x and {n_times} time argument(s) under signature "
                f"{self.adapter.conventions.signature.value!r}; got {len(args)}"
            )
        times = [_as_times(a, n, x) for a in args[:n_times]]
        with torch.no_grad():
            ops = self.adapter.torch_ops
            x_ours, t, s = self.adapter.inputs_to_ours(
                _plain(x).reshape(n, -1).double(), *(_plain(a).double() for a in times), ops=ops
            )
        off_path = ~(torch.isfinite(t) & torch.isfinite(s)) | (t < 0) | (t > 1) | (s < 0) | (s > 1)
        if bool(off_path.any()):
            i = int(off_path.nonzero()[0, 0])
            yours = ", ".join(f"{float(_plain(a).reshape(-1)[i]):.4g}" for a in times)
            raise _UserProblem(
                f"the loss called the network at a time off the path: the map from t = "
                f"{float(t[i]):.4g} to s = {float(s[i]):.4g} with data at 0 and noise at 1 (your "
                f"time argument(s): {yours}); a step past an end of the time range, or a division "
                "by zero there"
            )
        out = self._user(x.reshape(n, -1), *times)
        with _outside_transforms_keep_grad():
            probe = torch.zeros(tuple(out.shape), dtype=out.dtype, requires_grad=True)
        record = CallRecord(
            t=t.detach().clone(),
            s=s.detach().clone(),
            x=x_ours.clone(),
            finite=bool(torch.isfinite(_plain(out)).all()),
            transformed=_under_transform(x) or _under_transform(out),
            probe=probe,
        )
        self.calls.append(record)
        return (out + probe).reshape(x.shape)


def _as_times(a: Any, n: int, like: Tensor) -> Tensor:
    """A time argument as an ``(N,)`` tensor: scalars and ``(N, 1, ...)`` shapes are common."""
    a = torch.as_tensor(a, device=like.device) if not isinstance(a, Tensor) else a
    if a.ndim == 0:
        return a.expand(n)
    if a.shape[0] == n and a.numel() == n:
        return a.reshape(n)
    raise ValueError(
        f"a time argument of shape {tuple(a.shape)} cannot be read as one time per sample "
        f"(batch {n})"
    )


@contextlib.contextmanager
def _outside_transforms_keep_grad() -> Iterator[None]:
    """Create tensors at the outermost level, outside ``torch.func`` transforms (autograd on)."""
    try:
        from torch._functorch.pyfunctorch import temporarily_clear_interpreter_stack
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with temporarily_clear_interpreter_stack():
        yield


class _TeacherField:
    """A perturbation built from the teacher: ``F*(x, t, s) - v(x, t)`` (``"gap"``; zero on the
    diagonal, ``-(t - s) dF*/dt`` by the MeanFlow identity) or ``v(x, t)`` (``"velocity"``).

    Bugs in the ``(t - s) dF/dt`` term (its sign, its tangent, the times it uses) move the
    expected residual along such fields, which gives the statistical test its power."""

    def __init__(self, kind: str, exact: ExactAverageVelocity, teacher: GaussianMixtureTeacher):
        self.kind, self.exact, self.teacher = kind, exact, teacher

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        v = self.teacher.velocity(x, t)
        return v if self.kind == "velocity" else self.exact(x, t, s) - v


def _perturbation_fields(
    exact: ExactAverageVelocity, teacher: GaussianMixtureTeacher
) -> list[Callable[[Tensor, Tensor, Tensor], Tensor]]:
    randoms = [RandomNetwork(teacher.dim, seed=1000 + k, gain=1.0) for k in range(2)]
    return [
        _TeacherField("gap", exact, teacher),
        _TeacherField("velocity", exact, teacher),
        *randoms,
    ]


def teacher_for_shape(
    data_shape: tuple[int, ...] | None, path: str = "linear"
) -> GaussianMixtureTeacher:
    """The teacher of the as-shipped checks for data of ``data_shape`` (default ``(2,)``).

    One anisotropic Gaussian in ``d = prod(data_shape)`` dimensions: mean of norm 1.5, variances
    log-spaced from 0.01 to 1 along random (seeded) axes. Its exact flow map is in closed form
    (cheap enough to call thousands of times) and curved (the small-variance directions
    contract late), so the ``(t - s) dF/dt`` terms are far from zero. Its posterior of ``x0``
    given ``x_t`` is Gaussian, so the conditional velocity's noise is symmetric about the
    marginal velocity: a loss that weights samples by the norm of their residual (adaptive L2,
    pseudo-Huber, normalised tangents) keeps the exact map as its expected fixed point here,
    unlike on a multi-modal teacher (MATH.md section 4).
    """
    from ..conventions import path_named

    d = 2 if data_shape is None else math.prod(data_shape)
    gen = torch.Generator().manual_seed(7 + d)
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    mean = 1.5 * mean / mean.norm()
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    variances = torch.logspace(-2, 0, d, dtype=torch.float64) if d > 1 else torch.ones(1).double()
    cov = (q * variances) @ q.T
    mixture = GaussianMixture(
        weights=torch.ones(1, dtype=torch.float64),
        means=mean[None],
        covariances=(0.5 * (cov + cov.T))[None],
    )
    return GaussianMixtureTeacher(mixture, path_named(path))


# ----------------------------------------------------------------------------------------------
# Running a loss


def _scalar(value: Any, name: str) -> Tensor:
    if isinstance(value, tuple | list) and value:
        value = value[0]
    elif isinstance(value, Mapping) and "loss" in value:
        value = value["loss"]
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise TypeError(
            f"{name} must return a scalar torch.Tensor (or a tuple/dict holding one), got "
            f"{type(value).__name__}{'' if not isinstance(value, Tensor) else tuple(value.shape)}"
        )
    return value.reshape(())


@dataclass
class _Harness:
    conventions: Conventions
    teacher: GaussianMixtureTeacher
    net: InstrumentedNetwork
    data_shape: tuple[int, ...]
    user_dtype: torch.dtype
    generator: torch.Generator = field(
        default_factory=lambda: torch.Generator().manual_seed(DATA_SEED)
    )
    last_data: Tensor | None = None

    @classmethod
    def build(cls, conventions: Conventions, data_shape: tuple[int, ...] | None) -> _Harness:
        adapter = ConventionAdapter(conventions)
        teacher = teacher_for_shape(data_shape, conventions.path)
        shape = (teacher.dim,) if data_shape is None else tuple(data_shape)
        exact = ExactAverageVelocity(ExactFlowMap(teacher))
        net = InstrumentedNetwork(exact, adapter, shape, _perturbation_fields(exact, teacher))
        return cls(conventions, teacher, net, shape, adapter.user_dtype)

    def data(self, n: int) -> Tensor:
        """``n`` teacher samples in the user's units (times ``sigma_data``), shape and dtype."""
        x = self.teacher.mixture.sample(n, generator=self.generator) * self.net.adapter.data_unit
        return x.reshape(n, *self.data_shape).to(self.user_dtype)

    def teacher_velocity(self) -> Callable[[Tensor, Tensor], Tensor]:
        adapter = self.net.adapter
        field_u = adapter.velocity_field_to_user(self.teacher.velocity)
        shape, dtype = self.data_shape, self.user_dtype

        def teacher(x: Tensor, tau: Any) -> Tensor:
            n = x.shape[0]
            tau_t = _as_times(tau, n, x).double()
            v = field_u(x.reshape(n, -1).double(), tau_t)
            return v.to(dtype).reshape(n, *shape)

        return teacher

    def gradient(
        self, shipped: ShippedLoss, theta: Tensor, *, batch_size: int | None = None
    ) -> tuple[Tensor, float]:
        """The loss's gradient in ``theta`` at ``theta`` (one call, fresh draws) and its value.

        The data of the call are kept in :attr:`last_data` (for matching network calls to rows).
        """
        net = self.net
        with torch.no_grad():
            net.theta.copy_(theta)
        net.zero_grad(set_to_none=True)
        data = self.data(batch_size or shipped.batch_size)
        self.last_data = data
        batch = data if shipped.make_batch is None else shipped.make_batch(data)
        args: tuple[Any, ...] = (net, batch)
        if shipped.velocity == "teacher":
            args += (self.teacher_velocity(),)
        value = _scalar(shipped.loss(*args), "the loss")
        if not torch.isfinite(value):
            raise _UserProblem(f"the loss returned {float(value)} at the exact map")
        if not value.requires_grad:
            raise _UserProblem(
                "the loss does not depend on the network's parameters (no gradient reaches "
                "them): is the model's output detached or computed under torch.no_grad()?"
            )
        value.backward()
        grad = net.theta.grad
        g = torch.zeros_like(net.theta) if grad is None else grad.detach().clone()
        return g, float(value.detach())


class _UserProblem(Exception):
    """The user's loss or sampler did something the checks cannot work with (a failure)."""


# ----------------------------------------------------------------------------------------------
# Checks


NO_GRADIENT = "no gradient of the loss reached the network's outputs"
"""The failure of a loss whose gradient reaches none of the network's outputs (every check that
reads the gradient at the outputs says it in these words)."""


def _gradient_at_control(harness: Any, shipped: ShippedLoss) -> str | None:
    """Run the loss once at the perturbed map (``theta_k = CONTROL``), recording its calls and
    the gradient at each output; the user's problem as one message, or ``None``."""
    harness.net.reset()
    try:
        harness.gradient(shipped, torch.full((N_FIELDS,), CONTROL, dtype=torch.float64))
    except _UserProblem as err:
        return str(err)
    return None


def _result(
    check: str, method: str, status: Status, message: str, start: float, **kw: Any
) -> CheckResult:
    return CheckResult(
        check, method, status, _headline(message), seconds=time.perf_counter() - start, **kw
    )


def _headline(message: str, width: int = 100) -> str:
    """A short first line with the key fact, the detail on an indented second line (consoles
    and the pytest plugin show the first line; the JSON keeps both)."""
    if len(message) <= width or "\n" in message:
        return message
    cuts = [message.find(sep, 30) for sep in ("; ", " (", ": ")]
    cuts = [c for c in cuts if 0 < c <= width]
    if not cuts:
        return message
    cut = min(cuts)
    head, rest = message[:cut], message[cut:].lstrip(";: ")
    return f"{head}\n  {rest}"


def check_times(method: str, shipped: ShippedLoss, harness: _Harness) -> CheckResult:
    """``<method>.shipped.times``: direction, range and finiteness of every network call."""
    name, start = f"{method}.shipped.times", time.perf_counter()
    harness.net.reset()
    try:
        harness.gradient(shipped, torch.zeros(N_FIELDS, dtype=torch.float64))
    except _UserProblem as err:
        return _result(name, method, "fail", str(err), start)
    calls = harness.net.calls
    if not calls:
        return _result(name, method, "fail", "the loss never called the network", start)
    t = torch.cat([c.t for c in calls])
    s = torch.cat([c.s for c in calls])
    problems = []
    if not (torch.isfinite(t).all() and torch.isfinite(s).all()):
        problems.append(
            "the network was called at non-finite times (a division by zero "
            "at an end of the time range?)"
        )
    elif (t < -1e-9).any() or (t > 1 + 1e-9).any() or (s < -1e-9).any() or (s > 1 + 1e-9).any():
        lo = float(torch.minimum(t.min(), s.min()))
        hi = float(torch.maximum(t.max(), s.max()))
        problems.append(
            f"the network was called at times outside the path: [{lo:.4g}, {hi:.4g}] "
            "in our convention (data at 0, noise at 1)"
        )
    backward = s > t + 1e-9
    if backward.any() and not shipped.both_directions:
        frac = float(backward.double().mean())
        problems.append(
            f"{frac:.0%} of the network's calls map from t to a later time s > t (towards the "
            "noise): the pairs are drawn in the wrong direction, or the network's time "
            "arguments are swapped (declare both_directions=True if the loss trains both)"
        )
    if not all(c.finite for c in calls):
        problems.append("the network returned non-finite values at the times the loss chose")
    outside, used = _outside_range(calls, harness.net.adapter, shipped.time_range)
    if outside:
        problems.append(outside)
    diag = float((s == t).double().mean())
    summary = (
        f"{len(calls)} network calls, {t.numel()} evaluations; t in [{float(t.min()):.3g}, "
        f"{float(t.max()):.3g}] (ours), {used}, {diag:.0%} on the diagonal s = t"
    )
    if problems:
        return _result(name, method, "fail", "; ".join(problems) + f" ({summary})", start)
    return _result(name, method, "pass", summary, start)


def check_stationarity(
    method: str, shipped: ShippedLoss, harness: _Harness, *, repeats: int = 32
) -> CheckResult:
    """``<method>.shipped.stationarity``: the exact map is a stationary minimum of the loss."""
    name, start = f"{method}.shipped.stationarity", time.perf_counter()
    zero = torch.zeros(N_FIELDS, dtype=torch.float64)
    control = torch.full((N_FIELDS,), CONTROL, dtype=torch.float64)
    tol = 1e-3 if harness.user_dtype == torch.float32 else 1e-5
    try:
        if shipped.velocity == "teacher":
            g0, l0 = harness.gradient(shipped, zero)
            gc, lc = harness.gradient(shipped, control)
            scale = float(gc.norm())
            if scale == 0.0:
                return _result(
                    name,
                    method,
                    "fail",
                    "the loss's gradient does not depend on "
                    "the network's output at the perturbed map",
                    start,
                )
            ratio = float(g0.norm()) / scale
            if ratio > tol and method in BIASED_METHODS:
                return _result(
                    name,
                    method,
                    "skip",
                    f"at the exact map the loss's gradient is {ratio:.2e} of its size at a "
                    f"perturbed map: {BIASED_METHODS[method]['teacher']} (a property of the "
                    "method, reported, not judged)",
                    start,
                    skip_reason=SkipReason.NOT_APPLICABLE,
                )
            if ratio > tol:
                return _result(
                    name,
                    method,
                    "fail",
                    f"at the exact map the loss's gradient is {ratio:.2e} of its size at a "
                    f"perturbed map (allowed {tol:g}): the exact flow map is not a fixed point "
                    "of this loss (a sign, tangent, time or target error)",
                    start,
                )
            return _result(
                name,
                method,
                "pass",
                f"gradient at the exact map {ratio:.1e} of the perturbed map's (teacher "
                f"velocity, pointwise); loss {l0:.3g} at the exact map, {lc:.3g} perturbed",
                start,
            )
        n = max(shipped.batch_size, 256)
        g0s = torch.stack(
            [harness.gradient(shipped, zero, batch_size=n)[0] for _ in range(repeats)]
        )
        gcs = torch.stack(
            [harness.gradient(shipped, control, batch_size=n)[0] for _ in range(repeats)]
        )
        _CONTROL_DRAWS[id(harness)] = (id(shipped), gcs)  # the descent check reuses them
    except _UserProblem as err:
        return _result(name, method, "fail", str(err), start)
    z0, zc = _z(g0s), _z(gcs)
    worst, power = float(z0.abs().max()), float(zc.abs().max())
    detail = (
        f"max |t| of the mean gradient over {repeats} draws: {worst:.2f} at the exact map, "
        f"{power:.2f} at a perturbed map (bound {_t_bound(repeats):.2f}, false-alarm rate "
        f"{FALSE_ALARM:g})"
    )
    bias = float(g0s.mean(0).norm() / gcs.mean(0).norm().clamp_min(1e-300))
    bound = _t_bound(repeats)
    if power <= bound:
        return _result(
            name,
            method,
            "skip",
            f"too noisy to test at batch {n}: a perturbed map is not distinguishable either "
            f"({detail})",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    if worst > bound and method in BIASED_METHODS:
        return _result(
            name,
            method,
            "skip",
            f"{BIASED_METHODS[method]['conditional']}: a property of the method, reported, not "
            f"judged; mean gradient at the exact map {bias:.2e} of the perturbed map's ({detail})",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    if worst > bound and shipped.distance == "other":
        return _result(
            name,
            method,
            "skip",
            "a distance that is not radial in the residual, with the conditional velocity, can "
            "move the expected fixed point away from the exact map (MATH.md section 4): a "
            f"property of the method, not a defect; mean gradient at the exact map {bias:.2e} "
            f"of the perturbed map's ({detail})",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    if worst > bound:
        return _result(
            name,
            method,
            "fail",
            f"at the exact map the loss's expected gradient is not zero (|t| = {worst:.1f} > "
            f"{bound:.1f}): the exact flow map is not a fixed point of this loss (declare "
            f"distance='other' if it compares samples by a cosine or per component); {detail}",
            start,
        )
    return _result(name, method, "pass", detail, start)


_CONTROL_DRAWS: dict[int, tuple[int, Tensor]] = {}
"""The stationarity check's gradient draws at the perturbed map, by harness (and loss), for
:func:`check_descent`; :func:`run_shipped_checks` empties it."""


def check_descent(
    method: str, shipped: ShippedLoss, harness: _Harness, *, repeats: int = 32
) -> CheckResult:
    """``<method>.shipped.descent``: at a perturbed map ``theta_c`` (every ``theta_k = CONTROL``)
    a small step against the loss's expected gradient ``g`` moves the network towards the exact
    map (``theta = 0``): ``g . theta_c > 0``.

    Stationarity says the exact map is a fixed point; this says it attracts. A sign error that
    keeps the fixed point (a loss maximised instead of minimised) fails here only; AYF's
    ``sign(t - s)`` dropped on pairs with ``s > t`` also fails its alignment check. The statistic is ``d_i = g_i . theta_c``
    over ``repeats`` draws of the loss (each from the user's own random state), judged by a
    one-sided Student t-test: it fails only when the mean of ``d`` is significantly *negative*
    (false-alarm rate :data:`FALSE_ALARM`), passes when it is significantly positive, and is
    reported as not distinguishable otherwise. A loss with a stop-gradient is not the gradient
    of an objective, so descent is not guaranteed by calculus for every direction; along the
    oracle's fields it was measured on every example implementation (see the tests).
    """
    name, start = f"{method}.shipped.descent", time.perf_counter()
    control = torch.full((N_FIELDS,), CONTROL, dtype=torch.float64)
    cached = _CONTROL_DRAWS.get(id(harness))
    try:
        if cached is not None and cached[0] == id(shipped):
            draws = cached[1]
        else:
            n = max(shipped.batch_size, 256) if shipped.velocity == "conditional" else None
            k = repeats if shipped.velocity == "conditional" else max(8, repeats // 2)
            draws = torch.stack(
                [harness.gradient(shipped, control, batch_size=n)[0] for _ in range(k)]
            )
    except _UserProblem as err:
        return _result(name, method, "fail", str(err), start)
    d = draws @ control
    k = d.shape[0]
    mean, se = float(d.mean()), float(d.std() / math.sqrt(k))
    from scipy.stats import t as student_t

    bound = float(student_t.ppf(1 - FALSE_ALARM, k - 1))
    t_stat = math.copysign(math.inf, mean) if se == 0.0 else mean / se
    detail = (
        f"g . theta_c = {mean:.3g} (t = {t_stat:.2f} over {k} draws, one-sided bound "
        f"{bound:.2f}, false-alarm rate {FALSE_ALARM:g})"
    )
    if t_stat < -bound:
        return _result(
            name,
            method,
            "fail",
            "a step of the loss from a perturbed map moves away from the exact map: the exact "
            "map repels (a sign error that keeps the fixed point, e.g. a dropped sign(t - s) on "
            f"one side of the diagonal, or the loss maximised); {detail}",
            start,
        )
    if t_stat > bound:
        return _result(
            name, method, "pass", f"a step of the loss moves towards the exact map; {detail}", start
        )
    return _result(
        name,
        method,
        "skip",
        f"the direction of a step is not distinguishable at this batch; {detail}",
        start,
        skip_reason=SkipReason.NOT_APPLICABLE,
    )


BIASED_METHODS: dict[str, dict[str, str]] = {
    "consistency": {
        "conditional": "discrete consistency training with the conditional velocity has a bias "
        "of order (t - r)^2 at the exact map (its target point x_r shares the noise, not the ODE "
        "trajectory, of x_t)",
        "teacher": "a consistency-distillation target is exact only with an exact ODE step; the "
        "teacher step's discretisation error moves the fixed point",
    },
    "ctm": {
        "conditional": "CTM trained from data (the solver's denoiser the data itself) shares the "
        "noise, not the ODE trajectory, of x_t, as discrete consistency training does",
        "teacher": "a CTM target is exact only with an exact teacher solve; the solver's "
        "discretisation error moves the fixed point (ctm.shipped.alignment checks the target "
        "against the teacher's exact trajectory)",
    },
    "imm": {
        "conditional": "inductive moment matching's MMD estimator (the biased V-statistic with "
        "small groups) has a nonzero expected gradient at the exact map",
        "teacher": "inductive moment matching's MMD estimator (the biased V-statistic with small "
        "groups) has a nonzero expected gradient at the exact map",
    },
}
"""Methods whose exact map is not an exact stationary point of the loss as the method defines
it: their stationarity is reported when it does not hold, never failed."""

ALIGNED_METHODS = ("flow_matching", "meanflow")
"""Methods whose trained output has a residual defined at its own inputs,
``R = F(x, t, s) - [v - (t - s) dF/dt]`` with ``dF/dt`` along ``(v, 1, 0)`` (flow matching is
its diagonal ``s = t``): the alignment check applies to them."""


def _data_in_ours(harness: Any) -> Tensor:
    """The harness's :attr:`last_data` in our units (divided by ``sigma_data``), ``(B, d)``
    float64 torch (any harness with ``last_data`` and ``conventions``)."""
    data = harness.last_data
    assert data is not None
    if not isinstance(data, Tensor):
        import numpy as np

        data = torch.from_numpy(np.asarray(data, dtype=np.float64).copy())
    return data.reshape(data.shape[0], -1).double() / harness.conventions.sigma_data


def _matched_velocity(
    harness: _Harness, shipped: ShippedLoss, call: CallRecord
) -> tuple[Tensor, Tensor] | str:
    """The velocity ``v`` each row of ``call`` regressed onto, and the rows where it is known.

    Teacher velocity: ``v(x, t)`` at every row. Conditional velocity: the call's rows are matched
    to the data rows (row ``j`` to ``j mod B``), the noise recovered from
    ``x = alpha(t) x0 + beta(t) eps``, and ``v = alpha'(t) x0 + beta'(t) eps``; rows with
    ``beta(t) < 0.02`` are left out. Returns a reason instead when the rows cannot be matched.
    """
    x, t = call.x, call.t
    if shipped.velocity == "teacher":
        return harness.teacher.velocity(x, t), torch.ones_like(t, dtype=torch.bool)
    data = _data_in_ours(harness)
    n, b = x.shape[0], data.shape[0]
    if n % b:
        return (
            f"the network was called on {n} rows for a batch of {b}: the rows cannot be matched "
            "to the data the loss was given"
        )
    x0 = data.repeat(n // b, 1)
    c = harness.teacher.path.schedule(t)
    rows = c.beta >= 0.02
    eps = (x - c.alpha[:, None] * x0) / c.beta.clamp_min(0.02)[:, None]
    m2 = float(eps[rows].pow(2).mean()) if rows.any() else float("nan")
    if not 0.5 < m2 < 2.0:
        return (
            "the points the loss built are not x_t = alpha(t) x0 + beta(t) eps with standard "
            f"normal eps for the data it was given (mean eps^2 = {m2:.3g}): a different path, "
            "data or noise scaled by an undeclared sigma_data, or shuffled rows"
        )
    return c.alpha_dot[:, None] * x0 + c.beta_dot[:, None] * eps, rows


def check_alignment(method: str, shipped: ShippedLoss, harness: _Harness) -> CheckResult:
    """``<method>.shipped.alignment``: the gradient the loss sends to each network output points
    along the reference residual at the same inputs, with a non-negative weight per sample.

    Evaluated at a perturbed map (``theta_k = CONTROL``), where residuals are of order
    ``CONTROL`` also with the teacher's velocity. Holds for every weighting, distance of the
    residual's norm (L2, pseudo-Huber, adaptive), reduction and time distribution; reports the
    implied weights.
    """
    name, start = f"{method}.shipped.alignment", time.perf_counter()
    net = harness.net
    problem = _gradient_at_control(harness, shipped)
    if problem is not None:
        return _result(name, method, "fail", problem, start)
    trained = [
        c for c in net.calls if c.output_grad is not None and bool(c.output_grad.abs().max() > 0)
    ]
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    tol = 1e-3 if harness.user_dtype == torch.float32 else 1e-6
    measured = _aligned_rows(harness, shipped, trained, None)
    if isinstance(measured, str):
        return _result(name, method, "skip", measured, start, skip_reason=SkipReason.NOT_APPLICABLE)
    worst, n_rows, weights, times = measured
    note = ""
    undeclared = shipped.declared is None or shipped.declared.jvp_tangent is None
    if worst < 1 - tol and method == "meanflow" and undeclared:
        # improved / two-head MeanFlow take the JVP along the model's own velocity F(x, t, t)
        # (detached) and still regress onto v: a correct method whose residual differs from
        # the one along v off the exact map. Judge it along that tangent before failing.
        other = _aligned_rows(harness, shipped, trained, "model")
        if not isinstance(other, str) and other[0] >= 1 - tol and other[1] > 0:
            worst, n_rows, weights, times = other
            note = (
                "; the loss takes its JVP along the model's own velocity F(x, t, t), not along "
                "v (improved MeanFlow): judged along that tangent (declare "
                "jvp_tangent='model' to say so)"
            )
    if n_rows == 0:
        return _result(
            name,
            method,
            "skip",
            "no row had both a gradient and a residual to compare",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    w_all = torch.cat(weights)
    w_rel = w_all / w_all.abs().median().clamp_min(1e-300)
    ts = torch.cat(times)
    implied = ImpliedWeights.from_tensors(ts[:, 0], ts[:, 1], w_all)
    detail = (
        f"{n_rows} rows of {len(trained)} trained call(s); implied weight (relative to its "
        f"median) in [{float(w_rel.min()):.3g}, {float(w_rel.max()):.3g}]{note}"
    )
    return _alignment_verdict(
        name,
        method,
        worst,
        tol,
        lambda angle: (
            f"the loss's gradient at a network output is not along the reference residual "
            f"F - [v - (t - s) dF/dt] (worst angle {angle:.1f} degrees): its target differs from "
            f"the {method} target (a sign, tangent, time or velocity error); {detail}"
        ),
        detail,
        start,
        implied,
    )


def _aligned_rows(
    harness: _Harness,
    shipped: ShippedLoss,
    trained: list[CallRecord],
    tangent: Literal["model"] | None,
) -> tuple[float, int, list[Tensor], list[Tensor]] | str:
    """The alignment of each trained row's output gradient with the reference residual
    ``F - [v - (t - s) dF/dt]``, ``dF/dt`` along ``(u, 1, 0)`` with ``u`` the declared JVP tangent
    (``tangent=None``; the regressed velocity ``v`` when nothing is declared) or the model's own
    velocity ``F(x, t, t)`` (``tangent="model"``).

    Returns ``(worst cosine, rows compared, implied weights per call, (t, s) per call)``, or the
    reason the rows cannot be matched to the data.
    """
    from .shipped_value import declared_tangent  # lazy: it imports this module

    net, adapter = harness.net, harness.net.adapter
    worst, n_rows, weights, times = 1.0, 0, [], []
    for call in trained:
        matched = _matched_velocity(harness, shipped, call)
        if isinstance(matched, str):
            return matched
        v, rows = matched
        x, t, s_ = call.x, call.t, call.s
        if tangent == "model":
            with torch.no_grad():
                u = net.ours(x, t, t)
        else:
            u, rows = declared_tangent(harness, shipped, call, v, rows)
        with torch.no_grad():
            F, dF = cast(
                tuple[Tensor, Tensor],
                torch.func.jvp(net.ours, (x, t, s_), (u, torch.ones_like(t), torch.zeros_like(s_))),
            )
        R = F - v + (t - s_)[:, None] * dF
        o = adapter.torch_ops
        k = adapter.output_gain(t, s_, ops=o)  # the raw output's, under preconditioning
        w = adapter.residual_factor(t, s_, "time_derivative", ops=o)
        R_user = R / (w * k)[:, None]
        assert call.output_grad is not None
        G = call.output_grad.reshape(R.shape[0], -1).double()
        g_norm, r_norm = G.norm(dim=1), R_user.norm(dim=1)
        use = rows & (g_norm > 1e-12 * float(g_norm.max())) & (r_norm > 1e-8)
        if not use.any():
            continue
        cos = (G * R_user).sum(1)[use] / (g_norm[use] * r_norm[use])
        worst = min(worst, float(cos.min()))
        n_rows += int(use.sum())
        weights.append(((G * R_user).sum(1) / r_norm.pow(2))[use])
        times.append(torch.stack([t[use], s_[use]], 1))
    return worst, n_rows, weights, times


def _alignment_verdict(
    name: str,
    method: str,
    worst: float,
    tol: float,
    failure: Callable[[float], str],
    detail: str,
    start: float,
    implied: ImpliedWeights,
) -> CheckResult:
    """The alignment checks' verdict: fail when the worst cosine between the loss's gradient and
    the reference direction is below ``1 - tol`` (``failure(angle in degrees)`` says why), else
    pass; both carry the implied weights."""
    if worst < 1 - tol:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, worst))))
        return _result(name, method, "fail", failure(angle), start, weights=implied)
    return _result(
        name, method, "pass", f"worst cosine {worst:.8f}; {detail}", start, weights=implied
    )


def _recovered_noise(harness: Any, call: CallRecord) -> tuple[Tensor, Tensor] | str:
    """The standard normal noise ``eps`` of each row of ``call`` (``x = alpha x0 + beta eps``
    with the data row ``j mod B``), and the rows where it is known (``beta >= 0.02``)."""
    data = _data_in_ours(harness)
    n, b = call.x.shape[0], data.shape[0]
    if n % b:
        return (
            f"the network was called on {n} rows for a batch of {b}: the rows cannot be matched "
            "to the data the loss was given"
        )
    x0 = data.repeat(n // b, 1)
    c = harness.teacher.path.schedule(call.t)
    rows = c.beta >= 0.02
    return (call.x - c.alpha[:, None] * x0) / c.beta.clamp_min(0.02)[:, None], rows


def _consistency_function(net: InstrumentedNetwork, x: Tensor, t: Tensor) -> Tensor:
    """``f(x, t) = x - t F(x, t, 0)`` in our convention at the network's current ``theta``, as
    the user's code composes it: through the user's network and its declared preconditioning
    (where ``c_out = 0``, at consistency models' ``sigma_min``, ``f`` is the point itself)."""
    F = net.adapter.network_to_ours(net._user)
    with torch.no_grad():
        return x - t[:, None] * F(x, t, torch.zeros_like(t)).double()


def _trained(calls: list[CallRecord]) -> list[CallRecord]:
    return [c for c in calls if c.output_grad is not None and bool(c.output_grad.abs().max() > 0)]


def _weights_summary(weights: Tensor, gaps: Tensor) -> str:
    """The implied weights relative to their median, and their log-log slope against the gap
    ``t - r`` (``-1`` for ``1 / (sigma_t - sigma_r)`` in a linear time)."""
    rel = weights / weights.abs().median().clamp_min(1e-300)
    text = f"implied weight (relative to its median) in [{float(rel.min()):.3g}, {float(rel.max()):.3g}]"
    ok = (weights > 0) & (gaps > 0)
    if int(ok.sum()) >= 3 and float(gaps[ok].log().std()) > 1e-6:
        lx, ly = gaps[ok].log(), weights[ok].log()
        slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / (lx - lx.mean()).pow(2).sum())
        text += f", ~ (t - r)^{slope:.2f} in our time"
    return text


def check_consistency_alignment(
    method: str, shipped: ShippedLoss, harness: _Harness
) -> CheckResult:
    """``consistency.shipped.alignment``: a discrete consistency loss (CT/CD) calls the network
    twice per row, online at ``(x_t, t)`` and as the target at ``(x_r, r)``, ``r < t``. At a
    perturbed map the gradient at each online output must point along ``-t k (f_online -
    f_target)`` (``f(x, t) = x - t F(x, t, 0)``, ``k`` the adapter's output gain) with a
    non-negative factor per row; the target call must receive no gradient; with the conditional
    velocity both points must carry the same noise. Reports the implied weights."""
    name, start = f"{method}.shipped.alignment", time.perf_counter()
    net = harness.net
    problem = _gradient_at_control(harness, shipped)
    if problem is not None:
        return _result(name, method, "fail", problem, start)
    calls = [c for c in net.calls if float(c.s.abs().max()) <= 1e-9]
    trained = _trained(calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    shapes = {tuple(c.x.shape) for c in trained}
    if any(sum(tuple(c.x.shape) == sh for c in trained) > 1 for sh in shapes):
        return _result(
            name,
            method,
            "fail",
            "the target is not detached: two calls of the same batch both receive the loss's "
            "gradient (compute the target under torch.no_grad() or .detach() it)",
            start,
        )
    tol = 1e-3 if harness.user_dtype == torch.float32 else 1e-6
    o = net.adapter.torch_ops
    worst, n_rows, weights, gaps, pairs = 1.0, 0, [], [], []
    for online in trained:
        targets = [c for c in calls if c is not online and c.x.shape == online.x.shape]
        if len(targets) != 1:
            return _result(
                name,
                method,
                "skip",
                f"{len(targets)} untrained calls of the online call's batch: the target call "
                "cannot be told apart (a discrete consistency loss makes exactly one)",
                start,
                skip_reason=SkipReason.NOT_APPLICABLE,
            )
        target = targets[0]
        t, r = online.t, target.t
        later = r > t + 1e-9
        if later.any():
            return _result(
                name,
                method,
                "fail",
                f"the target is evaluated at a later time than the online call in "
                f"{float(later.double().mean()):.0%} of the rows (r > t, towards the noise): "
                "the pair is drawn in the wrong order",
                start,
            )
        if shipped.velocity == "conditional":
            e_on, e_tg = _recovered_noise(harness, online), _recovered_noise(harness, target)
            if isinstance(e_on, str) or isinstance(e_tg, str):
                reason = e_on if isinstance(e_on, str) else cast(str, e_tg)
                return _result(
                    name, method, "skip", reason, start, skip_reason=SkipReason.NOT_APPLICABLE
                )
            both = e_on[1] & e_tg[1]
            if both.any():
                gap = float((e_on[0] - e_tg[0])[both].abs().max())
                if gap > 100 * tol:
                    return _result(
                        name,
                        method,
                        "fail",
                        "the target's point x_r is not built from the online point's noise "
                        f"(the noise recovered from the two calls differs by up to {gap:.3g}): "
                        "the target uses a fresh draw or another data row",
                        start,
                    )
        f_on = _consistency_function(net, online.x, t)
        f_tg = _consistency_function(net, target.x, r)
        gain = net.adapter.output_gain(t, torch.zeros_like(t), ops=o)
        R = (-t * gain)[:, None] * (f_on - f_tg)
        assert online.output_grad is not None
        G = online.output_grad.reshape(R.shape[0], -1).double()
        g_norm, r_norm = G.norm(dim=1), R.norm(dim=1)
        use = (g_norm > 1e-12 * float(g_norm.max())) & (r_norm > 1e-10) & (t > r)
        if not use.any():
            continue
        cos_ = (G * R).sum(1)[use] / (g_norm[use] * r_norm[use])
        worst = min(worst, float(cos_.min()))
        n_rows += int(use.sum())
        weights.append(((G * R).sum(1) / r_norm.pow(2))[use])
        gaps.append((t - r)[use])
        pairs.append(torch.stack([t[use], r[use]], 1))
    if n_rows == 0:
        return _result(
            name,
            method,
            "skip",
            "no row had both a gradient and a difference f_online - f_target to compare",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    detail = f"{n_rows} rows; {_weights_summary(torch.cat(weights), torch.cat(gaps))}"
    tr = torch.cat(pairs)
    implied = ImpliedWeights.from_tensors(tr[:, 0], tr[:, 1], torch.cat(weights))
    return _alignment_verdict(
        name,
        method,
        worst,
        tol,
        lambda angle: (
            "the loss's gradient at the online output is not along f_online - f_target (worst "
            f"angle {angle:.1f} degrees): it does not compare the two calls' consistency "
            f"functions by a distance of their difference; {detail}"
        ),
        detail,
        start,
        implied,
    )


def check_scm_alignment(method: str, shipped: ShippedLoss, harness: _Harness) -> CheckResult:
    """``scm.shipped.alignment``: the continuous-time consistency loss's gradient at each
    trained output points along ``-t k df/dt``, the tangent of the consistency function
    ``f(x, t) = x - t F(x, t, 0)`` along the velocity (total derivative, ``t`` increasing in
    our time) at the same inputs, with a non-negative factor per row: every positive weight
    ``w(t)`` and tangent normalisation ``g / (||g|| + c)`` keeps it. The explicit-input
    reference is :func:`~flowmap_oracle.objectives.continuous_consistency.consistency_tangent`."""
    from ..objectives.continuous_consistency import consistency_tangent

    name, start = f"{method}.shipped.alignment", time.perf_counter()
    net = harness.net
    problem = _gradient_at_control(harness, shipped)
    if problem is not None:
        return _result(name, method, "fail", problem, start)
    trained = _trained(net.calls)
    if not trained:
        return _result(name, method, "fail", NO_GRADIENT, start)
    tol = 1e-3 if harness.user_dtype == torch.float32 else 1e-6
    o = net.adapter.torch_ops
    worst, n_rows, weights, times = 1.0, 0, [], []
    for call in trained:
        if float(call.s.abs().max()) > 1e-9:
            return _result(
                name,
                method,
                "fail",
                "the loss trains a network output that is not the consistency function (a map "
                f"to s = {float(call.s.max()):.3g}, not to the data)",
                start,
            )
        matched = _matched_velocity(harness, shipped, call)
        if isinstance(matched, str):
            return _result(
                name, method, "skip", matched, start, skip_reason=SkipReason.NOT_APPLICABLE
            )
        v, rows = matched
        x, t = call.x, call.t
        with torch.no_grad():
            _, df = consistency_tangent(net.ours, x, t, v)
        gain = net.adapter.output_gain(t, torch.zeros_like(t), ops=o)
        R = (-t * gain)[:, None] * df
        assert call.output_grad is not None
        G = call.output_grad.reshape(R.shape[0], -1).double()
        g_norm, r_norm = G.norm(dim=1), R.norm(dim=1)
        use = rows & (g_norm > 1e-12 * float(g_norm.max())) & (r_norm > 1e-10)
        if not use.any():
            continue
        cos_ = (G * R).sum(1)[use] / (g_norm[use] * r_norm[use])
        worst = min(worst, float(cos_.min()))
        n_rows += int(use.sum())
        weights.append(((G * R).sum(1) / r_norm.pow(2))[use])
        times.append(t[use])
    if n_rows == 0:
        return _result(
            name,
            method,
            "skip",
            "no row had both a gradient and a tangent to compare",
            start,
            skip_reason=SkipReason.NOT_APPLICABLE,
        )
    w_all = torch.cat(weights)
    rel = w_all / w_all.abs().median().clamp_min(1e-300)
    t_all = torch.cat(times)
    implied = ImpliedWeights.from_tensors(t_all, torch.zeros_like(t_all), w_all)
    detail = (
        f"{n_rows} rows of {len(trained)} trained call(s); implied weight (relative to its "
        f"median) in [{float(rel.min()):.3g}, {float(rel.max()):.3g}]"
    )
    return _alignment_verdict(
        name,
        method,
        worst,
        tol,
        lambda angle: (
            "the loss's gradient at the consistency function's output is not along its "
            f"tangent df/dt towards the noise (worst angle {angle:.1f} degrees): a sign, "
            f"tangent or velocity error in the sCM target; {detail}"
        ),
        detail,
        start,
        implied,
    )


def _t_bound(repeats: int) -> float:
    """The two-sided bound on each of the ``N_FIELDS`` t-statistics of the mean gradient over
    ``repeats`` draws: Student's t with ``repeats - 1`` degrees of freedom at family-wise level
    :data:`FALSE_ALARM` (Bonferroni over the fields)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(1 - FALSE_ALARM / (2 * N_FIELDS), repeats - 1))


def _z(g: Tensor) -> Tensor:
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    return mean / se.clamp_min(1e-300)


def check_sampler(name: str, sampler: ShippedSampler, conventions: Conventions) -> CheckResult:
    """``sampler.<name>.exact_map``: the sampler lands on the exact map on the exact model."""
    check, start = f"sampler.{name}.exact_map", time.perf_counter()
    harness = _Harness.build(conventions, sampler.data_shape)
    net = harness.net
    n = sampler.batch_size
    gen = torch.Generator().manual_seed(11)
    noise = torch.randn(n, *harness.data_shape, generator=gen, dtype=torch.float64)
    noise = noise.to(harness.user_dtype)
    with torch.no_grad():
        net.theta.zero_()
    net.reset()
    try:
        with torch.no_grad():
            out = sampler.sample(net, noise)
    except Exception as err:  # the user's sampler raised
        return _result(
            check, "sampler", "fail", f"the sampler raised {type(err).__name__}: {err}", start
        )
    if not net.calls:
        return _result(check, "sampler", "fail", "the sampler never called the network", start)
    if not isinstance(out, Tensor) or out.shape != noise.shape:
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler returned "
            f"{getattr(out, 'shape', type(out).__name__)}; expected {tuple(noise.shape)}",
            start,
        )
    calls = list(net.calls)
    shown = shown_calls(calls, net.adapter)
    wrong = sampler_call_problem(check, calls, net.adapter, sampler.time_range, shown, start)
    if wrong is not None:
        return wrong
    got, end = sampler_samples(out.reshape(n, -1).double(), calls, net.adapter, sampler.time_range)
    tol = sampler_tolerance(harness.user_dtype, calls, harness.teacher)
    hint = _end_hint(calls, net.adapter)
    if velocity_only(calls):
        return sampler_landing(
            check, calls, got, harness.teacher, tol, shown, start, end=end, hint=hint
        )
    try:
        with torch.no_grad():
            again = sampler.sample(net, noise)
    except Exception as err:  # the user's sampler raised on a second run
        return _result(
            check, "sampler", "fail", f"the sampler raised {type(err).__name__}: {err}", start
        )
    if isinstance(again, Tensor) and not torch.equal(again, out):
        # Fresh noise inside: judged on a larger run (the recovered noise's test needs it).
        big = torch.randn(
            max(n, STOCHASTIC_BATCH), *harness.data_shape, generator=gen, dtype=torch.float64
        ).to(harness.user_dtype)
        net.reset()
        try:
            with torch.no_grad():
                out_big = sampler.sample(net, big)
        except Exception as err:  # the user's sampler raised
            return _result(
                check, "sampler", "fail", f"the sampler raised {type(err).__name__}: {err}", start
            )
        if not isinstance(out_big, Tensor) or out_big.shape != big.shape:
            return _result(check, "sampler", "fail", "the sampler changed the batch", start)
        big_calls = list(net.calls)
        got_big, end_big = sampler_samples(
            out_big.reshape(big.shape[0], -1).double(), big_calls, net.adapter, sampler.time_range
        )
        return _stochastic_sampler(
            check, harness, big_calls, got_big, tol, shown, start, end=end_big, hint=hint
        )
    return sampler_landing(
        check, calls, got, harness.teacher, tol, shown, start, end=end, hint=hint
    )


def shown_calls(calls: list[CallRecord], adapter: ConventionAdapter, limit: int = 8) -> str:
    """A sampler's first ``limit`` calls as ``start->end`` in the user's time variable (and in
    ours, data at 0 and noise at 1, when the two differ), e.g. ``"1->0.5, 0.5->0"``."""
    o = adapter.torch_ops
    head = calls[:limit]
    ours = [(float(c.t[0]), float(c.s[0])) for c in head]
    user = [
        (
            float(adapter.time_to_user(c.t[:1], ops=o)[0]),
            float(adapter.time_to_user(c.s[:1], ops=o)[0]),
        )
        for c in head
    ]
    more = ", ..." if len(calls) > limit else ""
    text = ", ".join(f"{a:.4g}->{b:.4g}" for a, b in user) + more
    if any(
        abs(u - v) > 1e-12
        for pair_u, pair_v in zip(user, ours, strict=True)
        for u, v in zip(pair_u, pair_v, strict=True)
    ):
        ours_text = ", ".join(f"{a:.3g}->{b:.3g}" for a, b in ours) + more
        return f"{text} in your time variable ({ours_text} with data at 0, noise at 1)"
    return text


def sampler_call_problem(
    check: str,
    calls: list[CallRecord],
    adapter: ConventionAdapter,
    time_range: tuple[float, float] | None,
    shown: str,
    start: float,
) -> CheckResult | None:
    """The failure of a sampler whose calls leave the declared time range, step away from the
    data or start away from the noise end (``None`` when its calls are in order)."""
    outside, _ = _outside_range(calls, adapter, time_range)
    if outside:
        return _result(check, "sampler", "fail", f"{outside}; calls: {shown}", start)
    if any(bool((c.s > c.t + 1e-9).any()) for c in calls):
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler steps away from the data (a call maps t to a later s); calls: {shown}",
            start,
        )
    first = float(calls[0].t.min())
    if first < 0.5:
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler starts at t = {first:.3g} with data at 0 and noise at 1, not at the "
            f"noise end; calls: {shown}",
            start,
        )
    return None


def sampler_samples(
    out: Tensor,
    calls: list[CallRecord],
    adapter: ConventionAdapter,
    time_range: tuple[float, float] | None,
) -> tuple[Tensor, Tensor]:
    """A sampler's output ``out`` (user units, ``(N, d)`` float64) in our units, and the time it
    is at, ``(N,)`` in ours.

    The time is the data end ``0`` unless the sampler's last call stops at the data-side bound of
    its declared ``time_range`` (EDM's and CTM's ``sigma_min``: a sampler whose path ends there
    returns the point at ``sigma_min``); then it is that bound, and the output is read as a point
    of the path at that time. A sampler stopping anywhere else is judged at the data end.
    """
    o = adapter.torch_ops
    zero = torch.zeros(out.shape[0], dtype=torch.float64)
    end = calls[-1].s.double()
    if time_range is None or end.shape != zero.shape or not bool((end > 0).all()):
        return out / adapter.data_unit, zero
    bounds = adapter.time_to_ours(torch.tensor(time_range, dtype=torch.float64), ops=o)
    data_side = float(bounds.min())
    if not bool(torch.allclose(end, torch.full_like(end, data_side), rtol=1e-5, atol=1e-12)):
        return out / adapter.data_unit, zero
    return adapter.points_to_ours(out, end, ops=o), end


def _end_hint(calls: list[CallRecord], adapter: ConventionAdapter) -> str:
    """Why a sampler whose last call stops short of the data might be declared so."""
    end = calls[-1].s.double()
    if not bool((end > 1e-9).any()):
        return ""
    user = adapter.time_to_user(end, ops=adapter.torch_ops)
    lo, hi = float(user.min()), float(user.max())
    at = f"{lo:.4g}" if f"{lo:.4g}" == f"{hi:.4g}" else f"{lo:.4g} to {hi:.4g}"
    return (
        f"; its last call stops at user time {at}, "
        "not at the data: if that is where its path ends (sigma_min), declare it as the lower "
        "bound of the sampler's time_range"
    )


def velocity_only(calls: list[CallRecord]) -> bool:
    """Every call asked for the instantaneous velocity ``F(x, t, t)``: an ODE solver."""
    return all(bool((c.t == c.s).all()) for c in calls)


def sampler_tolerance(
    dtype: torch.dtype, calls: list[CallRecord], teacher: GaussianMixtureTeacher
) -> float:
    """The allowed distance from the exact map: rounding of the declared dtype, relative to the
    size of the exact samples."""
    first = calls[0]
    expected = ExactFlowMap(teacher)(first.x, first.t.double(), torch.zeros_like(first.t).double())
    scale = float(expected.norm(dim=1).max())
    return (1e-4 if dtype == torch.float32 else 1e-7) * max(1.0, scale)


def sampler_landing(
    check: str,
    calls: list[CallRecord],
    got: Tensor,
    teacher: GaussianMixtureTeacher,
    tol: float,
    shown: str,
    start: float,
    *,
    end: Tensor | None = None,
    hint: str = "",
) -> CheckResult:
    """Judge a deterministic sampler's samples ``got`` (our units, ``(N, d)``) against the exact
    map from its first call's point and time to ``end`` (``(N,)``, ours; default the data end
    ``0``; a declared ``sigma_min``, :func:`sampler_samples`) (``t0 = 1`` for a sampler that
    starts at pure noise, below 1 for EDM's ``sigma_max``). A velocity-only sampler is an ODE
    solver: its discretisation error is reported, not judged. ``hint`` is added to a failure."""
    first = calls[0]
    t0 = first.t.double()
    to = torch.zeros_like(t0) if end is None else end
    expected = ExactFlowMap(teacher)(first.x, t0, to)
    if velocity_only(calls):
        rmse = float((got - expected).pow(2).sum(1).mean().sqrt())
        return _result(
            check,
            "sampler",
            "pass",
            f"a velocity sampler ({len(calls)} calls on the diagonal s = t, from the noise "
            f"end towards the data); its discretisation error against the exact map is RMSE "
            f"{rmse:.3g} (reported, not judged); calls: {shown}",
            start,
        )
    max_err = float((got - expected).norm(dim=1).max())
    target = "0" if not bool((to > 0).any()) else f"{float(to.max()):.4g} (the declared end)"
    msg = (
        f"max error {max_err:.2e} against the exact map Phi_(t0->{target}) (allowed "
        f"{tol:.1e}); calls: {shown}"
    )
    if max_err > tol:
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler does not land on the exact flow map: {msg} (a step size that differs "
            f"from the times the network was asked for, a wrong update sign, or a wrong start)"
            f"{hint}",
            start,
        )
    return _result(check, "sampler", "pass", msg, start)


def _stochastic_sampler(
    check: str,
    harness: _Harness,
    calls: list[CallRecord],
    got: Tensor,
    tol: float,
    shown: str,
    start: float,
    *,
    end: Tensor,
    hint: str = "",
) -> CheckResult:
    """A sampler that draws fresh noise (multistep consistency sampling, CTM's gamma): each
    call's point must be the previous call's exact end carried forward to the call's time by
    the path's own noising, ``x_t = (alpha_t / alpha_s) y + sigma_(t|s) n``, with standard
    normal ``n`` (a chi-square test on the recovered ``n`` at :data:`FALSE_ALARM`), or that end
    itself at ``t = s``; the samples are the last call's exact end at the data (at ``end``, a
    declared ``sigma_min``: :func:`sampler_samples`)."""
    from scipy.stats import chi2

    exact = ExactFlowMap(harness.teacher)
    schedule = harness.teacher.path.schedule
    recovered: list[Tensor] = []
    for prev, call in itertools.pairwise(calls):
        y = exact(prev.x, prev.t, prev.s)
        if call.x.shape != y.shape:
            return _result(check, "sampler", "fail", "the sampler changed the batch", start)
        if float((call.t - prev.s).min()) < -1e-9:
            return _result(
                check,
                "sampler",
                "fail",
                "a call starts at an earlier time than the previous call's map reached "
                f"(noise removed without the network); calls: {shown}",
                start,
            )
        same = (call.t - prev.s).abs() <= 1e-9
        if bool(same.any()) and float((call.x - y)[same].norm(dim=1).max()) > tol:
            return _result(
                check,
                "sampler",
                "fail",
                "a step does not start where the previous step's map ended (a step size that "
                f"differs from the times the network was asked for); calls: {shown}",
                start,
            )
        a_t, a_s = schedule(call.t), schedule(prev.s)
        ratio = a_t.alpha / a_s.alpha
        var = a_t.beta**2 - ratio**2 * a_s.beta**2
        noisy = ~same & (var > 1e-8)
        if noisy.any():
            n = (call.x - ratio[:, None] * y)[noisy] / var[noisy].sqrt()[:, None]
            recovered.append(n)
    last = calls[-1]
    if float((last.s - end).abs().max()) > 1e-9:
        return _result(
            check,
            "sampler",
            "fail",
            f"the sampler's last call maps to s = {float(last.s.max()):.3g}, not to the data; "
            f"calls: {shown}{hint}",
            start,
        )
    err = float((got - exact(last.x, last.t, last.s)).norm(dim=1).max())
    if err > tol:
        return _result(
            check,
            "sampler",
            "fail",
            f"the samples are not the last call's exact map to the data (max error {err:.2e}, "
            f"allowed {tol:.1e}); calls: {shown}",
            start,
        )
    detail = f"a stochastic sampler ({len(calls)} calls); calls: {shown}"
    if recovered:
        n_all = torch.cat(recovered)
        m = n_all.numel()
        stat = float(n_all.pow(2).sum())
        lo, hi = chi2.ppf(FALSE_ALARM / 2, m), chi2.ppf(1 - FALSE_ALARM / 2, m)
        detail = (
            f"re-noised points: mean n^2 = {stat / m:.3f} over {m} entries (bounds "
            f"[{lo / m:.3f}, {hi / m:.3f}], false-alarm rate {FALSE_ALARM:g}); {detail}"
        )
        if not lo <= stat <= hi:
            return _result(
                check,
                "sampler",
                "fail",
                "the sampler re-noises to another time than it asks the network for (the "
                f"noise recovered at the asked time is not standard normal: {detail})",
                start,
            )
    return _result(check, "sampler", "pass", f"max error {err:.2e}; {detail}", start)


def run_shipped_checks(
    conventions: Conventions | Mapping[str, Any],
    *,
    losses: Mapping[str, ShippedLoss] | None = None,
    samplers: Mapping[str, ShippedSampler] | None = None,
    repeats: int = 32,
) -> list[CheckResult]:
    """Run every as-shipped check on the declared losses and samplers.

    Arguments:
        conventions: the implementation's declared conventions.
        losses: method name -> :class:`ShippedLoss`.
        samplers: sampler name -> :class:`ShippedSampler`.
        repeats: draws of the statistical stationarity test.

    Returns:
        One :class:`CheckResult` per check.
    """
    conv = Conventions.from_mapping(conventions)
    for key, shipped in (losses or {}).items():  # refuse a mismatched declaration before work
        method = Method.parse(key).value
        problem = None if shipped.declared is None else shipped.declared.problem_for(method)
        if problem is not None:
            raise ValueError(f"{key}: {problem}")
    results: list[CheckResult] = []
    for key, shipped in (losses or {}).items():
        method = Method.parse(key).value
        harness: Any
        if conv.framework == "jax":
            from .shipped_jax import JaxHarness  # lazy: shipped_jax imports this module

            harness = JaxHarness.build(conv, shipped.data_shape)
        else:
            harness = _Harness.build(conv, shipped.data_shape)
        results.append(check_times(method, shipped, harness))
        if method in ALIGNED_METHODS:
            results.append(check_alignment(method, shipped, harness))
        elif method == "consistency":
            results.append(check_consistency_alignment(method, shipped, harness))
        elif method == "scm":
            results.append(check_scm_alignment(method, shipped, harness))
        elif method in ("split_meanflow", "shortcut", "facm", "ayf_emd", "ayf_lmd"):
            from .shipped_targets import check_target_alignment  # lazy: it imports this module

            results.append(check_target_alignment(method, shipped, harness))
        elif method == "ctm":
            from .shipped_ctm import check_ctm_alignment  # lazy: it imports this module

            results.append(check_ctm_alignment(method, shipped, harness))
        results.append(check_stationarity(method, shipped, harness, repeats=repeats))
        results.append(check_descent(method, shipped, harness, repeats=repeats))
        _CONTROL_DRAWS.pop(id(harness), None)
        from .shipped_value import check_value  # lazy: shipped_value imports this module

        results.append(check_value(method, shipped, harness))
    for name, sampler in (samplers or {}).items():
        if conv.framework == "jax":
            from .shipped_jax import check_jax_sampler

            results.append(check_jax_sampler(name, sampler, conv))
        else:
            results.append(check_sampler(name, sampler, conv))
    return results
