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
    # Both sides evaluate the same memoised exact network F* (a float64 DOP853 solve of the
    # teacher's ODE); its derivative along trajectories is exact, without finite differences
    # (D_t F* = (v - F*) / (t - s) away from the diagonal, integral forms near it, J_x F* by the
    # variational equation: reference_models.ExactAverageVelocity), whichever JVP API the
    # implementation uses (torch.func.jvp, torch.autograd.functional.jvp, jax.jvp). What remains
    # is rounding, amplified by the conversions into the user's convention. Measured by
    # ``python tests/measure_exact_map.py > benchmarks/exact_map_errors.json``: every
    # exact-map check (MeanFlow, FACM, split MeanFlow, Shortcut fixed points and the sCM
    # tangent) on its explicit cases, on 13 correct float64 implementations (the reference on
    # the linear, trig and Lipman paths; MeanFlow/FACM/sCM targets in every time convention with
    # torch.func.jvp and torch.autograd.functional.jvp; the EDM example; JAX's MeanFlow target
    # in float64) and 5 teachers (ring8, checkerboard, anisotropic_gaussian, anisotropic10,
    # full64): largest error 8.3e-12 (sCM tangent, EDM time, autograd JVP, full64). 1e-9 leaves
    # a factor 120 over it and stays eight orders below a wrong target's effect (>= 1e-2). It
    # was 1e-7 while the derivative came from finite differences (error up to 1.4e-9).
    "float64": Tolerance(1e-9, 1e-9, "rounding of the exact network and the conversions"),
    # Measured the same way on the float32 examples (JAX MeanFlow, torch Shortcut): largest
    # error 4.4e-7 (anisotropic10); 1e-4 is kept for float32 arithmetic of other targets.
    "float32": Tolerance(1e-4, 1e-4, "float32 arithmetic in the implementation"),
}
"""Fixed-point checks at the exact teacher map of a Gaussian mixture (ODE based)."""


def tolerance(table: dict[str, Tolerance], dtype: str) -> Tolerance:
    """The entry of ``table`` for ``dtype``; an unknown dtype is an error naming the table's keys."""
    try:
        return table[dtype]
    except KeyError:
        raise KeyError(f"no tolerance for dtype {dtype!r}; known: {sorted(table)}") from None
