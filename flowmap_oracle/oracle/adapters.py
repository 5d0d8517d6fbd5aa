"""Adapters: map an implementation's declared conventions onto the project's convention.

The project's convention (DESIGN.md): ``x_t = (1 - t) x0 + t x1``, data at ``t = 0``, noise
``x1 ~ N(0, I)`` at ``t = 1``; the network ``F(x, t, s)`` is the average velocity and the flow map
is ``f_{t->s}(x) = x + (s - t) F(x, t, s)``. Implementations in the wild differ in four ways, and
each is *declared* through :class:`Conventions` (nothing is guessed; unknown keys are errors):

``time``
    * ``"noise_at_1"`` (ours): user time ``tau = t``, points unchanged.
    * ``"noise_at_0"`` (Lipman's FM, Shortcut models): ``tau = 1 - t``; data at ``tau = 1``.
    * ``"edm_sigma"`` (EDM, consistency models): ``sigma = t / (1 - t)``, points
      ``x_sigma = x / (1 - t) = x0 + sigma x1``.
    * ``"trigflow_angle"`` (TrigFlow / sCM with ``sigma_d = 1``): ``theta = atan2(t, 1 - t)``,
      points ``x_theta = cos(theta) x0 + sin(theta) x1 = x / sqrt((1 - t)^2 + t^2)``.

    In general the user's point is ``x_u = a(t) x`` at user time ``tau(t)`` (``a = 1`` for the
    first two). All four are reparametrisations of the same probability path, so a flow map in
    one convention is a flow map in every other.
``signature`` (how the network takes its times, in the user's time variable)
    ``"x_t_s"`` ``N(x, tau, rho)``; ``"x_s_t"`` ``N(x, rho, tau)``; ``"x_t_dt"``
    ``N(x, tau, tau - rho)``; ``"shortcut_log2"`` ``N(x, tau, k)`` with step ``|tau - rho| =
    2^-k`` for integer ``0 <= k < shortcut_levels``, and ``k = shortcut_levels`` meaning the
    instantaneous velocity ``rho = tau`` (as Shortcut models' code uses its finest level for the
    flow-matching term). Here ``tau`` is the start and ``rho`` the end time of the map.
``prediction`` (what the network outputs; ``f`` is the user's flow map in user coordinates)
    * ``"average_velocity"``: ``f_u = x_u + (rho - tau) N``;
    * ``"x0"``: a data prediction ``D`` with the DDIM step ``f = alpha_s D + beta_s eps_hat``,
      ``eps_hat = (x_t - alpha_t D) / beta_t`` (CTM's ``g_theta``; at ``s = 0`` the consistency
      model's output); in our convention ``F = (x - D) / t``;
    * ``"epsilon"``: a noise prediction with the same DDIM step; ``F = (eps_hat - x) / (1 - t)``.
    ``"x_t"`` ``N(x, c(tau))``: a *single-time* network. Which map a call computes follows
    from the prediction, the one reading that is exact for it: with ``"average_velocity"`` the
    output is the instantaneous velocity ``dx_u / dtau`` (the map's end is ``rho = tau``, the
    diagonal ``s = t``); with ``"x0"`` (and ``"epsilon"``) the DDIM step from ``tau`` reaches
    every end time, and the call is recorded as the map to the data end ``s = 0``: the output
    *is* the consistency function ``f(x, t)`` (or the noise that gives it). A denoiser trained
    to the velocity (a diffusion model) is declared with a two-time signature at ``s = t``
    instead. The time argument is ``c(tau) = time_input_scale * tau`` (``time_input="time"``)
    or ``time_input_scale * log(tau) / 4`` (``"log_time/4"``, EDM's ``c_noise``).
``sigma_data`` (a change of units of the data)
    The user's data are ours times ``sigma_data``: ``x_u = sigma_data a(t) x``. TrigFlow and the
    linear paths scale the noise with the data (``z ~ N(0, sigma_data^2 I)``), so their time is
    unchanged; EDM adds unscaled noise ``sigma n`` to data of scale ``sigma_data``, so the
    user's sigma is ``sigma_data`` times ours. Not combined with ``"epsilon"`` (whether the
    noise is scaled is then ambiguous).
``preconditioning`` (the user's code wraps a raw network; the oracle hands over the raw one)
    ``D(x_u, tau) = c_skip(tau) x_u + c_out(tau) raw(c_in(tau) x_u, c(tau))``, a data
    prediction (declare signature ``"x_t"``, prediction ``"x0"``), with ``sd = sigma_data``:

    * ``"edm"`` (Karras et al. 2022, Table 1; time ``"edm_sigma"``): ``c_skip = sd^2 / (sigma^2
      + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``, ``c_in = 1 / sqrt(sigma^2 +
      sd^2)``, ``c(sigma) = log(sigma) / 4`` by default;
    * ``"consistency"`` (Song et al. 2023; time ``"edm_sigma"``, needs ``sigma_min``):
      ``c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2)``, ``c_out = (sigma - sigma_min) sd /
      sqrt(sd^2 + sigma^2)``, ``c_in`` as EDM's, ``c(sigma) = log(sigma) / 4`` by default
      (``time_input_scale=1000`` for the ``1000 * 0.25 log(sigma)`` of the original code);
    * ``"trigflow"`` (Lu & Song 2024; time ``"trigflow_angle"``): ``f = cos(t) x_t - sin(t) sd
      F(x_t / sd, c(t))``, i.e. ``c_skip = cos t``, ``c_out = -sd sin t``, ``c_in = 1 / sd``,
      ``c(t) = t`` by default;
    * ``"ctm"`` (Kim et al. 2023, consistency trajectory models; time ``"edm_sigma"``, signature
      ``"x_t_s"`` or ``"x_s_t"``, prediction ``"x0"``): the raw network takes *both* times,
      ``D(x_u, tau, rho) = c_skip(tau) x_u + c_out(tau) raw(c_in(tau) x_u, c(tau), c(rho))``
      with EDM's ``c_skip``, ``c_out``, ``c_in`` at the start time and ``c`` applied to each
      time (``log(sigma) / 4`` by default, ``-inf`` at ``sigma = 0``; ``time_input_scale=1000``
      for the ``1000 * 0.25 log(sigma)`` of the original code). With prediction ``"x0"`` the
      map is CTM's ``g(x_t, t, s) = (s / t) x_t + (1 - s / t) D``, exactly the identity at
      ``s = t``.

    A call of the raw network is decoded back to our ``(x, t)`` (``tau`` from ``c``, ``x_u =
    input / c_in``); where ``c_out = 0`` (``sigma = sigma_min``) the raw output is not read by
    ``D`` and the oracle returns 0 there.
``framework`` / ``dtype``
    ``"torch"`` or ``"jax"``; ``"float32"`` or ``"float64"``. Arrays handed to the implementation
    have exactly this type; arrays it returns must have it too (a mismatch is an error).

Every combination maps the network output affinely: ``F(x, t, s) = q(t, s) x + k(t, s) N``
(``N`` the preconditioned output ``D``; per unit of the raw output ``F`` moves by ``k c_out``,
:meth:`ConventionAdapter.output_gain`), with
closed forms for ``q`` and ``k`` that stay exact at ``s = t`` (no difference quotients). Targets
map the same way, except that a target built from a *time derivative* in the user's own time
(MeanFlow, AYF, continuous CM) carries the reparametrisation factor ``w = tau'(t) / slope(t, s)``
with ``slope = (tau(t) - tau(s)) / (t - s)`` on its residual: ``F - F_tgt = w k (N - N_tgt)``.
``w = 1`` for the linear time conventions.

Each mapping exists in both directions (``ours -> user`` to hand our networks, velocities and
points to an implementation; ``user -> ours`` to read what it returns) and both are tested.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Literal

import torch
from torch import Tensor

from ..conventions import PATH_NAMES

__all__ = [
    "DTYPES",
    "FRAMEWORKS",
    "PREDICTIONS",
    "SIGNATURES",
    "TARGET_KINDS",
    "TIMES",
    "TIME_INPUTS",
    "ConventionAdapter",
    "ConventionError",
    "Conventions",
    "DType",
    "Framework",
    "Prediction",
    "Signature",
    "TargetKind",
    "Time",
    "TimeInput",
]


class Time(StrEnum):
    """The user's time variable (see the module docstring)."""

    NOISE_AT_1 = "noise_at_1"
    NOISE_AT_0 = "noise_at_0"
    EDM_SIGMA = "edm_sigma"
    TRIGFLOW_ANGLE = "trigflow_angle"


