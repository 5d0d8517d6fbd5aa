"""The inventory of objectives, each measured at the exact teacher flow map.

For every objective of :mod:`flowmap_oracle.objectives` this module records its loss
type and evaluates it on the 2-D ring of eight Gaussians (``ring8``, linear path, float64) with
the *exact* teacher map in the student's place and, wherever the objective takes a velocity,
the teacher's marginal velocity (a teacher solver is the exact flow map). The result is

* ``fixed_point_residual``: for a *pointwise* fixed point, ``max_i |r_i|`` over every residual
  the loss penalises (every term, every sample, every component); for a *statistical* one
  (IMM), ``|mean MMD^2|`` over groups of particles;
* ``tolerance``: the bound it is held to, with its reason;
* ``perturbed_residual``: the same quantity for a control -- the exact map plus a smooth
  perturbation (:class:`~flowmap_oracle.experiments.models.PerturbedFlowMap`, ``eps = 0.05``;
  for IMM, whose finite-sample MMD cannot see that, twice ``F*``) -- which must be far above
  the tolerance: the check can fail.

Derivatives of the exact map (MeanFlow, sCM, FACM, AYF) use central differences of ODE solutions
(step ``1e-5``, the three points solved in one batch so that solver errors cancel); their
residuals are limited to about ``2e-9`` by the ``h^2`` truncation, and held to ``1e-7``. (The
tests check this route against the teacher's variational-equation derivative.) Map-only
objectives compose ODE solutions solved to ``1e-12`` and are held to ``1e-9``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..conventions import LINEAR, Method, interpolant
from ..objectives import (
    ExactSolver,
    FiniteDifference,
    ayf_emd_loss,
    ayf_lmd_loss,
    consistency_loss,
    ctm_loss,
    esd_loss,
    facm_loss,
    flow_matching_loss,
    fmm_eulerian_loss,
    fmm_lagrangian_loss,
    imm_loss,
    lsd_loss,
    meanflow_loss,
    psd_loss,
    rectified_velocity,
    reflow_couplings,
    reflow_loss,
    scm_loss,
    shortcut_loss,
    split_meanflow_loss,
)
from ..reference_models import ExactFlowMap, GaussianMixtureTeacher, preset
from ..reference_models.paths import ProbabilityPath
from .models import ExpandedTimeFlowMap, FlowMapModel, PerturbedFlowMap, TeacherFlowMap

__all__ = [
    "OBJECTIVES",
    "FixedPointResult",
    "ObjectiveSpec",
    "measure_fixed_points",
]

FD = FiniteDifference(1e-5)
PERTURBATION = 0.05
FD_TOL = (
    1e-7,
    "central differences (h = 1e-5) of ODE solutions solved in one batch (shared steps, so "
    "solver errors cancel): truncation ~h^2, measured 2e-9",
)
MAP_TOL = (1e-9, "compositions of ODE solutions solved to rtol = atol = 1e-12")
VEL_TOL = (1e-12, "the exact map's diagonal is the closed-form velocity (rounding only)")
NEWTON_TOL = (1e-9, "Newton inversion to 1e-11 of the ReFlow interpolation of ODE solutions")
IMM_SIGMAS = 4.0
IMM_TOL = (float("nan"), f"{IMM_SIGMAS:g} standard errors of the mean MMD^2 over groups")
IMM_CONTROL_SCALE = 2.0
IMM_TIMES = (
    (1.0, 0.5, 0.0),
    (0.9, 0.45, 0.0),
    (0.8, 0.4, 0.0),
    (0.7, 0.35, 0.0),
    (0.6, 0.3, 0.0),
    (0.9, 0.6, 0.2),
    (0.8, 0.55, 0.3),
    (0.5, 0.25, 0.0),
)
"""IMM's ``(t, r, s)`` per group: mostly one-step generation ``s = 0`` with ``r`` half-way."""


