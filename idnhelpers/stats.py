"""Label-noise statistics: transition matrices, the CCN test (Section 2, Theorem 1), Forward's
anchor-point T and SEAL's label correction (Eq. 9-10)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import (check_float, check_int, check_labels, check_n_classes, check_same_length, check_seed,
                     check_softmax, check_transition_matrix, fail)
from .noise import mislabel_scores


def estimate_transition_matrix(y, y_noisy, n_classes: int) -> torch.Tensor:
    """Empirical M with M_pq = #{y = p, y_noisy = q} / #{y = p} (rows of absent classes stay e_p)."""
    n_classes = check_n_classes(n_classes)
    y, y_noisy = check_labels(y, n_classes), check_labels(y_noisy, n_classes, "y_noisy")
    check_same_length(y=y, y_noisy=y_noisy)
    counts = torch.bincount(y * n_classes + y_noisy, minlength=n_classes ** 2).view(n_classes, n_classes).double()
    totals = counts.sum(1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp(min=1), torch.eye(n_classes, dtype=torch.float64))


def class_priors(y, n_classes: int) -> torch.Tensor:
    """w_p = fraction of instances with label p."""
    y = check_labels(y, n_classes)
    if not len(y):
        fail("y", "an empty tensor", "at least one label")
    return torch.bincount(y, minlength=n_classes).double() / len(y)


def per_class_noise_rate(y, y_noisy, n_classes: int) -> torch.Tensor:
    """Fraction of each true class whose label was flipped: 1 - M_pp."""
    return 1 - estimate_transition_matrix(y, y_noisy, n_classes).diagonal()


def flip_agreement(y, y_noisy, y_noisy_ref) -> dict:
    """How far noisy labels reproduce reference ones: ``recovered``, the share of the reference's flips
    flipped here too (``chance_recovered``: by chance); ``target_agreement``, of those, to the same label."""
    y, y_noisy, y_noisy_ref = (check_labels(t, None, name) for t, name in (
        (y, "y"), (y_noisy, "y_noisy"), (y_noisy_ref, "y_noisy_ref")))
    check_same_length(y=y, y_noisy=y_noisy, y_noisy_ref=y_noisy_ref)
    ours, ref = y_noisy != y, y_noisy_ref != y
    both = ours & ref
    same = float((y_noisy[both] == y_noisy_ref[both]).float().mean()) if both.any() else float("nan")
    return dict(flipped=int(ours.sum()), flipped_ref=int(ref.sum()), flipped_both=int(both.sum()),
                recovered=float(both.sum() / ref.sum().clamp(min=1)), target_agreement=same,
                chance_recovered=float(ours.float().mean()))


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion ``p`` measured on ``n`` instances."""
    return math.sqrt(p * (1 - p) / n)


def m_to_reject(epsilon: float, alpha: float) -> float:
    """The smallest m with exp(-2 m eps^2) <= ``alpha`` (Theorem 1); inf if eps <= 0."""
    return math.ceil(math.log(1 / alpha) / (2 * epsilon ** 2)) if epsilon > 0 else math.inf


@dataclass(frozen=True)
class CCNTest:
    """Theorem 1's test; ``log10_p``: log10 of the bound exp(-2 m eps^2) (0 when eps <= 0)."""

    bound: float
    val_error: float
    epsilon: float
    m: int
    log10_p: float
    reject: bool
    alpha: float

    @property
    def se(self) -> float:
        return binomial_se(self.val_error, self.m)

    @property
    def m_to_reject(self) -> float:
        return m_to_reject(self.epsilon, self.alpha)

    def __str__(self) -> str:
        if self.epsilon <= 0:
            return (f"validation error {self.val_error:.4f} >= CCN bound {self.bound:.4f}: consistent with CCN, "
                    "no rejection")
        verdict = "reject CCN" if self.reject else "cannot reject CCN"
        return (f"CCN bound {self.bound:.4f} - validation error {self.val_error:.4f} = eps {self.epsilon:.4f}; "
                f"P <= exp(-2 m eps^2) = 10^{self.log10_p:.1f} (m = {self.m}): {verdict} at alpha = {self.alpha}")


