"""Where a check evaluates: spaces of times ``(t, s[, r])``, explicit cases and hypothesis draws.

A :class:`CaseSpace` combines what an objective needs (``s <= t``, ``s = t``, ``s = 0``, a split
point ``r``) with what the implementation's conventions can express (EDM's sigma is finite only
for ``t < 1``; an x0 prediction divides by ``t``; Shortcut's log2 index knows only dyadic steps).
Every check first runs the explicit cases (the corners where bugs hide: ``(1, 0)``, the diagonal,
a generic pair, per-sample mixed times), then hypothesis draws more (deterministically in the
``ci`` profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from hypothesis import strategies as st
from torch import Tensor

from .adapters import ConventionAdapter
from .results import Case

__all__ = ["CaseSpace", "Space", "case_space"]

Space = Literal["forward", "strict", "any", "diagonal", "to_zero", "split"]
"""``forward``: ``s <= t``; ``strict``: ``s < t`` by at least 0.01, where ``s`` is also a start
time (a consistency model's previous time); ``any``: both orders; ``diagonal``: ``s = t``;
``to_zero``: ``s = 0``; ``split``: ``s <= r <= t`` with ``r`` a fraction of the way from ``s``
to ``t`` (``r`` and ``s`` are start times too)."""

_GAP = 0.01  # smallest t - s of the strict space

_DIAGONAL_FRACTION = 0.25  # per-sample draws put a quarter of the batch on s = t (FM terms)


@dataclass(frozen=True)
class CaseSpace:
    """The admissible times of one check for one implementation.

    Attributes:
        space: the objective's requirement.
        t_lo, t_hi: range of the start time ``t``.
        s_lo, s_hi: range of the end time ``s``.
        levels: Shortcut's finest level when steps must be dyadic (``t - s = 2^-k`` or 0).
        max_level: the finest non-zero step level drawn (default ``levels - 1``); checks that
            halve a step use ``levels - 2`` so that half steps stay real steps.
    """

    space: Space
    t_lo: float
    t_hi: float
    s_lo: float
    s_hi: float
    levels: int | None = None
    max_level: int | None = None

    @property
    def _top(self) -> int:
        if self.max_level is not None:
            return self.max_level
        if self.levels is None:
            raise RuntimeError(
                f"the {self.space!r} case space has no step levels (steps are not dyadic)"
            )
        return self.levels - 1

    # -- explicit cases ---------------------------------------------------------------------

    def explicit(self) -> list[Case]:
        """The corner cases every check runs first."""
        hi, lo = self.t_hi, self.s_lo
        if self.space == "diagonal":
            return [Case(0, hi, hi), Case(1, 0.6, 0.6), Case(2)]
        if self.space == "to_zero":
            return [Case(0, hi, lo), Case(1, 0.6, lo), Case(2)]
        if self.levels is not None:
            return [Case(0, hi, self._snap(hi, lo)), Case(1, 0.75, 0.5), Case(2, 0.6, 0.6), Case(3)]
        if self.space == "strict":
            cases = [Case(0, hi, lo), Case(1, 0.7, 0.2), Case(2, 0.5, 0.45), Case(3)]
            return [self._clip(c) for c in cases]
        if self.space == "split":
            return [Case(0, hi, lo, 0.5), Case(1, 0.8, 0.3, 0.25), Case(2)]
        cases = [Case(0, hi, lo), Case(1, 0.7, 0.2), Case(2, 0.5, 0.5), Case(3)]
        if self.space == "any":
            cases.insert(2, Case(4, 0.3, 0.8))
        return [self._clip(c) for c in cases]

    def _clip(self, c: Case) -> Case:
        shared = _shared_times(c)
        if shared is None:
            return c
        t = min(max(shared[0], self.t_lo), self.t_hi)
        s = min(max(shared[1], self.s_lo), self.s_hi)
        if self.space in ("forward", "split"):
            s = min(s, t)
        if self.space == "strict":
            t = max(t, self.s_lo + _GAP)
            s = min(s, t - _GAP)
        return Case(c.seed, t, s, c.r)

    def _snap(self, t: float, s: float) -> float:
        """The end time of the largest dyadic step from ``t`` not passing ``s``."""
        gap = t - s
        if gap <= 0:
            return t
        k = max(0, math.ceil(-math.log2(gap)))
        return t - 2.0**-k if k <= self._top else t

    # -- hypothesis --------------------------------------------------------------------------

    def strategy(self) -> st.SearchStrategy[Case]:
        """Cases drawn by hypothesis: shared scalar times, or per-sample times from a seed."""
        seeds = st.integers(min_value=0, max_value=2**20)
        per_sample = st.builds(Case, seed=seeds)
        return st.one_of(per_sample, self._scalar_cases(seeds))

    def _scalar_cases(self, seeds: st.SearchStrategy[int]) -> st.SearchStrategy[Case]:
        def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
            return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)

        @st.composite
        def draw(draw_) -> Case:
            seed = draw_(seeds)
            if self.space == "diagonal":
                t = draw_(floats(max(self.t_lo, self.s_lo), min(self.t_hi, self.s_hi)))
                return Case(seed, t, t)
            if self.space == "to_zero":
                return Case(seed, draw_(floats(max(self.t_lo, 0.02), self.t_hi)), self.s_lo)
            if self.levels is not None:
                k = draw_(st.integers(min_value=0, max_value=self._top + 1))
                step = 0.0 if k > self._top else 2.0**-k
                t = draw_(floats(max(self.t_lo, self.s_lo + step), self.t_hi))
                return Case(seed, t, t - step)
            if self.space == "strict":
                t = draw_(floats(max(self.t_lo, self.s_lo + _GAP), self.t_hi))
                return Case(seed, t, draw_(floats(self.s_lo, t - _GAP)))
            t = draw_(floats(self.t_lo, self.t_hi))
            if self.space == "any":
                return Case(seed, t, draw_(floats(self.s_lo, self.s_hi)))
            s = draw_(floats(self.s_lo, min(t, self.s_hi)))
            if self.space == "split":
                return Case(seed, t, s, draw_(floats(0.0, 1.0)))
            return Case(seed, t, s)

        return draw()

    # -- tensors -----------------------------------------------------------------------------

    def times(self, case: Case, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(t, s, r)`` as float64 ``(N,)`` tensors for ``case`` (``r`` only for ``split``)."""
        g = torch.Generator().manual_seed(10_007 * case.seed + 17)

        def uniform(lo: float | Tensor, hi: float | Tensor) -> Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

        shared = _shared_times(case)
        if shared is not None:
            t = torch.full((n,), float(shared[0]), dtype=torch.float64)
            s = torch.full((n,), float(shared[1]), dtype=torch.float64)
        elif self.space == "diagonal":
            t = uniform(max(self.t_lo, self.s_lo), min(self.t_hi, self.s_hi))
            s = t.clone()
        elif self.space == "to_zero":
            t = uniform(max(self.t_lo, 0.02), self.t_hi)
            s = torch.full((n,), self.s_lo, dtype=torch.float64)
        elif self.levels is not None:
            k = torch.randint(0, self._top + 2, (n,), generator=g)
            step = torch.where(k > self._top, 0.0, 2.0 ** (-k.to(torch.float64)))
            t = uniform(torch.clamp(self.s_lo + step, min=self.t_lo), self.t_hi)
            s = t - step
        elif self.space == "strict":
            t = uniform(max(self.t_lo, self.s_lo + _GAP), self.t_hi)
            s = uniform(self.s_lo, t - _GAP)
        else:
            t = uniform(self.t_lo, self.t_hi)
            if self.space == "any":
                s = uniform(self.s_lo, self.s_hi)
            else:
                s = uniform(self.s_lo, torch.clamp(t, max=self.s_hi))
                if self.space == "forward":
                    diag = torch.rand(n, generator=g, dtype=torch.float64) < _DIAGONAL_FRACTION
                    s = torch.where(diag, t, s)
        r = None
        if self.space == "split":
            frac = uniform(0.0, 1.0) if case.r is None else torch.full((n,), float(case.r))
            r = s + frac.to(torch.float64) * (t - s)
        return t, s, r


def _shared_times(case: Case) -> tuple[float, float] | None:
    """``(t, s)`` of a case with times shared by the batch; ``None`` for per-sample times."""
    if case.t is None:
        return None
    if case.s is None:
        raise ValueError(f"case {case.describe()}: a shared start time t needs a shared end time s")
    return case.t, case.s


def case_space(space: Space, adapter: ConventionAdapter) -> CaseSpace:
    """The :class:`CaseSpace` of ``space`` under ``adapter``'s conventions."""
    t_lo, t_hi = adapter.start_domain
    s_lo, s_hi = adapter.time_domain
    if space in ("strict", "split"):
        # s (and r) are start times of network evaluations there.
        s_lo, s_hi = max(s_lo, t_lo), min(s_hi, t_hi)
    if space == "to_zero" and s_lo > 0:
        raise ValueError(f"conventions {adapter.conventions.describe()} exclude s = 0")
    return CaseSpace(space, t_lo, t_hi, s_lo, s_hi, adapter.step_levels)
