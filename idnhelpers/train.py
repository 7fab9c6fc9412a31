"""The training engine every section uses.

``train(X, targets, protocol)`` trains one network with the paper's optimiser settings
(Appendix A) on data kept on the device as uint8 (batches are normalised, and for CIFAR-10
augmented, on the device: no DataLoader, no per-sample transforms). After every epoch it
records, in eval mode, the softmax on every training instance and accumulates the
epoch-averaged softmax ``S`` of Eq. (3) / Algorithm 2, plus a per-epoch history. Targets are
hard labels (int64, length n) or soft labels (n x c probability rows, the loss of Algorithm 2).
Results are cached under a key of the full configuration (see ``runs.cached``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .csr import CSR_RADIUS, critical_sample_ratio
from .data import NORMALIZATION, check_dataset
from .losses import Objective
from .models import build_model
from .runs import cached, fingerprint

PRECISIONS = ("fp32", "bf16")
# "eval": the paper's f^t(x_i), eval mode on the un-augmented instances. "official": what the
# official code does: the network left in train mode (BatchNorm on batch statistics, and
# updating its running averages) on augmented instances, in batches of 1000.
SOFTMAX_MODES = ("eval", "official")
EVAL_BATCH = 2048
OFFICIAL_SOFTMAX_BATCH = 1000


@dataclass(frozen=True)
class Protocol:
    """A training protocol: model and SGD schedule. ``gamma`` multiplies the learning rate at
    each epoch in ``milestones``; ``augment`` is CIFAR-10's random crop (pad 4) + horizontal flip."""

    model: str
    n_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0
    augment: bool = False

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch`` (MultiStepLR semantics)."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)


# Appendix A. n_epochs is the benchmark length; Algorithm 1 on MNIST uses 20 (official code).
PROTOCOLS = {
    "mnist": Protocol("mnist_cnn", 50, 64, 0.01, 0.5),
    "fashion_mnist": Protocol("mnist_cnn", 50, 64, 0.01, 0.5),
    "cifar10": Protocol("wrn28_10", 150, 128, 0.1, 0.9, 5e-4, (60, 120), 0.2, augment=True),
    "digits": Protocol("mlp", 30, 64, 0.05, 0.5),
}


def protocol(dataset: str, **overrides) -> Protocol:
    """The paper's protocol for ``dataset``, with fields replaced by ``overrides``."""
    base = PROTOCOLS[check_dataset(dataset)]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Protocol)}
    if unknown:
        raise ValueError(f"unknown protocol field(s) {sorted(unknown)}; allowed: "
                         f"{[f.name for f in dataclasses.fields(Protocol)]}")
    p = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if p.n_epochs < 1 or p.batch_size < 1 or p.lr <= 0:
        raise ValueError(f"n_epochs, batch_size and lr must be positive, got {p}")
    return p


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} asked for, but CUDA is not available; use 'cpu' or 'auto'")
    return device


class Normalizer:
    """uint8 batch -> float, scaled to [0, 1] and standardised per channel (torchvision's order),
    in channels-last memory layout (the layout the engine's convolutions run fastest in)."""

    def __init__(self, dataset: str, device: torch.device):
        mean, std = NORMALIZATION[dataset]
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.inv_std = 1 / torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / 255 - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding ``pad`` pixels, then random horizontal flip, on uint8 ``x``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, b), generator=generator)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_proba(model, X, normalize, precision="fp32", batch_size=EVAL_BATCH, train_mode=False,
                  augment_generator=None, n_classes=None) -> torch.Tensor:
    """Softmax of ``model`` on uint8 ``X`` as float32 (n x c): eval mode unless ``train_mode``;
    inputs augmented (``augment_batch``) when an ``augment_generator`` is given; over the first
    ``n_classes`` outputs only, if given (DAC's abstention output is left out)."""
    was_training = model.training
    model.train(train_mode)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(X), batch_size):
        x = X[start:start + batch_size].to(device, non_blocking=True)
        if augment_generator is not None:
            x = augment_batch(x, augment_generator)
        x = normalize(x)
        with _autocast(device, precision):
            out.append(model(x)[:, :n_classes].float().softmax(1))
    model.train(was_training)
    return torch.cat(out)