def ccn_bound(M, w) -> float:
    """Theorem 1's lower bound on the noisy 0-1 error under CCN: 1 - sum_p w_p max_q M_pq."""
    M = check_transition_matrix(M)
    try:
        w = torch.as_tensor(w, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        fail("w", w, "a vector of class priors")
    if w.shape != (len(M),):
        fail("w", f"a tensor of shape {tuple(w.shape)}", f"one prior per class of M ({len(M)})")
    if not torch.isfinite(w).all() or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        fail("w", w.tolist(), "class priors: non-negative, summing to 1")
    return max(0.0, float(1 - (w * M.max(1).values).sum()))  # >= 0; clamp float round-off


def ccn_test(val_error: float, M, w, m: int, alpha: float = 0.05) -> CCNTest:
    """Theorem 1, Eq. (1): under CCN, P[bound - val_error >= eps] <= exp(-2 m eps^2) on ``m`` held-out
    validation instances; CCN is rejected when that is below ``alpha``."""
    val_error = check_float(val_error, "val_error", low=0.0, high=1.0)
    m = check_int(m, "m", minimum=1)
    alpha = check_float(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    bound = ccn_bound(M, w)
    eps = bound - val_error
    log10_p = -2 * m * eps ** 2 / math.log(10) if eps > 0 else 0.0
    return CCNTest(bound, float(val_error), eps, int(m), log10_p, bool(eps > 0 and log10_p < math.log10(alpha)), alpha)


def validation_split(n: int, val_fraction: float, seed: int = 0):
    """Random (train_idx, val_idx) with ``round(val_fraction * n)`` validation rows, both sorted."""
    n = check_int(n, "n", minimum=2)
    val_fraction = check_float(val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    check_seed(seed)
    m = round(val_fraction * n)
    if not 1 <= m < n:
        fail("val_fraction", val_fraction, f"a fraction of n={n} rows that leaves at least one training and one "
             "validation row")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[m:].sort().values, perm[:m].sort().values


def anchor_transition_matrix(probs: torch.Tensor, percentile: float | None = 97.0) -> torch.Tensor:
    """Anchor-point estimate of T (Patrini et al. 2017, Eq. 9-10): row i is the softmax of the instance
    at ``percentile`` of p(noisy i | x) (their robust variant, 97 in their experiments; None: the argmax)."""
    probs = check_softmax(probs, name="probs").double()
    if len(probs) == 0:
        fail("probs", "an empty matrix", "an n x c softmax matrix with n >= 1")
    check_float(percentile, "percentile", low=0.0, high=100.0, low_open=True, none_ok=True)
    p = probs.clone()
    if percentile is not None:
        p[p >= torch.quantile(p, percentile / 100, dim=0, interpolation="higher")] = 0.0
    return probs[p.argmax(0)].float()


def label_distance(S: torch.Tensor, y: torch.Tensor, y_noisy: torch.Tensor) -> torch.Tensor:
    """Eq. (9) on the corrupted instances: d = ||S_i - e_y||_1 / ||e_y_noisy - e_y||_1, the latter 2."""
    S, y, y_noisy = _correction_inputs(S, y, y_noisy)
    corrupted = y != y_noisy
    e_y = F.one_hot(y[corrupted], S.shape[1]).to(S.dtype)
    return (S[corrupted] - e_y).abs().sum(1) / 2


def _correction_inputs(S, y, y_noisy):
    S = check_softmax(S)
    y, y_noisy = check_labels(y, S.shape[1]), check_labels(y_noisy, S.shape[1], "y_noisy")
    check_same_length(S=S, y=y, y_noisy=y_noisy)
    return S, y, y_noisy


# Eq. (10): N-bar(x) = max_{k != y_noisy} S_k and the corrected label argmax_{k != y_noisy} S_k (Eq. 3)
correction_scores = mislabel_scores


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` detecting the ``positive`` rows (Mann-Whitney, ties count
    one half); NaN without both kinds."""
    score, positive = torch.as_tensor(score).double(), torch.as_tensor(positive).bool()
    check_same_length(score=score, positive=positive)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    values, inverse, counts = torch.unique(score, return_inverse=True, return_counts=True)
    midrank = torch.cumsum(counts, 0).double() - (counts.double() - 1) / 2  # ties: their mean rank
    rank_sum = float(midrank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def correction_metrics(S: torch.Tensor, y: torch.Tensor, y_noisy: torch.Tensor) -> dict:
    """How well SEAL's soft labels find and fix the k corrupted instances (beyond the paper): precision
    (= recall) of the top k by N-bar(x) (Eq. 10), accuracy of the labels with those relabelled, Eq. (9)."""
    S, y, y_noisy = _correction_inputs(S, y, y_noisy)
    score, corrected = correction_scores(S, y_noisy)
    corrupted = y != y_noisy
    k = int(corrupted.sum())
    top = torch.sort(score, descending=True, stable=True).indices[:k]
    found = int(corrupted[top].sum()) / k if k else float("nan")
    relabelled = y_noisy.clone()
    relabelled[top] = corrected[top]
    return dict(precision=found, recall=found, auroc=auroc(score, corrupted),
                acc_noisy=float((y_noisy == y).float().mean()), acc_argmax=float((S.argmax(1) == y).float().mean()),
                acc_corrected=float((relabelled == y).float().mean()),
                mean_distance=float(label_distance(S, y, y_noisy).mean()) if k else float("nan"))
