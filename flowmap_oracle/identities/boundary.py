"""Boundary conditions of the flow-map parameterisations
``f_{t->s}(x) = c_skip(t, s) x + c_out(t, s) F(x, t, s)``.

* MeanFlow / Align Your Flow: ``c_skip = 1``, ``c_out = s - t``: ``f_{t->t} = x`` for every F and
  ``F = (f_{t->s} - f_{t->t}) / (s - t)`` is the average velocity.
* FACM: ``c_out = -t``, meaningful only at ``s = 0`` where it equals ``s - t``; ``f_{0->0} = x``.
* Consistency models (Song et al. 2023): ``c_skip(t) = sigma_d^2 / ((t - eps)^2 + sigma_d^2)``,
  ``c_out(t) = sigma_d (t - eps) / sqrt(sigma_d^2 + t^2)`` with the boundary at the smallest time
  ``eps``; TrigFlow (sCM): ``c_skip = cos t``, ``c_out = -sin t`` with the boundary at ``t = 0``.

``f_{t->t} = x`` is necessary, not sufficient: ``F = 0`` satisfies it too.
"""

from __future__ import annotations

import time

import numpy as np
import sympy as sp

from . import _core
from ._core import Claim, Identity, MethodResult, Step, register
from ._functions import VectorFunction, abstract, random_vector_function
from ._notation import DIM, F_d, X, f_d, s, t, tex, x_t

__all__: list[str] = []

_cskip = sp.Function(r"c_{\mathrm{skip}}")
_cout = sp.Function(r"c_{\mathrm{out}}")


def _numeric_any_F(identity_id: str, build_args, ranges, *, n_args: int = DIM + 2):
    """Numeric check on a random smooth ``F`` (the statements hold for any F)."""

    def numeric(claim: Claim) -> MethodResult:
        start = time.perf_counter()
        seed = _core.seed_of(identity_id)
        F = random_vector_function(n_args, DIM, np.random.default_rng(seed))
        syms, accept = build_args
        points = _core.random_points(seed, ranges, n=6, accept=accept)
        return _core.numeric_zero(
            claim.build(F),
            syms,
            points,
            method=(
                f"numeric at {len(points)} random points, mpmath {_core.NUMERIC_DPS} digits, "
                "random smooth F (d=2)"
            ),
            start=start,
        )

    return numeric


# --------------------------------------------------------------------------- MeanFlow / AYF

_ID_MF = "boundary.meanflow_ayf"


def _mf_build(c_skip, c_out):
    def build(F: VectorFunction) -> list[sp.Matrix]:
        def f(tt, ss):
            return c_skip(tt, ss) * X + c_out(tt, ss) * F(X, tt, ss)

        return [f(t, t) - X, F(X, t, s) - (f(t, s) - f(t, t)) / (s - t)]

    return build


def _symbolic_mf(claim: Claim) -> MethodResult:
    start = time.perf_counter()
    return _core.symbolic_zero(
        claim.build(abstract("F", DIM + 2, DIM)),
        method="exact simplification (d=2, abstract F)",
        start=start,
    )


with sp.evaluate(False):
    _mf_param = sp.Eq(f_d(x_t, t, s), x_t + (s - t) * F_d(x_t, t, s))
    _mf_relation = sp.Eq(F_d(x_t, t, s), (f_d(x_t, t, s) - f_d(x_t, t, t)) / (s - t))
    _mf_twin_sign = sp.Eq(f_d(x_t, t, s), x_t + (t - s) * F_d(x_t, t, s))
    _mf_twin_facm = sp.Eq(f_d(x_t, t, s), x_t - t * F_d(x_t, t, s))

