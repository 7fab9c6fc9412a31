"""Label noise: instance-dependent (Algorithm 1, Eq. 3; Xia et al. 2020) and class-conditional
(Definition 1), each family chosen by name with ``noisy_labels(family, y, rate, ...)``.

Label maths only: nothing here trains. ``experiments.generate_idn`` runs Algorithm 1 end to end
and ``experiments.family_labels`` gives any family's labels for a data set.

| family | what decides a flip | exact count | nested across rates | seeded by |
|---|---|---|---|---|
| ``idn`` | Algorithm 1: the highest N(x) flip to their candidate (Eq. 3) | yes | yes | the network's training (``train_seed``) |
| ``xia`` | Xia et al.: per-instance rate q_i ~ truncated N(rate, 0.1^2), target by a random projection of x | no: Binomial(n, E q) | no | ``noise_seed`` |
| ``xia_exact`` | ``xia``'s q_i and projection, exactly ``flip_count`` flips | yes | no | ``noise_seed`` |
| ``symmetric`` | uniform CCN | yes | no | ``noise_seed`` |
| ``pair`` | CCN p -> p + 1 | yes | no | ``noise_seed`` |

The exact generators flip ``flip_count(noise_rate, n)`` = ``int(noise_rate * n)`` labels,
computed so that float rounding never drops one (``0.29 * 100`` is 28.999... in floating point;
it flips 29).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .checks import (check_choice, check_float, check_int, check_labels, check_n_classes, check_rate, check_seed, check_softmax,
                     check_transition_matrix, fail)


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


# ---------------------------------------------------------------- Xia et al. (2020)

XIA_NORM_STD = 0.1  # the authors' default spread of the per-instance flip rates


def xia_rate_distribution(noise_rate: float, norm_std: float = XIA_NORM_STD):
    """The distribution of Xia et al.'s per-instance flip rates: N(rate, norm_std^2) truncated to
    [0, 1] (``scipy.stats.truncnorm``). Each instance flips with its rate, so the number of flips
    among n is Binomial(n, mean). The truncation lifts the mean above the target where the left
    tail is cut: 0.2055 at rate 0.2 (realised rate 0.2055 +- 0.004 for n = 10,000), 0.129 at 0.1,
    and 0.080 at rate 0, where Xia's family still flips about 8% of the labels."""
    from scipy import stats

    r = check_rate(noise_rate)
    norm_std = check_float(norm_std, "norm_std", low=0.0, low_open=True)
    return stats.truncnorm((0 - r) / norm_std, (1 - r) / norm_std, loc=r, scale=norm_std)


def _features(X, n: int) -> torch.Tensor:
    if not isinstance(X, (torch.Tensor, np.ndarray)) or len(X) != n or np.asarray(X).ndim < 2:
        shown = tuple(X.shape) if hasattr(X, "shape") else type(X).__name__
        fail("X", shown, f"the instances as an array of {n} rows (one per label), images or feature vectors")
    X = torch.as_tensor(X).reshape(n, -1).float()
    if not torch.isfinite(X).all():
        fail("X", "an array with NaN or infinite values", "finite features")
    return X


def _xia_draws(X, y, noise_rate, n_classes, seed, norm_std):
    """The authors' ``get_instance_noisy_label`` up to its label draw, in the order it draws from
    one seeded numpy stream: flip rates q (n), projections W (c x d x c), then the flip
    distribution P_i = q_i softmax(x_i W_{y_i} with y_i masked) + (1 - q_i) e_{y_i}."""
    y = _class_count(y, n_classes)
    seed = check_int(seed, "noise_seed", minimum=0, maximum=2 ** 32 - 1)  # numpy's RandomState, as the authors'
    X = _features(X, len(y))
    rng = np.random.RandomState(seed)
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
    return y, q, P, rng