class Signature(StrEnum):
    """How the user's network takes its two times."""

    X_T_S = "x_t_s"
    X_S_T = "x_s_t"
    X_T_DT = "x_t_dt"
    SHORTCUT_LOG2 = "shortcut_log2"
    X_T = "x_t"


class Prediction(StrEnum):
    """What the user's network outputs."""

    AVERAGE_VELOCITY = "average_velocity"
    X0 = "x0"
    EPSILON = "epsilon"


class Preconditioning(StrEnum):
    """The preconditioning the user's code wraps around a raw single-time network."""

    NONE = "none"
    EDM = "edm"
    CONSISTENCY = "consistency"
    TRIGFLOW = "trigflow"
    CTM = "ctm"


class TimeInput(StrEnum):
    """How a single-time network reads its time: ``"time"`` (the user's time itself, times
    ``time_input_scale``) or ``"log_time/4"`` (``time_input_scale * log(tau) / 4``, EDM's
    ``c_noise``)."""

    TIME = "time"
    LOG_TIME_4 = "log_time/4"


class Framework(StrEnum):
    TORCH = "torch"
    JAX = "jax"


class DType(StrEnum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"


TIMES = tuple(m.value for m in Time)
SIGNATURES = tuple(m.value for m in Signature)
PREDICTIONS = tuple(m.value for m in Prediction)
FRAMEWORKS = tuple(m.value for m in Framework)
DTYPES = tuple(m.value for m in DType)
PRECONDITIONINGS = tuple(m.value for m in Preconditioning)
TIME_INPUTS = tuple(m.value for m in TimeInput)
TARGET_KINDS = ("value", "time_derivative")

_VOCABULARY: dict[str, type[StrEnum]] = {
    "time": Time,
    "signature": Signature,
    "prediction": Prediction,
    "framework": Framework,
    "dtype": DType,
    "preconditioning": Preconditioning,
}

TargetKind = Literal["value", "time_derivative"]
"""``"value"``: the target is a value the network output should equal (FM, split, Shortcut,
discrete CM); it maps like the output. ``"time_derivative"``: its residual is a total
derivative in the user's time (MeanFlow, AYF, continuous CM) and carries the factor ``w``."""

# Our times computed from a user time in the user's dtype may leave [0, 1] by rounding alone: the
# float32 angle nearest pi / 2 (1.5707963705) lies above pi / 2, and t(theta) = 1.0000000437 there.
# A time within this many units of the dtype's epsilon outside [0, 1] is set back on the end (its
# value only; derivatives pass through unchanged). The float32 angle is at most half an ulp
# (6e-8) past pi / 2 and dt/dtheta = 1 there; 4 eps (4.8e-7 in float32) covers it with room, and
# is far below any time a wrong implementation would use (a difference step of 1e-3 past the end
# is still refused).
_ROUNDING_EPS = 4

# Time ranges where a convention is finite. EDM's sigma = t / (1 - t) is infinite at t = 1: 0.98
# gives sigma = 49, inside EDM's usual sigma_max = 80. The x0 prediction divides by t and the
# epsilon prediction by 1 - t, so they keep 0.02 away from that end.
_EDGE = 0.02


# Under preconditioning, |c_out| below this many sigma_data is read as the c_out = 0 of the user's
# own time (consistency models' sigma_min): the raw output is then 0 and D = c_skip x.
_C_OUT_ZERO = 1e-6


class ConventionError(ValueError):
    """A declared convention is unknown, inconsistent, or cannot express the requested input."""


@dataclass(frozen=True)
class Conventions:
    """An implementation's declared conventions (see the module docstring for each value).

    Arguments:
        time: ``"noise_at_1"`` | ``"noise_at_0"`` | ``"edm_sigma"`` | ``"trigflow_angle"``.
        signature: ``"x_t_s"`` | ``"x_s_t"`` | ``"x_t_dt"`` | ``"shortcut_log2"`` | ``"x_t"``.
        prediction: ``"average_velocity"`` | ``"x0"`` | ``"epsilon"``.
        framework: ``"torch"`` | ``"jax"``.
        dtype: ``"float32"`` | ``"float64"``.
        shortcut_levels: the finest level ``L`` (step ``2^-L``) of ``"shortcut_log2"``; required
            with that signature and forbidden otherwise.
        path: the probability path the implementation interpolates on, ``"linear"`` (``(1 - t)
            x0 + t x1``, default), ``"trig"`` (``cos(pi t / 2) x0 + sin(pi t / 2) x1``) or
            ``"lipman"``; the oracle's teacher lives on the same path. The EDM and TrigFlow time
            variables and the ``x0`` / ``epsilon`` predictions are written for the linear path,
            so they require it.
        preconditioning: ``"none"`` (default) | ``"edm"`` | ``"consistency"`` | ``"trigflow"``
            | ``"ctm"`` (two-time, see the module docstring).
        sigma_data: the data's scale in the user's units (default 1).
        sigma_min: the smallest sigma of ``"consistency"`` preconditioning (user units).
        time_input: ``"time"`` | ``"log_time/4"``: how a single-time network (or the raw
            network of ``"ctm"``, both times) reads its time (default ``"log_time/4"`` under
            EDM, consistency and CTM preconditioning, else ``"time"``); ``time_input_scale``
            multiplies it (default 1).

    Values are stored as the enums :class:`Time`, :class:`Signature`, :class:`Prediction`,
    :class:`Framework` and :class:`DType` (string subclasses: ``conventions.time == "noise_at_1"``
    holds).
    """

    time: Time = Time.NOISE_AT_1
    signature: Signature = Signature.X_T_S
    prediction: Prediction = Prediction.AVERAGE_VELOCITY
    framework: Framework = Framework.TORCH
    dtype: DType = DType.FLOAT64
    shortcut_levels: int | None = None
    path: str = "linear"
    preconditioning: Preconditioning = Preconditioning.NONE
    sigma_data: float = 1.0
    sigma_min: float | None = None
    time_input: TimeInput | None = None
    time_input_scale: float = 1.0

    def __post_init__(self) -> None:
        for name, vocabulary in _VOCABULARY.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, vocabulary(value))
            except ValueError:
                allowed = ", ".join(m.value for m in vocabulary)
                raise ConventionError(
                    f"unknown {name} convention {value!r}; choose one of {allowed}"
                ) from None
        if self.path not in PATH_NAMES:
            raise ConventionError(
                f"unknown path {self.path!r}; choose one of {', '.join(PATH_NAMES)}"
            )
        if self.path != "linear" and (
            self.time not in (Time.NOISE_AT_1, Time.NOISE_AT_0)
            or self.prediction != Prediction.AVERAGE_VELOCITY
        ):
            raise ConventionError(
                f"time {self.time.value!r} with prediction {self.prediction.value!r} is defined "
                f"on the linear path; it cannot be combined with path {self.path!r}"
            )
        if self.signature == "shortcut_log2":
            if not isinstance(self.shortcut_levels, int) or isinstance(self.shortcut_levels, bool):
                raise ConventionError(
                    "signature 'shortcut_log2' needs shortcut_levels: the integer finest level L "
                    f"(smallest step 2^-L), got {self.shortcut_levels!r}"
                )
            if not 0 <= self.shortcut_levels <= 30:
                raise ConventionError(
                    f"shortcut_levels must lie in [0, 30], got {self.shortcut_levels}"
                )
            if self.time not in ("noise_at_1", "noise_at_0"):
                raise ConventionError(
                    "signature 'shortcut_log2' encodes dyadic steps of a linear time; it cannot be "
                    f"combined with time {self.time.value!r}"
                )
        elif self.shortcut_levels is not None:
            raise ConventionError(
                f"shortcut_levels is only meaningful with signature 'shortcut_log2', "
                f"not {self.signature.value!r}"
            )
        self._check_single_time()

    def _check_single_time(self) -> None:
        """Validate ``preconditioning``, ``sigma_data``, ``sigma_min`` and ``time_input``."""
        for name in ("sigma_data", "time_input_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConventionError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConventionError(f"{name} must be a finite positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.time_input is not None:
            try:
                object.__setattr__(self, "time_input", TimeInput(self.time_input))
            except ValueError:
                raise ConventionError(
                    f"unknown time_input {self.time_input!r}; choose one of "
                    f"{', '.join(TIME_INPUTS)}"
                ) from None
        single = self.signature == Signature.X_T
        two_time = self.preconditioning == Preconditioning.CTM
        plain_input = self.time_input in (None, TimeInput.TIME) and self.time_input_scale == 1.0
        if not (single or two_time) and not plain_input:
            raise ConventionError(
                "time_input and time_input_scale describe a single-time network or the raw "
                f"network of preconditioning 'ctm'; declare signature 'x_t' (got "
                f"{self.signature.value!r})"
            )
        if self.sigma_data != 1.0 and self.prediction == Prediction.EPSILON:
            raise ConventionError(
                "sigma_data with prediction 'epsilon' is ambiguous (is the noise scaled by "
                "sigma_data or not?); declare prediction 'x0' or 'average_velocity'"
            )
        p = self.preconditioning
        needs_min = p == Preconditioning.CONSISTENCY
        if self.sigma_min is not None and not needs_min:
            raise ConventionError(
                f"sigma_min is only meaningful with preconditioning 'consistency', not {p.value!r}"
            )
        if p == Preconditioning.NONE:
            return
        wanted = Time.TRIGFLOW_ANGLE if p == Preconditioning.TRIGFLOW else Time.EDM_SIGMA
        if self.time != wanted:
            raise ConventionError(
                f"preconditioning {p.value!r} is written in time {wanted.value!r}; "
                f"got time {self.time.value!r}"
            )
        if two_time:
            if self.signature not in (Signature.X_T_S, Signature.X_S_T) or (
                self.prediction != Prediction.X0
            ):
                raise ConventionError(
                    "preconditioning 'ctm' wraps a raw two-time network G(c_in x, c(t), c(s)) "
                    "into a data prediction: declare signature 'x_t_s' (or 'x_s_t') and "
                    f"prediction 'x0' (got signature {self.signature.value!r}, prediction "
                    f"{self.prediction.value!r})"
                )
            return
        if not single or self.prediction != Prediction.X0:
            raise ConventionError(
                f"preconditioning {p.value!r} wraps a raw single-time network into a data "
                "prediction: declare signature 'x_t' and prediction 'x0' (got signature "
                f"{self.signature.value!r}, prediction {self.prediction.value!r})"
            )
        if needs_min:
            m = self.sigma_min
            if isinstance(m, bool) or not isinstance(m, int | float) or not m >= 0:
                raise ConventionError(
                    "preconditioning 'consistency' needs sigma_min, the smallest sigma (>= 0) "
                    f"where c_skip = 1 and c_out = 0; got {m!r}"
                )
            object.__setattr__(self, "sigma_min", float(m))

    @property
    def resolved_time_input(self) -> TimeInput:
        """``time_input``, or its default: ``"log_time/4"`` under EDM, consistency and CTM
        preconditioning, ``"time"`` otherwise."""
        if self.time_input is not None:
            return self.time_input
        if self.preconditioning in (
            Preconditioning.EDM,
            Preconditioning.CONSISTENCY,
            Preconditioning.CTM,
        ):
            return TimeInput.LOG_TIME_4
        return TimeInput.TIME

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Conventions) -> Conventions:
        """Build from a dict; unknown keys are errors (a misspelt key must not be ignored)."""
        if isinstance(mapping, Conventions):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ConventionError(
                f"conventions must be a mapping or Conventions, got {type(mapping).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ConventionError(
                f"unknown convention key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(known)}"
            )
        return cls(**dict(mapping))

    def as_dict(self) -> dict[str, Any]:
        """The declared values as plain strings (``shortcut_levels`` only when used, ``path``
        only when not linear)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {k: v.value if isinstance(v, StrEnum) else v for k, v in out.items()}
        if out["shortcut_levels"] is None:
            del out["shortcut_levels"]
        if out["path"] == "linear":
            del out["path"]
        defaults = {
            "preconditioning": "none",
            "sigma_data": 1.0,
            "sigma_min": None,
            "time_input": None,
            "time_input_scale": 1.0,
        }
        for key, default in defaults.items():
            if out[key] == default:
                del out[key]
        return out

    def describe(self) -> str:
        """One line for report headers and failure messages."""
        return ", ".join(f"{k}={v}" for k, v in self.as_dict().items())


# ----------------------------------------------------------------------------------------------
# Array operations for torch and jax.numpy (the conversions must be differentiable in both).


class _Ops:
    """The few array operations the conversions use, for one framework."""

    xp: types.ModuleType  # torch or jax.numpy
    atan2: Callable[..., Any]

    def __init__(self, framework: str) -> None:
        self.framework = framework
        if framework == "torch":
            self.xp = torch
            self.atan2 = torch.atan2
        else:
            import jax.numpy as jnp

            self.xp = jnp
            self.atan2 = jnp.arctan2

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def sqrt(self, a):
        return self.xp.sqrt(a)

    def sin(self, a):
        return self.xp.sin(a)

    def cos(self, a):
        return self.xp.cos(a)

    def ones_like(self, a):
        return self.xp.ones_like(a)

    def zeros_like(self, a):
        return self.xp.zeros_like(a)

    def col(self, a):
        return a[:, None]

    def abs(self, a):
        return self.xp.abs(a)

    def log(self, a):
        return self.xp.log(a)

    def exp(self, a):
        return self.xp.exp(a)

    def clip(self, a, lo: float, hi: float):
        return self.xp.clip(a, lo, hi)

    def stop_gradient(self, a):
        """``a`` without derivatives (reverse and forward mode)."""
        if self.framework == "torch":
            return a.detach()
        import jax

        return jax.lax.stop_gradient(a)


# ----------------------------------------------------------------------------------------------
# Time conventions: tau(t), t(tau), tau'(t), slope(t, s), a(t), a'(t) and q_avg(t, s).


@dataclass(frozen=True)
class _Time:
    """One time convention. ``slope`` and ``scale_quotient`` are closed forms, exact at s = t.

    ``rounding``: how far outside ``[0, 1]`` an our-time computed from a user time may fall by
    the rounding of the user's dtype alone (see ``_ROUNDING_EPS``); :meth:`t_of` sets such a time
    back on the end. Each adapter holds a copy with its declared dtype's value.
    """

    name: str
    lo: float
    hi: float
    linear: bool
    rounding: float = 0.0

    def tau(self, o: _Ops, t):
        raise NotImplementedError

    def t_of(self, o: _Ops, tau):
        """``t(tau)``; a time within ``rounding`` outside ``[0, 1]`` comes back on the end (its
        value only: derivatives pass through unchanged), so that ``t = 1`` survives the round
        trip through a float32 angle. Farther outside, it is left for the caller to refuse."""
        t = self._t_of(o, tau)
        if not self.rounding:
            return t
        inside = o.clip(t, 0.0, 1.0)
        near = o.abs(t - inside) <= self.rounding
        return o.where(near, t + o.stop_gradient(inside - t), t)

    def _t_of(self, o: _Ops, tau):
        raise NotImplementedError

    def dtau(self, o: _Ops, t):
        """``tau'(t)``."""
        raise NotImplementedError

    def slope(self, o: _Ops, t, s):
        """``(tau(t) - tau(s)) / (t - s)``, equal to ``tau'(t)`` at ``s = t``."""
        raise NotImplementedError

    def scale(self, o: _Ops, t):
        """``a(t)`` with ``x_u = a(t) x``."""
        return o.ones_like(t)

    def dscale(self, o: _Ops, t):
        """``a'(t)``."""
        return o.zeros_like(t)

    def scale_quotient(self, o: _Ops, t, s):
        """``(1 - a(t) / a(s)) / (t - s)``, equal to ``-a'(t) / a(t)`` at ``s = t``."""
        return o.zeros_like(t)