def _check_targets(X, targets, n_classes):
    if len(X) != len(targets):
        raise ValueError(f"X has {len(X)} rows but targets has {len(targets)}")
    if X.dtype != torch.uint8 or X.dim() != 4:
        raise ValueError(f"X must be a uint8 tensor N x C x H x W, got {X.dtype} of shape {tuple(X.shape)}")
    if targets.dim() == 1:
        if targets.dtype != torch.int64 or targets.min() < 0 or targets.max() >= n_classes:
            raise ValueError(f"hard targets must be int64 in [0, {n_classes}), got {targets.dtype} "
                             f"in [{targets.min()}, {targets.max()}]")
    elif targets.shape[1] != n_classes or (targets < 0).any() or not torch.allclose(
            targets.sum(1).double(), torch.ones(len(targets), dtype=torch.float64), atol=1e-4):
        raise ValueError(f"soft targets must be n x {n_classes} rows of probabilities summing to 1")


def run_config(X, targets, proto, *, dataset, seed, n_classes, y_true, X_test, y_test, track, precision,
               softmax_mode, init_state, keep_model, csr_subset=None, csr_every=1, csr_radius=CSR_RADIUS,
               objective=None, X_val=None, y_val=None) -> dict:
    """Check one run's inputs and return its configuration: the key of its cached result."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {PRECISIONS}")
    if softmax_mode not in SOFTMAX_MODES:
        raise ValueError(f"softmax_mode={softmax_mode!r}; choose one of {SOFTMAX_MODES}")
    check_dataset(dataset)
    _check_targets(X, targets, n_classes)
    if y_true is not None and len(y_true) != len(X):
        raise ValueError(f"y_true has {len(y_true)} rows, X has {len(X)}")
    for name, (a, b) in dict(test=(X_test, y_test), val=(X_val, y_val)).items():
        if (a is None) != (b is None):
            raise ValueError(f"give both X_{name} and y_{name}, or neither")
    if objective is not None and not isinstance(objective, Objective):
        raise ValueError(f"objective must be an idnhelpers.losses.Objective, got {type(objective).__name__}")
    if objective is not None and targets.dim() != 1 and type(objective) is not Objective:
        raise ValueError(f"{type(objective).__name__} needs hard labels; soft targets train with cross-entropy")
    if int(csr_every) != csr_every or csr_every < 1:
        raise ValueError(f"csr_every={csr_every!r} must be a positive integer (epochs between CSR measurements)")
    csr = None if csr_subset is None else dict(subset=fingerprint(csr_subset), every=csr_every, radius=csr_radius)
    return dict(proto=dataclasses.asdict(proto), dataset=dataset, seed=seed, n_classes=n_classes,
                precision=precision, softmax_mode=softmax_mode, keep_model=keep_model,
                **({"csr": csr} if csr else {}),
                **({"objective": objective.config()} if objective is not None else {}),
                **({"X_val": fingerprint(X_val), "y_val": fingerprint(y_val)} if X_val is not None else {}),
                init_state=None if init_state is None else fingerprint(
                    torch.cat([v.detach().flatten().float().cpu() for v in init_state.values()])),
                **{name: (fingerprint(t) if t is not None else None) for name, t in
                   dict(X=X, targets=targets, y_true=y_true, X_test=X_test, y_test=y_test, track=track).items()})


def train(X: torch.Tensor, targets: torch.Tensor, proto: Protocol, *, dataset: str, seed: int = 0,
          n_classes: int = 10, y_true: torch.Tensor | None = None, X_test: torch.Tensor | None = None,
          y_test: torch.Tensor | None = None, track: torch.Tensor | None = None, device=None,
          precision: str = "fp32", softmax_mode: str = "eval", init_state: dict | None = None,
          csr_subset: torch.Tensor | None = None, csr_every: int = 1, csr_radius: float = CSR_RADIUS,
          keep_model: bool = True, use_cache: bool = True, desc: str | None = None,
          objective: Objective | None = None, X_val: torch.Tensor | None = None,
          y_val: torch.Tensor | None = None) -> dict:
    """Train one network and record its softmax every epoch (cached; see module docstring).

    Returns a dict with ``S`` (epoch-averaged softmax, n x c, float32), ``history`` (per-epoch
    lists: ``loss``, ``train_acc`` against the training labels, ``true_acc`` against ``y_true``,
    ``test_acc``; with ``y_true``, the memorisation split of Section 3.2: among corrupted instances
    (training label != y_true) the fractions predicted as the noisy label ``mem_noisy``, as the
    true label ``mem_true`` or as another ``mem_other``, and among clean ones the fraction
    predicted right ``clean_correct``; with ``csr_subset``, ``csr``: the critical sample ratio
    (Eq. 4) of those rows of X every ``csr_every`` epochs, None between), ``snapshots``
    (n_epochs x len(track) x c softmax of the ``track`` rows),
    ``state_dict`` (final weights, if ``keep_model``), ``precision``, ``device`` and ``seconds``.
    ``softmax_mode`` chooses how the per-epoch softmax is recorded (see ``SOFTMAX_MODES``).
    ``init_state`` starts from these weights (a ``state_dict``) instead of a fresh initialisation.
    ``objective`` replaces cross-entropy by a baseline's loss (``idnhelpers.losses``). With
    ``X_val``/``y_val`` (a held-out split with its noisy labels) the history has ``val_acc``.
    """
    device = resolve_device(device)
    config = run_config(X, targets, proto, dataset=dataset, seed=seed, n_classes=n_classes, y_true=y_true,
                        X_test=X_test, y_test=y_test, track=track, precision=precision, softmax_mode=softmax_mode,
                        init_state=init_state, keep_model=keep_model, csr_subset=csr_subset,
                        csr_every=csr_every, csr_radius=csr_radius, objective=objective, X_val=X_val, y_val=y_val)
    run = dict(dataset=dataset, seed=seed, n_classes=n_classes, y_true=y_true, X_test=X_test, y_test=y_test,
               X_val=X_val, y_val=y_val, objective=objective or Objective(), track=track, device=device, precision=precision, softmax_mode=softmax_mode,
               init_state=init_state, keep_model=keep_model, desc=desc,
               csr=None if csr_subset is None else (csr_subset, csr_every, csr_radius))
    return cached("train", config, lambda: _train(X, targets, proto, **run), use_cache)


class Recorder:
    """Per-epoch records of one run: the epoch-averaged softmax S, the history and snapshots."""

    def __init__(self, targets, n_classes, y_true, y_test, track, y_val=None):
        self.labels = targets if targets.dim() == 1 else targets.argmax(1)
        self.y_true, self.y_test, self.track, self.y_val = y_true, y_test, track, y_val
        self.S_sum = torch.zeros(len(targets), n_classes, dtype=torch.float64)
        self.history = {"loss": [], "train_acc": [], "true_acc": [], "test_acc": [], "csr": []}
        if y_true is not None:
            self.corrupted = self.labels != y_true
            self.history.update(mem_noisy=[], mem_true=[], mem_other=[], clean_correct=[])
        if y_val is not None:
            self.history["val_acc"] = []
        self.snapshots = []

    def add(self, mean_loss: float, probs: torch.Tensor, test_pred: torch.Tensor | None, csr: float | None = None,
            val_pred: torch.Tensor | None = None):
        """Record one epoch: training loss, softmax on the training set, test and validation
        predictions, CSR."""
        self.S_sum += probs
        pred = probs.argmax(1)
        h = self.history
        h["loss"].append(mean_loss)
        h["train_acc"].append((pred == self.labels).float().mean().item())
        h["true_acc"].append((pred == self.y_true).float().mean().item() if self.y_true is not None else None)
        h["test_acc"].append((test_pred == self.y_test).float().mean().item() if test_pred is not None else None)
        h["csr"].append(csr)
        if self.y_val is not None:
            h["val_acc"].append((val_pred == self.y_val).float().mean().item())
        if self.y_true is not None:
            bad, good = self.corrupted, ~self.corrupted
            as_noisy, as_true = (pred == self.labels)[bad], (pred == self.y_true)[bad]
            nan = float("nan")
            h["mem_noisy"].append(as_noisy.float().mean().item() if bad.any() else nan)
            h["mem_true"].append(as_true.float().mean().item() if bad.any() else nan)
            h["mem_other"].append((~as_noisy & ~as_true).float().mean().item() if bad.any() else nan)
            h["clean_correct"].append((pred == self.y_true)[good].float().mean().item() if good.any() else nan)
        if self.track is not None:
            self.snapshots.append(probs[self.track])
        return {"loss": f"{h['loss'][-1]:.3f}", "train": f"{h['train_acc'][-1]:.3f}",
                **({"test": f"{h['test_acc'][-1]:.3f}"} if test_pred is not None else {})}

    def result(self, state_dict, precision, device, seconds) -> dict:
        return dict(S=(self.S_sum / len(self.history["loss"])).float(), history=self.history,
                    snapshots=torch.stack(self.snapshots) if self.track is not None else None,
                    state_dict=state_dict, precision=precision, device=str(device), seconds=seconds)


def init_model(proto, n_classes, seed, init_state=None, n_models=1):
    """The network of ``proto`` with seeded initial weights (or ``init_state``); the caller's RNG is
    untouched. ``n_models > 1``: that many networks drawn one after another from the seed (a list)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models = [build_model(proto.model, n_classes) for _ in range(n_models)]
    if init_state is not None:
        models[0].load_state_dict(init_state)
    for i, model in enumerate(models):
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            models[i] = model.to(memory_format=torch.channels_last)  # 1.8x faster on CPU, same fp32 arithmetic
    return models[0] if n_models == 1 else models


