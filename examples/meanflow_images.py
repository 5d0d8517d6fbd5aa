"""Class-conditional MeanFlow on image tensors, written the way training scripts are.

The network is called as ``model(z, t, r, y)``: noisy images ``(B, C, H, W)``, the time ``t``
(noise at 1), the integral's start ``r <= t`` and class labels (with a null class for
classifier-free guidance). Times are logit-normal, a quarter of the batch has ``r != t``, the
JVP comes from ``torch.func.jvp`` and the loss uses MeanFlow's adaptive L2 weighting.

``implementation()`` hands the loss and two samplers to the oracle as they are, declaring the
loss's adaptive weight (``p = 1 - gamma``, ``c``) and its share of diagonal pairs, so that its
value is checked too; ``wrong_implementation()`` does the same with two bugs seen in practice:
the network's time arguments passed in the wrong order, and a two-step sampler that steps by a
different size than the one it asked the network for. ``wrong_weighting_implementation()``
computes the adaptive weight from the squared error squared again: only the value check sees it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmap_oracle import Implementation
from flowmap_oracle.oracle.declared import Adaptive, Declared
from flowmap_oracle.oracle.shipped import ShippedLoss, ShippedSampler

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the label used for unconditional (guidance) training
IMAGE_SHAPE = (1, 2, 2)  # tiny images keep the oracle's exact teacher cheap


def sample_t_r(batch_size: int, device=None, mu: float = -0.4, sigma: float = 1.0):
    """Logit-normal (t, r) with r <= t; 75% of the batch on the diagonal r = t."""
    normal = torch.randn(batch_size, 2, device=device) * sigma + mu
    samples = torch.sigmoid(normal).double()
    t = samples.max(dim=1).values
    r = samples.min(dim=1).values
    diagonal = torch.rand(batch_size, device=device) < 0.75
    r = torch.where(diagonal, t, r)
    return t, r


def adaptive_l2(error: Tensor, gamma: float = 0.5, c: float = 1e-3) -> Tensor:
    delta_sq = error.pow(2).mean(dim=(1, 2, 3))
    w = 1.0 / (delta_sq + c).pow(1.0 - gamma)
    return (w.detach() * delta_sq).mean()


def meanflow_loss(model, batch, cfg_dropout: float = 0.1, weighting=adaptive_l2):
    images, labels = batch
    b = images.shape[0]
    drop = torch.rand(b) < cfg_dropout
    labels = torch.where(drop, torch.full_like(labels, NULL_CLASS), labels)

    t, r = sample_t_r(b, images.device)
    t_, r_ = t.view(-1, 1, 1, 1), r.view(-1, 1, 1, 1)
    noise = torch.randn_like(images)
    z = (1 - t_) * images + t_ * noise
    v = noise - images

    def u_fn(z, t, r):
        return model(z, t, r, labels)

    u, dudt = torch.func.jvp(u_fn, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    u_tgt = v - (t_ - r_) * dudt
    return weighting(u - u_tgt.detach())


@torch.no_grad()
def one_step(model, noise, labels=None):
    b = noise.shape[0]
    labels = torch.zeros(b, dtype=torch.long) if labels is None else labels
    t = torch.ones(b, dtype=noise.dtype)
    return noise - model(noise, t, torch.zeros_like(t), labels)


@torch.no_grad()
def two_step(model, noise, labels=None):
    b = noise.shape[0]
    labels = torch.zeros(b, dtype=torch.long) if labels is None else labels
    x = noise
    for t_now, t_next in ((1.0, 0.5), (0.5, 0.0)):
        t = torch.full((b,), t_now, dtype=noise.dtype)
        r = torch.full((b,), t_next, dtype=noise.dtype)
        x = x - (t_now - t_next) * model(x, t, r, labels)
    return x


# -- the same code with bugs seen in practice ----------------------------------------------------


def adaptive_l2_squared_twice(error: Tensor, gamma: float = 0.5, c: float = 1e-3) -> Tensor:
    """Bug: the weight is computed from the squared error squared again."""
    delta_sq = error.pow(2).mean(dim=(1, 2, 3))
    w = 1.0 / (delta_sq.pow(2) + c).pow(1.0 - gamma)
    return (w.detach() * delta_sq).mean()


def meanflow_loss_swapped_times(model, batch, cfg_dropout: float = 0.1):
    """Bug: the network is called as model(z, r, t) while it reads (z, t, r)."""
    images, labels = batch
    b = images.shape[0]
    t, r = sample_t_r(b, images.device)
    t_, r_ = t.view(-1, 1, 1, 1), r.view(-1, 1, 1, 1)
    noise = torch.randn_like(images)
    z = (1 - t_) * images + t_ * noise
    v = noise - images
    u, dudt = torch.func.jvp(
        lambda z, t, r: model(z, r, t, labels),
        (z, t, r),
        (v, torch.ones_like(t), torch.zeros_like(r)),
    )
    return adaptive_l2(u - (v - (t_ - r_) * dudt).detach())


@torch.no_grad()
def two_step_wrong_stride(model, noise, labels=None):
    """Bug: asks the network for the map 1 -> 0.5 but moves x by a full unit step."""
    b = noise.shape[0]
    labels = torch.zeros(b, dtype=torch.long) if labels is None else labels
    x = noise
    for t_now, t_next in ((1.0, 0.5), (0.5, 0.0)):
        t = torch.full((b,), t_now, dtype=noise.dtype)
        r = torch.full((b,), t_next, dtype=noise.dtype)
        x = x - model(x, t, r, labels)
    return x


def _with_labels(images: Tensor):
    return images, torch.randint(0, NUM_CLASSES, (images.shape[0],))


def implementation(loss=meanflow_loss, sampler=two_step) -> Implementation:
    return Implementation(
        name="example: class-conditional MeanFlow on images (torch.func.jvp, adaptive L2)",
        conventions={"time": "noise_at_1", "signature": "x_t_s"},
        shipped_losses={
            "meanflow": ShippedLoss(
                loss,
                data_shape=IMAGE_SHAPE,
                make_batch=_with_labels,
                # adaptive_l2's weight 1 / (||e||^2 + c)^(1 - gamma); 75% of the pairs have r = t
                declared=Declared(distance=Adaptive(p=0.5, c=1e-3), reset_fraction=0.75),
            )
        },
        samplers={
            "one_step": ShippedSampler(one_step, data_shape=IMAGE_SHAPE),
            "two_step": ShippedSampler(sampler, data_shape=IMAGE_SHAPE),
        },
    )


def wrong_implementation() -> Implementation:
    return implementation(loss=meanflow_loss_swapped_times, sampler=two_step_wrong_stride)


def wrong_weighting_implementation() -> Implementation:
    return implementation(
        loss=lambda m, b: meanflow_loss(m, b, weighting=adaptive_l2_squared_twice)
    )
