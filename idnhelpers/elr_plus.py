"""ELR+ (Liu, Niles-Weed, Razavian and Fernandez-Granda, "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020, Sec. 4.3): ELR (``losses.ELR``: the
regulariser of Eq. 6 towards the temporal-ensembling targets of Eq. 9) with three additions,

- two networks, each with a weight-averaged (EMA) copy (Tarvainen and Valpola's mean teacher);
- network k's targets t are the temporal ensemble (momentum ``beta``) of the *other* network's
  EMA copy's predictions on the batch before mixing;
- mixup (Zhang et al. 2018) of the inputs and of the one-hot labels, the regulariser's targets mixed alike.

The authors' code (shengliu66/ELR, ``ELR_plus``) runs in one process (their configs: ``n_gpu: 1``) or on
two GPUs. One process, implemented here: network 1 trains a whole epoch against network 2's EMA copy as
it stands, then network 2 trains one against network 1's EMA copy as network 1 left it; each draws its own
batch order; the test prediction is 0.5 (f_1 + f_2) of the two trained networks in eval mode
(``_test_epoch(epoch, model1, model2)``): the engine's ``ensemble`` (summed logits, same arg-max). On two
GPUs both networks train at once against copies of the EMAs taken as the epoch begins, and the test
prediction is 0.5 (f_1 + EMA copy of f_2); not implemented (it needs a step-given test predictor).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_bool, check_float, check_int, checked
from .losses import elr_loss, elr_update
from .lossparts import mix, rampup, sgd_step, train_logits
from .steps import Step


def ema_momentum(step: int, ema_alpha: float, ema_step: int | None) -> float:
    """The EMA copies' momentum after 1-based training step ``step`` (the authors' ``update_ema_variables``):
    ``ema_alpha`` * rampup(step + 1, ``ema_step``, sigmoid=True), or with ``ema_step`` None (their
    ``ema_update: false``, Clothing1M and WebVision) the mean teacher's min(1 - 1 / (step + 1), ``ema_alpha``)."""
    if ema_step is None:
        return min(1 - 1 / (step + 1), ema_alpha)
    return ema_alpha * rampup(step + 1, ema_step, sigmoid=True)


def scaled_ramp(n_rows: int, batch_size: int, n_epochs: int, steps: int = 40000) -> int:
    """A ramp of ``steps`` SGD steps of the authors' CIFAR-10 run (``ema_step``: 40000 of its 200 epochs of
    ceil(45000 / 128) = 352 steps, 57% of it) as the same share of a run of ``n_epochs`` epochs of
    ``n_rows`` rows in batches of ``batch_size`` (MNIST, 4,000 rows, 50 epochs of 64: 1,790)."""
    for value, name in ((n_rows, "n_rows"), (batch_size, "batch_size"), (n_epochs, "n_epochs"), (steps, "steps")):
        check_int(value, name, minimum=1)
    return round(steps / (200 * math.ceil(45000 / 128)) * n_epochs * math.ceil(n_rows / batch_size))


@torch.no_grad()
def ema_update_(averaged: list[torch.Tensor], weights: list[torch.Tensor], momentum: float) -> None:
    """Weight averaging in place: theta~ <- momentum theta~ + (1 - momentum) theta."""
    torch._foreach_mul_(averaged, momentum)
    torch._foreach_add_(averaged, weights, alpha=1 - momentum)


@dataclass(frozen=True)
class ELRPlus(Step):
    """ELR+ (the module docstring). ``beta``, ``lam``: ELR's target momentum and weight (Eqs. 6, 9), the
    weight ramped by ``rampup(step, coef_step, sigmoid=True)``; ``mixup_alpha``: mixup's Beta parameter (0: none);
    ``ema_alpha``, ``ema_step``: the EMA copies' momentum and its ramp (``ema_momentum``), in SGD steps of
    one network. Defaults: the authors' CIFAR-10 (symmetric noise) config; CIFAR-10 asymmetric: beta 0.9,
    lam 1; CIFAR-100: beta 0.9, lam 7, coef_step 40000 and their label correction; Clothing1M: ema_alpha
    0.9999, ema_step None. ``label_correction``: the authors' code, for 100 classes only and not in the
    paper, trains on the mixed one-hot labels times q, renormalised, instead of the mixed labels."""

    beta: float = checked(0.7, check_float, low=0.0, high=1.0, high_open=True)
    lam: float = checked(3.0, check_float, low=0.0)
    mixup_alpha: float = checked(1.0, check_float, low=0.0)
    ema_alpha: float = checked(0.997, check_float, low=0.0, high=1.0, high_open=True)
    ema_step: int | None = checked(40000, check_int, minimum=0, none_ok=True)
    coef_step: int = checked(0, check_int, minimum=0)
    label_correction: bool = checked(False, check_bool)
    n_networks: ClassVar[int] = 2
    stackable: ClassVar[bool] = False  # the one-process schedule trains network 1 then 2: a loop, not a batch
    ensemble: ClassVar[bool] = True  # test and S from f_1 + f_2, as the authors' one-process _test_epoch

    @classmethod
    def make(cls, specs):
        return _ELRPlusEpochs(specs[0])


