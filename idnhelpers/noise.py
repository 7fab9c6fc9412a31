"""Label noise: instance-dependent (Algorithm 1, Eq. 3; Xia et al. 2020; PMD) and class-conditional
(Definition 1), each a family of ``families.FAMILIES``; exact ones flip ``flip_count(noise_rate, n)``."""

from __future__ import annotations

import math

import numpy as np
import torch

from .checks import (UnreachableRate, check_float, check_int, check_labels, check_labels_softmax, check_n_classes,
                     check_noise_seed, check_rate, check_seed, check_softmax, check_transition_matrix, fail)


def flip_count(noise_rate: float, n: int) -> int:
    """int(noise_rate * n), float-safe: ``0.29 * 100`` is 28.999... in floating point; it flips 29."""
    return math.floor(check_rate(noise_rate) * n + 1e-9)


def _exact_flips(weights: torch.Tensor, rng: np.random.RandomState, noise_rate: float) -> torch.Tensor:
    """The ``flip_count`` rows to flip: a weighted sample without replacement (Efraimidis-Spirakis keys)."""
    keys = torch.from_numpy(np.log(rng.random_sample(len(weights)))) / weights.double().clamp(min=1e-12)
    keys[weights == 0] = -math.inf
    return torch.sort(keys, descending=True, stable=True).indices[:flip_count(noise_rate, len(weights))]


# ---------------------------------------------------------------- IDN: Algorithm 1

def mislabel_scores(S: torch.Tensor, y: torch.Tensor):
    """Eq. (3): N(x_i) = max_{k != y_i} S_ik and the candidate label argmax_{k != y_i} S_ik."""
    y, S = check_labels_softmax(y, S)
    masked = S.clone()
    masked[torch.arange(len(y)), y] = -1.0
    return tuple(masked.max(1))


def idn_labels(y: torch.Tensor, S: torch.Tensor, noise_rate: float) -> torch.Tensor:
    """Algorithm 1: the ``flip_count`` instances with the highest N(x) flip to their candidate (Eq. 3);
    unlike the official code, ties go to the lower index and rate 0 flips none."""
    score, candidate = mislabel_scores(S, y)
    flip = torch.sort(score, descending=True, stable=True).indices[:flip_count(noise_rate, len(y))]
    y_noisy = torch.as_tensor(y).long().clone()
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
    """Class-conditional flips by ``M`` (Definition 1), exactly: n_p * M_pq flips p -> q, rounded to total
    ``n_flips`` (default round(sum_p n_p (1 - M_pp))); which instances flip is random."""
    M = check_transition_matrix(M)
    c = len(M)
    y = check_labels(y, c)
    check_seed(seed)
    n_per_class = torch.bincount(y, minlength=c).double()
    expected = n_per_class[:, None] * M
    expected.fill_diagonal_(0)
    total = round(float(expected.sum())) if n_flips is None else check_int(n_flips, "n_flips", minimum=0,
                                                                             maximum=len(y))
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
    """``y`` checked against ``n_classes``, which must not exceed the classes ``y`` uses."""
    y = check_labels(y, check_n_classes(n_classes))
    if len(y) and int(y.max()) + 1 < n_classes:
        fail("n_classes", n_classes, f"the data set's number of classes: y's labels lie in [0, {int(y.max())}], so "
             f"{n_classes} classes would flip labels into classes y never uses (datasets.get_dataset(name).n_classes)")
    return y


def _exact_ccn(matrix, y, noise_rate, n_classes, seed) -> torch.Tensor:
    y = _class_count(y, n_classes)
    return ccn_labels(y, matrix(noise_rate, n_classes), seed, flip_count(noise_rate, len(y)))