class _NoiseAtOne(_Time):
    def tau(self, o, t):
        return t

    def _t_of(self, o, tau):
        return tau

    def dtau(self, o, t):
        return o.ones_like(t)

    def slope(self, o, t, s):
        return o.ones_like(t)


class _NoiseAtZero(_Time):
    def tau(self, o, t):
        return 1 - t

    def _t_of(self, o, tau):
        return 1 - tau

    def dtau(self, o, t):
        return -o.ones_like(t)

    def slope(self, o, t, s):
        return -o.ones_like(t)


class _EdmSigma(_Time):
    # sigma(t) - sigma(s) = (t - s) / ((1 - t)(1 - s)); a(t) = 1 / (1 - t).
    def tau(self, o, t):
        return t / (1 - t)

    def _t_of(self, o, sigma):
        return sigma / (1 + sigma)

    def dtau(self, o, t):
        return 1 / (1 - t) ** 2

    def slope(self, o, t, s):
        return 1 / ((1 - t) * (1 - s))

    def scale(self, o, t):
        return 1 / (1 - t)

    def dscale(self, o, t):
        return 1 / (1 - t) ** 2

    def scale_quotient(self, o, t, s):
        return -1 / (1 - t) + 0 * s


class _TrigFlowAngle(_Time):
    # theta(t) = atan2(t, 1 - t); theta(t) - theta(s) = atan2(t - s, (1 - t)(1 - s) + t s);
    # a(t) = 1 / r(t), r(t) = sqrt((1 - t)^2 + t^2); r(t)^2 - r(s)^2 = 2 (t - s)(t + s - 1).
    def tau(self, o, t):
        return o.atan2(t, 1 - t)

    def _t_of(self, o, theta):
        sn, cs = o.sin(theta), o.cos(theta)
        return sn / (sn + cs)

    def dtau(self, o, t):
        return 1 / ((1 - t) ** 2 + t**2)

    def slope(self, o, t, s):
        h = t - s
        den = (1 - t) * (1 - s) + t * s
        same = h == 0
        safe_h = o.where(same, o.ones_like(h), h)
        # atan2(h, den) / h is accurate for every h != 0 (atan2 keeps relative accuracy), and
        # its limit at h = 0 is 1 / den.
        return o.where(same, 1 / o.where(same, den, o.ones_like(den)), o.atan2(h, den) / safe_h)

    def _r(self, o, t):
        return o.sqrt((1 - t) ** 2 + t**2)

    def scale(self, o, t):
        return 1 / self._r(o, t)

    def dscale(self, o, t):
        return (1 - 2 * t) / self._r(o, t) ** 3

    def scale_quotient(self, o, t, s):
        rt, rs = self._r(o, t), self._r(o, s)
        return 2 * (t + s - 1) / (rt * (rt + rs))


