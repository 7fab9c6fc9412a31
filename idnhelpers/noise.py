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

from .checks import (check_choice, check_float, check_int, check_labels, check_n_classes, check_new_name, check_rate,
                     check_rates, check_seed, check_softmax, check_transition_matrix, fail)
from .published import (CAL_DATASETS, CAL_RATES, CIFAR_N, PUBLISHED, PUBLISHED_RATES, load_cal_idn, load_cifar_n,
                        load_published_idn, read_noisy_csv)


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


# ---------------------------------------------------------------- PMD (Zhang et al., ICLR 2021)

PMD_TYPES = (1, 2, 3)


def _pmd_type(value, name):
    if isinstance(value, bool) or value not in PMD_TYPES:
        fail(name, value, f"one of {list(PMD_TYPES)} (PMD's type I, II or III)")


def pmd_keep(S, noise_type: int):
    """The top two classes ``u``, ``s`` of every row of a clean-trained network's softmax eta
    (``S``) and the probability of keeping ``u``, 1 - tau(x) with Delta = eta_u - eta_s: Type I
    1/2 + Delta^2 / 2, Type II Delta^3, Type III (Delta^3 + Delta^2 + Delta) / 3 (the paper's tau of
    Types I-III). Computed in float32 in the order of the authors' ``label_noise`` (pxiangwu/PLC)."""
    S = check_softmax(S)
    _pmd_type(noise_type, "type")
    top = torch.as_tensor(S).float().topk(2, dim=1)
    eta_u, eta_s = top.values[:, 0].numpy(), top.values[:, 1].numpy()
    delta = np.abs(eta_u - eta_s)
    tau = {1: -(1 / 2) * (eta_u - eta_s) ** 2 + 1 / 2, 2: 1 - delta ** 3,
           3: 1 - (1 / 3) * delta ** 3 - (1 / 3) * delta ** 2 - (1 / 3) * delta}[noise_type]
    keep = np.maximum(1 - tau, 0.5) if noise_type == 1 else 1 - tau  # Type I's maximum never binds (the code has it)
    return top.indices[:, 0], top.indices[:, 1], keep


def pmd_factor(y, u, s, keep, noise_rate: float) -> float:
    """The authors' ``factor`` that gives ``noise_rate`` in expectation: each label is ``u`` with
    probability keep / factor, else ``s``, so the expected fraction of labels != ``y`` is
    mean(s != y) + mean(keep ((u != y) - (s != y))) / factor, linear in 1 / factor. Their factors
    are >= 1 (below 1 the probability of ``u`` would exceed 1), which bounds the rates one can ask for."""
    y, u, s = (torch.as_tensor(t).long().numpy() for t in (y, u, s))
    base = float(np.mean(s != y))
    slope = float(np.mean(keep.astype(np.float64) * ((u != y).astype(float) - (s != y))))
    low, high = sorted((base + slope, base))  # factor 1 and factor -> infinity
    if not low <= noise_rate < high or slope == 0:
        fail("noise_rate", noise_rate, f"a rate that a factor >= 1 reaches with this network's softmax: in "
             f"[{low:.4f}, {high:.4f}) (the rate at factor 1 is the mean of tau(x))")
    return slope / (noise_rate - base)


def pmd_noise(y, S, noise_rate: float, noise_type: int = 1, seed: int = 0) -> torch.Tensor:
    """PMD noise (Zhang et al., ICLR 2021, "Learning with feature-dependent label noise: a
    progressive approach"; ``label_noise`` in pxiangwu/PLC ``utils.py``): from a clean-trained
    network's softmax eta, every label becomes the network's top class u with probability
    (1 - tau(x)) / factor and its second class s otherwise (``pmd_keep``), one draw per instance
    in order from numpy's ``RandomState(seed)``, as the authors' loop draws from the seeded global
    state. The label is always u or s, whatever the true label. The paper says tau is multiplied
    by a constant factor; the code divides 1 - tau by ``factor``, and that is followed here, with
    the factor solved for ``noise_rate`` in expectation (``pmd_factor``; the authors tuned it by
    hand per data set, e.g. 1.43 for 35% Type I on CIFAR-10). The realised rate is random."""
    y = check_labels(y, None)
    u, s, keep = pmd_keep(S, noise_type)
    factor = pmd_factor(y, u, s, keep, check_rate(noise_rate))
    seed = check_int(seed, "noise_seed", minimum=0, maximum=2 ** 32 - 1)
    draws = np.random.RandomState(seed).binomial(1, keep / factor)
    return torch.from_numpy(np.where(draws == 1, u.numpy(), s.numpy())).long()


