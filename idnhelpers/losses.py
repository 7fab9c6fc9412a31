"""Training objectives (cross-entropy, SEAL's soft labels, the baselines of Tables 1-3, ELR and PLC)
as frozen dataclasses whose fields (and a user's class's code) enter their runs' cache key. The class
method ``make(specs, n_classes, n_epochs)`` returns the K runs' ``loss(logits, targets, epoch, rows)
-> K losses``: logits K x b x c, targets K x b (or K x b x c soft labels), ``rows`` K x b row indices.
A new loss: a subclass, registered by ``methods.register_method(name, methods.loss_method(label, cls))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .checks import check_fields, check_float, check_int, check_transition_matrix, checked, fail
from .lossparts import code_hash, row_cross_entropy, rows_of, run_rows, soft_cross_entropy


@dataclass(frozen=True)
class Objective:
    """Base class of the objectives (see the module docstring)."""

    extra_outputs = 0  # more outputs (DAC's abstention: an error in test and validation predictions)
    drop_last = False  # skip a final incomplete batch
    accepts_soft = False  # soft labels (K x n x c) allowed as targets
    # per-row state: loss.before_epoch(epoch, train_softmax, labels) runs before each epoch (train_softmax():
    # the K x n x c eval-mode softmax of the training sets, labels: their K x n hard labels)
    row_weighted = False
    per_run: ClassVar[tuple[str, ...]] = ()  # fields that may differ between stacked runs (Forward's T)
    loss_class: ClassVar[type | None] = None  # make's default: loss_class(specs, n_classes, n_epochs)

    @classmethod
    def make(cls, specs: list[Objective], n_classes: int, n_epochs: int):
        if cls.loss_class is None:
            raise NotImplementedError
        return cls.loss_class(specs, n_classes, n_epochs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "make" in vars(cls) and not isinstance(vars(cls)["make"], classmethod):
            raise TypeError(f"{cls.__qualname__}.make must be a @classmethod make(cls, specs, n_classes, n_epochs) "
                            "(idnhelpers.losses' docstring), not the one-run make(self, ...) before 0.4")

    def __post_init__(self):
        check_fields(self)

    def check(self, n_classes: int, n_epochs: int) -> None:
        """Refuse settings that do not fit the run (called before any training)."""

    def scores(self, pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[str, float]:
        """Own measures of a split's arg-max predictions, recorded as ``<split>_<name>``."""
        return {}

    def config(self) -> dict:
        """Name, fields and, for a class defined outside idnhelpers, a hash of its code."""
        cls = type(self)
        conf = {"name": cls.__qualname__, **dataclasses.asdict(self)}
        if not cls.__module__.startswith("idnhelpers."):
            conf["module"], conf["code"] = cls.__module__, code_hash(cls)
        return conf


@dataclass(frozen=True)
class CrossEntropy(Objective):
    """Cross-entropy against hard labels, or Algorithm 2's L_SEAL against soft labels."""

    accepts_soft = True

    @classmethod
    def make(cls, specs, n_classes, n_epochs):
        return lambda logits, targets, epoch, rows: soft_cross_entropy(logits, targets)


