"""Label noise: instance-dependent (Algorithm 1, Eq. 3) and class-conditional (Definition 1).

Label maths only: nothing here trains. ``experiments.generate_idn`` runs Algorithm 1 end to end.

Every generator flips an exact number of labels: ``flip_count(noise_rate, n)`` =
``int(noise_rate * n)``, computed so that float rounding never drops one (``0.29 * 100`` is
28.999... in floating point; it flips 29).
"""

from __future__ import annotations

import math

import torch

from .checks import (check_labels, check_n_classes, check_rate, check_seed, check_softmax, check_transition_matrix,
                     fail)


def flip_count(noise_rate: float, n: int) -> int:
    """The exact number of flips for ``noise_rate`` among ``n``: int(noise_rate * n), float-safe."""
    return math.floor(check_rate(noise_rate) * n + 1e-9)


# ---------------------------------------------------------------- IDN: Algorithm 1

def mislabel_scores(S: torch.Tensor, y: torch.Tensor):
    """Eq. (3): N(x_i) = max_{k != y_i} S_ik and the candidate label argmax_{k != y_i} S_ik."""
    S = check_softmax(S)
    y = check_labels(y, S.shape[1])
    S = check_softmax(S, len(y))
    masked = S.clone()
    masked[torch.arange(len(y)), y] = -1.0
    score, candidate = masked.max(1)
    return score, candidate


def idn_ranking(score: torch.Tensor) -> torch.Tensor:
    """Instance indices by decreasing mislabeling score N(x); ties go to the lower index."""
    return torch.sort(score, descending=True, stable=True).indices


def idn_labels(y: torch.Tensor, S: torch.Tensor, noise_rate: float) -> torch.Tensor:
    """Algorithm 1's selection: flip the ``flip_count(noise_rate, n)`` instances with the
    highest N(x) to their candidate label (Eq. 3). Flipped sets are nested across rates.

    The official code sorts with numpy's unstable argsort (ties in arbitrary order) and, at a
    rate giving 0 flips, flips every label (``argsort(...)[-0:]``); here ties are broken by index
    and rate 0 flips nothing.
    """
    check_rate(noise_rate)
    score, candidate = mislabel_scores(S, y)
    flip = idn_ranking(score)[:flip_count(noise_rate, len(y))]
    y = torch.as_tensor(y).long()
    y_noisy = y.clone()
    y_noisy[flip] = candidate[flip]
    return y_noisy


# ---------------------------------------------------------------- CCN: Definition 1

def symmetric_matrix(noise_rate: float, n_classes: int) -> torch.Tensor:
    """Uniform CCN: keep with 1 - r, flip to each other class with r / (c - 1)."""
    r, n_classes = check_rate(noise_rate), check_n_classes(n_classes)
    M = torch.full((n_classes, n_classes), r / (n_classes - 1), dtype=torch.float64)
    return M.fill_diagonal_(1 - r)


def pair_matrix(noise_rate: float, n_classes: int) -> torch.Tensor:
    """Pair (asymmetric) CCN: class p flips to p + 1 (mod c) with probability r."""
    r, n_classes = check_rate(noise_rate), check_n_classes(n_classes)
    M = torch.eye(n_classes, dtype=torch.float64) * (1 - r)
    M[torch.arange(n_classes), (torch.arange(n_classes) + 1) % n_classes] = r
    return M


def _largest_remainder(expected: torch.Tensor, total: int) -> torch.Tensor:
    """Integers summing to ``total``, proportional to the vector ``expected`` (Hamilton's method)."""
    if total and expected.sum() <= 0:
        raise ValueError(f"cannot place {total} flips where M allows none")
    scaled = expected / expected.sum() * total if total else torch.zeros_like(expected)
    counts = scaled.floor().long()
    top = torch.sort(scaled - counts, descending=True, stable=True).indices[:total - int(counts.sum())]
    counts[top] += 1
    return counts


def ccn_labels(y: torch.Tensor, M: torch.Tensor, seed: int = 0, n_flips: int | None = None) -> torch.Tensor:
    """Flip labels class-conditionally by transition matrix ``M`` (Definition 1), exactly.

    Rather than one Bernoulli draw per instance (whose realised rate wanders: ask for 20%, get
    19.6%), the number of flips p -> q is fixed to n_p * M_pq rounded so that the total is
    ``n_flips`` (default: round(sum_p n_p (1 - M_pp))); which instances flip is uniformly random.
    """
    M = check_transition_matrix(M)
    c = len(M)
    y = check_labels(y, c)
    check_seed(seed)
    n_per_class = torch.bincount(y, minlength=c).double()
    expected = n_per_class[:, None] * M
    expected.fill_diagonal_(0)
    total = round(float(expected.sum())) if n_flips is None else n_flips
    per_class = _largest_remainder(expected.sum(1), total)  # flips per true class, then per target
    counts = torch.stack([_largest_remainder(expected[p], int(per_class[p])) for p in range(c)])
    if (counts.sum(1) > n_per_class.long()).any():
        raise ValueError(f"cannot flip {total} labels with this M: a class has fewer instances than flips")
    g = torch.Generator().manual_seed(seed)
    y_noisy = y.clone()
    for p in range(c):
        members = (y == p).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=g)]
        targets = torch.repeat_interleave(torch.arange(c), counts[p])
        y_noisy[members[:len(targets)]] = targets
    return y_noisy


def _class_count(y, n_classes) -> torch.Tensor:
    """``y`` checked against ``n_classes``, which must not exceed the classes ``y`` can hold: labels
    in [0, 9] with ``n_classes=20`` would flip into ten classes the data never use."""
    y = check_labels(y, check_n_classes(n_classes))
    if len(y) and int(y.max()) + 1 < n_classes:
        fail("n_classes", n_classes, f"the data set's number of classes: y's labels lie in [0, {int(y.max())}], so "
             f"{n_classes} classes would flip labels into classes y never uses (datasets.get_dataset(name).n_classes)")
    return y


def symmetric_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Uniform CCN flipping exactly ``flip_count(noise_rate, n)`` labels, each to another class."""
    y = _class_count(y, n_classes)
    return ccn_labels(y, symmetric_matrix(noise_rate, n_classes), seed, flip_count(noise_rate, len(y)))


def pair_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Pair CCN (p -> p + 1 mod c) flipping exactly ``flip_count(noise_rate, n)`` labels."""
    y = _class_count(y, n_classes)
    return ccn_labels(y, pair_matrix(noise_rate, n_classes), seed, flip_count(noise_rate, len(y)))