def pmd_exact_noise(y, S, noise_rate: float, noise_type: int = 1, seed: int = 0) -> torch.Tensor:
    """``pmd_noise`` with exactly ``flip_count(noise_rate, n)`` labels different from ``y``: the
    flipped instances are a weighted sample without replacement (Efraimidis-Spirakis keys, numpy's
    ``RandomState(seed)``), weights the probability that the authors' rule mislabels them at the
    factor solved for ``noise_rate``; each flipped label is the one of u, s that is not y (u with
    probability keep / factor when neither is). The others keep their true label."""
    y = check_labels(y, None)
    u, s, keep = pmd_keep(S, noise_type)
    factor = pmd_factor(y, u, s, keep, check_rate(noise_rate))
    seed = check_int(seed, "noise_seed", minimum=0, maximum=2 ** 32 - 1)
    p_u = torch.from_numpy(keep / factor).double()
    wrong = p_u * (u != y) + (1 - p_u) * (s != y)
    rng = np.random.RandomState(seed)
    keys = torch.from_numpy(np.log(rng.random_sample(len(y)))) / wrong.clamp(min=1e-12)
    keys[wrong == 0] = -math.inf
    flip = torch.sort(keys, descending=True, stable=True).indices[:flip_count(noise_rate, len(y))]
    if len(flip) and bool((wrong[flip] == 0).any()):
        fail("noise_rate", noise_rate, f"at most {int((wrong > 0).sum())} flips: only so many instances can be "
             "mislabelled with their top two classes")
    to_u = torch.from_numpy(rng.random_sample(len(flip))) < p_u[flip]
    target = torch.where((u[flip] != y[flip]) & ((s[flip] == y[flip]) | to_u), u[flip], s[flip])
    y_noisy = y.clone()
    y_noisy[flip] = target
    return y_noisy


# ---------------------------------------------------------------- the families, by name

@dataclass(frozen=True)
class LabelInputs:
    """What a family's generator may read of the rows it labels: their true labels ``y``, the data
    set's ``n_classes``, the instances ``X`` (as stored: uint8 images or float features), the
    softmax ``S`` of the network the family asks for, and where the rows come from (``dataset``,
    ``rows``: indices into its training split, ``root``: the data root) for published files."""

    y: torch.Tensor
    n_classes: int
    X: torch.Tensor | None = None
    S: torch.Tensor | None = None
    dataset: str | None = None
    rows: torch.Tensor | None = None
    root: str | None = None


@dataclass(frozen=True)
class NoiseFamily:
    """A label-noise family: ``label`` for tables and ``make(inputs, rate, seed, **settings)`` the
    noisy labels of ``LabelInputs`` at ``rate`` (None for a family with one fixed label set). What
    it ``needs`` besides the labels: nothing, ``"instances"``, ``"network"`` (the softmax of a network
    trained on the clean labels: ``network`` "averaged" over its epochs as Algorithm 1's S, or its
    "final" softmax as PMD's eta) or ``"file"`` (published labels, for ``datasets`` and ``rates``
    only). ``seeded_by``: "noise_seed" and/or "train_seed" (the network's). Its own ``settings`` with
    their defaults and a check each (``checks``: name -> ``check(value, name)``). ``exact``: exactly
    ``flip_count`` flips; ``nested``: a lower rate's flips are a subset of a higher one's; ``fixed``:
    a single label set (human labels), which takes no rate. ``instance_dependent``: whether a flip
    depends on the instance (False: class-conditional, Definition 1). ``expected(rate, n)``: the
    realised rate's (mean, standard deviation) over ``n`` labels for a family whose count is not
    exact (None: not known, as for published files on a subset of their rows). ``elsewhere``: what
    to use on a data set outside ``datasets`` (said when one is refused)."""

    label: str
    make: Callable
    needs: str | None = None
    seeded_by: tuple[str, ...] = ("noise_seed",)
    exact: bool = True
    nested: bool = False
    settings: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    network: str = "averaged"
    datasets: tuple[str, ...] | None = None
    rates: tuple[float, ...] | None = None
    fixed: bool = False
    instance_dependent: bool = True
    expected: Callable | None = None
    elsewhere: str = ""

    def __post_init__(self):
        if not callable(self.make):
            fail("make", self.make, "a function (inputs, rate, seed, **settings) -> noisy labels")
        if self.needs is not None:
            check_choice(self.needs, "needs", ["instances", "network", "file"])
        check_choice(self.network, "network", ["averaged", "final"])
        for name in self.seeded_by:
            check_choice(name, "seeded_by", ["noise_seed", "train_seed"])
        for name in self.checks:
            if name not in self.settings:
                fail("checks", name, f"a check of one of the family's settings {list(self.settings)}")

    def with_defaults(self, family: str, settings: dict) -> dict:
        """``settings`` checked against this family's and completed with their defaults."""
        for name, value in settings.items():
            if name not in self.settings:
                fail(name, value, f"a setting of family {family!r}: one of {list(self.settings)}"
                     if self.settings else f"no setting: family {family!r} has none")
            if name in self.checks:
                self.checks[name](value, name)
        return {**self.settings, **settings}

    def check_rates(self, family: str, rates, name: str = "noise_rates") -> list:
        """``rates`` (the parameter ``name``) checked for this family: [None] for a fixed one (which
        takes none), else noise rates (``checks.check_rates``), those of the published files where it has files."""
        if self.fixed:
            if rates not in (None, [None], (None,)):
                fail(name, rates, f"None: family {family!r} is one fixed set of labels, with no rate")
            return [None]
        checked = check_rates(rates, name)
        for r in checked:
            if self.rates is not None and not any(abs(r - p) < 1e-9 for p in self.rates):
                fail("noise_rate", r, f"one of the rates family {family!r} has: {list(self.rates)}")
        return checked

    def check_dataset(self, family: str, dataset: str) -> None:
        if self.datasets is not None and dataset not in self.datasets:
            fail("dataset", dataset, f"one of {list(self.datasets)}: family {family!r} has labels for those only"
                 + (f"; {self.elsewhere}" if self.elsewhere else ""))


