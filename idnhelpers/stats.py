"""Label-noise statistics: transition matrices and class priors (Section 2, Definition 1)."""

from __future__ import annotations

import torch

from .noise import check_labels


def estimate_transition_matrix(y, y_noisy, n_classes: int) -> torch.Tensor:
    """Empirical M with M_pq = #{y = p, y_noisy = q} / #{y = p} (rows of absent classes stay e_p)."""
    y, y_noisy = check_labels(y, n_classes), check_labels(y_noisy, n_classes, "y_noisy")
    if len(y) != len(y_noisy):
        raise ValueError(f"y has {len(y)} labels but y_noisy has {len(y_noisy)}")
    counts = torch.bincount(y * n_classes + y_noisy, minlength=n_classes ** 2).view(n_classes, n_classes).double()
    totals = counts.sum(1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp(min=1), torch.eye(n_classes, dtype=torch.float64))


def class_priors(y, n_classes: int) -> torch.Tensor:
    """w_p = fraction of instances with label p."""
    y = check_labels(y, n_classes)
    if not len(y):
        raise ValueError("y is empty")
    return torch.bincount(y, minlength=n_classes).double() / len(y)


def per_class_noise_rate(y, y_noisy, n_classes: int) -> torch.Tensor:
    """Fraction of each true class whose label was flipped: 1 - M_pp."""
    return 1 - estimate_transition_matrix(y, y_noisy, n_classes).diagonal()


def flip_agreement(y, y_noisy, y_noisy_ref) -> dict:
    """How far one set of noisy labels reproduces a reference set of the same instances.

    ``recovered``: fraction of the reference's flipped instances that are flipped here too;
    ``target_agreement``: among instances flipped in both, fraction flipped to the same label;
    ``chance_recovered``: what a random choice of as many flips would recover on average.
    """
    y, y_noisy, y_noisy_ref = (torch.as_tensor(t).long() for t in (y, y_noisy, y_noisy_ref))
    if not len(y) == len(y_noisy) == len(y_noisy_ref):
        raise ValueError(f"lengths differ: y {len(y)}, y_noisy {len(y_noisy)}, y_noisy_ref {len(y_noisy_ref)}")
    ours, ref = y_noisy != y, y_noisy_ref != y
    both = ours & ref
    return dict(flipped=int(ours.sum()), flipped_ref=int(ref.sum()), flipped_both=int(both.sum()),
                recovered=float(both.sum() / ref.sum().clamp(min=1)),
                target_agreement=float((y_noisy[both] == y_noisy_ref[both]).float().mean()) if both.any() else float("nan"),
                chance_recovered=float(ours.float().mean()))
