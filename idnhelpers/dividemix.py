"""DivideMix (Li, Socher and Hoi, ICLR 2020, Algorithm 1): two networks trained with cross-entropy
for a warm-up, then each epoch a two-component GMM on each network's per-instance losses gives the
*other* network its clean probabilities w (co-divide, Eq. 1); the networks train one after the
other by MixMatch on that division: labelled rows with co-refined labels (Eq. 3-4), unlabelled rows
with co-guessed labels (Eq. 5), mixup (Eq. 6-8), and the loss L_x + lambda_u L_u + lambda_r L_reg
(Eq. 9-12). Test predictions and the recorded softmax come from the two networks' summed logits;
the history's loss and fitted rows are the first network's pass (after the warm-up: its labelled rows).
The authors' code (LiJunnan1992/DivideMix, ``Train_cifar.py``) is followed where the paper is silent:
warm-up batches of twice the batch size, GMM settings, the unlabelled loader restarted when spent.
"""

from __future__ import annotations

import warnings
from dataclasses import MISSING, dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_bool, check_float, check_int, checked, fail
from .losses import CrossEntropy
from .lossparts import mix, rampup, sgd_step, train_logits
from .runs import Tensors
from .sources import eval_batch
from .steps import Step

# The paper's lambda_u (Table 7, Appendix B) by data set and symmetric noise rate; other data sets: CIFAR-10's
LAMBDA_U = {"cifar10": {0.2: 0.0, 0.5: 25.0, 0.8: 25.0, 0.9: 50.0},
            "cifar100": {0.2: 25.0, 0.5: 150.0, 0.8: 150.0, 0.9: 150.0}}
# Warm-up epochs as a fraction of the epochs: the paper's 10 (CIFAR-10) and 30 (CIFAR-100) of 300. None is
# published for MNIST: a third, measured (NOTES.md): at the cpu profile CE's test accuracy peaks at epochs 24-32
# of 75 and 2 warm-up epochs (CIFAR-10's fraction) leave the GMM a network that has not learnt yet.
WARMUP_FRACTION = {"cifar10": 10 / 300, "cifar100": 30 / 300}
OTHER_WARMUP_FRACTION = 1 / 3


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """Temperature sharpening (Eq. 4): p^(1/T), normalised."""
    p = p ** (1 / T)
    return p / p.sum(-1, keepdim=True)


def co_refine(y_onehot: torch.Tensor, w: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, T: float) -> torch.Tensor:
    """Label co-refinement (Eq. 3-4): w y + (1 - w) p, p the mean softmax of a labelled row's two
    augmentations under the network being trained, then sharpened."""
    p = (p1 + p2) / 2
    return sharpen(w[:, None] * y_onehot + (1 - w[:, None]) * p, T)


def co_guess(probs: list[torch.Tensor], T: float) -> torch.Tensor:
    """Label co-guessing (Eq. 5): the mean softmax of both networks on both augmentations, sharpened."""
    return sharpen(sum(probs) / len(probs), T)


def mixmatch_loss(logits: torch.Tensor, targets: torch.Tensor, n_labelled: int, lambda_u: float) -> torch.Tensor:
    """L = L_x + lambda_u L_u + L_reg (Eq. 9-12) on a mixed batch whose first ``n_labelled`` rows
    come from labelled rows: cross-entropy on those, the mean squared error of the softmax on the
    rest, and KL(uniform prior || mean prediction) over the whole batch."""
    probs = logits.softmax(-1)
    l_x = -(F.log_softmax(logits[:n_labelled], -1) * targets[:n_labelled]).sum(-1).mean()
    l_u = ((probs[n_labelled:] - targets[n_labelled:]) ** 2).mean() if len(logits) > n_labelled else 0.0
    prior = torch.full((logits.shape[-1],), 1 / logits.shape[-1], device=logits.device)
    penalty = (prior * (prior / probs.mean(0)).log()).sum()
    return l_x + lambda_u * l_u + penalty


def clean_probability(losses: torch.Tensor, seed: int) -> torch.Tensor:
    """Co-divide's w (Eq. 1): the posterior of the low-mean component of a two-component GMM fitted
    to per-instance losses normalised to [0, 1] (the code's settings: 10 EM iterations, tol 0.01,
    reg_covar 5e-4; its k-means start seeded here)."""
    from sklearn.exceptions import ConvergenceWarning  # lazy: scikit-learn's import takes a second
    from sklearn.mixture import GaussianMixture

    x = losses.double().reshape(-1, 1).numpy()
    with warnings.catch_warnings():  # 10 iterations by design: a fit that has not converged is the code's too
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed).fit(x)
    return torch.from_numpy(gmm.predict_proba(x)[:, gmm.means_.argmin()]).float()


