"""Label noise: instance-dependent (Algorithm 1, Eq. 3) and class-conditional (Definition 1).

Every generator flips an exact number of labels: ``flip_count(noise_rate, n)`` =
``int(noise_rate * n)``, computed so that float rounding never drops one (``0.29 * 100`` is
28.999... in floating point; it flips 29).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import N_CLASSES, load_dataset, subset
from .published import PUBLISHED, PUBLISHED_RATES, load_published_idn
from .train import protocol, train

IDN_EPOCHS = 20  # Algorithm 1 on MNIST in the official code: 20 epochs reach 100% training accuracy


# ---------------------------------------------------------------- input checks

def check_rate(noise_rate: float, name: str = "noise_rate") -> float:
    if not isinstance(noise_rate, (int, float)) or not 0 <= noise_rate < 1:
        raise ValueError(f"{name}={noise_rate!r} must be a number in [0, 1)")
    return float(noise_rate)


def check_labels(y: torch.Tensor, n_classes: int, name: str = "y") -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise ValueError(f"{name} must be a 1-D integer tensor of class indices, got {y.dtype} {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} has labels in [{y.min()}, {y.max()}], outside [0, {n_classes}) "
                         f"(n_classes={n_classes})")
    return y.long()


def check_softmax(S: torch.Tensor, n: int | None = None, name: str = "S") -> torch.Tensor:
    S = torch.as_tensor(S)
    if S.dim() != 2 or (n is not None and len(S) != n):
        raise ValueError(f"{name} must be an n x c matrix with n={n} rows (one per label), "
                         f"got shape {tuple(S.shape)}")
    n = len(S)
    if (S < 0).any() or not torch.allclose(S.sum(1).double(), torch.ones(n, dtype=torch.float64), atol=1e-3):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1)")
    return S


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


@dataclass
class GeneratedIDN:
    """Output of ``generate_idn``: rows ``idx`` of the training set, their true labels ``y``,
    the averaged softmax ``S``, the scores N(x) and candidates of Eq. (3), the noisy labels per
    rate, and the training history of the labelling network."""

    idx: torch.Tensor
    y: torch.Tensor
    S: torch.Tensor
    score: torch.Tensor
    candidate: torch.Tensor
    noisy: dict[float, torch.Tensor]
    history: dict
    seconds: float


def generate_idn(dataset: str, noise_rates, *, root=None, n_train: int | None = None,
                 n_epochs: int = IDN_EPOCHS, seed: int = 0, device=None, precision: str = "fp32",
                 softmax_mode: str = "eval", use_cache: bool = True, **protocol_overrides) -> GeneratedIDN:
    """Algorithm 1 end to end: train on the clean labels with the paper's protocol for
    ``dataset`` (MNIST: CNN, SGD lr 0.01 momentum 0.5, batch 64) for ``n_epochs``, average the
    softmax over epochs (Eq. 3) and return noisy labels for every rate in ``noise_rates``
    from that single run. ``n_train`` takes a random subset (seeded) of the training set.
    ``softmax_mode="official"`` records the softmax as the official code does (train mode,
    augmented inputs; it matters for CIFAR-10's WRN, not for the MNIST CNN)."""
    rates = [check_rate(r, "noise_rates") for r in noise_rates]
    proto = protocol(dataset, n_epochs=n_epochs, **protocol_overrides)
    X, y_all = load_dataset(dataset, root, train=True)
    X, y, idx = subset(X, y_all, n_train, seed)
    run = train(X, y, proto, dataset=dataset, seed=seed, n_classes=N_CLASSES[dataset], device=device,
                precision=precision, softmax_mode=softmax_mode, keep_model=False, use_cache=use_cache,
                desc=f"Algorithm 1 on {dataset}")
    score, candidate = mislabel_scores(run["S"], y)
    noisy = {r: idn_labels(y, run["S"], r) for r in rates}
    return GeneratedIDN(idx, y, run["S"], score, candidate, noisy, run["history"], run["seconds"])


def idn_label_sets(dataset: str, noise_rates, idx: torch.Tensor, *, use_published: bool = True, n_train=None,
                   seed: int = 0, **generate_kwargs):
    """IDN labels at every rate for the training rows ``idx`` (those ``subset(..., n_train, seed)``
    picks): the authors' published labels where they exist for every rate (and ``use_published``),
    otherwise Algorithm 1 (``generate_idn``) run on those rows. Returns ``({rate: y_noisy}, source)``
    with ``source`` either ``"published"`` or ``"Algorithm 1"``."""
    rates = [check_rate(r, "noise_rates") for r in noise_rates]
    if use_published and dataset in PUBLISHED and all(any(abs(r - p) < 1e-9 for p in PUBLISHED_RATES) for r in rates):
        return {r: load_published_idn(dataset, r)[1][idx] for r in rates}, "published"
    generated = generate_idn(dataset, rates, n_train=n_train, seed=seed, **generate_kwargs)
    if not torch.equal(generated.idx, torch.as_tensor(idx)):
        raise ValueError("idx must be the rows subset(X, y, n_train, seed) picks, for the same n_train and seed")
    return generated.noisy, "Algorithm 1"


# ---------------------------------------------------------------- CCN: Definition 1

def symmetric_matrix(noise_rate: float, n_classes: int) -> torch.Tensor:
    """Uniform CCN: keep with 1 - r, flip to each other class with r / (c - 1)."""
    r = check_rate(noise_rate)
    M = torch.full((n_classes, n_classes), r / (n_classes - 1), dtype=torch.float64)
    return M.fill_diagonal_(1 - r)


def pair_matrix(noise_rate: float, n_classes: int) -> torch.Tensor:
    """Pair (asymmetric) CCN: class p flips to p + 1 (mod c) with probability r."""
    r = check_rate(noise_rate)
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
    M = torch.as_tensor(M, dtype=torch.float64)
    c = len(M)
    if M.dim() != 2 or M.shape[1] != c or (M < 0).any() or not torch.allclose(M.sum(1), torch.ones(c, dtype=M.dtype)):
        raise ValueError("M must be a c x c row-stochastic matrix (rows are probability vectors)")
    y = check_labels(y, c)
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


def symmetric_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Uniform CCN flipping exactly ``flip_count(noise_rate, n)`` labels, each to another class."""
    return ccn_labels(y, symmetric_matrix(noise_rate, n_classes), seed, flip_count(noise_rate, len(y)))


def pair_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Pair CCN (p -> p + 1 mod c) flipping exactly ``flip_count(noise_rate, n)`` labels."""
    return ccn_labels(y, pair_matrix(noise_rate, n_classes), seed, flip_count(noise_rate, len(y)))