class _ELRPlusEpochs:
    """The step's state and its epochs (``training.fit``'s ``train_epoch`` hook)."""

    state_names = ("emas", "targets", "steps")

    def __init__(self, spec: ELRPlus):
        self.spec = spec
        self.emas = None  # per network, its EMA copy's tensors (parameters, then buffers): live, checkpointed
        self.targets = None  # 2 x n x c: network k's ELR targets t (from the other network's EMA copy)
        self.steps = 0  # SGD steps of one network so far (the authors' global_step, shared by both)
        self._copies = None  # the EMA copies as modules

    def ema_copies(self, models: list[torch.nn.Module]) -> list[torch.nn.Module]:
        """The networks' EMA copies: copies of them at the start (theta~ = theta), the checkpointed
        tensors loaded once after a resume."""
        if self._copies is None:
            self._copies = [copy.deepcopy(m).requires_grad_(False) for m in models]
            if self.emas is not None:  # restored from a checkpoint
                with torch.no_grad():
                    for copy_, saved in zip(self._copies, self.emas):
                        torch._foreach_copy_(list(copy_.state_dict().values()), list(saved))
            self.emas = [list(c.state_dict().values()) for c in self._copies]
        return self._copies

    def train_epoch(self, training, epoch: int):
        """Network 1's epoch, then network 2's: the summed loss and fitted rows of network 1 (K = 1)."""
        copies = self.ema_copies(training.bank.models)
        if self.targets is None:
            self.targets = torch.zeros(2, len(training.source), training.n_classes, device=training.device)
        for c in copies:
            c.train(True)  # as the authors' code: the EMA copies' batch statistics, in train mode
        sums = []
        for k in (0, 1):  # each network in its own batch order
            loss_sum, correct = training.zero_sums()
            for step, (rows, x) in training.batches():
                loss, fitted = self.train_batch(training, k, rows[0], x[0], self.steps + step)
                loss_sum += loss * rows.shape[1]
                correct += fitted
            sums.append((loss_sum, correct))
        self.steps += step  # the same number of batches for both
        return sums[0]

    def train_batch(self, training, k: int, rows: torch.Tensor, x: torch.Tensor, t: int):
        """One SGD step of network ``k`` at 1-based step ``t``: its loss and fitted rows."""
        spec, net, teacher = self.spec, training.bank.models[k], self._copies[1 - k]
        y = training.targets[0, rows]
        lam, perm = 1.0, None  # mixup_alpha 0: no mixup, as the authors' code
        if spec.mixup_alpha:  # max(l, 1 - l), l ~ Beta(alpha, alpha) (numpy's, seeded by the run's generator: torch's
            g = training.generators[0]  # takes none), and a permutation of the rows
            lam = float(np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=g))).beta(
                spec.mixup_alpha, spec.mixup_alpha))
            lam, perm = max(lam, 1 - lam), torch.randperm(len(rows), generator=g).to(x.device)
        with torch.no_grad():
            p_teacher = F.softmax(train_logits(training, teacher, x), -1)
        self.targets[k, rows] = elr_update(self.targets[k, rows], p_teacher, spec.beta)
        q = mix(self.targets[k, rows], lam, perm)
        labels = mix(F.one_hot(y, training.n_classes).float(), lam, perm)
        if spec.label_correction:
            labels = labels * q / (labels * q).sum(-1, keepdim=True)
        logits = train_logits(training, net, mix(x, lam, perm))
        loss = elr_loss(logits, labels, q, spec.lam * rampup(t, spec.coef_step, sigmoid=True))  # their elr_plus_loss
        sgd_step(training, loss)  # network k's parameters only
        ema_update_(list(self._copies[k].parameters()), list(net.parameters()),
                    ema_momentum(t, spec.ema_alpha, spec.ema_step))
        return loss.detach(), (logits.argmax(-1) == y).sum()