@dataclass(frozen=True)
class _InUnits(_Time):
    """A time convention in the user's units of data: ``x_u = unit a(t) x`` (``unit`` is
    ``sigma_data``) at user time ``time_unit tau(t)`` (``time_unit = sigma_data`` for EDM's
    sigma, whose noise is not scaled with the data, else 1)."""

    base: _Time | None = None
    unit: float = 1.0
    time_unit: float = 1.0

    @property
    def _b(self) -> _Time:
        assert self.base is not None
        return self.base

    def tau(self, o, t):
        return self.time_unit * self._b.tau(o, t)

    def _t_of(self, o, tau):
        return self._b._t_of(o, tau / self.time_unit)

    def dtau(self, o, t):
        return self.time_unit * self._b.dtau(o, t)

    def slope(self, o, t, s):
        return self.time_unit * self._b.slope(o, t, s)

    def scale(self, o, t):
        return self.unit * self._b.scale(o, t)

    def dscale(self, o, t):
        return self.unit * self._b.dscale(o, t)

    def scale_quotient(self, o, t, s):
        return self._b.scale_quotient(o, t, s)


_TIME_IMPLS: dict[str, _Time] = {
    "noise_at_1": _NoiseAtOne("noise_at_1", 0.0, 1.0, True),
    "noise_at_0": _NoiseAtZero("noise_at_0", 0.0, 1.0, True),
    "edm_sigma": _EdmSigma("edm_sigma", 0.0, 1.0 - _EDGE, False),
    "trigflow_angle": _TrigFlowAngle("trigflow_angle", 0.0, 1.0, False),
}


