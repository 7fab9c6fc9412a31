"""Many independent training runs in one call: seeds x label sets of one architecture and protocol.

``train_many(X, [targets_1, ...], proto, seeds=[...])`` returns, for run k, exactly what
``train(X, targets_k, proto, seed=seeds[k])`` returns, and shares its cache: runs already
trained are loaded, the others trained together by one of three back-ends:

- ``"vmap"``: the K networks' weights stacked (``torch.func.stack_module_state``) and every
  step of all K runs computed as one batched call (``torch.func.vmap``); SGD updates each
  weight element-wise, so one optimiser over the stacked weights is K independent optimisers.
  Each run keeps its own initial weights and batch order (those of its seed). The way to fill a
  GPU with small networks; networks with batch norm are not supported.
- ``"processes"``: worker processes (started with ``spawn``: a script that calls this needs the
  ``if __name__ == "__main__":`` guard), each training its share of the runs with its share of
  the CPU threads. On the 2-core development machine this measured the same throughput as
  ``loop`` (the channels-last engine already keeps both cores busy), so it is not the default.
- ``"loop"``: one run after another.

``"auto"`` picks ``vmap`` on CUDA and ``loop`` on a CPU.
"""

from __future__ import annotations

import copy
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from .losses import soft_cross_entropy
from .runs import cached, load_cached
from .train import (OFFICIAL_SOFTMAX_BATCH, EVAL_BATCH, Normalizer, Recorder, _autocast, _train, augment_batch,
                    init_model, resolve_device, run_config, train)

BACKENDS = ("auto", "loop", "processes", "vmap")


def train_many(X: torch.Tensor, targets: list, proto, *, seeds: list[int], dataset: str, n_classes: int = 10,
               y_true: torch.Tensor | None = None, X_test=None, y_test=None, track=None, device=None,
               precision: str = "fp32", softmax_mode: str = "eval", keep_model: bool = True,
               use_cache: bool = True, backend: str = "auto", workers: int | None = None) -> list[dict]:
    """Train ``len(seeds)`` independent runs of ``proto`` on the shared instances ``X``; run k uses
    ``targets[k]`` (hard or soft labels) and ``seeds[k]``. Results match ``train`` run by run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
    if len(targets) != len(seeds) or not seeds:
        raise ValueError(f"give one seed per target set: {len(targets)} target sets, {len(seeds)} seeds")
    device = resolve_device(device)
    common = dict(dataset=dataset, n_classes=n_classes, y_true=y_true, X_test=X_test, y_test=y_test, track=track,
                  precision=precision, softmax_mode=softmax_mode, keep_model=keep_model)
    configs = [run_config(X, t, proto, seed=s, init_state=None, **common) for t, s in zip(targets, seeds)]
    results = [load_cached("train", c) if use_cache else None for c in configs]
    todo = [k for k, r in enumerate(results) if r is None]
    if backend == "auto":
        backend = "vmap" if device.type == "cuda" else "loop"
    if todo and backend == "processes" and len(todo) > 1:
        workers = min(workers or os.cpu_count() or 1, len(todo))
        jobs = [dict(X=X, targets=targets[k], proto=proto, seed=seeds[k], device=device, use_cache=use_cache,
                     threads=max(1, (os.cpu_count() or 1) // workers), **common) for k in todo]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for k, result in zip(todo, pool.map(_worker, jobs)):
                results[k] = result
    elif todo and backend == "vmap":
        trained = _train_vmap(X, [targets[k] for k in todo], proto, [seeds[k] for k in todo], device=device, **common)
        for k, result in zip(todo, trained):
            results[k] = cached("train", configs[k], lambda: result, use_cache)
    else:
        for k in todo:
            results[k] = cached("train", configs[k], lambda: _train(
                X, targets[k], proto, seed=seeds[k], device=device, init_state=None,
                desc=f"run {k + 1}/{len(seeds)}", **common), use_cache)
    return results


def _worker(job: dict) -> dict:
    torch.set_num_threads(job.pop("threads"))
    return train(job.pop("X"), job.pop("targets"), job.pop("proto"), **job)


def _train_vmap(X, targets, proto, seeds, *, dataset, n_classes, y_true, X_test, y_test, track, device, precision,
                softmax_mode, keep_model):
    """K runs of ``proto`` as one stacked network (see module docstring)."""
    start_time = time.perf_counter()
    models = [init_model(proto, n_classes, s).to(device) for s in seeds]
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in models[0].modules()):
        raise ValueError(f"backend='vmap' does not support batch norm ({proto.model}); use 'processes' or 'loop'")
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward)  # weights and inputs stacked over runs
    shared = vmap(forward, in_dims=(0, 0, None))  # weights stacked, one input batch for every run
    optimizer = torch.optim.SGD(params.values(), lr=proto.lr, momentum=proto.momentum, weight_decay=proto.weight_decay)
    orders = [torch.Generator().manual_seed(s) for s in seeds]
    normalize = Normalizer(dataset, device)
    X_dev = X.to(device)
    t_dev = [t.to(device) for t in targets]
    n, K = len(X), len(seeds)
    records = [Recorder(t, n_classes, y_true, y_test, track) for t in targets]

    @torch.no_grad()
    def predict(X_eval, official=False):
        base.train(official)
        size = OFFICIAL_SOFTMAX_BATCH if official else EVAL_BATCH
        out = []
        for start in range(0, len(X_eval), size):
            xb = X_eval[start:start + size].to(device)
            with _autocast(device, precision):
                if official and proto.augment:
                    logits = batched(params, buffers, torch.stack([normalize(augment_batch(xb, g)) for g in orders]))
                else:
                    logits = shared(params, buffers, normalize(xb))
            out.append(logits.float().softmax(-1).cpu())
        return torch.cat(out, 1)

    bar = tqdm(range(proto.n_epochs), desc=f"{K} runs of {proto.model} (vmap)", unit="epoch")
    for epoch in bar:
        for group in optimizer.param_groups:
            group["lr"] = proto.lr_at(epoch)
        base.train()
        loss_sum = torch.zeros(K, device=device)
        perms = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        for idx in perms.split(proto.batch_size, dim=1):
            xb = [X_dev[i] for i in idx]
            if proto.augment:
                xb = [augment_batch(x, g) for x, g in zip(xb, orders)]
            with _autocast(device, precision):
                logits = batched(params, buffers, normalize(torch.stack(xb)))
            losses = torch.stack([soft_cross_entropy(logits[k].float(), t_dev[k][idx[k]]) for k in range(K)])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # run k's loss depends on run k's weights only
            optimizer.step()
            loss_sum += losses.detach() * idx.shape[1]
        probs = predict(X_dev, official=softmax_mode == "official")
        test_pred = predict(X_test).argmax(-1) if X_test is not None else [None] * K
        postfix = [rec.add(loss_sum[k].item() / n, probs[k], test_pred[k]) for k, rec in enumerate(records)]
        bar.set_postfix(postfix[0])
    bar.close()
    seconds = (time.perf_counter() - start_time) / K
    states = [{name: v[k].detach().cpu() for name, v in {**params, **buffers}.items()} if keep_model else None
              for k in range(K)]
    return [rec.result(state, precision, device, seconds) for rec, state in zip(records, states)]
