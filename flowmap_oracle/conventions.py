"""The project's convention, written once: method names, the interpolant, the flow step.

Every layer above :mod:`flowmap_oracle.reference_models` (objectives, oracle, experiments,
reports, the command line) takes these from here.

* **Time.** Data ``x0`` at ``t = 0``, noise ``x1 ~ N(0, I)`` at ``t = 1``; ``s < t`` is the
  generative direction.
* **Interpolant.** ``x_t = alpha(t) x0 + beta(t) x1`` for the probability path of the teacher
  (:func:`interpolant`); ``alpha(t) = 1 - t``, ``beta(t) = t`` on the default :data:`LINEAR` path.
  Its conditional velocity is ``alpha'(t) x0 + beta'(t) x1`` (:func:`conditional_velocity`),
  ``x1 - x0`` on the linear path. An objective takes both from the path it is given, so a
  student trained against a teacher on the VP path sees the VP interpolant *and* the VP velocity.
* **Flow map.** ``f_{t->s}(x) = x + (s - t) F(x, t, s)`` with ``F`` the average velocity
  (:func:`flow_step`); ``f_{t->t}`` is the identity.
* **Method names.** :class:`Method`, one name per objective, used by the objectives' table, the
  oracle's checks and protocols, training, benchmarks, JSON files and the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from torch import Tensor

from .reference_models.paths import LinearPath, LipmanPath, ProbabilityPath, TrigPath

__all__ = [
    "LINEAR",
    "PATH_NAMES",
    "Method",
    "col",
    "conditional_velocity",
    "flow_step",
    "interpolant",
    "is_linear",
    "path_named",
]


class Method(StrEnum):
    """The one vocabulary of distillation methods (values are the names users type).

    The value is what the command line, JSON files, check names (``<method>.<role>.<property>``)
    and an :class:`~flowmap_oracle.oracle.Implementation`'s ``targets``/``losses`` keys use.
    """

    FLOW_MATCHING = "flow_matching"
    MEANFLOW = "meanflow"
    SPLIT_MEANFLOW = "split_meanflow"
    CONSISTENCY = "consistency"
    """Discrete consistency models: distillation (a teacher step) and training (``x1 - x0``)."""
    SCM = "scm"
    """Continuous-time consistency models (sCM)."""
    FACM = "facm"
    AYF_EMD = "ayf_emd"
    AYF_LMD = "ayf_lmd"
    SHORTCUT = "shortcut"
    REFLOW = "reflow"
    IMM = "imm"
    CTM = "ctm"
    FMM_LAGRANGIAN = "fmm_lagrangian"
    """Flow map matching's Lagrangian map distillation (Boffi, Albergo, Vanden-Eijnden 2024)."""
    FMM_EULERIAN = "fmm_eulerian"
    """Flow map matching's Eulerian map distillation (Boffi, Albergo, Vanden-Eijnden 2024)."""
    LSD = "lsd"
    """Lagrangian self-distillation (Boffi, Albergo, Vanden-Eijnden 2025)."""
    ESD = "esd"
    """Eulerian self-distillation (Boffi, Albergo, Vanden-Eijnden 2025)."""
    PSD = "psd"
    """Progressive self-distillation (Boffi, Albergo, Vanden-Eijnden 2025)."""

    # Deliberately shadows str.title() (Method is a StrEnum) with a property; public API.
    @property
    def paper_name(self) -> str:
        """The method's name as its paper writes it."""
        return _TITLES[self]

    @classmethod
    def parse(cls, name: str | Method) -> Method:
        """The method called ``name``.

        Raises:
            ValueError: for an unknown name, naming the known ones (and the canonical name of
                a common alias such as ``"fm"``).
        """
        if isinstance(name, Method):
            return name
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"{cls.unknown(name)}; known methods: {known}") from None

    @classmethod
    def unknown(cls, name: object) -> str:
        """``"unknown method 'fm' (did you mean 'flow_matching'?)"``: the start of an error."""
        hint = _ALIASES.get(str(name))
        did_you_mean = f" (did you mean {hint.value!r}?)" if hint else ""
        return f"unknown method {name!r}{did_you_mean}"