register(
    Identity(
        id=_ID_MF,
        title="MeanFlow/AYF boundary: c_skip = 1, c_out = s - t give f_{t->t} = x and F = average velocity",
        seed_section="ODE Distillation methods / MeanFlow / Align Your Flow",
        assumptions=("F arbitrary (the statement holds for every F)", "s != t for the quotient"),
        statement=Claim(
            "statement",
            "With f = x + (s - t) F: f_{t->t}(x) = x and F = (f_{t->s} - f_{t->t})/(s - t).",
            _mf_relation,
            _mf_build(lambda a, b: sp.S.One, lambda a, b: b - a),
        ),
        steps=(
            Step(_mf_param, "parameterisation with c_skip(t, s) = 1, c_out(t, s) = s - t"),
            Step(
                sp.Eq(f_d(x_t, t, t), x_t, evaluate=False),
                "c_skip(t, t) = 1 and c_out(t, t) = 0",
            ),
            Step(_mf_relation, "subtract and divide by s - t"),
        ),
        twins=(
            Claim(
                "c_out_sign",
                "c_out = t - s: the boundary holds but F becomes minus the average velocity.",
                _mf_twin_sign,
                _mf_build(lambda a, b: sp.S.One, lambda a, b: a - b),
            ),
            Claim(
                "facm_c_out_as_general",
                "FACM's c_out = -t used as a general c_out(t, s): c_out(t, t) = -t != 0.",
                _mf_twin_facm,
                _mf_build(lambda a, b: sp.S.One, lambda a, b: -a),
            ),
        ),
        symbolic=_symbolic_mf,
        numeric=_numeric_any_F(
            _ID_MF,
            ([*X, t, s], lambda p: abs(p[2] - p[3]) > 0.05),
            [(-1.5, 1.5), (-1.5, 1.5), (0, 1), (0, 1)],
        ),
        notes=(
            "f_{t->t} = x is necessary, not sufficient (the seed says 'well-defined only if'): "
            "F = 0 satisfies it as well."
        ),
    )
)


# --------------------------------------------------------------------------- FACM

_ID_FACM = "boundary.facm"


def _facm_build(c_out):
    def build(F: VectorFunction) -> list[sp.Matrix]:
        f_facm = X + c_out(t) * F(X, t, 0)
        f_mf = X + (0 - t) * F(X, t, 0)
        return [f_facm - f_mf, f_facm.subs(t, 0) - X]

    return build


with sp.evaluate(False):
    _facm_relation = sp.Eq(f_d(x_t, t, 0), x_t - t * F_d(x_t, t, 0))
    _facm_twin_sign = sp.Eq(f_d(x_t, t, 0), x_t + t * F_d(x_t, t, 0))
    _facm_twin_conv = sp.Eq(f_d(x_t, t, 0), x_t - (1 - t) * F_d(x_t, t, 0))

register(
    Identity(
        id=_ID_FACM,
        title="FACM boundary: c_out = -t equals s - t at s = 0, and f_{0->0} = x",
        seed_section="Flow Anchor Consistency Model",
        assumptions=("s = 0 (FACM's consistency target); F arbitrary",),
        statement=Claim(
            "statement",
            "f_{t->0} = x - t F(x, t, 0) is the MeanFlow/AYF map at s = 0 and f_{0->0} = x.",
            _facm_relation,
            _facm_build(lambda a: -a),
        ),
        steps=(
            Step(
                sp.Eq(_cout(t, 0), 0 - t, evaluate=False),
                "c_out(t, s) = s - t at s = 0",
            ),
            Step(sp.Eq(f_d(0, 0, 0), sp.Symbol("x_0"), evaluate=False), "c_out(0, 0) = 0"),
        ),
        twins=(
            Claim(
                "c_out_sign",
                "c_out = +t: the map moves away from the data.",
                _facm_twin_sign,
                _facm_build(lambda a: a),
            ),
            Claim(
                "convention_mixup",
                "c_out = -(1 - t), from the convention with data at t = 1: f_{0->0} != x.",
                _facm_twin_conv,
                _facm_build(lambda a: -(1 - a)),
            ),
        ),
        symbolic=lambda claim: _core.symbolic_zero(
            claim.build(abstract("F", DIM + 2, DIM)),
            method="exact simplification (d=2, abstract F)",
            start=time.perf_counter(),
        ),
        numeric=_numeric_any_F(_ID_FACM, ([*X, t], None), [(-1.5, 1.5), (-1.5, 1.5), (0, 1)]),
        notes=(
            "Seed erratum: FACM's c_out(t, s) = -t violates the stated c_out(t, t) = 0 for t > 0; "
            "it is meaningful only at s = 0 (the seed's f_{t->s}(x_t, t, 0) = x_t - t F_{t->s})."
        ),
    )
)