def expected_rate(family: str, rate: float, n: int, **settings) -> tuple[float, float] | None:
    """(mean, standard deviation) of ``family``'s realised noise rate over ``n`` labels at ``rate``
    with its ``settings``: exact for an exact family, the entry's own ``expected`` otherwise, None
    where unknown."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    if spec.exact and spec.needs != "file":
        return flip_count(rate, n) / n, 0.0
    return None if spec.expected is None else spec.expected(rate, n, **spec.with_defaults(family, settings))


def _xia_expected(rate: float, n: int, norm_std: float = XIA_NORM_STD) -> tuple[float, float]:
    mean = float(xia_rate_distribution(rate, norm_std).mean())
    return mean, math.sqrt(mean * (1 - mean) / n)  # Binomial(n, E q)


def _pmd_expected(rate: float, n: int, **settings) -> tuple[float, float]:
    return rate, math.sqrt(rate * (1 - rate) / n)  # the factor is solved for the mean; Poisson-binomial sd at most


def _positive(value, name):
    check_float(value, name, low=0.0, low_open=True)


def _published(load):
    """A file family's ``make``: ``load(dataset, rate, root, **settings)`` gives the labels of the
    whole training split; the rows are picked from them."""
    def make(inputs, rate, seed, **settings):
        y_all, y_noisy_all = load(inputs.dataset, rate, inputs.root, **settings)
        if not torch.equal(y_all[inputs.rows], inputs.y):
            fail("labels", f"{inputs.dataset}'s published file", "a file whose true labels are the data set's "
                 "(row i = training index i)")
        return y_noisy_all[inputs.rows]
    return make


FAMILIES: dict[str, NoiseFamily] = {}


def register_family(name: str, family: NoiseFamily, *, replace: bool = False) -> NoiseFamily:
    """Add ``family`` to the registry under ``name`` (an existing name only with ``replace=True``)."""
    check_new_name(FAMILIES, name, "noise family", replace)
    if not isinstance(family, NoiseFamily):
        fail("family", family, "a noise.NoiseFamily")
    FAMILIES[name] = family
    return family


register_family("idn", NoiseFamily(
    "IDN (Algorithm 1)", lambda inputs, r, seed: idn_labels(inputs.y, inputs.S, r),
    needs="network", seeded_by=("train_seed",), exact=True, nested=True))
register_family("idn_published", NoiseFamily(
    "IDN (the authors' published labels)",
    _published(lambda dataset, r, root: load_published_idn(dataset, r)), needs="file", seeded_by=(), exact=True,
    nested=True, datasets=tuple(PUBLISHED), rates=PUBLISHED_RATES,
    elsewhere="family 'idn' runs Algorithm 1 on any data set"))
register_family("xia", NoiseFamily(
    "Xia et al.", lambda inputs, r, seed, norm_std: xia_noise(inputs.X, inputs.y, r, inputs.n_classes,
                                                               seed, norm_std),
    needs="instances", exact=False, settings={"norm_std": XIA_NORM_STD}, checks={"norm_std": _positive},
    expected=_xia_expected))
register_family("xia_exact", NoiseFamily(
    "Xia et al., exact count",
    lambda inputs, r, seed, norm_std: xia_exact_noise(inputs.X, inputs.y, r, inputs.n_classes, seed,
                                                      norm_std),
    needs="instances", settings={"norm_std": XIA_NORM_STD}, checks={"norm_std": _positive}))
register_family("pmd", NoiseFamily(
    "PMD (Zhang et al.)", lambda inputs, r, seed, type: pmd_noise(inputs.y, inputs.S, r, type, seed),
    needs="network", network="final", seeded_by=("train_seed", "noise_seed"), exact=False,
    settings={"type": 1}, checks={"type": _pmd_type}, expected=_pmd_expected))
register_family("pmd_exact", NoiseFamily(
    "PMD, exact count", lambda inputs, r, seed, type: pmd_exact_noise(inputs.y, inputs.S, r, type, seed),
    needs="network", network="final", seeded_by=("train_seed", "noise_seed"), settings={"type": 1},
    checks={"type": _pmd_type}))
register_family("symmetric", NoiseFamily(
    "symmetric CCN", lambda inputs, r, seed: symmetric_noise(inputs.y, r, inputs.n_classes, seed),
    instance_dependent=False))
register_family("pair", NoiseFamily("pair CCN", lambda inputs, r, seed: pair_noise(inputs.y, r, inputs.n_classes, seed),
                                    instance_dependent=False))
register_family("cal_idn", NoiseFamily(
    "IDN of CAL (Zhu et al.)", _published(lambda dataset, r, root: load_cal_idn(dataset, r)), needs="file",
    seeded_by=(), exact=False, datasets=tuple(CAL_DATASETS), rates=CAL_RATES))
register_family("cifar10n", NoiseFamily(
    "CIFAR-10N human labels", _published(lambda dataset, r, root, labels: load_cifar_n(dataset, root, labels)),
    needs="file", seeded_by=(), exact=False, datasets=("cifar10",), fixed=True, settings={"labels": "worst"},
    checks={"labels": lambda value, name: check_choice(value, name, CIFAR_N["cifar10"].variants)}))
register_family("cifar100n", NoiseFamily(
    "CIFAR-100N human labels", _published(lambda dataset, r, root: load_cifar_n(dataset, root, "noisy")),
    needs="file", seeded_by=(), exact=False, datasets=("cifar100",), fixed=True))

register_family("labels_file", NoiseFamily(
    "labels from a file", _published(lambda dataset, r, root, path: read_noisy_csv(path)), needs="file", seeded_by=(),
    exact=False, fixed=True, settings={"path": None}))


def labels_of(family: str, inputs: LabelInputs, noise_rate: float | None, *, noise_seed: int = 0,
              **settings) -> torch.Tensor:
    """Noisy labels of ``family`` for ``inputs`` at ``noise_rate`` (None for a fixed family), after
    checking the rate, the seed, the settings and that ``inputs`` hold what the family needs."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    rate = spec.check_rates(family, None if noise_rate is None else [noise_rate])[0]
    check_seed(noise_seed, "noise_seed")
    settings = spec.with_defaults(family, settings)
    needed = {"network": ("S", inputs.S), "instances": ("X", inputs.X),
              "file": ("dataset/rows", None if inputs.rows is None else inputs.dataset)}
    if spec.needs in needed and needed[spec.needs][1] is None:
        fail(needed[spec.needs][0], None, f"what family {family!r} needs ({spec.needs}; experiments.family_labels "
             "provides it for a sample)")
    if spec.needs == "file":
        spec.check_dataset(family, inputs.dataset)
    return spec.make(inputs, rate, noise_seed, **settings)


def noisy_labels(family: str, y: torch.Tensor, noise_rate: float | None, n_classes: int, *, noise_seed: int = 0,
                 X=None, S=None, **settings) -> torch.Tensor:
    """Noisy labels of ``family`` (one of ``FAMILIES``; table in the module docstring) at
    ``noise_rate`` for your own labels ``y``: ``S`` for a family that needs a network (its softmax),
    ``X`` for one that needs the instances; ``noise_seed`` for those it seeds; ``settings``: the
    family's own. Label maths on arrays; ``experiments.family_labels`` gives any family's labels
    (published files included) for a ``Sample``, training the network a family needs."""
    return labels_of(family, LabelInputs(_class_count(y, n_classes), n_classes, X, S), noise_rate,
                     noise_seed=noise_seed, **settings)
