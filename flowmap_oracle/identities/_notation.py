"""Symbols shared by the identity modules: the checked ones and the display ones.

Checked expressions use real scalar symbols (``t, s, r, ...``) and points in d = 2
(``x = (x1, x2)``) so that a Jacobian-vector product differs from a vector-Jacobian product.
Display relations (what the report typesets) use the vector notation of the seed: ``x_t``,
``F(x_t, t, s)``, ``v(x_t, t)`` and ``J_x F`` for the Jacobian; they are built unevaluated
(``with sympy.evaluate(False)``) so the terms print in the order written.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "DIM",
    "THETA_MINUS",
    "F_d",
    "JxF",
    "Tex",
    "X",
    "delta",
    "f_d",
    "h",
    "r",
    "s",
    "t",
    "tau",
    "tex",
    "theta",
    "v_d",
    "x1",
    "x2",
    "x_r",
    "x_s",
    "x_t",
]

DIM = 2
"""Dimension of the points in the checks (2: JVP and VJP differ)."""

t, s, r, tau, h = sp.symbols("t s r tau h", real=True)
delta = sp.Symbol("delta", positive=True)
x1, x2 = sp.symbols("x1 x2", real=True)
X = sp.Matrix([x1, x2])
theta = sp.Matrix(sp.symbols("theta1 theta2", real=True))
THETA_MINUS = sp.Matrix(sp.symbols("thetam1 thetam2", real=True))
"""The stop-gradient copy theta- of the parameters (own symbols; see ``sg_gradient``)."""


class Tex(sp.Symbol):
    """A display-only symbol printed verbatim as LaTeX (SymPy would otherwise split its name at
    ``_`` and ``^`` into sub- and superscripts)."""

    def _latex(self, printer) -> str:
        return self.name


def tex(latex: str, *, commutative: bool = True) -> Tex:
    """A :class:`Tex` symbol (for display relations only; never in a checked expression)."""
    return Tex(latex, commutative=commutative)


# display symbols
x_t, x_s, x_r = sp.symbols("x_t x_s x_r")
F_d = sp.Function("F")
f_d = sp.Function("f")
v_d = sp.Function("v", commutative=False)
JxF = tex(r"J_{x} F\,", commutative=False)