# --------------------------------------------------------------------------- consistency models

_ID_CM = "boundary.consistency_model"
_eps = sp.Symbol("epsilon", positive=True)
_sd = sp.Symbol("sigma_d", positive=True)


def _song_cskip(tt):
    return _sd**2 / ((tt - _eps) ** 2 + _sd**2)


def _song_cout(tt):
    return _sd * (tt - _eps) / sp.sqrt(_sd**2 + tt**2)


def _edm_cskip(tt):
    return _sd**2 / (tt**2 + _sd**2)


def _edm_cout(tt):
    return _sd * tt / sp.sqrt(_sd**2 + tt**2)


def _cm_build(c_skip, c_out):
    def build(F: VectorFunction) -> list[sp.Matrix]:
        G = F(X, t, 0)
        song = (c_skip(t) * X + c_out(t) * G).subs(t, _eps)
        trig = (sp.cos(t) * X - sp.sin(t) * G).subs(t, 0)
        return [song - X, trig - X]

    return build


with sp.evaluate(False):
    _cm_relation = sp.Eq(
        f_d(x_t, t),
        _song_cskip(t) * x_t + _song_cout(t) * F_d(x_t, t),
    )
    _cm_twin_skip = sp.Eq(f_d(x_t, t), _edm_cskip(t) * x_t + _song_cout(t) * F_d(x_t, t))
    _cm_twin_out = sp.Eq(f_d(x_t, t), _song_cskip(t) * x_t + _edm_cout(t) * F_d(x_t, t))

register(
    Identity(
        id=_ID_CM,
        title="Consistency-model boundary: c_skip(eps) = 1, c_out(eps) = 0 (Song et al.; TrigFlow at 0)",
        seed_section="Consistency Models",
        assumptions=(
            "the consistency function f_{t->0} is parameterised by the noise level t, smallest "
            "time eps > 0; sigma_d > 0 is the data scale",
            "TrigFlow (sCM): f = cos(t) x - sin(t) F with the boundary at t = 0",
        ),
        statement=Claim(
            "statement",
            "f(x, eps) = x for Song et al.'s c_skip, c_out (shifted by eps), and f(x, 0) = x "
            "for TrigFlow's cos/sin.",
            _cm_relation,
            _cm_build(_song_cskip, _song_cout),
        ),
        steps=(
            Step(
                sp.Eq(tex(r"c_{\mathrm{skip}}(\epsilon)"), _song_cskip(_eps)),
                "evaluate at the boundary time",
            ),
            Step(
                sp.Eq(tex(r"c_{\mathrm{out}}(\epsilon)"), _song_cout(_eps)),
                "the factor t - eps vanishes",
            ),
        ),
        twins=(
            Claim(
                "unshifted_c_skip",
                "EDM's c_skip = sigma_d^2/(t^2 + sigma_d^2) without the eps shift: "
                "c_skip(eps) != 1.",
                _cm_twin_skip,
                _cm_build(_edm_cskip, _song_cout),
            ),
            Claim(
                "unshifted_c_out",
                "c_out = sigma_d t / sqrt(sigma_d^2 + t^2) without the eps shift: c_out(eps) != 0.",
                _cm_twin_out,
                _cm_build(_song_cskip, _edm_cout),
            ),
        ),
        symbolic=lambda claim: _core.symbolic_zero(
            claim.build(abstract("F", DIM + 2, DIM)),
            method="exact simplification (d=2, abstract F, symbolic eps, sigma_d)",
            start=time.perf_counter(),
        ),
        numeric=_numeric_any_F(
            _ID_CM,
            ([*X, _eps, _sd], None),
            [(-1.5, 1.5), (-1.5, 1.5), (0.001, 0.1), (0.3, 1.0)],
        ),
    )
)