def symmetric_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Uniform CCN flipping exactly ``flip_count(noise_rate, n)`` labels, each to another class."""
    return _exact_ccn(symmetric_matrix, y, noise_rate, n_classes, seed)


def pair_noise(y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0) -> torch.Tensor:
    """Pair CCN (p -> p + 1 mod c) flipping exactly ``flip_count(noise_rate, n)`` labels."""
    return _exact_ccn(pair_matrix, y, noise_rate, n_classes, seed)


# ---------------------------------------------------------------- Xia et al. (NeurIPS 2020)

XIA_NORM_STD = 0.1  # the authors' default spread of the per-instance flip rates


def xia_rate_distribution(noise_rate: float, norm_std: float = XIA_NORM_STD):
    """Xia et al.'s per-instance flip rates, N(rate, norm_std^2) truncated to [0, 1] (mean 0.2055 at 0.2)."""
    from scipy import stats

    r = check_rate(noise_rate)
    norm_std = check_float(norm_std, "norm_std", low=0.0, low_open=True)
    return stats.truncnorm((0 - r) / norm_std, (1 - r) / norm_std, loc=r, scale=norm_std)


def _sample_rows(P: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """numpy's ``choice(c, p=P_i)`` for every row at once, given its uniform draws ``u``."""
    cdf = torch.from_numpy(P.double().numpy().cumsum(1))
    cdf /= cdf[:, -1:].clone()
    return (cdf <= torch.from_numpy(u)[:, None]).sum(1).clamp(max=P.shape[1] - 1)


def xia_noise(X, y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0,
              norm_std: float = XIA_NORM_STD, exact: bool = False) -> torch.Tensor:
    """Xia et al.'s instance-dependent noise (Algorithm 2), their draws in their order (``X``: raw pixel
    values as floats, or features); the realised rate is random. ``exact``: exactly ``flip_count`` flips,
    a weighted sample (weights q_i) without replacement, each to another class drawn by P_i."""
    y = _class_count(y, n_classes)
    rng = np.random.RandomState(check_noise_seed(seed))
    if not isinstance(X, (torch.Tensor, np.ndarray)) or X.ndim < 2 or len(X) != len(y) or 0 in X.shape:
        fail("X", tuple(X.shape) if hasattr(X, "shape") else type(X).__name__, f"the instances as an array of "
             f"{len(y)} rows (one per label, at least one), images or feature vectors (at least one value per row)")
    X = torch.as_tensor(X).reshape(len(y), -1).float()
    if not torch.isfinite(X).all():
        fail("X", "an array with NaN or infinite values", "finite features")
    q = xia_rate_distribution(noise_rate, norm_std).rvs(len(y), random_state=rng)
    W = torch.from_numpy(rng.randn(n_classes, X.shape[1], n_classes)).float()
    logits = torch.empty(len(y), n_classes)
    for p in range(n_classes):
        rows = (y == p).nonzero().squeeze(1)
        logits[rows] = X[rows] @ W[p]
    logits[torch.arange(len(y)), y] = -math.inf
    q = torch.from_numpy(q).float()
    P = q[:, None] * logits.softmax(1)
    P[torch.arange(len(y)), y] += 1 - q
    if not exact:
        return _sample_rows(P, rng.random_sample(len(y)))
    flip = _exact_flips(q, rng, noise_rate)
    P[torch.arange(len(y)), y] = 0
    y_noisy = y.clone()
    y_noisy[flip] = _sample_rows(P[flip], rng.random_sample(len(flip)))
    return y_noisy


# ---------------------------------------------------------------- PMD (Zhang et al., ICLR 2021)

def _pmd_type(value, name):
    if isinstance(value, bool) or value not in (1, 2, 3):
        fail(name, value, "one of [1, 2, 3] (PMD's type I, II or III)")


def pmd_keep(S, noise_type: int):
    """Each row's top two classes ``u``, ``s`` of softmax eta (``S``) and 1 - tau(x), Delta = eta_u - eta_s:
    Type I 1/2 + Delta^2 / 2, II Delta^3, III (Delta^3 + Delta^2 + Delta) / 3 (float32, as pxiangwu/PLC)."""
    S = check_softmax(S)
    _pmd_type(noise_type, "type")
    top = S.float().topk(2, dim=1)
    eta_u, eta_s = top.values[:, 0].numpy(), top.values[:, 1].numpy()
    delta = np.abs(eta_u - eta_s)
    tau = {1: -(1 / 2) * (eta_u - eta_s) ** 2 + 1 / 2, 2: 1 - delta ** 3,
           3: 1 - (1 / 3) * delta ** 3 - (1 / 3) * delta ** 2 - (1 / 3) * delta}[noise_type]
    keep = np.maximum(1 - tau, 0.5) if noise_type == 1 else 1 - tau  # Type I's maximum never binds (the code has it)
    return top.indices[:, 0], top.indices[:, 1], keep


def pmd_two_class(y, S, noise_type: int):
    """The authors' two-class branch (pxiangwu/PLC ``label_noise``) as ``pmd_keep``'s triple: a class-1
    instance flips to class 0 with probability f(eta_1) (Type I 2 eta (eta - 1/2)^2, II min(eta, 1 - eta),
    III 1/2 - 2 (eta - 1/2)^2); class 0 never flips. ``u`` is 0 (the flip), ``s`` the label, ``keep`` f."""
    _pmd_type(noise_type, "type")
    eta = S[:, 1].float().numpy()
    f = {1: 2 * eta * (eta - 1 / 2) ** 2, 2: np.minimum(eta, 1 - eta), 3: -2 * (eta - 1 / 2) ** 2 + 1 / 2}[noise_type]
    return torch.zeros_like(y), y, np.where(y.numpy() == 1, f, 0.0)


def pmd_factor(y, u, s, keep, noise_rate: float) -> float:
    """The authors' ``factor`` (>= 1) giving ``noise_rate`` in expectation (``u`` with p = keep / factor)."""
    y, u, s = (torch.as_tensor(t).long().numpy() for t in (y, u, s))
    base = float(np.mean(s != y))
    slope = float(np.mean(keep.astype(np.float64) * ((u != y).astype(float) - (s != y))))
    low, high = sorted((base + slope, base))  # factor 1 and factor -> infinity
    if not low <= noise_rate < high or slope == 0:
        fail("noise_rate", noise_rate, f"a rate that a factor >= 1 reaches with this network's softmax: in "
             f"[{low:.4f}, {high:.4f}) (the rate at factor 1 is the mean of tau(x))", UnreachableRate)
    return slope / (noise_rate - base)


def pmd_noise(y, S, noise_rate: float | None, noise_type: int = 1, seed: int = 0, factor: float | None = None,
              exact: bool = False) -> torch.Tensor:
    """PMD noise (Zhang et al.; pxiangwu/PLC's ``label_noise``): the top class u with probability
    (1 - tau(x)) / factor, else the second class s; the realised rate is random. ``factor`` solved for
    ``noise_rate``, or (``noise_rate`` None) the authors' hand-set one (their default 1.2); on two classes
    the authors' branch, which takes no factor and draws for class 1 only. ``exact`` (family ``pmd_exact``):
    exactly ``flip_count`` flips, weighted by the chance the authors' rule mislabels."""
    if (noise_rate is None) == (factor is None):
        fail("noise_rate/factor", (noise_rate, factor), "exactly one: a rate to solve the factor for, or a factor")
    if factor is not None:
        check_float(factor, "factor", low=1.0)
    y, S = check_labels_softmax(y, S)
    if S.shape[1] == 2:
        (u, s, keep), drawn = pmd_two_class(y, S, noise_type), (y == 1).numpy()
        factor = 1.0 if noise_rate is None else None
    else:
        (u, s, keep), drawn = pmd_keep(S, noise_type), np.ones(len(y), bool)
    p_u = keep / (pmd_factor(y, u, s, keep, check_rate(noise_rate)) if factor is None else factor)
    rng = np.random.RandomState(check_noise_seed(seed))
    if not exact:
        draws = np.zeros(len(y), np.int64)
        draws[drawn] = rng.binomial(1, p_u[drawn])
        return torch.from_numpy(np.where(draws == 1, u.numpy(), s.numpy())).long()
    p_u = torch.from_numpy(p_u).double()
    wrong = p_u * (u != y) + (1 - p_u) * (s != y)
    flip = _exact_flips(wrong, rng, noise_rate)
    if len(flip) and bool((wrong[flip] == 0).any()):
        fail("noise_rate", noise_rate, f"at most {int((wrong > 0).sum())} flips: only so many instances can be "
             "mislabelled with their top two classes")
    to_u = torch.from_numpy(rng.random_sample(len(flip))) < p_u[flip]
    y_noisy = y.clone()
    y_noisy[flip] = torch.where((u[flip] != y[flip]) & ((s[flip] == y[flip]) | to_u), u[flip], s[flip])
    return y_noisy