@dataclass(frozen=True)
class DivideMix(Step):
    """DivideMix's settings (resolved by ``dividemix``): ``warmup_epochs`` of cross-entropy,
    ``lambda_u``, the clean-probability threshold ``p_threshold`` (tau), sharpening temperature
    ``T``, mixup's Beta(``alpha``, ``alpha``), ``rampup_epochs`` for lambda_u, ``loss_epochs``
    normalised losses averaged into the GMM (the code: 5 at 90% noise, else 1), and
    ``warmup_penalty``: the negative-entropy penalty the code adds in warm-up under asymmetric noise."""

    warmup_epochs: int = checked(MISSING, check_int, minimum=0)
    lambda_u: float = checked(MISSING, check_float, low=0.0)
    p_threshold: float = checked(0.5, check_float, low=0.0, high=1.0, high_open=True)
    T: float = checked(0.5, check_float, low=0.0, high=1.0, low_open=True)
    alpha: float = checked(4.0, check_float, low=0.0, low_open=True)
    rampup_epochs: int = checked(16, check_int, minimum=1)
    loss_epochs: int = checked(1, check_int, minimum=1)
    warmup_penalty: bool = checked(False, check_bool)
    n_networks: ClassVar[int] = 2
    stackable: ClassVar[bool] = False  # the division, hence the number of steps, differs between runs
    ensemble: ClassVar[bool] = True

    @classmethod
    def make(cls, specs):
        return _DivideMixEpoch(specs[0])


class _DivideMixEpoch:
    """Algorithm 1's epoch for one run (``train_epoch``); ``losses``: each network's last normalised losses."""

    state_names = ("losses",)

    def __init__(self, spec: DivideMix):
        self.spec, self.losses = spec, [[], []]

    def train_epoch(self, training, epoch: int):
        """Both networks' passes; the (loss sum, fitted rows) of the first (the one recorded)."""
        if epoch < self.spec.warmup_epochs:
            return [self.warmup(training, j) for j in (0, 1)][0]
        w = [self.divide(training, j) for j in (0, 1)]
        return [self.mixmatch(training, epoch, j, w[1 - j]) for j in (0, 1)][0]  # co-divide

    def warmup(self, training, j: int):
        """One epoch of cross-entropy for network ``j`` in batches of twice the batch size (the code's)."""
        model, g, y = training.bank.models[j], training.generators[0], training.labels[0]
        model.train(True)
        loss_sum, correct = training.zero_sums()
        for rows in torch.randperm(len(y), generator=g).to(training.device).split(2 * training.protocol.batch_size):
            logits = train_logits(training, model, views(training, rows, 1)[0])
            loss = F.cross_entropy(logits, y[rows])
            if self.spec.warmup_penalty:  # NegEntropy: sum p log p, the mean over rows
                loss = loss + (logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
            sgd_step(training, loss)
            loss_sum += loss.detach() * len(rows)
            correct += (logits.argmax(-1) == y[rows]).sum()
        return loss_sum, correct

    @torch.no_grad()
    def divide(self, training, j: int) -> torch.Tensor:
        """Network ``j``'s clean probabilities (eval mode, un-augmented rows), for the other network."""
        model, y = training.bank.models[j], training.labels[0]
        model.train(False)
        size = eval_batch(training.device)
        losses = torch.cat([F.cross_entropy(train_logits(training, model, x), labels, reduction="none")
                            for x, labels in zip(training.source.normalized.split(size), y.split(size))]).cpu()
        losses = (losses - losses.min()) / (losses.max() - losses.min())
        self.losses[j] = (self.losses[j] + [losses])[-self.spec.loss_epochs:]
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=training.generators[0]))
        return clean_probability(torch.stack(self.losses[j]).mean(0), seed)

    def mixmatch(self, training, epoch: int, j: int, w: torch.Tensor):
        """One pass of network ``j`` over the rows the other network's ``w`` exceeds tau on, each labelled
        batch with an unlabelled one: Algorithm 1's lines 12-24 (the code's order of forward passes: the
        network in train mode, its peer in eval mode)."""
        spec, g, device = self.spec, training.generators[0], training.device
        y, c = training.labels[0], training.n_classes
        labelled = (w > spec.p_threshold).nonzero().squeeze(1)
        unlabelled = (w <= spec.p_threshold).nonzero().squeeze(1)
        if not len(labelled):  # the code would fail on an empty loader; the network skips the epoch
            return training.zero_sums()
        model, peer = training.bank.models[j], training.bank.models[1 - j]
        model.train(True)
        peer.train(False)  # "fix one network and train the other"
        rng = np.random.default_rng(int(torch.randint(2 ** 31 - 1, (1,), generator=g)))  # mixup's lambda
        batch_size, n_iter = training.protocol.batch_size, len(labelled) // training.protocol.batch_size + 1

        def unlabelled_batches():  # the code restarts its unlabelled loader when it is spent
            while len(unlabelled):
                yield from unlabelled[torch.randperm(len(unlabelled), generator=g)].split(batch_size)

        u_batches = unlabelled_batches()
        loss_sum, correct = training.zero_sums()
        for i, rows in enumerate(labelled[torch.randperm(len(labelled), generator=g)].split(batch_size)):
            u_rows = next(u_batches) if len(unlabelled) else unlabelled
            rows, u_rows, w_rows = rows.to(device), u_rows.to(device), w[rows].to(device)
            x_views, u_views = views(training, rows), views(training, u_rows)
            with torch.no_grad():
                guesses = [train_logits(training, m, v).softmax(-1) for m in (model, peer) for v in u_views]
                targets_u = co_guess(guesses, spec.T) if len(u_rows) else torch.zeros(0, c, device=device)
                own = [train_logits(training, model, v).softmax(-1) for v in x_views]
                targets_x = co_refine(F.one_hot(y[rows], c).float(), w_rows, own[0], own[1], spec.T)
            inputs = torch.cat([*x_views, *u_views])
            targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
            lam = rng.beta(spec.alpha, spec.alpha)
            lam = max(lam, 1 - lam)  # Eq. 7
            order = torch.randperm(len(inputs), generator=g).to(device)
            logits = train_logits(training, model, mix(inputs, lam, order))
            ramp = rampup(epoch + i / n_iter - spec.warmup_epochs, spec.rampup_epochs)  # after the warm-up
            loss = mixmatch_loss(logits, mix(targets, lam, order), 2 * len(rows), spec.lambda_u * ramp)
            sgd_step(training, loss)
            loss_sum += loss.detach() * len(rows)
            correct += (own[0].argmax(-1) == y[rows]).sum()
        return loss_sum, correct