def forward_loss(logits: torch.Tensor, y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Forward correction (Patrini et al. 2017): -log (T^T f(x))_y, T[i, j] = P(noisy j | clean i)."""
    log_T_to_y = T.log().transpose(-1, -2).gather(-2, y[..., None].expand(*y.shape, T.shape[-1]))  # [.., b, i]
    return -torch.logsumexp(F.log_softmax(logits, -1) + log_T_to_y, -1).mean(-1)


class _ForwardLoss:
    def __init__(self, specs: list[Forward], n_classes: int, n_epochs: int):
        self.T = torch.tensor([spec.T for spec in specs], dtype=torch.float32)

    def __call__(self, logits, y, epoch, rows):
        if self.T.device != logits.device:  # once: a copy per step makes a GPU wait on the host
            self.T = self.T.to(logits.device)
        return forward_loss(logits, y, self.T)


@dataclass(frozen=True)
class Forward(Objective):
    """Forward-corrected cross-entropy with a fixed transition matrix ``T`` (rows: clean class)."""

    T: tuple[tuple[float, ...], ...] = ()
    per_run = ("T",)
    loss_class = _ForwardLoss

    def check(self, n_classes, n_epochs):
        T = check_transition_matrix(self.T, "T")
        if T.shape != (n_classes, n_classes):
            fail("T", f"a {len(T)} x {len(T)} matrix", f"a {n_classes} x {n_classes} transition matrix")


def _lq(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    log_p = -row_cross_entropy(logits, y)
    return (1 - torch.exp(q * log_p)) / q


def gce_loss(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Generalized cross-entropy L_q = (1 - f_y(x)^q) / q (Zhang and Sabuncu 2018, Eq. 6)."""
    return _lq(logits, y, q).mean(-1)


@dataclass(frozen=True)
class GCE(Objective):
    """The L_q loss with ``q`` in (0, 1] (the paper's baseline: q = 0.7)."""

    q: float = checked(0.7, check_float, low=0.0, high=1.0, low_open=True)

    @classmethod
    def make(cls, specs, n_classes, n_epochs):
        return lambda logits, y, epoch, rows: gce_loss(logits, y, specs[0].q)


class _PrunedLq:
    def __init__(self, specs: list[TruncatedGCE], n_classes: int, n_epochs: int):
        self.spec, self.weights = specs[0], None  # weights: K x n
        self.pruned_at: list[int] = []  # 0-based epochs before which w was updated

    def before_epoch(self, epoch, train_softmax, labels):
        e = epoch + 1
        if e >= self.spec.prune_start and e % self.spec.prune_every == 0:
            p_y = train_softmax().to(labels.device).gather(-1, labels[..., None]).squeeze(-1)
            self.weights = (p_y > self.spec.k).float()
            self.pruned_at.append(epoch)

    def __call__(self, logits, y, epoch, rows):
        q, k = self.spec.q, self.spec.k
        weights = 1.0 if self.weights is None else rows_of(self.weights, rows)
        return (weights * (_lq(logits, y, q) - (1 - k ** q) / q)).mean(-1)


@dataclass(frozen=True)
class TruncatedGCE(Objective):
    """Truncated L_q (Zhang and Sabuncu 2018, Sec. 3.3, Eq. 9-11): the batch mean of w_i (L_q(f_y(x_i))
    - L_q(k)), w_i = 1[f_{y_i}(x_i) > k] (all 1 until the first pruning), pruned before each 1-based
    epoch e >= ``prune_start`` divisible by ``prune_every`` (AlanChou/Truncated-Loss's schedule), scored
    in eval mode on the un-augmented instances with the current network, not as that code does (augmented
    images, the best-*test* checkpoint: training on the test set). The logged loss can be negative."""

    q: float = checked(0.7, check_float, low=0.0, high=1.0, low_open=True)
    k: float = checked(0.5, check_float, low=0.0, high=1.0, low_open=True, high_open=True)
    prune_start: int = checked(40, check_int, minimum=1)
    prune_every: int = checked(10, check_int, minimum=1)
    row_weighted = True
    loss_class = _PrunedLq

    def check(self, n_classes, n_epochs):
        if self.prune_start > n_epochs:
            fail("prune_start", self.prune_start, f"at most the run's n_epochs={n_epochs}: a later start never prunes "
                 "(the loss would be plain GCE); the authors' schedule is 40 of 120 epochs")


def dmi_loss(logits: torch.Tensor, y: torch.Tensor, n_classes: int, official: bool = True) -> torch.Tensor:
    """L_DMI = -log |det U|, U = O^T Y / N (Xu et al. 2019, Eq. 2); ``official``: the authors'
    -log(|det(O^T Y)| + 0.001), finite on a batch that misses a class (det U = 0)."""
    joint = F.softmax(logits.float(), -1).transpose(-1, -2) @ F.one_hot(y, n_classes).float()
    if official:
        return -torch.log(torch.det(joint).abs() + 0.001)
    return -torch.linalg.slogdet(joint / y.shape[-1]).logabsdet


@dataclass(frozen=True)
class DMI(Objective):
    """The DMI loss; a final incomplete batch is skipped, as in the authors' code."""

    official: bool = True
    drop_last = True

    def __post_init__(self):
        if not isinstance(self.official, bool):
            fail("official_loss", self.official, "True (the authors' -log(|det| + 0.001)) or False (-log|det U|)")

    @classmethod
    def make(cls, specs, n_classes, n_epochs):
        return lambda logits, y, epoch, rows: dmi_loss(logits, y, n_classes, specs[0].official)


class _DACLoss:
    def __init__(self, specs: list[DAC], n_classes: int, n_epochs: int):
        self.spec, self.k, self.n_epochs = specs[0], n_classes, n_epochs
        self.warmup = self.spec.warmup(n_epochs)
        self.thresh_ewma = self.alpha = self.alpha_inc = self.alpha_epoch = None  # one value per run

    def __call__(self, logits, y, epoch, rows):
        p_abstain = F.softmax(logits, -1)[..., self.k].clamp(max=1 - 1e-7)
        h_c = row_cross_entropy(logits[..., :self.k], y)
        thresh = ((1 - p_abstain) * h_c).mean(-1).detach()
        mu = self.spec.ewma_mu
        self.thresh_ewma = thresh if self.thresh_ewma is None else mu * thresh + (1 - mu) * self.thresh_ewma
        if epoch < self.warmup:
            return row_cross_entropy(logits, y).mean(-1)
        if self.alpha is None:
            self.alpha = self.thresh_ewma / self.spec.alpha_init_factor
            remaining = self.n_epochs - 1 - epoch  # epochs after this one; alpha_final at the last
            self.alpha_inc = (self.spec.alpha_final - self.alpha) / remaining if remaining else 0.0
            self.alpha_epoch = epoch
        elif epoch > self.alpha_epoch:
            self.alpha, self.alpha_epoch = self.alpha + self.alpha_inc, epoch
        return ((1 - p_abstain) * h_c - self.alpha[..., None] * torch.log1p(-p_abstain)).mean(-1)


@dataclass(frozen=True)
class DAC(Objective):
    """Deep abstaining classifier (Thulasidasan et al. 2019), the last of k + 1 outputs abstaining:
    cross-entropy for ``warmup_epochs`` (None: a tenth) while tracking an EWMA (``ewma_mu``) of
    mean((1 - p_abstain) H(y, f_1..k)); then (1 - p_abstain) H(y, f_1..k) - alpha log(1 - p_abstain),
    alpha rising linearly per epoch from that EWMA / ``alpha_init_factor`` to ``alpha_final`` at the last
    epoch (the authors' ``dac_loss`` divides by total_epochs - epoch, 1-based; here n_epochs - 1 - epoch)."""

    warmup_epochs: int | None = checked(None, check_int, minimum=0, none_ok=True)
    alpha_final: float = checked(1.0, check_float, low=0.0)
    alpha_init_factor: float = checked(64.0, check_float, low=0.0, low_open=True)
    ewma_mu: float = checked(0.05, check_float, low=0.0, high=1.0, low_open=True)
    extra_outputs = 1
    loss_class = _DACLoss

    def warmup(self, n_epochs: int) -> int:
        return max(1, n_epochs // 10) if self.warmup_epochs is None else self.warmup_epochs

    def check(self, n_classes, n_epochs):
        if self.warmup(n_epochs) >= n_epochs:
            fail("warmup_epochs", self.warmup_epochs, f"fewer than the run's n_epochs={n_epochs}")

    def scores(self, pred, y, n_classes):
        """The fraction abstained on (arg-max = the extra output) and the accuracy on the rest."""
        kept = pred < n_classes
        return {"abstained": 1 - kept.float().mean().item(),
                "kept_acc": (pred == y)[kept].float().mean().item() if kept.any() else float("nan")}


def elr_update(targets: torch.Tensor, probs: torch.Tensor, beta: float) -> torch.Tensor:
    """ELR's targets after one batch (Liu et al. 2020, Eq. 9): t <- beta t + (1 - beta) p / sum(p)."""
    p = probs.detach()
    return beta * targets + (1 - beta) * p / p.sum(-1, keepdim=True)


def elr_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Cross-entropy against labels ``y`` plus ELR's lam * mean log(1 - <t, p>) (Liu et al. 2020, Eq. 6), p
    clamped to [1e-4, 1 - 1e-4]; ``y`` a (mixed) label distribution: ELR+'s loss (the authors' ``elr_plus_loss``)."""
    p = F.softmax(logits, -1).clamp(1e-4, 1 - 1e-4)
    return soft_cross_entropy(logits, y) + lam * torch.log(1 - (targets * p).sum(-1)).mean(-1)


class _ELRLoss:
    def __init__(self, specs: list[ELR], n_classes: int, n_epochs: int):
        self.spec, self.n_classes, self.targets = specs[0], n_classes, None  # targets: K x n x c

    def before_epoch(self, epoch, train_softmax, labels):
        if self.targets is None:
            self.targets = torch.zeros(*labels.shape, self.n_classes, device=labels.device)

    def __call__(self, logits, y, epoch, rows):
        p = F.softmax(logits, -1).clamp(1e-4, 1 - 1e-4)
        at = run_rows(rows)
        self.targets[at] = elr_update(self.targets[at], p, self.spec.beta)
        return elr_loss(logits, y, self.targets[at], self.spec.lam)


@dataclass(frozen=True)
class ELR(Objective):
    """Early-learning regularisation (Liu et al., NeurIPS 2020): a moving average t_i of each row's
    predictions (``elr_update``, momentum ``beta``, from zero) and ``lam`` * log(1 - <t_i, p_i>) added
    to the cross-entropy (``elr_loss``). Defaults: the authors' CIFAR-10 setting (CIFAR-100: 0.9, 7)."""

    beta: float = checked(0.7, check_float, low=0.0, high=1.0, high_open=True)
    lam: float = checked(3.0, check_float, low=0.0)
    row_weighted = True
    loss_class = _ELRLoss


def lrt_correction(labels: torch.Tensor, f: torch.Tensor, delta: float, increment: float):
    """PLC's correction (Zhang et al. 2021, Algorithm 1): rows with f_y(x) / max_k f_k(x) < ``delta``
    get argmax f(x); under 0.1% relabelled raises delta by ``increment`` (at most 0.9). -> labels, delta."""
    delta = torch.as_tensor(delta, dtype=torch.float64, device=labels.device)
    ratio = f.gather(-1, labels[..., None]).squeeze(-1) / f.max(-1).values
    relabel = ratio < delta[..., None]
    corrected = torch.where(relabel, f.argmax(-1), labels)
    few = relabel.sum(-1) < 0.001 * labels.shape[-1]
    return corrected, torch.where(few, (delta + increment).clamp(max=0.9), delta)


class _PLCLoss:
    run_axes = {"record": 1}  # its tensors' run dimension where it is not the first (checkpoint slices)

    def __init__(self, specs: list[PLC], n_classes: int, n_epochs: int):
        self.spec, self.n_classes, self.warmup = specs[0], n_classes, specs[0].warmup(n_epochs)
        self.labels = self.record = self.delta = None  # K x n, window x K x n x c, K
        self.corrected_at: list[int] = []  # 0-based epochs after which labels were corrected

    def before_epoch(self, epoch, train_softmax, labels):
        if self.labels is None:
            self.labels = labels.clone()
            self.record = torch.zeros(self.spec.window, *labels.shape, self.n_classes, device=labels.device)
            self.delta = torch.full(labels.shape[:-1], self.spec.delta, dtype=torch.float64, device=labels.device)
        if epoch - 1 >= self.warmup:  # the authors correct at the end of epoch e >= warm_up
            self.labels, self.delta = lrt_correction(self.labels, self.record.mean(0), self.delta,
                                                     self.spec.delta_increment)
            self.corrected_at.append(epoch - 1)

    def __call__(self, logits, y, epoch, rows):
        self.record[epoch % self.spec.window][run_rows(rows)] = F.softmax(logits.detach(), -1)
        return row_cross_entropy(logits, rows_of(self.labels, rows)).mean(-1)


@dataclass(frozen=True)
class PLC(Objective):
    """Progressive label correction (Zhang et al., ICLR 2021, Algorithm 1): cross-entropy on labels
    that ``lrt_correction`` relabels after each 0-based epoch >= ``warmup_epochs`` (None: 8, or
    (n_epochs - 1) // 2 if shorter) from the mean train-mode softmax of the last ``window`` epochs."""

    delta: float = checked(0.3, check_float, low=0.0, high=1.0, low_open=True)
    delta_increment: float = checked(0.1, check_float, low=0.0)
    warmup_epochs: int | None = checked(None, check_int, minimum=0, none_ok=True)
    window: int = checked(5, check_int, minimum=1)
    row_weighted = True
    loss_class = _PLCLoss

    def warmup(self, n_epochs: int) -> int:
        return min(8, (n_epochs - 1) // 2) if self.warmup_epochs is None else self.warmup_epochs

    def check(self, n_classes, n_epochs):
        if self.warmup(n_epochs) >= n_epochs - 1:
            fail("warmup_epochs", self.warmup_epochs, f"fewer than n_epochs - 1 = {n_epochs - 1}: a correction after "
                 "the last epoch changes nothing")
