"""Tolerance tables of the oracle, keyed by the implementation's declared dtype.

A comparison passes when ``|got - expected| <= atol + rtol * |expected|`` elementwise (the rule
of ``torch.testing.assert_close``). Each table states why its numbers are what they are.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXACT_MAP", "GRADIENT", "STANDARD", "Tolerance", "tolerance"]


@dataclass(frozen=True)
class Tolerance:
    """``atol + rtol * |expected|``, with the reason the numbers were chosen."""

    atol: float
    rtol: float
    reason: str = ""

    def describe(self) -> str:
        return f"atol={self.atol:.0e} + rtol={self.rtol:.0e} * |expected|"


STANDARD: dict[str, Tolerance] = {
    # Both sides evaluate the same float64 network on the same float64 inputs; only the order
    # of floating-point operations differs (a few ulps, amplified by |t - s| <= 1 and by network
    # derivatives of order 10).
    "float64": Tolerance(1e-9, 1e-9, "float64 rounding of the same computation"),
    # The implementation computes in float32 (unit roundoff 6e-8) on inputs rounded to float32;
    # the reference uses those rounded inputs in float64. Targets combine O(10) terms of size
    # O(10), so errors reach about 1e-5; 1e-4 leaves a factor 10 and is still far below any
    # mutant's effect (>= 1e-2 on the test networks).
    "float32": Tolerance(1e-4, 1e-4, "float32 arithmetic in the implementation"),
}
"""Targets, losses and flow-map values on random networks and analytic velocities."""

GRADIENT: dict[str, Tolerance] = {
    "float64": Tolerance(1e-9, 1e-8, "float64 rounding; gradients sum over the batch"),
    # Parameter gradients sum N per-sample float32 products: the error grows like sqrt(N) eps.
    "float32": Tolerance(1e-3, 1e-3, "float32 arithmetic summed over the batch"),
}
"""Gradients of losses with respect to network parameters."""

EXACT_MAP: dict[str, Tolerance] = {
    # F* comes from a float64 DOP853 solve at rtol = atol = 1e-12 and its derivative along
    # trajectories from fourth-order differences of such solves, within 1.4e-9 of the
    # variational equation (reference_models.ExactAverageVelocity). The reference's largest fixed-point
    # residual is 2.6e-10 (MeanFlow, FACM, sCM at (t, s) = (1, 0)); 1e-7 leaves a factor 70 over
    # the derivative error and is far below a wrong target's effect (the sign-flipped MeanFlow
    # target is off by more than 1e-2 there, tests/test_oracle.py). The bound holds whichever JVP
    # API differentiates the exact map: the double-backward route of
    # torch.autograd.functional.jvp reads the same differences along the same tangent as forward
    # mode (0 difference measured at the checks' inputs; it assembled J_x F* v from the
    # Jacobian's columns before, 5.3e-7 off at (1, 0), 2.8e-4 in EDM time:
    # tests/test_oracle_conventions_fixes.py), so no separate tolerance is needed.
    "float64": Tolerance(1e-7, 1e-7, "adaptive ODE solve of the exact teacher map"),
    "float32": Tolerance(1e-4, 1e-4, "float32 arithmetic in the implementation"),
}
"""Fixed-point checks at the exact teacher map of a Gaussian mixture (ODE based)."""


def tolerance(table: dict[str, Tolerance], dtype: str) -> Tolerance:
    """The entry of ``table`` for ``dtype``; an unknown dtype is an error naming the table's keys."""
    try:
        return table[dtype]
    except KeyError:
        raise KeyError(f"no tolerance for dtype {dtype!r}; known: {sorted(table)}") from None