def batches(n, batch_size, generator, device, drop_last=False):
    """A random permutation of range(n) from ``generator``, split into batches (on ``device``)."""
    parts = torch.randperm(n, generator=generator).to(device).split(batch_size)
    return parts[:-1] if drop_last and len(parts) > 1 and len(parts[-1]) < batch_size else parts


def record_epoch(record, model, epoch, loss, X_dev, normalize, *, precision, n_classes, X_test=None, X_val=None,
                 official=False, augment_generator=None, csr=None, dataset=None, seed=0):
    """End of an epoch: softmax on the training set (eval mode, or with ``official`` the official
    code's way: train mode, inputs augmented by ``augment_generator`` if given), test and
    validation predictions, CSR."""
    if official:
        probs = predict_proba(model, X_dev, normalize, precision, OFFICIAL_SOFTMAX_BATCH, train_mode=True,
                              augment_generator=augment_generator, n_classes=n_classes)
    else:
        probs = predict_proba(model, X_dev, normalize, precision, n_classes=n_classes)
    preds = [predict_proba(model, Z, normalize, precision, n_classes=n_classes).argmax(1).cpu()
             if Z is not None else None for Z in (X_test, X_val)]
    ratio = None
    if csr is not None and (epoch + 1) % csr[1] == 0:
        ratio = critical_sample_ratio(model, X_dev[csr[0].to(X_dev.device)], dataset=dataset, radius=csr[2], seed=seed)
    return record.add(loss, probs.cpu(), preds[0], ratio, val_pred=preds[1])


