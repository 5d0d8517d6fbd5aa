"""Flow map matching and self-distillation mutants: each loss written the way training code writes
it, with one bug seen in practice (a derivative along the wrong time argument, a stop-gradient
missing or misplaced, the composition in the wrong order, a sign error in the transport term)."""

from __future__ import annotations

from functools import partial

import torch

from ._registry import mutant


def _c(t):
    return t[:, None]


def _flow(net):
    return lambda x, t, s: x + _c(s - t) * net(x, t, s)


def _xt(data, noise, t):
    return (1 - _c(t)) * data + _c(t) * noise


def _sq(r):
    return r.pow(2).sum(dim=1).mean()


# --------------------------------------------------------------------------- FMM Lagrangian


def _fmm_lagrangian(net, data, noise, t, s, velocity, *, along="s", detach_input=False, at_x=False):
    x = _xt(data, noise, t)
    dt, ds = (1.0, 0.0) if along == "t" else (0.0, 1.0)
    f, df = torch.func.jvp(
        _flow(net),
        (x, t, s),
        (torch.zeros_like(x), dt * torch.ones_like(t), ds * torch.ones_like(s)),
    )
    point = f.detach() if detach_input else f
    v = velocity(x, t) if at_x else velocity(point, s)
    return _sq(df - v)


@mutant(
    "fmm_lagrangian.derivative_along_t",
    objective="fmm_lagrangian",
    description="the Lagrangian residual with d_t f in place of d_s f (JVP tangents (0, 1, 0))",
)
def fmm_lagrangian_derivative_along_t():
    return {"losses": {"fmm_lagrangian": partial(_fmm_lagrangian, along="t")}}


@mutant(
    "fmm_lagrangian.teacher_input_detached",
    objective="fmm_lagrangian",
    description="the teacher's input f detached (LSD's stop-gradient in FMM's loss, which has none)",
)
def fmm_lagrangian_teacher_input_detached():
    return {"losses": {"fmm_lagrangian": partial(_fmm_lagrangian, detach_input=True)}}


@mutant(
    "fmm_lagrangian.teacher_at_x_t",
    objective="fmm_lagrangian",
    description="the teacher queried at (x_t, t) instead of the predicted point f and time s",
)
def fmm_lagrangian_teacher_at_x_t():
    return {"losses": {"fmm_lagrangian": partial(_fmm_lagrangian, at_x=True)}}


# --------------------------------------------------------------------------- FMM Eulerian


def _fmm_eulerian(net, data, noise, t, s, velocity, *, transport=1.0, tangents="v10"):
    x = _xt(data, noise, t)
    v = velocity(x, t)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    dt, ds = (one, zero) if tangents == "v10" else (zero, one)
    _, df = torch.func.jvp(_flow(net), (x, t, s), (transport * v, dt, ds))
    return _sq(df)


@mutant(
    "fmm_eulerian.transport_sign",
    objective="fmm_eulerian",
    description="sign error in the transport term: d_t f - J_x f v",
)
def fmm_eulerian_transport_sign():
    return {"losses": {"fmm_eulerian": partial(_fmm_eulerian, transport=-1.0)}}


@mutant(
    "fmm_eulerian.tangents_for_x_s_t",
    objective="fmm_eulerian",
    description="JVP tangents (v, 0, 1) on a net(x, t, s): the MeanFlow code's order, d_s for d_t",
)
def fmm_eulerian_tangents_for_x_s_t():
    return {"losses": {"fmm_eulerian": partial(_fmm_eulerian, tangents="v01")}}


# --------------------------------------------------------------------------- self-distillation


def _combine(net, x, t, s, data, noise, off):
    """Flow matching with ``x1 - x0`` on the rows with ``s = t``, ``off`` elsewhere."""
    fm = net(x, t, t) - (noise - data)
    return _sq(torch.where(_c(t == s), fm, off))


def _lsd(net, data, noise, t, s, *, along="s", stop_gradient=True):
    x = _xt(data, noise, t)
    dt, ds = (1.0, 0.0) if along == "t" else (0.0, 1.0)
    f, df = torch.func.jvp(
        _flow(net),
        (x, t, s),
        (torch.zeros_like(x), dt * torch.ones_like(t), ds * torch.ones_like(s)),
    )
    teacher = net(f.detach(), s, s).detach() if stop_gradient else net(f, s, s)
    return _combine(net, x, t, s, data, noise, df - teacher)


@mutant(
    "lsd.no_stop_gradient",
    objective="lsd",
    description="LSD's self-teacher F(f, s, s) left un-detached: the gradient also trains the teacher",
)
def lsd_no_stop_gradient():
    return {"losses": {"lsd": partial(_lsd, stop_gradient=False)}}


@mutant(
    "lsd.derivative_along_t",
    objective="lsd",
    description="LSD with the start-time derivative d_t f instead of the end-time d_s f",
)
def lsd_derivative_along_t():
    return {"losses": {"lsd": partial(_lsd, along="t")}}


def _esd(net, data, noise, t, s, *, transport=1.0, stop_gradient=True):
    x = _xt(data, noise, t)
    v = net(x, t, t)
    if stop_gradient:
        v = v.detach()
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    _, df = torch.func.jvp(_flow(net), (x, t, s), (transport * v, one, zero))
    return _combine(net, x, t, s, data, noise, df)


@mutant(
    "esd.transport_sign",
    objective="esd",
    description="ESD with a sign error in the transport term: d_t f - J_x f v",
)
def esd_transport_sign():
    return {"losses": {"esd": partial(_esd, transport=-1.0)}}


@mutant(
    "esd.no_stop_gradient",
    objective="esd",
    description="ESD's self-teacher velocity F(x_t, t, t) left un-detached in the JVP tangent",
)
def esd_no_stop_gradient():
    return {"losses": {"esd": partial(_esd, stop_gradient=False)}}


def _psd(net, data, noise, t, u, s, *, order="right", stop_gradient=True):
    x = _xt(data, noise, t)
    flow = _flow(net)
    target = flow(flow(x, t, u), u, s) if order == "right" else flow(flow(x, u, s), t, u)
    if stop_gradient:
        target = target.detach()
    step = torch.where(t == s, torch.ones_like(t), s - t)
    return _combine(net, x, t, s, data, noise, (flow(x, t, s) - target) / _c(step))


@mutant(
    "psd.composition_wrong_order",
    objective="psd",
    description="PSD's target composed in the wrong order: f_{t->u}(f_{u->s}(x_t))",
)
def psd_composition_wrong_order():
    return {"losses": {"psd": partial(_psd, order="wrong")}}


@mutant(
    "psd.no_stop_gradient",
    objective="psd",
    description="PSD's two-jump target left un-detached: the gradient also moves the teacher",
)
def psd_no_stop_gradient():
    return {"losses": {"psd": partial(_psd, stop_gradient=False)}}
