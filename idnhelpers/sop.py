"""SOP and SOP+ (Liu, Zhu, Qu and You, "Robust Training under Label Noise by Over-parameterization",
ICML 2022). SOP (Sec. 3) models each training row's label noise by a sparse, over-parameterised term
s_i = u_i^2 y_i - v_i * v_i * (1 - y_i) (y_i the one-hot noisy label, u_i a scalar, v_i in R^c, both
from a tiny Gaussian start), learnt by plain SGD with their own learning rates (implicit regularisation
keeps s sparse): the network fits f(x_i) + s_i to y_i (``sop_loss``: its cross-entropy trains the network
and u, its squared error u and v). SOP+ adds lambda_C times the ``consistency`` of a row's prediction and
its second view's, and lambda_B times a class-balance KL. The paper's full text was not at hand here,
so the clamps and stop-gradients follow the authors' code (shengliu66/SOP, ``model/loss.py``
``overparametrization_loss``; ``train.py``: u and v by SGD without momentum or weight decay, their learning
rates never scheduled). SOP is an ``Objective`` (the loss owns u and v and steps them in ``after_step``);
SOP+'s second view needs its own epoch: the ``TwoViews`` step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import check_choice, check_float, check_seed, checked, fail
from .lossparts import rows_of, run_rows, sgd_step, train_logits
from .losses import Objective
from .runs import Tensors
from .sources import PAD, augment_batch
from .steps import Step

EPS = 1e-4  # the authors' clamp of the prediction and of the mean prediction
# The authors' (lr_u, lr_v) under symmetric noise (CIFAR-100: config_cifar100.json and the README; CIFAR-10:
# their Table A.1, as re-implementations copy it); asymmetric noise: lr_v = 100 (and CIFAR-100's lr_u 1 in
# the paper, 0.1 in the released code).
LR_UV = {"cifar10": (10.0, 10.0), "cifar100": (1.0, 10.0)}
# Ours for MNIST (and the data sets the authors did not tune): 50 epochs of batches of 64 give a row far
# fewer u, v steps than their 300 epochs; on 4,000 MNIST rows at 40% IDN, lr 1-10 left SOP near CE, 30-300 not.
DEFAULT_LR_UV = (100.0, 100.0)
VIEWS = ("auto", "same", "shift", "shift_cutout", "shift_flip", "shift_flip_cutout")


def consistency(logits: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """KL(sg f(x) || f(x')) of each row and its second view, the mean over the rows."""
    target = F.softmax(logits.detach(), -1)
    return F.kl_div(F.log_softmax(logits2, -1), target, reduction="none").sum(-1).mean(-1)


def sop_loss(logits: torch.Tensor, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
             ratio_balance: float = 0.0) -> torch.Tensor:
    """SOP's loss of ... x b x c ``logits``, one-hot noisy labels ``y``, the rows' u (... x b x 1) and
    v (... x b x c): with U = u^2 y and V = v^2 (1 - y), each clamped to [0, 1], the cross-entropy on the
    prediction f(x) + U - sg(V), clamped below at ``EPS``, renormalised to sum 1, clamped to [EPS, 1], + the
    squared error sum_c (onehot(argmax f) + U - V - y)^2 (means over the rows), + ``ratio_balance`` (SOP+'s
    lambda_B) * KL(uniform || the mean prediction over the rows), the mean clamped to [EPS, 1] (the authors' code
    computes the cross-entropy, this plus log c: the same gradients, a loss log c higher)."""
    U, V = torch.clamp(u ** 2 * y, 0, 1), torch.clamp(v ** 2 * (1 - y), 0, 1)
    prediction = torch.clamp(F.softmax(logits, -1) + U - V.detach(), min=EPS)
    prediction = torch.clamp(F.normalize(prediction, p=1, dim=-1, eps=EPS), min=EPS, max=1.0)
    hard = F.one_hot(logits.detach().argmax(-1), y.shape[-1]).to(y.dtype)
    loss = -(y * prediction.log()).sum(-1).mean(-1) + ((hard + U - V - y) ** 2).sum(-1).mean(-1)
    if ratio_balance:
        mean = prediction.mean(-2).clamp(EPS, 1.0)
        loss = loss + ratio_balance * (-mean.log().mean(-1) - math.log(mean.shape[-1]))
    return loss


class _SOPLoss:
    """The K runs' u (K x n x 1) and v (K x n x c); ``batch``: the last batch's rows and their u and v
    (leaves whose gradients ``after_step`` applies), None between steps (so never checkpointed)."""

    def __init__(self, specs: list[SOP], n_classes: int, n_epochs: int):
        self.spec, self.n_classes, self.seeds = specs[0], n_classes, [spec.init_seed for spec in specs]
        self.u = self.v = self.batch = None

    def before_epoch(self, epoch, train_softmax, labels):
        """At the start: u and v drawn from N(0, init_std^2) (u first, then v, as the authors' init_param), run
        k's from a generator seeded with its ``init_seed`` (on the CPU: the same on every device)."""
        if self.u is None:
            n, std, us, vs = labels.shape[-1], self.spec.init_std, [], []
            for seed in self.seeds:
                g = torch.Generator().manual_seed(seed)
                us.append(torch.empty(n, 1).normal_(0.0, std, generator=g))
                vs.append(torch.empty(n, self.n_classes).normal_(0.0, std, generator=g))
            self.u, self.v = torch.stack(us).to(labels.device), torch.stack(vs).to(labels.device)

    def __call__(self, logits, y, epoch, rows):
        u, v = rows_of(self.u, rows).requires_grad_(), rows_of(self.v, rows).requires_grad_()
        self.batch = (rows, u, v)
        return sop_loss(logits, F.one_hot(y, self.n_classes).float(), u, v, self.spec.ratio_balance)

    @torch.no_grad()
    def after_step(self):
        """SGD on the batch's u and v (the authors' optimizer_overparametrization: lr_u, lr_v, no momentum)."""
        rows, u, v = self.batch
        at = run_rows(rows)
        for state, part, lr in ((self.u, u, self.spec.lr_u), (self.v, v, self.spec.lr_v)):
            if part.grad is not None:
                state[at] = part.add(part.grad, alpha=-lr)
        self.batch = None


@dataclass(frozen=True)
class SOP(Objective):
    """SOP's loss (``sop_loss``) with per-row u and v (``_SOPLoss``): learning rates ``lr_u`` and
    ``lr_v`` (the authors' CIFAR-10 values; ``LR_UV``), their N(0, ``init_std``^2) start drawn from
    ``init_seed`` (``sop`` sets the run's seed), ``ratio_balance``: SOP+'s lambda_B (0: plain SOP)."""

    lr_u: float = checked(10.0, check_float, low=0.0, low_open=True)
    lr_v: float = checked(10.0, check_float, low=0.0, low_open=True)
    init_std: float = checked(1e-8, check_float, low=0.0, low_open=True)
    ratio_balance: float = checked(0.0, check_float, low=0.0)
    init_seed: int = checked(0, check_seed)
    row_weighted = True  # before_epoch makes u and v (the training softmax is never asked for)
    per_run = ("init_seed",)
    loss_class = _SOPLoss


def resolve_view(view: str, run) -> str:
    """``view`` with "auto" resolved: Appendix A's crop and flip plus Cutout where the protocol augments
    (CIFAR: the authors' strong view without its AutoAugment policy), a shift for other images (MNIST,
    trained without augmentation), the row itself for feature vectors (then the consistency is 0)."""
    if view == "auto":
        return "shift_flip_cutout" if run.protocol.augment else "same" if run.spec.is_features else "shift"
    if view != "same" and run.spec.is_features:
        fail("view", view, f"'same' or 'auto' for a feature data set ({run.data.dataset!r}): the others move pixels")
    return view


def cutout(x: torch.Tensor, centres: torch.Tensor, length: int) -> torch.Tensor:
    """Cutout (DeVries and Taylor 2017) as the authors' ``CutoutDefault``, after normalisation: each
    image's rows and columns within ``length // 2`` before (clipped) and after its centre set to 0."""
    h, w = x.shape[-2:]
    half = length // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_y = (ys >= centres[0, :, None] - half) & (ys < centres[0, :, None] + half)
    inside_x = (xs >= centres[1, :, None] - half) & (xs < centres[1, :, None] + half)
    return x * ~(inside_y[:, :, None] & inside_x[:, None, :])[:, None]


def second_view(training, rows: torch.Tensor, view: str) -> torch.Tensor:
    """The K x b x ... normalised second views of ``rows`` (K x b), drawn from the runs' generators: per run,
    ``augment_batch``'s offsets shifting by up to PAD * side / 32 pixels (4 on 32 x 32 images, 3 on MNIST's
    28 x 28, at least 1), its flips if ``view`` has them, and Cutout's centres."""
    source = training.source
    if view == "same":
        return source.normalized[rows]
    side, b = source.X.shape[-1], rows.shape[1]
    shift = max(1, PAD * side // 32)
    parts = [(PAD + torch.randint(-shift, shift + 1, (2, b), generator=g),
              torch.rand(b, generator=g) < 0.5 if "flip" in view else torch.zeros(b, dtype=torch.bool),
              torch.randint(0, side, (2, b), generator=g)) for g in training.generators]
    offsets, flips, centres = (torch.cat([p[i] for p in parts], -1).to(source.device) for i in range(3))
    x = source.normalize(augment_batch(source.X[rows.flatten()], (offsets, flips)))
    if "cutout" in view:
        x = cutout(x, centres, side // 2)  # the authors' 16 on 32 x 32 images
    return x.unflatten(0, rows.shape)


@dataclass(frozen=True)
class TwoViews(Step):
    """SOP+'s epoch: each batch's rows as trained (the protocol's view: CIFAR's crop and flip, MNIST's
    rows as they are) and a second ``view`` of them (``resolve_view``) in one forward pass, as the
    authors' concatenated batch; the loss: the objective's on the first plus ``ratio_consistency``
    (lambda_C) times ``consistency`` (the second view's prediction pulled to the first's)."""

    ratio_consistency: float = checked(0.9, check_float, low=0.0)
    view: str = checked("auto", check_choice, choices=VIEWS)

    @classmethod
    def make(cls, specs):
        return specs[0]  # no state: the step runs its epochs itself

    def train_epoch(self, training, epoch: int):
        view, ratio = resolve_view(self.view, training.run0), self.ratio_consistency
        loss_sum, correct = training.zero_sums()
        for _, (rows, x) in training.batches():
            b = rows.shape[1]
            if ratio:
                x = torch.cat([x, second_view(training, rows, view)], 1)
            logits = train_logits(training, training.bank.logits, x)[:, 0]  # K x b (x 2) x c
            losses = training.loss(logits[:, :b], rows_of(training.targets, rows), epoch, rows)
            if ratio:
                losses = losses + ratio * consistency(logits[:, :b], logits[:, b:])
            sgd_step(training, losses.sum())  # run k's loss depends on run k's weights only
            training.loss_step()
            loss_sum += losses.detach() * b
            correct += (logits[:, :b, :training.n_classes].argmax(-1) == rows_of(training.labels, rows)).sum(1)
        return loss_sum, correct


def sop(run, rate, ratio_balance=0.0, *, lr_u=None, lr_v=None, init_std=1e-8) -> dict:
    """SOP's run: the network and each row's u and v trained on ``sop_loss`` (``SOP``'s fields are the options;
    None learning rates: ``LR_UV``'s by data set, others ``DEFAULT_LR_UV``; u and v drawn from the run's seed)."""
    default_u, default_v = LR_UV.get(run.data.dataset, DEFAULT_LR_UV)
    return dict(objective=SOP(default_u if lr_u is None else lr_u, default_v if lr_v is None else lr_v, init_std,
                              ratio_balance, run.seed))


def sop_plus(run, rate, *, lr_u=None, lr_v=None, init_std=1e-8, ratio_consistency=0.9, ratio_balance=0.1,
             view="auto") -> dict:
    """SOP+'s run: SOP with the class-balance and consistency terms (the authors' lambda_C = 0.9, lambda_B = 0.1,
    both data sets) on ``TwoViews``' epochs."""
    step = TwoViews(ratio_consistency, view)
    if not isinstance(run.data, Tensors):
        fail("runs", run.label or run.data.dataset, "runs on tensors (SOP+ draws its second views there)")
    resolve_view(view, run)
    return dict(sop(run, rate, ratio_balance, lr_u=lr_u, lr_v=lr_v, init_std=init_std), step=step)