_TITLES: dict[Method, str] = {
    Method.FLOW_MATCHING: "Flow matching",
    Method.MEANFLOW: "MeanFlow",
    Method.SPLIT_MEANFLOW: "SplitMeanFlow",
    Method.CONSISTENCY: "Consistency models (discrete: CD / CT)",
    Method.SCM: "Continuous consistency models (sCM)",
    Method.FACM: "FACM",
    Method.AYF_EMD: "Align Your Flow (EMD)",
    Method.AYF_LMD: "Align Your Flow (LMD)",
    Method.SHORTCUT: "Shortcut models",
    Method.REFLOW: "ReFlow",
    Method.IMM: "Inductive moment matching (IMM)",
    Method.CTM: "Consistency trajectory models (CTM)",
    Method.FMM_LAGRANGIAN: "Flow map matching (Lagrangian map distillation)",
    Method.FMM_EULERIAN: "Flow map matching (Eulerian map distillation)",
    Method.LSD: "Lagrangian self-distillation (LSD)",
    Method.ESD: "Eulerian self-distillation (ESD)",
    Method.PSD: "Progressive self-distillation (PSD)",
}

_ALIASES: dict[str, Method] = {
    "fm": Method.FLOW_MATCHING,
    "cfm": Method.FLOW_MATCHING,
    "split": Method.SPLIT_MEANFLOW,
    "splitmeanflow": Method.SPLIT_MEANFLOW,
    "cm": Method.CONSISTENCY,
    "cd": Method.CONSISTENCY,
    "ct": Method.CONSISTENCY,
    "consistency_distillation": Method.CONSISTENCY,
    "consistency_training": Method.CONSISTENCY,
    "emd": Method.AYF_EMD,
    "lmd": Method.AYF_LMD,
    "mean_flow": Method.MEANFLOW,
    "fmm": Method.FMM_LAGRANGIAN,
    "fmm_lmd": Method.FMM_LAGRANGIAN,
    "fmm_emd": Method.FMM_EULERIAN,
}


LINEAR: ProbabilityPath = LinearPath()
"""The default path ``x_t = (1 - t) x0 + t x1``."""

_PATHS: dict[str, Callable[[], ProbabilityPath]] = {
    "linear": LinearPath,
    "trig": TrigPath,
    "lipman": LipmanPath,
}
PATH_NAMES: tuple[str, ...] = tuple(_PATHS)
"""The named probability paths the teachers offer (``--path`` on the command line)."""


def path_named(name: str) -> ProbabilityPath:
    """The probability path called ``name`` (one of :data:`PATH_NAMES`).

    Raises:
        ValueError: for an unknown name, naming the known ones.
    """
    try:
        return _PATHS[name]()
    except KeyError:
        raise ValueError(f"unknown path {name!r}; known paths: {', '.join(PATH_NAMES)}") from None


def col(t: Tensor) -> Tensor:
    """A ``(N,)`` time tensor as a ``(N, 1)`` column, to broadcast against ``(N, d)`` points."""
    return t[:, None]


def interpolant(path: ProbabilityPath, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``x_t = alpha(t) x0 + beta(t) x1`` on ``path`` (``(1 - t) x0 + t x1`` on :data:`LINEAR`).

    Arguments:
        path: the probability path (a teacher's ``teacher.path``).
        x0, x1: data and noise, ``(N, d)``.
        t: times, ``(N,)``.

    Returns:
        ``(N, d)`` points.
    """
    return path.interpolate(x0, x1, t)


def conditional_velocity(path: ProbabilityPath, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``d x_t / dt = alpha'(t) x0 + beta'(t) x1`` given the pair (``x1 - x0`` on :data:`LINEAR`).

    Its conditional mean given ``x_t`` is the teacher's marginal velocity; a loss built on it is
    unbiased only in expectation (DESIGN.md, "Ground truth and tolerances").
    """
    return path.conditional_velocity(x0, x1, t)


def flow_step(x: Tensor, average_velocity: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One flow-map step ``x_s = x_t - (t - s) F`` with ``F`` the average velocity on ``[s, t]``."""
    return x - col(t - s) * average_velocity


def is_linear(path: ProbabilityPath) -> bool:
    """Whether ``path`` is the linear path ``(1 - t) x0 + t x1`` (some conventions need it)."""
    return isinstance(path, LinearPath)
