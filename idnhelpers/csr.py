"""Critical sample ratio (Section 3.2, Eq. 4; Arpit et al. 2017): the fraction of instances with
another predicted class within an L-infinity ball of radius r, searched with Langevin
Adversarial Sample Search (LASS).

LASS, per instance: from x_hat = x, repeat ``n_steps`` times
x_hat <- clip_{B_inf(x, r)}(x_hat - alpha * sign(grad log f_pred(x_hat)) + beta * noise),
noise ~ N(0, I), and stop at the first step whose prediction differs from pred = argmax f(x).
x is critical if one is found. ``radius``, ``alpha`` and ``beta`` are in pixel units of [0, 1]
and divided by the data set's std for the normalised input the network sees.

Differences from the official code (``compute_CSR`` in ``chenpf1025/IDN``): it applies
alpha = 0.25/255, beta = 0.2/255 and r = 0.3/255 directly to the normalised input (about 1/3 of
those values in pixel units on MNIST), draws one scalar Gaussian per step shared by all pixels and
instances rather than one per pixel, and keeps the network in train mode (the same as eval mode
for the MNIST CNN, which has no batch norm or dropout). Here noise is per pixel, from a seeded
generator, in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets import get_dataset

CSR_RADIUS = 0.3 / 255  # the official code's values, here in pixel units
CSR_ALPHA = 0.25 / 255
CSR_BETA = 0.2 / 255
CSR_STEPS = 10


def critical_samples(model: torch.nn.Module, X: torch.Tensor, *, dataset: str, radius: float = CSR_RADIUS,
                     alpha: float = CSR_ALPHA, beta: float = CSR_BETA, n_steps: int = CSR_STEPS, seed: int = 0,
                     batch_size: int = 1000) -> torch.Tensor:
    """Boolean mask: which rows of uint8 ``X`` are critical samples (Eq. 4) for ``model``."""
    if radius < 0 or alpha < 0 or beta < 0 or n_steps < 0:
        raise ValueError(f"radius, alpha, beta and n_steps must be >= 0, got {radius}, {alpha}, {beta}, {n_steps}")
    device = next(model.parameters()).device
    spec = get_dataset(dataset)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    found = []
    for start in range(0, len(X), batch_size):
        x = (X[start:start + batch_size].to(device).float() / 255 - mean) / std
        found.append(_lass(model, x, radius / std, alpha / std, beta / std, n_steps, generator))
    model.train(was_training)
    return torch.cat(found).cpu() if found else torch.zeros(0, dtype=torch.bool)


def critical_sample_ratio(model: torch.nn.Module, X: torch.Tensor, *, dataset: str, **kwargs) -> float:
    """CSR: the fraction of rows of ``X`` that are critical samples (see ``critical_samples``)."""
    return float(critical_samples(model, X, dataset=dataset, **kwargs).float().mean()) if len(X) else float("nan")


def _lass(model, x, radius, alpha, beta, n_steps, generator) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x).argmax(1)
    x_hat = x.clone()
    critical = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(n_steps):
        active = ~critical
        if not active.any():
            break
        x_hat.requires_grad_(True)
        log_p = F.log_softmax(model(x_hat), 1).gather(1, pred[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, x_hat)
        with torch.no_grad():
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            step = x_hat - alpha * grad.sign() + beta * noise
            step = torch.maximum(torch.minimum(step, x + radius), x - radius)
            x_hat = torch.where(active[:, None, None, None], step, x_hat.detach())
            critical |= model(x_hat).argmax(1) != pred
    return critical