def _train(X, targets, proto, *, dataset, seed, n_classes, y_true, X_test, y_test, track, device,
           precision, softmax_mode, init_state, keep_model, desc, csr=None, objective=Objective(), X_val=None,
           y_val=None):
    start_time = time.perf_counter()
    model = init_model(proto, n_classes + objective.extra_outputs, seed, init_state).to(device)
    loss_fn = objective.make(n_classes, proto.n_epochs)
    optimizer = torch.optim.SGD(model.parameters(), lr=proto.lr, momentum=proto.momentum,
                                weight_decay=proto.weight_decay)
    order = torch.Generator().manual_seed(seed)
    normalize = Normalizer(dataset, device)
    X_dev, t_dev = X.to(device), targets.to(device)
    n = len(X)
    record = Recorder(targets, n_classes, y_true, y_test, track, y_val)
    bar = tqdm(range(proto.n_epochs), desc=desc or f"{proto.model} seed {seed}", unit="epoch")
    for epoch in bar:
        for group in optimizer.param_groups:
            group["lr"] = proto.lr_at(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        for idx in batches(n, proto.batch_size, order, device, objective.drop_last):
            xb = X_dev[idx]
            if proto.augment:
                xb = augment_batch(xb, order)
            with _autocast(device, precision):
                logits = model(normalize(xb))
            loss = loss_fn(logits.float(), t_dev[idx], epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
        bar.set_postfix(record_epoch(record, model, epoch, loss_sum.item() / n, X_dev, normalize, precision=precision,
                                     n_classes=n_classes, X_test=X_test, X_val=X_val,
                                     official=softmax_mode == "official",
                                     augment_generator=order if proto.augment else None, csr=csr,
                                     dataset=dataset, seed=seed))
    bar.close()
    state = {k: v.cpu() for k, v in model.state_dict().items()} if keep_model else None
    return record.result(state, precision, device, time.perf_counter() - start_time)