def views(training, rows: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
    """``n`` augmentations of run 0's ``rows`` (M = 2; identical where the protocol does not augment: MNIST)."""
    if not len(rows):
        return []
    return [training.source.inputs(rows[None], training.generators, training.protocol.augment)[0] for _ in range(n)]


def dividemix(run, noise_rate: float | None, *, warmup_epochs=None, lambda_u=None, p_threshold=None, T=0.5,
              alpha=4.0, rampup_epochs=16, loss_epochs=None, warmup_penalty=False) -> dict:
    """DivideMix's run (``DivideMix``'s fields are the options). None picks the paper's settings (warm-up:
    ``WARMUP_FRACTION`` of the epochs; lambda_u: Table 7's at the listed noise rate nearest the run's; tau 0.6
    at 90% noise, else 0.5; the GMM on the mean of the last 5 epochs' losses at 90% noise, else the last's, as
    the code)."""
    dataset, n_epochs = run.data.dataset, run.protocol.n_epochs
    if not isinstance(run.data, Tensors) or run.targets.dim() != 1:
        fail("runs", run.label or dataset, "runs on tensors with hard noisy labels (DivideMix draws its own batches)")
    if noise_rate is None and None in (lambda_u, p_threshold, loss_epochs):
        fail("noise_rate", None, "a number in [0, 1), or lambda_u, p_threshold and loss_epochs given: DivideMix's "
             "defaults depend on the noise rate")
    if warmup_epochs is None:
        warmup_epochs = max(1, round(n_epochs * WARMUP_FRACTION.get(dataset, OTHER_WARMUP_FRACTION)))
    if lambda_u is None:
        table = LAMBDA_U.get(dataset, LAMBDA_U["cifar10"])
        lambda_u = table[min(table, key=lambda rate: (abs(rate - noise_rate), rate))]
    if p_threshold is None:
        p_threshold = 0.6 if noise_rate >= 0.9 else 0.5
    if loss_epochs is None:
        loss_epochs = 5 if noise_rate >= 0.9 else 1
    if warmup_epochs >= n_epochs:
        fail("warmup_epochs", warmup_epochs, f"fewer than the run's n_epochs={n_epochs}")
    return dict(objective=CrossEntropy(), step=DivideMix(warmup_epochs, float(lambda_u), float(p_threshold), T, alpha,
                                                         rampup_epochs, loss_epochs, warmup_penalty))
