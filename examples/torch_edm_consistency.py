"""A consistency model in torch with EDM's sigma and a denoiser (x0) output.

EDM's variance-exploding convention: x_sigma = data + sigma * noise, data at sigma = 0. The network
D(x, sigma, sigma_end) predicts the clean sample; the flow map from sigma to sigma_end is the DDIM
step x_end = (sigma_end / sigma) x + (1 - sigma_end / sigma) D (CTM's parameterisation), so the
consistency model is f(x, sigma) = D(x, sigma, 0). Provided: denoising regression (flow matching
for a denoiser), consistency training, the continuous-time tangent df/dsigma, and the step.

Check it with ``flowmap-oracle check examples.torch_edm_consistency:implementation``.
"""

from __future__ import annotations

import torch

from flowmap_oracle import Implementation


def _noisy(data, noise, sigma):
    return data + sigma[:, None] * noise


def denoising_loss(net, data, noise, sigma):
    """||D(x_sigma, sigma, sigma) - data||^2 summed over dimensions, averaged over the batch."""
    x = _noisy(data, noise, sigma)
    return (net(x, sigma, sigma) - data).pow(2).sum(dim=1).mean()


def consistency_training_loss(net, data, noise, sigma, sigma_prev):
    """||f(x_sigma) - sg(f(x_sigma_prev))||^2 on one noise draw (consistency training)."""
    zero = torch.zeros_like(sigma)
    f_now = net(_noisy(data, noise, sigma), sigma, zero)
    with torch.no_grad():
        f_prev = net(_noisy(data, noise, sigma_prev), sigma_prev, zero)
    return (f_now - f_prev).pow(2).sum(dim=1).mean()


def consistency_tangent(net, x, sigma, v):
    """d f(x_sigma, sigma) / d sigma along the ODE dx/dsigma = v, detached."""
    zero = torch.zeros_like(sigma)
    _, tangent = torch.func.jvp(
        lambda y, sg: net(y, sg, zero), (x, sigma), (v, torch.ones_like(sigma))
    )
    return tangent.detach()


def ddim_step(net, x, sigma, sigma_end):
    ratio = (sigma_end / sigma)[:, None]
    return ratio * x + (1 - ratio) * net(x, sigma, sigma_end)


def implementation() -> Implementation:
    return Implementation(
        name="example: torch consistency model, EDM sigma, denoiser output",
        conventions={
            "time": "edm_sigma",
            "signature": "x_t_s",
            "prediction": "x0",
            "framework": "torch",
            "dtype": "float64",
        },
        targets={"scm": consistency_tangent},
        losses={"flow_matching": denoising_loss, "consistency": consistency_training_loss},
        flow_map=ddim_step,
    )
