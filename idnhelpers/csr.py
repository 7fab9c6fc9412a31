"""Critical sample ratio (Section 3.2, Eq. 4; Arpit et al. 2017): the fraction of instances with
another predicted class within an L-infinity ball of radius r, found by Langevin Adversarial Sample
Search (LASS): with pred = argmax f(x), from x_hat = x, repeat
x_hat <- clip_{B_inf(x, r)}(x_hat - alpha * sign(grad log f_pred(x_hat)) + beta * noise),
noise ~ N(0, I) per pixel, until argmax f(x_hat) != pred.

``search="lass"`` follows Arpit et al.'s ``lass.py`` (as in Ma et al.'s D2L): alpha = 0.25/255,
beta = 0.2/255, r = 0.3/255 in pixel units (divided here by the data set's std), at most 100
iterations, stopping at the first that finds fewer than 20 new critical samples in the whole set
(an absolute count, as in their code); any number of rows. Another radius scales alpha and beta
with it (``step_sizes``, as Ma et al.'s ``callback_util.py``): fixed steps would stop the search
before a larger ball is reached.
``search="official"`` follows ``compute_CSR`` in ``chenpf1025/IDN``: exactly 10 iterations, radius,
alpha and beta in units of the normalised input (about 1/3 of those values in pixel units on MNIST),
and one Gaussian scalar per iteration and batch.
Both run the network in eval mode (the official code: train mode, the same for the MNIST CNN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_choice, check_float, check_int, fail
from .datasets import get_dataset

CSR_RADIUS = 0.3 / 255  # Arpit et al.'s and the official code's r, alpha and beta
CSR_ALPHA = 0.25 / 255
CSR_BETA = 0.2 / 255
SEARCHES = {"lass": dict(n_steps=100, converged_below=20), "official": dict(n_steps=10, converged_below=0)}


def critical_samples(model: torch.nn.Module, X: torch.Tensor, *, dataset: str, radius: float = CSR_RADIUS,
                     alpha: float | None = None, beta: float | None = None, search: str = "lass", seed: int = 0,
                     batch_size: int = 1000) -> torch.Tensor:
    """Which rows of uint8 ``X`` are critical samples (Eq. 4); ``alpha``, ``beta``: ``step_sizes`` if None."""
    check_choice(search, "search", SEARCHES)
    check_float(radius, "radius", low=0.0)
    alpha = step_sizes(radius)[0] if alpha is None else check_float(alpha, "alpha", low=0.0)
    beta = step_sizes(radius)[1] if beta is None else check_float(beta, "beta", low=0.0)
    check_int(batch_size, "batch_size", minimum=1)
    device = next(model.parameters()).device
    spec = get_dataset(dataset)
    if spec.is_features:
        fail("dataset", dataset, "an image data set: CSR (Eq. 4) perturbs pixels")
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    scale = std if search == "lass" else torch.ones_like(std)  # official: values in normalised units
    x = (X.to(device).float() / 255 - mean) / std
    radius, alpha, beta = radius / scale, alpha / scale, beta / scale
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            pred = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        pred = torch.cat(pred) if pred else torch.zeros(0, dtype=torch.long, device=device)
        x_hat = x.clone()
        critical = torch.zeros(len(x), dtype=torch.bool, device=device)
        for _ in range(SEARCHES[search]["n_steps"]):
            found_before = int(critical.sum())
            for start in range(0, len(x), batch_size):
                # official: one scalar per iteration and batch, drawn for a batch already all critical too
                noise = torch.randn((), generator=generator, device=device) if search == "official" else None
                index = torch.arange(start, min(start + batch_size, len(x)), device=device)
                index = index[~critical[index]]
                if not len(index):
                    continue
                xb, xb_hat = x[index], x_hat[index].requires_grad_(True)
                log_p = F.log_softmax(model(xb_hat), 1).gather(1, pred[index, None]).sum()
                (grad,) = torch.autograd.grad(log_p, xb_hat)
                with torch.no_grad():
                    if noise is None:
                        noise = torch.randn(xb.shape, generator=generator, device=device)
                    step = (xb_hat - alpha * grad.sign() + beta * noise).clamp(xb - radius, xb + radius)
                    x_hat[index] = step
                    critical[index] = model(step).argmax(1) != pred[index]
            if bool(critical.all()) or int(critical.sum()) - found_before < SEARCHES[search]["converged_below"]:
                break
        return critical.cpu()
    finally:
        model.train(was_training)


def step_sizes(radius: float) -> tuple[float, float]:
    """LASS's alpha and beta for ``radius``: Arpit et al.'s at r = 0.3/255, scaled in proportion to r."""
    scale = radius / CSR_RADIUS
    return CSR_ALPHA * scale, CSR_BETA * scale


def critical_sample_ratio(model: torch.nn.Module, X: torch.Tensor, *, dataset: str, **kwargs) -> float:
    """CSR: the fraction of rows of ``X`` that are critical samples."""
    return float(critical_samples(model, X, dataset=dataset, **kwargs).float().mean()) if len(X) else float("nan")