@dataclass
class _Context:
    """The batch and teacher objects shared by every evaluation (built once)."""

    teacher: GaussianMixtureTeacher
    path: ProbabilityPath
    exact: ExactFlowMap
    solver: ExactSolver
    x0: Tensor
    x1: Tensor
    t: Tensor
    r: Tensor
    s: Tensor
    delta_t: float
    imm_batch: tuple[Tensor, ...]
    imm_group_size: int
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of the inventory.

    Attributes:
        name: identifier (CLI and JSON).
        loss_type: ``"a"`` forward, ``"b"`` backward, ``"c"`` self-consistency (the seed's).
        module: the module implementing it.
        fixed_point_kind: ``"pointwise"`` or ``"statistical"``.
        tolerance, tolerance_reason: the bound the fixed-point residual is held to, and why.
        teacher: what the teacher supplies in the measurement.
        control: the perturbed map that must give a clearly positive residual.
        evaluate: ``evaluate(context, model) -> residual tensors`` (statistical: per-group
            estimates).
    """

    name: str
    loss_type: Literal["a", "b", "c"]
    module: str
    fixed_point_kind: Literal["pointwise", "statistical"]
    tolerance: float
    tolerance_reason: str
    teacher: str
    control: str
    evaluate: Callable[[_Context, FlowMapModel], list[Tensor]]


@dataclass(frozen=True)
class FixedPointResult:
    """One measured inventory row (see the module docstring)."""

    name: str
    loss_type: str
    module: str
    fixed_point_kind: str
    fixed_point_residual: float
    tolerance: float
    tolerance_reason: str
    perturbed_residual: float
    passed: bool
    teacher: str
    control: str
    standard_error: float | None
    n_samples: int
    seconds: float
    path: str = "linear"

    def to_json(self) -> dict:
        return asdict(self)


def _v(ctx: _Context):
    return ctx.teacher.velocity


def _fm(ctx, m):
    return [flow_matching_loss(m, ctx.x0, ctx.x1, ctx.t, velocity=_v(ctx), path=ctx.path).residual]


def _meanflow(ctx, m):
    out = meanflow_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path
    )
    return [out.residual]


def _split(ctx, m):
    out = split_meanflow_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.r, ctx.s, velocity=_v(ctx), path=ctx.path
    )
    return [out.residual]


def _cd(ctx, m):
    t = ctx.t.clamp_min(ctx.delta_t)
    out = consistency_loss(
        m, ctx.x0, ctx.x1, t, delta_t=ctx.delta_t, solver=ctx.solver, path=ctx.path
    )
    return [out.residual]


def _scm(ctx, m):
    return [
        scm_loss(m, ctx.x0, ctx.x1, ctx.t, velocity=_v(ctx), derivative=FD, path=ctx.path).residual
    ]


def _facm(ctx, m):
    wrapped = ExpandedTimeFlowMap(m)
    out = facm_loss(wrapped, ctx.x0, ctx.x1, ctx.t, velocity=_v(ctx), derivative=FD, path=ctx.path)
    x_t = interpolant(ctx.path, ctx.x0, ctx.x1, ctx.t)
    tau = 2 - ctx.t
    anchor = wrapped(x_t, tau, tau) - ctx.teacher.velocity(x_t, ctx.t)
    return [out.residual, anchor]


def _emd(ctx, m):
    out = ayf_emd_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path
    )
    return [out.residual]


def _lmd(ctx, m):
    out = ayf_lmd_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path
    )
    return [out.residual]


def _shortcut(ctx, m):
    out = shortcut_loss(m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), path=ctx.path)
    x_t = interpolant(ctx.path, ctx.x0, ctx.x1, ctx.t)
    return [out.residual, m(x_t, ctx.t, ctx.t) - ctx.teacher.velocity(x_t, ctx.t)]


def _ctm(ctx, m):
    out = ctm_loss(m, ctx.x0, ctx.x1, ctx.t, ctx.r, ctx.s, solver=ctx.solver, path=ctx.path)
    x_t = interpolant(ctx.path, ctx.x0, ctx.x1, ctx.t)
    dsm = ctx.t[:, None] * (m(x_t, ctx.t, ctx.t) - ctx.teacher.velocity(x_t, ctx.t))
    return [out.residual, dsm]


def _fmm_lagrangian(ctx, m):
    out = fmm_lagrangian_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path
    )
    return [out.residual]


def _fmm_eulerian(ctx, m):
    out = fmm_eulerian_loss(
        m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path
    )
    return [out.residual]


def _lsd(ctx, m):
    out = lsd_loss(m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path)
    return [out.residual]


def _esd(ctx, m):
    out = esd_loss(m, ctx.x0, ctx.x1, ctx.t, ctx.s, velocity=_v(ctx), derivative=FD, path=ctx.path)
    return [out.residual]


def _psd(ctx, m):
    out = psd_loss(m, ctx.x0, ctx.x1, ctx.t, ctx.r, ctx.s, velocity=_v(ctx), path=ctx.path)
    return [out.residual]


class _RectifiedFlowModel(FlowMapModel):
    """The rectified flow of the ReFlow coupling as a model: its velocity ``v'(x, t)``, for
    every ``s``, by Newton inversion of the interpolation (memoised per call)."""

    def __init__(self, exact: ExactFlowMap, path: ProbabilityPath) -> None:
        super().__init__()
        self.exact, self.path = exact, path
        self._memo: dict[bytes, Tensor] = {}

    def _one_step(self, y: Tensor) -> Tensor:
        n = y.shape[0]
        return self.exact(y, torch.ones(n, dtype=y.dtype), torch.zeros(n, dtype=y.dtype))

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        key = torch.cat([x, t[:, None]], dim=1).detach().numpy().tobytes()
        if key not in self._memo:
            start = self.exact(x, t, torch.ones_like(t))  # Phi_{t->1}: exact at t = 0 and 1
            res = rectified_velocity(self._one_step, x, t, initial_noise=start, path=self.path)
            self._memo[key] = res.velocity
        return self._memo[key]


def _reflow(ctx, m):
    x0_hat = ctx.cache.get("reflow_x0")
    if x0_hat is None:
        x0_hat = ctx.cache["reflow_x0"] = reflow_couplings(ctx.exact, ctx.x1)
    return [reflow_loss(m, x0_hat, ctx.x1, ctx.t, path=ctx.path).residual]


def _imm(ctx, m):
    x0, x1, t, r, s = ctx.imm_batch
    out = imm_loss(
        m, x0, x1, t, r, s, group_size=ctx.imm_group_size, kernel="laplace", path=ctx.path
    )
    return [out.per_sample]


def _spec(name, loss_type, module, evaluate, tol, teacher, *, control=None, kind="pointwise"):
    return ObjectiveSpec(
        name=Method.parse(name),
        loss_type=loss_type,
        module=module,
        fixed_point_kind=kind,
        tolerance=tol[0],
        tolerance_reason=tol[1],
        teacher=teacher,
        control=control or f"F* + {PERTURBATION:g} sin-field (PerturbedFlowMap)",
        evaluate=evaluate,
    )


MARGINAL = "marginal velocity"
SELF = "the map's own diagonal off it, the marginal velocity on it (s = t)"
OBJECTIVES: tuple[ObjectiveSpec, ...] = (
    _spec("flow_matching", "a", "flow_matching", _fm, VEL_TOL, MARGINAL),
    _spec("meanflow", "b", "meanflow", _meanflow, FD_TOL, MARGINAL),
    _spec("split_meanflow", "c", "split_meanflow", _split, MAP_TOL, MARGINAL + " (boundary)"),
    _spec("consistency", "b", "consistency", _cd, MAP_TOL, "exact ODE step, Dt=0.05"),
    _spec("scm", "b", "continuous_consistency", _scm, FD_TOL, MARGINAL),
    _spec("facm", "b", "facm", _facm, FD_TOL, MARGINAL),
    _spec("ayf_emd", "b", "align_your_flow", _emd, FD_TOL, MARGINAL),
    _spec("ayf_lmd", "a", "align_your_flow", _lmd, FD_TOL, MARGINAL + " at the predicted point"),
    _spec("shortcut", "c", "shortcut", _shortcut, MAP_TOL, MARGINAL + " (FM term)"),
    _spec(
        "reflow",
        "a",
        "reflow",
        _reflow,
        NEWTON_TOL,
        "exact one-step coupling; the fixed point is its rectified flow",
        control="rectified velocity + 0.05 sin-field",
    ),
    _spec(
        "imm",
        "c",
        "imm",
        _imm,
        IMM_TOL,
        "none (teacher-free)",
        kind="statistical",
        control=f"{IMM_CONTROL_SCALE:g} x F* (a 0.05 additive perturbation is below the noise)",
    ),
    _spec("ctm", "a", "ctm", _ctm, MAP_TOL, "exact solver; DSM term with the " + MARGINAL),
    _spec("fmm_lagrangian", "a", "flow_map_matching", _fmm_lagrangian, FD_TOL, MARGINAL),
    _spec("fmm_eulerian", "b", "flow_map_matching", _fmm_eulerian, FD_TOL, MARGINAL),
    _spec("lsd", "a", "self_distillation", _lsd, FD_TOL, SELF),
    _spec("esd", "b", "self_distillation", _esd, FD_TOL, SELF),
    _spec("psd", "c", "self_distillation", _psd, MAP_TOL, "own composition; " + SELF),
)
"""Every objective, in the order of the seed document."""


def _context(n: int, seed: int, imm_group_size: int, path: ProbabilityPath) -> _Context:
    teacher = preset("ring8", path=path)
    exact = ExactFlowMap(teacher)
    gen = torch.Generator().manual_seed(seed)
    x0 = teacher.mixture.sample(n, generator=gen)
    x1 = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    # t in [0.1, 0.9]: central differences at t +- h stay inside (0, 1) and FACM's expanded
    # time encoding (which switches branch at 1) is not crossed.
    t = 0.1 + 0.8 * torch.rand(n, generator=gen, dtype=x0.dtype)
    s = t * torch.rand(n, generator=gen, dtype=x0.dtype)
    r = s + (t - s) * torch.rand(n, generator=gen, dtype=x0.dtype)
    diag = torch.arange(n) % 4 == 0  # a quarter on the diagonal s = r = t (flow matching)
    s, r = torch.where(diag, t, s), torch.where(diag, t, r)
    m = len(IMM_TIMES) * imm_group_size
    ix0 = teacher.mixture.sample(m, generator=gen)
    ix1 = torch.randn(ix0.shape, generator=gen, dtype=ix0.dtype)
    times = torch.tensor(IMM_TIMES, dtype=ix0.dtype).repeat_interleave(imm_group_size, dim=0)
    return _Context(
        teacher=teacher,
        path=path,
        exact=exact,
        solver=ExactSolver(exact),
        x0=x0,
        x1=x1,
        t=t,
        r=r,
        s=s,
        delta_t=0.05,
        imm_batch=(ix0, ix1, times[:, 0], times[:, 1], times[:, 2]),
        imm_group_size=imm_group_size,
    )


class _Scaled(FlowMapModel):
    """``k F`` (IMM's control: a one-step map that overshoots by the factor ``k``)."""

    def __init__(self, inner: nn.Module, k: float) -> None:
        super().__init__()
        self.inner, self.k = inner, k

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.k * self.inner(x, t, s)


def _summarise(spec: ObjectiveSpec, residuals: list[Tensor]) -> tuple[float, float | None]:
    if spec.fixed_point_kind == "statistical":
        est = residuals[0]
        return abs(float(est.mean())), float(est.std() / len(est) ** 0.5)
    return max(float(r.abs().max()) for r in residuals), None


def measure_fixed_points(
    names: Sequence[str] | None = None,
    *,
    n: int = 16,
    seed: int = 0,
    imm_group_size: int = 512,
    path: ProbabilityPath = LINEAR,
) -> list[FixedPointResult]:
    """Measure every (or the named) objective at the exact map of ``ring8`` on ``path``.

    Arguments:
        names: objective names (default all, in :data:`OBJECTIVES` order).
        n: points of the pointwise batch.
        seed: seeds the batch.
        imm_group_size: IMM's particles per group (one group per entry of :data:`IMM_TIMES`).
        path: the probability path of the teacher and of every objective (default linear).

    Returns:
        one :class:`FixedPointResult` per objective.

    The exact map (rtol = atol = 1e-12) is memoised per point and shared by every objective;
    the perturbed controls and IMM's statistical check use a 1e-8 solve (their quantities are
    ``1e-2`` and ``1e-4``, far above either solver error).
    """
    known = {spec.name: spec for spec in OBJECTIVES}
    if names is None:
        specs = list(OBJECTIVES)
    else:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise KeyError(f"unknown objectives {unknown}; known: {sorted(known)}")
        specs = [known[Method.parse(name)] for name in names]
    ctx = _context(n, seed, imm_group_size, path)
    tight = TeacherFlowMap(ctx.exact, cache=True)
    loose = TeacherFlowMap(ExactFlowMap(ctx.teacher, rtol=1e-8, atol=1e-8), cache=True)
    results = []
    for spec in specs:
        start = time.perf_counter()
        exact_model: FlowMapModel
        control: FlowMapModel
        if spec.name == "reflow":
            exact_model = _RectifiedFlowModel(ctx.exact, ctx.path)
            control = PerturbedFlowMap(exact_model, eps=PERTURBATION)
        elif spec.name == "imm":
            exact_model, control = loose, _Scaled(loose, IMM_CONTROL_SCALE)
        else:
            exact_model, control = tight, PerturbedFlowMap(loose, eps=PERTURBATION)
        residual, stderr = _summarise(spec, spec.evaluate(ctx, exact_model))
        pert, _ = _summarise(spec, spec.evaluate(ctx, control))
        tol = spec.tolerance if stderr is None else IMM_SIGMAS * stderr
        results.append(
            FixedPointResult(
                name=spec.name,
                loss_type=spec.loss_type,
                module=f"flowmap_oracle.objectives.{spec.module}",
                fixed_point_kind=spec.fixed_point_kind,
                fixed_point_residual=residual,
                tolerance=tol,
                tolerance_reason=spec.tolerance_reason,
                perturbed_residual=pert,
                passed=residual <= tol,
                teacher=spec.teacher,
                control=spec.control,
                standard_error=stderr,
                n_samples=len(ctx.imm_batch[0]) if spec.name == "imm" else n,
                seconds=time.perf_counter() - start,
                path=ctx.path.name,
            )
        )
    return results