# ----------------------------------------------------------------------------------------------


class ConventionAdapter:
    """All conversions between the project's convention and one declared :class:`Conventions`.

    Our side is always torch (float64 unless noted); the user's side is the declared framework
    and dtype. Methods named ``*_to_user`` go ours -> user; ``*_to_ours`` go user -> ours.

    Arguments:
        conventions: the declared conventions (a mapping is validated first).
    """

    def __init__(self, conventions: Conventions | Mapping[str, Any]) -> None:
        self.conventions = Conventions.from_mapping(conventions)
        c = self.conventions
        eps = torch.finfo(getattr(torch, c.dtype)).eps
        base = _TIME_IMPLS[c.time]
        rounding = _ROUNDING_EPS * eps
        if c.sigma_data == 1.0:
            self._time: _Time = replace(base, rounding=rounding)
        else:
            time_unit = c.sigma_data if c.time == Time.EDM_SIGMA else 1.0
            self._time = _InUnits(
                base.name, base.lo, base.hi, base.linear, rounding, base, c.sigma_data, time_unit
            )
        self._ops = _Ops(c.framework)
        self._torch_ops = _Ops("torch")

    @property
    def torch_ops(self) -> _Ops:
        """Array operations for our (torch) side, to pass as ``ops=`` to the conversions."""
        return self._torch_ops

    def tau_dot(self, t: Tensor) -> Tensor:
        """``tau'(t)`` for our times ``t`` (torch)."""
        return self._time.dtau(self._torch_ops, t)

    def scale(self, t: Tensor) -> Tensor:
        """``a(t)`` with ``x_u = a(t) x`` for our times ``t`` (torch)."""
        return self._time.scale(self._torch_ops, t)

    # -- domain ---------------------------------------------------------------------------

    @property
    def time_domain(self) -> tuple[float, float]:
        """``(lo, hi)``: our times at which this convention is finite (for t and s)."""
        lo, hi = self._time.lo, self._time.hi
        return lo, hi

    @property
    def start_domain(self) -> tuple[float, float]:
        """``(lo, hi)`` for the start time t (the prediction may exclude an end)."""
        lo, hi = self.time_domain
        p = self.conventions.prediction
        if p == "x0":
            lo = max(lo, _EDGE)
        elif p == "epsilon":
            hi = min(hi, 1.0 - _EDGE)
        return lo, hi

    @property
    def is_identity(self) -> bool:
        """True when the conventions are the project's own (up to framework and dtype)."""
        c = self.conventions
        return (c.time, c.signature, c.prediction) == ("noise_at_1", "x_t_s", "average_velocity")

    @property
    def continuous_steps(self) -> bool:
        """False for ``shortcut_log2``: its steps are dyadic, so ``t`` cannot move with ``s`` held
        fixed and no derivative in ``t`` at fixed ``s`` exists."""
        return self.conventions.signature != "shortcut_log2"

    @property
    def step_levels(self) -> int | None:
        return self.conventions.shortcut_levels

    @property
    def _shortcut_levels(self) -> int:
        """``shortcut_levels`` under ``shortcut_log2`` (:class:`Conventions` requires it there)."""
        levels = self.conventions.shortcut_levels
        if levels is None:
            raise RuntimeError(
                f"shortcut_levels is unset for conventions {self.conventions.describe()}; "
                "only signature 'shortcut_log2' encodes steps as levels"
            )
        return levels

    # -- arrays ---------------------------------------------------------------------------

    @property
    def user_dtype(self):
        c = self.conventions
        if c.framework == "torch":
            return getattr(torch, c.dtype)
        import jax.numpy as jnp

        return getattr(jnp, c.dtype)

    def array_to_user(self, a: Tensor):
        """A torch tensor as the user's array type and dtype (a copy for JAX)."""
        c = self.conventions
        if c.framework == "torch":
            return a.detach().to(self.user_dtype)
        import jax
        import jax.numpy as jnp

        if c.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise ConventionError(
                "dtype 'float64' was declared for a JAX implementation, but JAX runs in float32 "
                "unless jax_enable_x64 is set: call jax.config.update('jax_enable_x64', True) "
                "before building the implementation, or declare dtype 'float32'"
            )
        return jnp.asarray(a.detach().cpu().numpy(), dtype=self.user_dtype)

    def array_to_ours(self, a: Any, *, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
        """Read an array returned by the implementation as a float64 torch tensor.

        Raises:
            TypeError: wrong array type or dtype (never silently converted).
            ValueError: wrong shape or non-finite values, naming the first bad index.
        """
        c = self.conventions
        if c.framework == "torch":
            if not isinstance(a, Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(a).__name__}")
            if a.dtype != self.user_dtype:
                raise TypeError(f"{name}: expected dtype {c.dtype} as declared, got {a.dtype}")
            out = a.detach().to(torch.float64)
        else:
            import jax
            import numpy as np

            if not isinstance(a, jax.Array):
                raise TypeError(f"{name}: expected a jax.Array, got {type(a).__name__}")
            if str(a.dtype) != c.dtype:
                raise TypeError(f"{name}: expected dtype {c.dtype} as declared, got {a.dtype}")
            out = torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
        if shape is not None and tuple(out.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(out.shape)}")
        bad = ~torch.isfinite(out)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{name}: non-finite value {float(out[idx])!r} at index {idx} "
                f"({int(bad.sum())} non-finite entries)"
            )
        return out

    # -- times ----------------------------------------------------------------------------

    def time_to_user(self, t, *, ops: _Ops | None = None):
        """``tau(t)``."""
        return self._time.tau(ops or self._ops, t)

    def time_to_ours(self, tau, *, ops: _Ops | None = None):
        """``t(tau)``; a time that rounding in the declared dtype put just outside ``[0, 1]``
        (the float32 angle nearest ``pi / 2`` gives ``t = 1.0000000437``) comes back on the
        end, so that ``t = 1`` survives the round trip through the user's dtype."""
        return self._time.t_of(ops or self._ops, tau)

    def check_times(self, t: Tensor, s: Tensor | None = None) -> None:
        """Raise :class:`ConventionError` if ``t`` (or ``s``) lies outside this convention's domain."""
        lo, hi = self.start_domain
        for name, a, (a_lo, a_hi) in (("t", t, (lo, hi)), ("s", s, self.time_domain)):
            if a is None:
                continue
            if (a < a_lo).any() or (a > a_hi).any():
                raise ConventionError(
                    f"{name} must lie in [{a_lo}, {a_hi}] for conventions "
                    f"{self.conventions.describe()}; got [{float(a.min())}, {float(a.max())}]"
                )

    # -- network signature ----------------------------------------------------------------

    @property
    def n_time_args(self) -> int:
        """How many time arguments the user's network takes (1 for ``"x_t"``, else 2)."""
        return 1 if self.conventions.signature == Signature.X_T else 2

    @property
    def single_time_end(self) -> Literal["diagonal", "data"] | None:
        """What map a single-time network's call is recorded as: ``"diagonal"`` (the velocity,
        ``s = t``; prediction ``average_velocity``), ``"data"`` (the consistency function,
        ``s = 0``; predictions ``x0`` and ``epsilon``), ``None`` for two-time signatures."""
        if self.conventions.signature != Signature.X_T:
            return None
        if self.conventions.prediction == Prediction.AVERAGE_VELOCITY:
            return "diagonal"
        return "data"

    def time_to_input(self, tau, *, ops: _Ops | None = None):
        """A single-time network's time argument for user time ``tau`` (``time_input``); under
        preconditioning ``"ctm"`` each of the raw network's two time arguments
        (``c(0) = -inf`` for ``"log_time/4"``)."""
        o = ops or self._ops
        c = self.conventions
        if c.resolved_time_input == TimeInput.LOG_TIME_4:
            return c.time_input_scale * o.log(tau) / 4
        return c.time_input_scale * tau

    def input_to_time(self, a, *, ops: _Ops | None = None):
        """Inverse of :meth:`time_to_input`."""
        o = ops or self._ops
        c = self.conventions
        if c.resolved_time_input == TimeInput.LOG_TIME_4:
            return o.exp(4 * a / c.time_input_scale)
        return a / c.time_input_scale

    def _single_end(self, o: _Ops, tau):
        """The user time of a single-time call's map end: ``tau`` itself or the data end."""
        if self.single_time_end == "diagonal":
            return tau
        return self._time.tau(o, o.zeros_like(tau))

    def encode_times(self, tau, rho, *, ops: _Ops | None = None) -> tuple[Any, ...]:
        """The time arguments the user's network takes for a map from ``tau`` to ``rho`` (two,
        or one for ``"x_t"``, where ``rho`` must be the end that signature implies)."""
        o = ops or self._ops
        sig = self.conventions.signature
        if sig == "x_t":
            _require_same(rho, self._single_end(o, tau), self.single_time_end)
            return (self.time_to_input(tau, ops=o),)
        if self.conventions.preconditioning == Preconditioning.CTM:
            a_t, a_s = self.time_to_input(tau, ops=o), self.time_to_input(rho, ops=o)
            return (a_t, a_s) if sig == "x_t_s" else (a_s, a_t)
        if sig == "x_t_s":
            return tau, rho
        if sig == "x_s_t":
            return rho, tau
        if sig == "x_t_dt":
            return tau, tau - rho
        return tau, self._level_of_step(o, tau, rho)

    def decode_times(self, a1, a2=None, *, ops: _Ops | None = None) -> tuple[Any, Any]:
        """Inverse of :meth:`encode_times`: ``(tau, rho)`` from the network's time arguments
        (``a2`` is ``None`` for ``"x_t"``)."""
        o = ops or self._ops
        sig = self.conventions.signature
        if sig == "x_t":
            tau = self.input_to_time(a1, ops=o)
            return tau, self._single_end(o, tau)
        if self.conventions.preconditioning == Preconditioning.CTM:
            b1, b2 = self.input_to_time(a1, ops=o), self.input_to_time(a2, ops=o)
            return (b1, b2) if sig == "x_t_s" else (b2, b1)
        if sig == "x_t_s":
            return a1, a2
        if sig == "x_s_t":
            return a2, a1
        if sig == "x_t_dt":
            return a1, a1 - a2
        levels = self._shortcut_levels
        k = a2
        if o.framework == "torch":
            kf = torch.as_tensor(k).to(a1.dtype)
            ok = bool(((kf == kf.round()) & (kf >= 0) & (kf <= levels)).all())
        else:
            import numpy as np

            kn = np.asarray(k, dtype=np.float64)
            ok = bool(np.all((kn == np.round(kn)) & (kn >= 0) & (kn <= levels)))
            kf = o.xp.asarray(k).astype(a1.dtype)
        if not ok:
            raise ConventionError(
                f"shortcut_log2 level must be an integer in [0, {levels}], got {k}"
            )
        step = o.where(kf == levels, o.zeros_like(kf), 2.0 ** (-kf))
        # The generative direction: rho moves towards data, i.e. against sign(tau'(t)).
        direction = 1.0 if self.conventions.time == "noise_at_1" else -1.0
        return a1, a1 - direction * step

    def _level_of_step(self, o: _Ops, tau, rho):
        import numpy as np

        levels = self._shortcut_levels
        direction = 1.0 if self.conventions.time == "noise_at_1" else -1.0
        step = np.asarray(_to_numpy(direction * (tau - rho)), dtype=np.float64)
        if (step < 0).any():
            raise ConventionError(
                "signature 'shortcut_log2' encodes only generative steps (towards data); "
                f"got a step of {float(step.min())} in that direction"
            )
        with np.errstate(divide="ignore"):
            k = np.where(step == 0, levels, -np.log2(np.where(step == 0, 1.0, step)))
        kr = np.round(k)
        bad = (np.abs(k - kr) > 1e-6) | (kr < 0) | (kr > levels) | ((kr == levels) & (step != 0))
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ConventionError(
                f"signature 'shortcut_log2' with shortcut_levels={levels} cannot express the step "
                f"{float(step[i])!r} at index {i}: steps must be 2^-k, 0 <= k < {levels}, or 0"
            )
        if o.framework == "torch":
            return torch.as_tensor(kr, dtype=getattr(tau, "dtype", torch.float64))
        return o.xp.asarray(kr, dtype=tau.dtype)

    # -- the affine map of the network output ----------------------------------------------

    def output_coefficients(self, t, s, *, ops: _Ops | None = None) -> tuple[Any, Any]:
        """``(q, k)`` with ``F(x, t, s) = q x + k N`` (``(N,)`` arrays in our time)."""
        o = ops or self._ops
        p = self.conventions.prediction
        if p == "average_velocity":
            q = self._time.scale_quotient(o, t, s)
            k = self._time.slope(o, t, s) / self._time.scale(o, s)
        elif p == "x0":
            # D is a point at the data end: in the user's units it is scale(0) times ours.
            q, k = 1 / t + 0 * s, -1 / (t * self._time.scale(o, 0 * t)) + 0 * s
        else:
            q, k = -1 / (1 - t) + 0 * s, 1 / (1 - t) + 0 * s
        return q, k

    def output_gain(self, t, s, *, ops: _Ops | None = None):
        """``dF / d(output)`` per row (our ``F`` per unit of what the user's network returns):
        ``k``, times ``c_out`` under preconditioning (the network is the raw one)."""
        o = ops or self._ops
        _, k = self.output_coefficients(t, s, ops=o)
        if self.conventions.preconditioning == Preconditioning.NONE:
            return k
        return k * self.preconditioning_coefficients(self._time.tau(o, t), ops=o)[1]

    @property
    def data_unit(self) -> float:
        """``sigma_data``: the user's data are ours times this (1 unless declared)."""
        return self.conventions.sigma_data

    def residual_factor(self, t, s, kind: TargetKind, *, ops: _Ops | None = None):
        """``w(t, s)``: 1 for value targets; ``tau'(t) / slope(t, s)`` for time-derivative ones."""
        o = ops or self._ops
        if kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {kind!r}; choose one of {TARGET_KINDS}")
        if kind == "value" or self._time.linear:
            return o.ones_like(t)
        return self._time.dtau(o, t) / self._time.slope(o, t, s)

    # -- networks, both ways ---------------------------------------------------------------

    def network_to_user(self, F: Callable, *, ours_dtype=None) -> Callable:
        """Wrap our network ``F(x, t, s)`` as the user's ``N(x_u, arg1, arg2)``.

        ``F`` must be written in the user's framework (a torch callable for torch, a JAX-traceable
        callable for JAX). It is evaluated in ``ours_dtype`` (default float64 for torch, the
        user's dtype for JAX) and its output cast to the user's dtype; every conversion is
        differentiable, so the user's forward- and reverse-mode derivatives flow through it.
        """
        o = self._ops
        if ours_dtype is None and o.framework == "torch":
            ours_dtype = torch.float64
        n_args = self.n_time_args
        precond = self.conventions.preconditioning != Preconditioning.NONE

        def network(x_in, *args):
            if len(args) != n_args:
                raise TypeError(
                    f"the network takes x and {n_args} time argument(s) under signature "
                    f"{self.conventions.signature.value!r}; got {len(args)}"
                )
            x_in, *args = _cast(o, ours_dtype, x_in, *args)
            tau, rho = self.decode_times(*args, ops=o)
            if precond:
                c_skip, c_out, c_in = self.preconditioning_coefficients(tau, ops=o)
                x_u = x_in / o.col(c_in)
            else:
                x_u = x_in
            t, s = self._time.t_of(o, tau), self._time.t_of(o, rho)
            x = x_u / o.col(self._time.scale(o, t))
            q, k = self.output_coefficients(t, s, ops=o)
            out = (F(x, t, s) - o.col(q) * x) / o.col(k)
            if precond:
                # raw = (D - c_skip x) / c_out; where c_out = 0 (sigma_min) D ignores raw. The
                # time decoded from c_noise (log, exp) is a rounding away from the user's own:
                # a user's c_out of exactly 0 comes back as ~1e-16 (1e-10 from float32), so a
                # c_out within _C_OUT_ZERO sigma_data of 0 counts as 0 (raw 0, D = c_skip x).
                live = o.abs(c_out) > _C_OUT_ZERO * self.conventions.sigma_data
                c_safe = o.where(live, c_out, o.ones_like(c_out))
                raw = (out - o.col(c_skip) * x_u) / o.col(c_safe)
                out = o.where(o.col(live), raw, o.zeros_like(raw))
            return _cast(o, self.user_dtype, out)[0]

        return network

    def network_to_ours(self, N: Callable) -> Callable:
        """Wrap the user's network ``N(x_u, arg1, arg2)`` as our ``F(x, t, s)``.

        ``x, t, s`` are arrays of the user's framework in our convention; ``F`` is returned in
        the user's dtype.
        """
        o = self._ops
        precond = self.conventions.preconditioning != Preconditioning.NONE

        def F(x, t, s):
            tau, rho = self._time.tau(o, t), self._time.tau(o, s)
            args = self.encode_times(tau, rho, ops=o)
            x_u = o.col(self._time.scale(o, t)) * x
            q, k = self.output_coefficients(t, s, ops=o)
            if precond:
                c_skip, c_out, c_in = self.preconditioning_coefficients(tau, ops=o)
                out = o.col(c_skip) * x_u + o.col(c_out) * N(o.col(c_in) * x_u, *args)
            else:
                out = N(x_u, *args)
            return o.col(q) * x + o.col(k) * out

        return F

    def preconditioning_coefficients(self, tau, *, ops: _Ops | None = None):
        """``(c_skip, c_out, c_in)`` at user time ``tau`` with ``D = c_skip x + c_out
        raw(c_in x, c_noise)`` (user units; see the module docstring)."""
        o = ops or self._ops
        c = self.conventions
        sd = c.sigma_data
        p = c.preconditioning
        if p == Preconditioning.TRIGFLOW:
            return o.cos(tau), -sd * o.sin(tau), o.ones_like(tau) / sd
        if p == Preconditioning.NONE:
            raise ConventionError("no preconditioning was declared")
        root = o.sqrt(tau**2 + sd**2)
        lo = c.sigma_min if p == Preconditioning.CONSISTENCY else 0.0
        assert lo is not None
        return sd**2 / ((tau - lo) ** 2 + sd**2), (tau - lo) * sd / root, 1 / root

    def inputs_to_ours(self, x_in, *args, ops: _Ops | None = None) -> tuple[Any, Any, Any]:
        """``(x, t, s)`` in our convention from the arguments of one call of the user's network
        (the raw network's ``(c_in x, c_noise)`` under preconditioning)."""
        o = ops or self._ops
        tau, rho = self.decode_times(*args, ops=o)
        if self.conventions.preconditioning != Preconditioning.NONE:
            x_in = x_in / o.col(self.preconditioning_coefficients(tau, ops=o)[2])
        t, s = self._time.t_of(o, tau), self._time.t_of(o, rho)
        return self.points_to_ours(x_in, t, ops=o), t, s

    # -- points and velocities --------------------------------------------------------------

    def points_to_user(self, x, t, *, ops: _Ops | None = None):
        """``x_u = a(t) x``."""
        o = ops or self._ops
        return o.col(self._time.scale(o, t)) * x

    def points_to_ours(self, x_u, t, *, ops: _Ops | None = None):
        """``x = x_u / a(t)``."""
        o = ops or self._ops
        return x_u / o.col(self._time.scale(o, t))

    def velocity_to_user(self, v, x, t, *, ops: _Ops | None = None):
        """``v_u = d x_u / d tau = (a(t) v + a'(t) x) / tau'(t)`` at our point ``x``."""
        o = ops or self._ops
        tm = self._time
        return (o.col(tm.scale(o, t)) * v + o.col(tm.dscale(o, t)) * x) / o.col(tm.dtau(o, t))

    def velocity_to_ours(self, v_u, x, t, *, ops: _Ops | None = None):
        """Inverse of :meth:`velocity_to_user`: ``v = (tau'(t) v_u - a'(t) x) / a(t)``."""
        o = ops or self._ops
        tm = self._time
        return (o.col(tm.dtau(o, t)) * v_u - o.col(tm.dscale(o, t)) * x) / o.col(tm.scale(o, t))

    def velocity_field_to_user(self, v: Callable) -> Callable:
        """Wrap our velocity field ``v(x, t)`` (torch) as the user's ``v_u(x_u, tau)``."""
        o = self._ops

        def field(x_u, tau):
            t = self._time.t_of(o, tau)
            x = self.points_to_ours(x_u, t, ops=o)
            return self.velocity_to_user(v(x, t), x, t, ops=o)

        return field

    # -- targets, both ways -----------------------------------------------------------------

    def target_to_ours(
        self, N_tgt: Tensor, N: Tensor, x: Tensor, t: Tensor, s: Tensor, kind: TargetKind
    ) -> Tensor:
        """Our ``F_tgt`` from the user's ``N_tgt`` (float64 torch tensors; ``N`` the network's
        output at the same inputs): ``F_tgt = F - w k (N - N_tgt)`` with ``F = q x + k N``."""
        o = self._torch_ops
        q, k = self.output_coefficients(t, s, ops=o)
        w = self.residual_factor(t, s, kind, ops=o)
        F = q[:, None] * x + k[:, None] * N
        return F - (w * k)[:, None] * (N - N_tgt)

    def target_to_user(
        self, F_tgt: Tensor, F: Tensor, x: Tensor, t: Tensor, s: Tensor, kind: TargetKind
    ) -> Tensor:
        """Inverse of :meth:`target_to_ours`: the user's ``N_tgt`` from our ``F_tgt``."""
        o = self._torch_ops
        q, k = self.output_coefficients(t, s, ops=o)
        w = self.residual_factor(t, s, kind, ops=o)
        N = (F - q[:, None] * x) / k[:, None]
        return N - (F - F_tgt) / (w * k)[:, None]


def _require_same(rho, end, kind) -> None:
    """Refuse a map a single-time network cannot express (skipped for traced arrays)."""
    try:
        gap = float(_to_numpy(abs(rho - end)).max()) if _to_numpy(rho).size else 0.0
    except Exception:  # a tracer (jax.jit, torch.func): the end is not checked there
        return
    if gap > 1e-9:
        raise ConventionError(
            f"a single-time network ('x_t') computes the map to the "
            f"{'same time (its velocity)' if kind == 'diagonal' else 'data end'}; it cannot "
            f"express a map to another end time (off by {gap:.3g} in user time)"
        )


def _to_numpy(a):
    import numpy as np

    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _cast(o: _Ops, dtype, *arrays):
    if dtype is None:
        return arrays
    if o.framework == "torch":
        return tuple(a.to(dtype) for a in arrays)
    return tuple(a.astype(dtype) for a in arrays)
