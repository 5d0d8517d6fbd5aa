"""Probability paths ``x_t = alpha(t) x0 + beta(t) x1`` (data at t=0, noise at t=1).

Every path gives its schedules ``alpha, beta`` and their first and second time derivatives.
The built-in paths are written once for any array namespace (``torch`` or ``jax.numpy``), so the
torch teacher and the JAX backend use the same formulas:

========================  =======================  ===============================
path                      ``alpha(t)``             ``beta(t)``
========================  =======================  ===============================
:class:`LinearPath`       ``1 - t``                ``t``
:class:`TrigPath` (VP)    ``cos(pi t / 2)``        ``sin(pi t / 2)``
:class:`LipmanPath`       ``1 - t``                ``sigma_min + (1 - sigma_min) t``
:class:`GeneralPath`      user callable            user callable
========================  =======================  ===============================

:class:`LipmanPath` is Lipman et al.'s conditional-OT path with ``sigma_min`` written in THIS
project's convention (MATH.md section 2): ``x_t ~ N((1-t) x0, (sigma_min + (1-sigma_min) t)^2 I)``
given ``x0``, i.e. Lipman's path with ``t -> 1 - t`` and data and noise swapped. At ``t = 0`` the
"data" end is therefore ``p_data * N(0, sigma_min^2 I)``.

All schedule functions accept any real ``t`` and broadcast elementwise: adaptive solvers probe
slightly outside ``[0, 1]`` and the formulas above stay finite there. A path is *valid* when, on
``[0, 1]``, the schedules are finite, ``alpha(0) > 0``, ``alpha(1) = 0``, ``beta(1) = 1`` (so the
t=1 marginal is exactly ``N(0, I)``), ``alpha`` and ``beta`` never vanish together, and the
derivatives agree with finite differences of the schedules; every path is checked on a grid when it
is constructed, and a violation raises ``ValueError`` naming the problem.

Divided differences such as ``alpha[t, s] = (alpha(t) - alpha(s)) / (t - s)`` (needed for the
average velocity without cancellation near ``s = t``) are computed by Gauss-Legendre quadrature
of the derivatives, ``alpha[t, s] = int_0^1 alpha'(t + u (s - t)) du``, which is exact to rounding
for the polynomial and trigonometric schedules above and has the correct limit ``alpha'(t)`` at
``s = t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DividedDifferences",
    "GeneralPath",
    "LinearPath",
    "LipmanPath",
    "PathCoefficients",
    "ProbabilityPath",
    "TrigPath",
]

# Gauss-Legendre rule on [0, 1] used for divided differences: 16 nodes integrate polynomials of
# degree 31 exactly, and cos/sin of frequency pi/2 over an interval of length <= 1 to rounding.
_gl_x, _gl_w = np.polynomial.legendre.leggauss(16)
_GL_NODES = torch.as_tensor(0.5 * (_gl_x + 1.0), dtype=torch.float64)
_GL_WEIGHTS = torch.as_tensor(0.5 * _gl_w, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class PathCoefficients:
    """``alpha, beta`` and their first and second derivatives at some times (same shapes)."""

    alpha: Any
    beta: Any
    alpha_dot: Any
    beta_dot: Any
    alpha_ddot: Any
    beta_ddot: Any


@dataclass(frozen=True, eq=False)
class DividedDifferences:
    """Divided differences of ``alpha`` and ``beta`` at the nodes ``(t, s)``.

    ``f[t, s] = (f(t) - f(s)) / (t - s)``, ``f[t, t, s] = (f'(t) - f[t, s]) / (t - s)`` and
    ``f[t, s, s] = (f[t, s] - f'(s)) / (t - s)``, with their limits ``f'(t)`` and ``f''(t) / 2``
    at ``s = t``. Computed without cancellation as
    ``f[t, s] = int_0^1 f'(sigma(u)) du``, ``f[t, t, s] = int_0^1 (1 - u) f''(sigma(u)) du`` and
    ``f[t, s, s] = int_0^1 u f''(sigma(u)) du`` with ``sigma(u) = t + u (s - t)``.
    """

    alpha_ts: Tensor
    alpha_tts: Tensor
    alpha_tss: Tensor
    beta_ts: Tensor
    beta_tts: Tensor
    beta_tss: Tensor


@dataclass(frozen=True, eq=False, kw_only=True)
class ProbabilityPath:
    """Base class of a path ``x_t = alpha(t) x0 + beta(t) x1``.

    Subclasses implement :meth:`schedule` for an array namespace ``xp`` (``torch`` or
    ``jax.numpy``). ``name`` is used in reports and JSON output.
    """

    name: str = "path"

    def __post_init__(self) -> None:
        _validate_path(self)

    # ----------------------------------------------------------------------------------------
    # to implement
    def schedule(self, t: Any, xp: Any = torch) -> PathCoefficients:
        """Return ``alpha, beta, alpha', beta', alpha'', beta''`` at ``t`` (array of namespace
        ``xp``); every field has the shape of ``t``."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------
    # torch conveniences
    def alpha(self, t: Tensor) -> Tensor:
        return self.schedule(t).alpha

    def beta(self, t: Tensor) -> Tensor:
        return self.schedule(t).beta

    def alpha_dot(self, t: Tensor) -> Tensor:
        return self.schedule(t).alpha_dot

    def beta_dot(self, t: Tensor) -> Tensor:
        return self.schedule(t).beta_dot

    def alpha_ddot(self, t: Tensor) -> Tensor:
        return self.schedule(t).alpha_ddot

    def beta_ddot(self, t: Tensor) -> Tensor:
        return self.schedule(t).beta_ddot

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """Return ``x_t = alpha(t) x0 + beta(t) x1``; ``t`` is a scalar or has shape ``(N,)``."""
        c = self.schedule(_as_column(t, x0))
        return c.alpha * x0 + c.beta * x1

    def conditional_velocity(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """Return ``alpha'(t) x0 + beta'(t) x1`` (``x1 - x0`` on the linear path)."""
        c = self.schedule(_as_column(t, x0))
        return c.alpha_dot * x0 + c.beta_dot * x1

    def divided_differences(self, t: Tensor, s: Tensor) -> DividedDifferences:
        """Divided differences of ``alpha`` and ``beta`` at ``(t, s)`` (see
        :class:`DividedDifferences`); ``t`` and ``s`` broadcast against each other."""
        t, s = torch.broadcast_tensors(torch.as_tensor(t), torch.as_tensor(s))
        u = _GL_NODES.to(dtype=t.dtype, device=t.device)
        w = _GL_WEIGHTS.to(dtype=t.dtype, device=t.device)
        sigma = t[..., None] + u * (s - t)[..., None]
        c = self.schedule(sigma)
        return DividedDifferences(
            alpha_ts=(w * c.alpha_dot).sum(-1),
            alpha_tts=(w * (1 - u) * c.alpha_ddot).sum(-1),
            alpha_tss=(w * u * c.alpha_ddot).sum(-1),
            beta_ts=(w * c.beta_dot).sum(-1),
            beta_tts=(w * (1 - u) * c.beta_ddot).sum(-1),
            beta_tss=(w * u * c.beta_ddot).sum(-1),
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class LinearPath(ProbabilityPath):
    """The rectified-flow / OT path ``x_t = (1 - t) x0 + t x1``."""

    name: str = "linear"

    def schedule(self, t: Any, xp: Any = torch) -> PathCoefficients:
        one, zero = _constant(1.0, t, xp), _constant(0.0, t, xp)
        return PathCoefficients(1 - t, t, -one, one, zero, zero)


@dataclass(frozen=True, eq=False, kw_only=True)
class TrigPath(ProbabilityPath):
    """The variance-preserving trigonometric path (VP-SI / TrigFlow):
    ``x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1``, so ``alpha^2 + beta^2 = 1``."""

    name: str = "trig"

    def schedule(self, t: Any, xp: Any = torch) -> PathCoefficients:
        w = math.pi / 2
        ca, sa = xp.cos(w * t), xp.sin(w * t)
        return PathCoefficients(ca, sa, -w * sa, w * ca, -(w * w) * ca, -(w * w) * sa)


@dataclass(frozen=True, eq=False, kw_only=True)
class LipmanPath(ProbabilityPath):
    """Lipman et al.'s flow-matching path with ``sigma_min`` in this project's convention:
    ``x_t = (1 - t) x0 + (sigma_min + (1 - sigma_min) t) x1`` (data at t=0, noise at t=1).

    Its conditional field is ``u(x | x0) = ((1 - sigma_min) x - x0) / (sigma_min + (1 - sigma_min) t)``
    (MATH.md section 2; the seed's table row has the wrong denominator and the opposite
    convention). ``0 <= sigma_min < 1``.
    """

    sigma_min: float = 1e-2
    name: str = "lipman"

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma_min, (int, float)) and 0.0 <= self.sigma_min < 1.0):
            raise ValueError(f"sigma_min must be a number in [0, 1), got {self.sigma_min!r}")
        super().__post_init__()

    def schedule(self, t: Any, xp: Any = torch) -> PathCoefficients:
        sig = float(self.sigma_min)
        zero = _constant(0.0, t, xp)
        return PathCoefficients(
            1 - t,
            sig + (1 - sig) * t,
            _constant(-1.0, t, xp),
            _constant(1 - sig, t, xp),
            zero,
            zero,
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class GeneralPath(ProbabilityPath):
    """A path from user schedules ``alpha(t)``, ``beta(t)`` and their derivatives.

    Arguments:
        alpha_fn, beta_fn, alpha_dot_fn, beta_dot_fn: callables mapping a float64 torch tensor of times to a
            tensor of the same shape.
        alpha_ddot_fn, beta_ddot_fn: second derivatives (needed for the exact time derivative of the
            average velocity); when omitted they are computed by forward-mode autodiff
            (``torch.func.jvp``) of ``alpha_dot`` / ``beta_dot``.
        jax_functions: optional dict with the same six keys (``alpha`` ... ``beta_ddot``) of
            callables on ``jax.numpy`` arrays, for the JAX backend.
        name: used in reports.

    The schedules are checked on a grid of ``[0, 1]`` when the path is built (see the module
    docstring). :meth:`from_sympy` builds a path, its derivatives and its JAX functions from two
    SymPy expressions.
    """

    alpha_fn: Callable[[Tensor], Tensor] | None = None
    beta_fn: Callable[[Tensor], Tensor] | None = None
    alpha_dot_fn: Callable[[Tensor], Tensor] | None = None
    beta_dot_fn: Callable[[Tensor], Tensor] | None = None
    alpha_ddot_fn: Callable[[Tensor], Tensor] | None = None
    beta_ddot_fn: Callable[[Tensor], Tensor] | None = None
    jax_functions: dict[str, Callable] | None = field(default=None, repr=False)
    name: str = "general"

    def __post_init__(self) -> None:
        for key in ("alpha_fn", "beta_fn", "alpha_dot_fn", "beta_dot_fn"):
            if not callable(getattr(self, key)):
                raise TypeError(f"GeneralPath needs a callable {key}, got {getattr(self, key)!r}")
        for key in ("alpha_ddot_fn", "beta_ddot_fn"):
            f = getattr(self, key)
            if f is not None and not callable(f):
                raise TypeError(f"{key} must be callable or None, got {f!r}")
        if self.jax_functions is not None:
            missing = set(_SIX) - set(self.jax_functions)
            if missing:
                raise ValueError(f"jax_functions lacks {sorted(missing)}")
        super().__post_init__()

    @classmethod
    def from_sympy(cls, alpha: Any, beta: Any, t: Any, *, name: str = "sympy") -> GeneralPath:
        """Build a path from SymPy expressions ``alpha(t)``, ``beta(t)`` in the symbol ``t``.

        Derivatives are taken symbolically and every function is made by ``sympy.lambdify`` for
        torch and (when JAX is installed) for ``jax.numpy``.
        """
        import sympy

        exprs = {
            "alpha": alpha,
            "beta": beta,
            "alpha_dot": sympy.diff(alpha, t),
            "beta_dot": sympy.diff(beta, t),
            "alpha_ddot": sympy.diff(alpha, t, 2),
            "beta_ddot": sympy.diff(beta, t, 2),
        }

        def make(expr: Any, module: str, like: Callable) -> Callable:
            # numeric constants are evaluated first (to 30 digits): torch's printer would emit
            # torch.pow(float, int) for a symbolic constant such as pi**2, which torch rejects
            f = sympy.lambdify(t, sympy.N(expr, 30), modules=module)
            return lambda tt: f(tt) + like(tt)  # constants broadcast to the shape of t

        torch_fns = {k: make(e, "torch", torch.zeros_like) for k, e in exprs.items()}
        jax_fns = None
        try:
            import jax.numpy as jnp

            jax_fns = {k: make(e, "jax", jnp.zeros_like) for k, e in exprs.items()}
        except ImportError:
            pass
        return cls(
            alpha_fn=torch_fns["alpha"],
            beta_fn=torch_fns["beta"],
            alpha_dot_fn=torch_fns["alpha_dot"],
            beta_dot_fn=torch_fns["beta_dot"],
            alpha_ddot_fn=torch_fns["alpha_ddot"],
            beta_ddot_fn=torch_fns["beta_ddot"],
            jax_functions=jax_fns,
            name=name,
        )

    def schedule(self, t: Any, xp: Any = torch) -> PathCoefficients:
        if xp is not torch:
            if self.jax_functions is None:
                raise ValueError(
                    f"GeneralPath {self.name!r} has no jax_functions; pass them or use "
                    "GeneralPath.from_sympy to use it with the JAX backend"
                )
            return PathCoefficients(*(self.jax_functions[k](t) for k in _SIX))
        a, b, ad, bd = self.alpha_fn, self.beta_fn, self.alpha_dot_fn, self.beta_dot_fn
        # __post_init__ has checked that these four are callable
        assert a is not None and b is not None and ad is not None and bd is not None
        add = self.alpha_ddot_fn or _derivative(ad)
        bdd = self.beta_ddot_fn or _derivative(bd)
        return PathCoefficients(a(t), b(t), ad(t), bd(t), add(t), bdd(t))


def _constant(value: float, t: Any, xp: Any) -> Any:
    """``value`` broadcast to the shape of ``t`` without computing anything (a view in torch)."""
    if xp is torch:
        return torch.tensor(value, dtype=t.dtype, device=t.device).expand(t.shape)
    return xp.full_like(t, value)


_SIX = ("alpha", "beta", "alpha_dot", "beta_dot", "alpha_ddot", "beta_ddot")


def _derivative(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Elementwise derivative of ``f`` by forward-mode autodiff."""

    def df(t: Tensor) -> Tensor:
        return torch.func.jvp(f, (t,), (torch.ones_like(t),))[1]

    return df


def _validate_path(path: ProbabilityPath) -> None:
    """Check a path's schedules on a grid of [0, 1]; raise ``ValueError`` naming the problem."""
    t = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    try:
        c = path.schedule(t)
    except Exception as err:
        raise ValueError(f"path {path.name!r}: evaluating the schedules failed: {err}") from err
    for key in _SIX:
        v = getattr(c, key)
        if not isinstance(v, Tensor) or v.shape != t.shape:
            raise ValueError(
                f"path {path.name!r}: {key}(t) must return a tensor of the shape of t "
                f"{tuple(t.shape)}, got {type(v).__name__} {tuple(getattr(v, 'shape', ()))}"
            )
        if not torch.isfinite(v).all():
            bad = float(t[~torch.isfinite(v)][0])
            raise ValueError(f"path {path.name!r}: {key}(t) is not finite at t={bad}")
    if not float(c.alpha[0]) > 0:
        raise ValueError(f"path {path.name!r}: alpha(0) must be > 0 (data at t=0)")
    if abs(float(c.alpha[-1])) > 1e-12 or abs(float(c.beta[-1]) - 1) > 1e-12:
        raise ValueError(
            f"path {path.name!r}: noise must be at t=1, i.e. alpha(1)=0 and beta(1)=1; got "
            f"alpha(1)={float(c.alpha[-1])!r}, beta(1)={float(c.beta[-1])!r}"
        )
    both = c.alpha.abs() + c.beta.abs()
    if (both < 1e-12).any():
        raise ValueError(
            f"path {path.name!r}: alpha and beta vanish together at t={float(t[both.argmin()])}"
        )
    # derivatives against central differences (h = 1e-5: truncation ~1e-10 f''', rounding ~1e-11)
    h = 1e-5
    tm = t[1:-1]
    cp, cm = path.schedule(tm + h), path.schedule(tm - h)
    for f, df in (("alpha", "alpha_dot"), ("beta", "beta_dot"), ("alpha_dot", "alpha_ddot")):
        pairs = [(f, df)]
        if f == "alpha_dot":
            pairs.append(("beta_dot", "beta_ddot"))
        for g, dg in pairs:
            fd = (getattr(cp, g) - getattr(cm, g)) / (2 * h)
            an = getattr(c, dg)[1:-1]
            scale = 1.0 + an.abs().max()
            max_err = (fd - an).abs().max()
            if max_err > 1e-5 * scale:
                i = int((fd - an).abs().argmax())
                raise ValueError(
                    f"path {path.name!r}: {dg} does not match the derivative of {g} "
                    f"(at t={float(tm[i]):.4g}: {float(an[i])!r} vs finite difference "
                    f"{float(fd[i])!r})"
                )


def _as_column(t: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(N,)`` time against ``like`` of shape ``(N, d)``.

    Returns a 0-d tensor or one of shape ``(N, 1)`` with the dtype and device of ``like``.
    Raises ``ValueError`` for any other shape.
    """
    if (
        isinstance(t, Tensor)
        and t.is_floating_point()
        and torch.finfo(t.dtype).eps < torch.finfo(like.dtype).eps
    ):
        raise TypeError(
            f"time has dtype {t.dtype} but the points have the less precise {like.dtype}; "
            "convert explicitly (times are never rounded silently)"
        )
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and like.ndim == 2 and t.shape[0] == like.shape[0]:
        return t[:, None]
    if t.shape == (*like.shape[:-1], 1):
        return t
    raise ValueError(
        f"time has shape {tuple(t.shape)}; expected a scalar or shape ({like.shape[0]},) "
        f"for points of shape {tuple(like.shape)}"
    )