def _sample_rows(P: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """numpy's ``choice(c, p=P_i)`` for every row at once, given its uniform draws ``u``."""
    cdf = torch.from_numpy(P.double().numpy().cumsum(1))
    cdf /= cdf[:, -1:].clone()
    return (cdf <= torch.from_numpy(u)[:, None]).sum(1).clamp(max=P.shape[1] - 1)


def xia_noise(X, y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0,
              norm_std: float = XIA_NORM_STD) -> torch.Tensor:
    """Xia et al.'s instance-dependent noise (NeurIPS 2020, Algorithm 2; ``get_instance_noisy_label``
    in their code): instance i flips with its own rate q_i ~ N(``noise_rate``, ``norm_std``^2)
    truncated to [0, 1], to class k with probability proportional to softmax(x_i W_{y_i})_k, W a
    standard normal projection per class. ``X``: the instances as the authors use them (raw pixel
    values as floats for images; your features otherwise). Their seeded numpy draws, in their
    order, so their labels come out (up to float rounding in the projection). The realised rate
    is random, with the mean of the truncated normal (above ``noise_rate`` at low rates): see
    ``xia_rate_distribution``."""
    y, q, P, rng = _xia_draws(X, y, noise_rate, n_classes, seed, norm_std)
    return _sample_rows(P, rng.random_sample(len(y)))


def xia_exact_noise(X, y: torch.Tensor, noise_rate: float, n_classes: int, seed: int = 0,
                    norm_std: float = XIA_NORM_STD) -> torch.Tensor:
    """``xia_noise`` with exactly ``flip_count(noise_rate, n)`` flips: the same rates q_i and
    projections; the flipped instances are a weighted sample without replacement, weights q_i
    (Efraimidis-Spirakis keys u^(1/q_i)), and each goes to a class drawn from its projection's
    softmax over the other classes. Which instances flip still depends on q_i only, as in ``xia``."""
    y, q, P, rng = _xia_draws(X, y, noise_rate, n_classes, seed, norm_std)
    keys = torch.from_numpy(np.log(rng.random_sample(len(y)))) / q.double().clamp(min=1e-12)
    flip = torch.sort(keys, descending=True, stable=True).indices[:flip_count(noise_rate, len(y))]
    others = P[flip].clone()
    others[torch.arange(len(flip)), y[flip]] = 0
    y_noisy = y.clone()
    y_noisy[flip] = _sample_rows(others, rng.random_sample(len(flip)))
    return y_noisy


# ---------------------------------------------------------------- the families, by name

@dataclass(frozen=True)
class NoiseFamily:
    """A label-noise family: ``label`` for tables, what it needs besides the labels (``"S"``:
    Algorithm 1's averaged softmax, ``"X"``: the instances, or nothing), whether its flip count
    is exact and its flipped sets nested across rates, ``make(y, rate, n_classes, seed, X, S,
    **settings)``, and its own ``settings`` with their defaults."""

    label: str
    needs: str | None
    exact: bool
    nested: bool
    make: Callable
    settings: dict = field(default_factory=dict)

    def with_defaults(self, family: str, settings: dict) -> dict:
        """``settings`` checked against this family's and completed with their defaults."""
        for name in settings:
            if name not in self.settings:
                fail(name, settings[name], f"a setting of family {family!r}: one of {list(self.settings)}"
                     if self.settings else f"no setting: family {family!r} has none")
        return {**self.settings, **settings}


FAMILIES = {
    "idn": NoiseFamily("IDN (Algorithm 1)", "S", True, True,
                       lambda y, r, c, seed, X, S: idn_labels(_class_count(y, c), S, r)),
    "xia": NoiseFamily("Xia et al.", "X", False, False,
                       lambda y, r, c, seed, X, S, norm_std: xia_noise(X, y, r, c, seed, norm_std),
                       {"norm_std": XIA_NORM_STD}),
    "xia_exact": NoiseFamily("Xia et al., exact count", "X", True, False,
                             lambda y, r, c, seed, X, S, norm_std: xia_exact_noise(X, y, r, c, seed, norm_std),
                             {"norm_std": XIA_NORM_STD}),
    "symmetric": NoiseFamily("symmetric CCN", None, True, False,
                             lambda y, r, c, seed, X, S: symmetric_noise(y, r, c, seed)),
    "pair": NoiseFamily("pair CCN", None, True, False, lambda y, r, c, seed, X, S: pair_noise(y, r, c, seed)),
}


def noisy_labels(family: str, y: torch.Tensor, noise_rate: float, n_classes: int, *, noise_seed: int = 0,
                 X=None, S=None, **settings) -> torch.Tensor:
    """Noisy labels of ``family`` (one of ``FAMILIES``; table in the module docstring) at
    ``noise_rate``: ``S`` for ``idn`` (Algorithm 1's averaged softmax; its training seed is the
    only randomness), ``X`` for ``xia`` and ``xia_exact``; ``noise_seed`` seeds the others.
    ``settings``: the family's own (``norm_std`` for Xia's)."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    check_rate(noise_rate)
    check_seed(noise_seed, "noise_seed")
    settings = spec.with_defaults(family, settings)
    if spec.needs == "S" and S is None:
        fail("S", None, "Algorithm 1's averaged softmax (n x c) for family 'idn' (experiments.family_labels trains it)")
    if spec.needs == "X" and X is None:
        fail("X", None, f"the instances (n rows) for family {family!r}")
    return spec.make(y, noise_rate, n_classes, noise_seed, X, S, **settings)
