"""Co-teaching (Han et al. 2018): two networks teach each other with their small-loss instances.

Same data handling, protocol and per-epoch records as the engine (``train.train``); network 1's
softmax is the one recorded (``S``, accuracies), as in the authors' reports.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .runs import cached
from .train import Normalizer, Recorder, _autocast, augment_batch, batches, init_model, record_epoch, resolve_device, \
    run_config


def keep_rate(epoch: int, forget_rate: float, t_k: int = 10) -> float:
    """R(t) = 1 - min(t / T_k * tau, tau): the fraction of each batch kept at 0-based ``epoch``
    (all of it at epoch 0, 1 - tau from epoch T_k on). The authors' code reaches tau at epoch
    T_k - 1 (a ``linspace`` over T_k epochs); this follows the paper's formula."""
    return 1 - min(epoch / t_k * forget_rate, forget_rate)


def small_loss_exchange(logits1, logits2, y, n_keep):
    """One Co-teaching step's losses: each network's ``n_keep`` smallest-loss instances train the other."""
    loss1 = F.cross_entropy(logits1, y, reduction="none")
    loss2 = F.cross_entropy(logits2, y, reduction="none")
    keep1 = torch.argsort(loss1.detach(), stable=True)[:n_keep]
    keep2 = torch.argsort(loss2.detach(), stable=True)[:n_keep]
    return loss1[keep2].mean(), loss2[keep1].mean()


def coteaching(X, y_noisy, proto, *, forget_rate: float, t_k: int = 10, dataset: str, seed: int = 0,
               n_classes: int = 10, y_true=None, X_test=None, y_test=None, X_val=None, y_val=None, device=None,
               precision: str = "fp32", keep_model: bool = True, use_cache: bool = True, desc: str | None = None) -> dict:
    """Train two networks (initial weights drawn one after the other from ``seed``, so network 1
    starts where a CE run of that seed starts) on one shared batch order; per batch each keeps the
    ``keep_rate`` fraction of smallest cross-entropy (rounded down, as the authors' code) and its
    peer updates on them. ``forget_rate``
    is tau, the paper's baseline sets it to the noise rate. Returns the engine's dict for network 1."""
    if not 0 <= forget_rate < 1:
        raise ValueError(f"forget_rate={forget_rate!r} must be in [0, 1) (Co-teaching's tau, usually the noise rate)")
    if int(t_k) != t_k or t_k < 1:
        raise ValueError(f"t_k={t_k!r} must be a positive integer (epochs to reach the full forget rate)")
    if y_noisy.dim() != 1:
        raise ValueError("Co-teaching needs hard labels y_noisy (int64, length n)")
    device = resolve_device(device)
    config = run_config(X, y_noisy, proto, dataset=dataset, seed=seed, n_classes=n_classes, y_true=y_true,
                        X_test=X_test, y_test=y_test, track=None, precision=precision, softmax_mode="eval",
                        init_state=None, keep_model=keep_model, X_val=X_val, y_val=y_val)
    config.update(forget_rate=forget_rate, t_k=t_k)

    def run():
        start_time = time.perf_counter()
        models = [m.to(device) for m in init_model(proto, n_classes, seed, n_models=2)]
        # one SGD over both networks' weights is two independent SGDs: the update is element-wise
        optimizer = torch.optim.SGD([p for m in models for p in m.parameters()], lr=proto.lr,
                                    momentum=proto.momentum, weight_decay=proto.weight_decay)
        order = torch.Generator().manual_seed(seed)
        normalize = Normalizer(dataset, device)
        X_dev, y_dev = X.to(device), y_noisy.to(device)
        record = Recorder(y_noisy, n_classes, y_true, y_test, None, y_val)
        bar = tqdm(range(proto.n_epochs), desc=desc or f"Co-teaching seed {seed}", unit="epoch")
        for epoch in bar:
            rate = keep_rate(epoch, forget_rate, t_k)
            for group in optimizer.param_groups:
                group["lr"] = proto.lr_at(epoch)
            for m in models:
                m.train()
            loss_sum = torch.zeros((), device=device)
            for idx in batches(len(X), proto.batch_size, order, device):
                xb = X_dev[idx]
                if proto.augment:
                    xb = augment_batch(xb, order)
                xb = normalize(xb)
                with _autocast(device, precision):
                    logits = [m(xb).float() for m in models]
                losses = small_loss_exchange(*logits, y_dev[idx], max(1, int(rate * len(idx))))
                optimizer.zero_grad(set_to_none=True)
                sum(losses).backward()  # loss k depends on network k only
                optimizer.step()
                loss_sum += losses[0].detach() * len(idx)
            bar.set_postfix(record_epoch(record, models[0], epoch, loss_sum.item() / len(X), X_dev, normalize,
                                         precision=precision, n_classes=n_classes, X_test=X_test, X_val=X_val))
        bar.close()
        state = {k: v.cpu() for k, v in models[0].state_dict().items()} if keep_model else None
        return record.result(state, precision, device, time.perf_counter() - start_time)

    return cached("coteaching", config, run, use_cache)
