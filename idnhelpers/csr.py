"""Critical sample ratio (Section 3.2, Eq. 4; Arpit et al. 2017): the fraction of instances with
another predicted class within an L-infinity ball of radius r, searched with Langevin
Adversarial Sample Search (LASS): with pred = argmax f(x) fixed, from x_hat = x, repeat
x_hat <- clip_{B_inf(x, r)}(x_hat - alpha * sign(grad log f_pred(x_hat)) + beta * noise),
noise ~ N(0, I) per pixel, and mark x critical once argmax f(x_hat) differs from pred.

``search="lass"`` (default) follows Arpit et al.'s LASS code (``lass.py``, as shipped with Ma et
al.'s D2L): alpha = 0.25/255, beta = 0.2/255, r = 0.3/255 in pixel units of [0, 1] (divided here by
the data set's std, since the network sees normalised input), at most 100 iterations, stopping at
the first that finds fewer than 20 new critical samples in the whole set (an absolute count, as in
their code: on a probe of 500 instances, few critical, the search usually ends after one iteration).
Their code needs the set's size to be a multiple of its batch size; here any number of rows is
searched. For another radius, alpha and beta scale with it (``step_sizes``), as in Ma et al.'s
``callback_util.py`` (a, b and r are 0.25, 0.2 and 0.3 over one scale factor): with fixed steps the
convergence stop ends the search before a larger ball is reached: the radius would change nothing.

``search="official"`` follows ``compute_CSR`` in ``chenpf1025/IDN``: a fixed 10 iterations with no
convergence stop, alpha, beta and r in units of the normalised input (about 1/3 of those values
in pixel units on MNIST; ``radius``, ``alpha`` and ``beta`` are then in those units), and one scalar
Gaussian per iteration and batch shared by all its pixels and instances. The official code keeps the
network in train mode; both searches here run in eval mode (the same for the MNIST CNN, which has no
batch norm or dropout; train mode would move a WRN's BatchNorm statistics during the search).
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
    """Boolean mask: which rows of uint8 ``X`` are critical samples (Eq. 4) for ``model``, found by
    ``search``. ``alpha`` and ``beta``: the step and noise sizes (None: ``step_sizes(radius)``)."""
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
    was_training = model.training
    model.eval()
    try:
        return _lass(model, x, radius / scale, alpha / scale, beta / scale, search, seed, batch_size).cpu()
    finally:
        model.train(was_training)


def step_sizes(radius: float) -> tuple[float, float]:
    """LASS's alpha and beta for ``radius``: Arpit et al.'s at r = 0.3/255, scaled in proportion to r."""
    scale = radius / CSR_RADIUS  # exactly 1.0 at the default radius: Arpit et al.'s values unchanged
    return CSR_ALPHA * scale, CSR_BETA * scale


def critical_sample_ratio(model: torch.nn.Module, X: torch.Tensor, *, dataset: str, **kwargs) -> float:
    """CSR: the fraction of rows of ``X`` that are critical samples (see ``critical_samples``)."""
    return float(critical_samples(model, X, dataset=dataset, **kwargs).float().mean()) if len(X) else float("nan")


def _lass(model, x, radius, alpha, beta, search, seed, batch_size) -> torch.Tensor:
    settings = SEARCHES[search]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        pred = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    pred = torch.cat(pred) if pred else torch.zeros(0, dtype=torch.long, device=x.device)
    x_hat = x.clone()
    critical = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(settings["n_steps"]):
        found_before = int(critical.sum())
        for start in range(0, len(x), batch_size):
            scalar_noise = torch.randn((), generator=generator, device=x.device) if search == "official" else None
            index = torch.arange(start, min(start + batch_size, len(x)), device=x.device)
            index = index[~critical[index]]
            if not len(index):
                continue
            xb, xb_hat = x[index], x_hat[index].requires_grad_(True)
            log_p = F.log_softmax(model(xb_hat), 1).gather(1, pred[index, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xb_hat)
            with torch.no_grad():
                noise = scalar_noise if search == "official" else torch.randn(xb.shape, generator=generator,
                                                                                device=x.device)
                step = xb_hat - alpha * grad.sign() + beta * noise
                step = torch.maximum(torch.minimum(step, xb + radius), xb - radius)
                x_hat[index] = step
                critical[index] = model(step).argmax(1) != pred[index]
        if bool(critical.all()) or int(critical.sum()) - found_before < settings["converged_below"]:
            break
    return critical
