"""The engine: one epoch loop trains every run (``runs.Run``) of every method and data set.

``train(run)`` and ``train_many(runs, backend=...)`` return ``runs.RunResult`` values, loading
runs already in the cache (``cache``) and training the others. Per epoch the loop sets the
learning rate of the protocol (Appendix A), takes one step per batch, then records: the softmax
of every training instance in eval mode (accumulated into the epoch-averaged ``S`` of Eq. (3) /
Algorithm 2), test and validation accuracy, the memorisation split, CSR (Eq. 4) and tracked
rows. What varies plugs in:

- the *step* (``steps.Single`` or Co-teaching's ``steps.Peers``) and the run's *objective*
  (``losses``);
- the *networks*: one run's modules, or K runs stacked into one batched call
  (``steps.StackedBank``);
- the *batch source*: tensors resident on the device (``sources.TensorSource``) or images
  streamed from disk (``clothing1m.StreamSource``).

Back-ends of ``train_many``: ``"loop"`` (one run after another), ``"processes"`` (worker
processes, each with its share of the CPU threads and, on CUDA, its own GPU (``worker_devices``);
a script that uses it needs the ``if __name__ == "__main__":`` guard), ``"stacked"`` (runs that differ only in targets, seeds,
starting weights and their objective's parameters train K at a time as one batched network) and
``"auto"`` (stacked on CUDA, loop on a CPU, where batched convolutions measured slower, and
for images streamed from disk).
Every back-end gives each run the result it gets alone (stacked: up to float summation order).
With the cache, a ``fit`` call stores a checkpoint every half minute or so, after an epoch, and a
killed run resumes from it (``checkpoint``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from . import cache, checkpoint
from .checks import check_choice, check_int, fail
from .csr import critical_sample_ratio
from .hardware import cpu_cores, describe, resolve_device, training_settings, tune_cpu_allocator
from .models import build_model
from .progress import EpochProgress
from .losses import rows_of
from .runs import Data, Run, RunResult, Tensors
from .sources import OFFICIAL_SOFTMAX_BATCH, eval_batch
from .steps import ModuleBank, Single, StackedBank

BACKENDS = ("auto", "loop", "processes", "stacked")
WAIT_SECONDS = 2.0


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def init_networks(run: Run, device: torch.device) -> list[torch.nn.Module]:
    """The run's networks with seeded initial weights (drawn one after the other from the run's
    seed; the caller's RNG untouched), the first loaded with ``run.init`` if given."""
    proto, extra = run.protocol, run.objective.extra_outputs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        models = [build_model(proto.model, run.n_classes + extra, run.spec.input_shape, proto.pretrained)
                  for _ in range(run.step.n_networks)]
    if run.init is not None:
        models[0].load_state_dict(run.init.state)
    for i, model in enumerate(models):
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            models[i] = model.to(memory_format=torch.channels_last)  # 1.8x faster on CPU, same fp32 arithmetic
    return [m.to(device) for m in models]


class Recorder:
    """Per-epoch records of one run: the epoch-averaged softmax S, the history and snapshots."""

    def __init__(self, run: Run):
        targets = run.targets
        self.labels = targets if targets.dim() == 1 else targets.argmax(1)
        self.y_true, self.track = run.y_true, run.track
        self.y_test = run.test.y if run.test is not None else None
        self.y_val = run.val.y if run.val is not None else None
        self.abstains = run.objective.extra_outputs > 0  # DAC: an abstention (arg-max = an extra output) is an error
        self.n_classes = run.n_classes
        self.S_sum = torch.zeros(len(targets), run.n_classes, dtype=torch.float64) if run.record_softmax else None
        self.averaged = run.average_epochs or run.protocol.n_epochs  # S averages the first `averaged` epochs
        self.history = {"loss": [], "fit_acc": [], "train_acc": [], "true_acc": [], "test_acc": [], "csr": []}
        if self.y_true is not None:
            self.corrupted = self.labels != self.y_true
            self.history.update(mem_noisy=[], mem_true=[], mem_other=[], clean_correct=[])
        if self.y_val is not None:
            self.history["val_acc"] = []
        for split, y in (("test", self.y_test), ("val", self.y_val)):
            if self.abstains and y is not None:
                self.history.update({f"{split}_abstained": [], f"{split}_kept_acc": []})
        self.snapshots = []

    def add(self, mean_loss: float, fit_acc: float, probs, test_pred, val_pred, csr) -> dict:
        """Record one epoch; returns the progress bar's postfix."""
        h = self.history
        h["loss"].append(mean_loss)
        h["fit_acc"].append(fit_acc)
        h["test_acc"].append((test_pred == self.y_test).float().mean().item() if test_pred is not None else None)
        h["csr"].append(csr)
        if self.y_val is not None:
            h["val_acc"].append((val_pred == self.y_val).float().mean().item())
        for split, pred, y in (("test", test_pred, self.y_test), ("val", val_pred, self.y_val)):
            if self.abstains and y is not None:
                kept = pred < self.n_classes
                h[f"{split}_abstained"].append(1 - kept.float().mean().item())
                h[f"{split}_kept_acc"].append((pred == y)[kept].float().mean().item() if kept.any() else float("nan"))
        if probs is None:
            h["train_acc"].append(None)
            h["true_acc"].append(None)
        else:
            self._add_softmax(probs)
        return {"loss": f"{h['loss'][-1]:.3f}",
                **({"train": f"{h['train_acc'][-1]:.3f}"} if probs is not None else {}),
                **({"test": f"{h['test_acc'][-1]:.3f}"} if test_pred is not None else {})}

    def _add_softmax(self, probs):
        if len(self.history["loss"]) <= self.averaged:
            self.S_sum += probs
        pred = probs.argmax(1)
        h = self.history
        h["train_acc"].append((pred == self.labels).float().mean().item())
        h["true_acc"].append((pred == self.y_true).float().mean().item() if self.y_true is not None else None)
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

    def checkpoint(self) -> dict:
        """What the recorder has gathered so far (``checkpoint``)."""
        return {"S_sum": self.S_sum, "history": self.history, "snapshots": self.snapshots}

    def S(self):
        return None if self.S_sum is None else (self.S_sum / min(self.averaged, len(self.history["loss"]))).float()


@torch.no_grad()
def _probs(bank, source, n_classes: int, precision: str, device, augment_generators=None, batch_size=None):
    """K x n x c softmax of each run's recorded network on a source's instances, in order: the
    rows per call (``batch_size``, default ``sources.eval_batch``) shared by the K runs, so a
    stacked call holds no more activations than one run's; the result is copied to the host once
    per pass. One autocast region for the pass: the weights are cast to bf16 once, not once per batch."""
    out = []
    batch_size = max(1, (batch_size or eval_batch(device)) // bank.K)
    with autocast(device, precision):
        for x in source.eval_batches(batch_size, augment_generators):
            out.append(bank.probs(x, n_classes, per_run=augment_generators is not None))
    return torch.cat(out, 1).cpu()  # one copy to the host per pass


def record_softmax(bank, source, run: Run, generators, device) -> torch.Tensor:
    """K x n x c softmax of the training instances after an epoch, always in eval mode: on the
    clean instances (the paper's f^t(x), ``softmax_mode="eval"``) or, with ``"official"``, on one
    augmented copy per run in batches of 1000, as the official scripts do right after their test
    pass has called ``model.eval()``. Eval mode leaves BatchNorm's running averages alone."""
    official = run.softmax_mode == "official"
    bank.train(False)
    return _probs(bank, source, run.n_classes, run.precision, device,
                  generators if official and run.protocol.augment else None,
                  OFFICIAL_SOFTMAX_BATCH if official else None)


def train_step(bank, optimizer, step_losses, loss, rows, x, targets, labels, epoch: int, run: Run):
    """One SGD step of the K runs on their batch (rows K x b, inputs ``x`` K x b x ...), every call
    batched over K: the K runs' summed losses and fitted rows (arg-max = the noisy label)."""
    with autocast(x.device, run.precision):
        logits = bank.logits(x)  # K x n x b x c
    total, logged = step_losses(logits.float(), rows_of(targets, rows), epoch, rows, loss)
    optimizer.zero_grad()
    total.backward()  # run k's loss depends on run k's weights only
    optimizer.step()
    fitted = (logits[:, 0, :, :run.n_classes].argmax(-1) == rows_of(labels, rows)).sum(1)
    return logged.detach() * rows.shape[1], fitted


def training_softmax(bank, source, run: Run, recorded, device) -> torch.Tensor:
    """K x n x c eval-mode softmax of the training instances before an epoch: the one just
    recorded, if any (a row-weighted loss reads it, ``losses``)."""
    if recorded is not None and run.softmax_mode == "eval":
        return recorded
    bank.train(False)
    return _probs(bank, source, run.n_classes, run.precision, device)


def on_device(run: Run, device: torch.device) -> Run:
    """``run`` as trained on ``device``: its ``device_type`` (part of its cache key) set to the device's."""
    return run if run.device_type == device.type else run.replace(device_type=device.type)


def fit(runs: list[Run], device: torch.device, stacked: bool = False, resumable: bool = False) -> list[RunResult]:
    """The one epoch loop: train ``runs`` (one, or several stacked) and record them, under their
    precision's TF32 and determinism settings (``hardware.training_settings``). ``resumable``:
    store the call's state after epochs (``checkpoint.EVERY_SECONDS`` apart) and resume from a
    stored one (``checkpoint``)."""
    runs = [on_device(run, device) for run in runs]
    with training_settings(device, runs[0].precision, runs[0].deterministic):
        return _fit(runs, device, stacked, resumable)


def _fit(runs: list[Run], device: torch.device, stacked: bool, resumable: bool) -> list[RunResult]:
    start = time.perf_counter()
    if device.type == "cpu":
        tune_cpu_allocator()
    run0 = runs[0]
    proto, n_classes, precision = run0.protocol, run0.n_classes, run0.precision
    n_scored = n_classes + run0.objective.extra_outputs  # test and validation predictions: over every output
    source = run0.data.source(device)
    evals = {name: getattr(run0, name).data.source(device) for name in ("test", "val") if getattr(run0, name)}
    networks = [init_networks(run, device) for run in runs]
    bank = StackedBank(networks) if stacked else ModuleBank(networks[0])
    del networks  # stacked: the K runs' modules were copied into the bank's stacked tensors; free them
    loss = run0.objective.make([run.objective for run in runs], n_classes, proto.n_epochs)
    step_losses = run0.step.make([run.step for run in runs])
    optimizer = proto.make_optimizer(bank.parameters())
    generators = [torch.Generator().manual_seed(run.seed) for run in runs]
    targets = torch.stack([run.targets for run in runs]).to(device)  # K x n, or K x n x c soft labels
    labels = targets if targets.dim() == 2 else targets.argmax(-1)  # soft targets: their arg-max
    records = [Recorder(run) for run in runs]
    best = [(-1.0, 0, None)] * len(runs)
    label = run0.label or f"{proto.model} seed {run0.seed}"
    probs, first_epoch, first_step, elapsed_before, stored_at = None, 0, 0, 0.0, start
    key = checkpoint.checkpoint_key(runs, stacked) if resumable else None
    saved = cache.load(key, checkpoint.SUFFIX) if resumable else None
    if saved is not None:  # a killed process's last checkpoint: carry on from it
        first_epoch, first_step = saved["epoch"], saved.get("step", 0)
        elapsed_before, probs, best = saved["seconds"], saved["probs"], saved["best"]
        bank.restore(checkpoint.to_device(saved["networks"], device))
        checkpoint.restore_object(optimizer, saved["optimizer"], device)
        for g, state in zip(generators, saved["generators"]):
            g.set_state(state)
        checkpoint.restore_object(loss, saved["loss"], device)
        for rec, state in zip(records, saved["records"]):
            checkpoint.restore_object(rec, state, "cpu")
        where = f"after epoch {first_epoch}" if not first_step else f"in epoch {first_epoch + 1}, after step {first_step},"
        print(f"{label}: resuming {where} of {proto.n_epochs} (checkpoint {key})", file=sys.stderr)

    def store(epoch: int, step: int = 0, epoch_generators=None, sums=None) -> None:
        """The call's state after ``epoch`` epochs and ``step`` more steps (``checkpoint``); within
        an epoch the generators as the epoch began (its batch order is drawn again on resuming)."""
        nonlocal stored_at
        state = dict(epoch=epoch, step=step, seconds=elapsed_before + time.perf_counter() - start, best=best,
                     probs=probs if run0.objective.row_weighted else None,  # only a row-weighted loss reads it
                     networks=bank.checkpoint(), optimizer=checkpoint.object_state(optimizer),
                     generators=epoch_generators or [g.get_state() for g in generators], sums=sums,
                     loss=checkpoint.object_state(loss), records=[rec.checkpoint() for rec in records])
        cache.save(key, state, checkpoint.SUFFIX)
        stored_at = time.perf_counter()

    progress = EpochProgress(proto.n_epochs, f"{len(runs)} runs of {label} (stacked)" if stacked else label,
                             done=first_epoch)
    for epoch in range(first_epoch, proto.n_epochs):
        within = epoch == first_epoch and first_step > 0  # resuming inside this epoch: its start is restored
        if epoch and proto.fresh_optimizer and not within:  # the official scripts' optim.SGD(...) inside the epoch loop
            optimizer = proto.make_optimizer(bank.parameters())
        optimizer.lr = proto.lr_at(epoch)
        if run0.objective.row_weighted and not within:
            loss.before_epoch(epoch, lambda: training_softmax(bank, source, run0, probs, device), labels)
        bank.train(True)
        if within:
            epoch_generators, skip = saved["generators"], first_step
            loss_sum, correct = (t.to(device) for t in saved["sums"])
        else:
            epoch_generators, skip = [g.get_state() for g in generators] if resumable else None, 0
            loss_sum, correct = torch.zeros(len(runs), device=device), torch.zeros(len(runs), device=device)
        batches = source.train_batches(generators, proto.batch_size, proto.augment, run0.objective.drop_last, skip)
        for step, (rows, x) in enumerate(batches, start=skip + 1):
            batch_loss, batch_correct = train_step(bank, optimizer, step_losses, loss, rows, x, targets, labels, epoch,
                                                   run0)
            loss_sum += batch_loss
            correct += batch_correct
            if resumable and time.perf_counter() - stored_at >= checkpoint.WITHIN_EPOCH_SECONDS:  # a long epoch
                store(epoch, step, epoch_generators, (loss_sum, correct))
        probs = record_softmax(bank, source, run0, generators, device) if run0.record_softmax else None
        bank.train(False)  # test and validation sets are scored in eval mode, whether or not S is recorded
        preds = {name: _probs(bank, s, n_scored, precision, device).argmax(-1) for name, s in evals.items()}
        postfix = []
        for k, run in enumerate(runs):
            ratio = None
            if run.csr is not None and (epoch + 1) % run.csr.every == 0:
                probe = source.X[run.csr.rows.to(device)] if run.csr.rows is not None else evals["test"].X[
                    run.csr.test_rows(len(evals["test"]), run.seed, epoch).to(device)]
                ratio = critical_sample_ratio(bank.module(k), probe, dataset=run.data.dataset,
                                              radius=run.csr.radius, search=run.csr.search, seed=run.seed)
            postfix.append(records[k].add(loss_sum[k].item() / len(source), correct[k].item() / len(source),
                                          None if probs is None else probs[k],
                                          preds["test"][k] if "test" in preds else None,
                                          preds["val"][k] if "val" in preds else None, ratio))
            if run.keep == "best_val" and records[k].history["val_acc"][-1] > best[k][0]:
                best[k] = (records[k].history["val_acc"][-1], epoch + 1, bank.state(k))
        if resumable and epoch + 1 < proto.n_epochs and time.perf_counter() - stored_at >= checkpoint.EVERY_SECONDS:
            store(epoch + 1)
        progress.epoch_done(postfix[0])
    progress.close()
    if resumable:
        cache.remove(key, checkpoint.SUFFIX)
    seconds = (elapsed_before + time.perf_counter() - start) / len(runs)
    results = []
    for k, run in enumerate(runs):
        weights, best_epoch = {"last": (bank.state(k), proto.n_epochs), "none": (None, proto.n_epochs),
                               "best_val": (best[k][2], best[k][1])}[run.keep]
        rec = records[k]
        results.append(RunResult(
            S=rec.S(), history=rec.history, snapshots=torch.stack(rec.snapshots) if rec.snapshots else None,
            weights=weights, best_epoch=best_epoch, precision=precision, device=str(device), seconds=seconds,
            threads=torch.get_num_threads(), hardware=describe(device, precision, run0.deterministic)))
    return results


# ---------------------------------------------------------------- train-or-load

def train(run: Run, *, device=None, use_cache: bool = True) -> RunResult:
    """Train ``run`` (or load its result from the cache)."""
    return train_many([run], backend="loop", device=device, use_cache=use_cache)[0]


def train_many(runs, *, backend: str = "auto", device=None, use_cache: bool = True, workers: int | None = None,
               stack_size: int | None = None) -> list[RunResult]:
    """Results of ``runs``, in order: loaded from the cache where present, the rest trained by
    ``backend`` (see the module docstring; ``stack_size`` caps K, ``workers`` the processes).
    With the cache, each missing run is locked while it trains, so two processes never train the
    same run: runs locked by another process are waited for and loaded when they appear."""
    runs = list(runs)
    for i, run in enumerate(runs):
        if not isinstance(run, Run):
            fail(f"runs[{i}]", type(run).__name__, "a runs.Run")
    check_choice(backend, "backend", BACKENDS)
    check_int(workers, "workers", minimum=1, none_ok=True)
    check_int(stack_size, "stack_size", minimum=1, none_ok=True)
    device = resolve_device(device)
    runs = [on_device(run, device) for run in runs]
    backend = choose_backend(backend, device, runs)
    results: list[RunResult | None] = [load(run) if use_cache else None for run in runs]
    missing = defaultdict(list)  # key -> indices of the runs that want it
    for i, run in enumerate(runs):
        if results[i] is None:
            missing[run.key()].append(i)
    while missing:
        held, busy = {}, []
        for key in missing:
            lock = cache.Lock.acquire(key) if use_cache else None
            if use_cache and lock is None:
                busy.append(key)
            else:
                held[key] = lock
        try:
            wanted = {key: _representative([runs[i] for i in missing[key]]) for key in held}
            # another process may have stored a result between our first look and taking its lock
            todo = [key for key in held if not use_cache or load(wanted[key]) is None]
            trained = {}
            for i, result in _train_runs([wanted[key] for key in todo], backend, device, workers, stack_size,
                                         resumable=use_cache):
                if use_cache:  # stored as soon as trained: a process killed mid-call keeps what it finished
                    cache.save(todo[i], result.payload())
                trained[todo[i]] = result
        finally:
            for lock in held.values():
                if lock is not None:
                    lock.release()
        for key in held:
            for i in missing.pop(key):
                results[i] = _as_requested(trained[key], runs[i]) if key in trained else load(runs[i])
        if busy:
            _wait_for(busy)
            for key in busy:
                for i in list(missing[key]):
                    results[i] = load(runs[i])
                    if results[i] is not None:
                        missing[key].remove(i)
                if not missing[key]:
                    del missing[key]
    return results


def choose_backend(backend: str, device: torch.device, runs: list[Run]) -> str:
    """``backend``, with "auto" resolved: stacked on CUDA for runs on tensors, else the loop (on a
    CPU batched convolutions measured slower; streamed images train one run per call)."""
    if backend != "auto":
        return backend
    on_tensors = all(isinstance(run.data, Tensors) for run in runs)
    return "stacked" if device.type == "cuda" and on_tensors else "loop"


def _representative(runs: list[Run]) -> Run:
    """Of runs with one key, the one to train: one that keeps its weights, if any does."""
    return next((run for run in runs if run.keep != "none"), runs[0])


def load(run: Run) -> RunResult | None:
    """The cached result of ``run``, or None (also when it lacks the weights the run keeps)."""
    payload = cache.load(run.key())
    if payload is None:
        return None
    try:
        result = RunResult.from_payload(payload)
    except (TypeError, ValueError) as error:
        warnings.warn(f"cached result of run {run.key()} has an unknown layout ({error}); it is recomputed")
        return None
    if run.keep != "none" and result.weights is None:
        return None
    return _as_requested(result, run)


def _as_requested(result: RunResult, run: Run) -> RunResult:
    return dataclasses.replace(result, weights=None) if run.keep == "none" and result.weights is not None else result


def _wait_for(keys: list[str]) -> None:
    """Until each key's result is stored or its lock is free (its holder finished or died)."""
    hosts = sorted({str((cache.lock_holder(k) or {}).get("host", "?")) for k in keys})
    print(f"waiting for {len(keys)} run(s) being trained by another process (on {', '.join(hosts)})",
          file=sys.stderr)
    while keys:
        time.sleep(WAIT_SECONDS)
        keys = [k for k in keys if not cache.exists(k) and cache.lock_holder(k) is not None]


def _train_runs(runs: list[Run], backend: str, device, workers, stack_size, resumable: bool = False):
    """Train ``runs``, yielding ``(index, result)`` as each ``fit`` call finishes."""
    if not runs:
        return
    if backend == "processes" and len(runs) > 1:
        devices = worker_devices(device, workers)[:len(runs)]
        threads = max(1, cpu_cores() // len(devices))
        context = get_context("spawn")
        handed_out = context.Queue()  # each worker takes one device when it starts
        for d in devices:
            handed_out.put(str(d))
        with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_take_device,
                                 initargs=(handed_out, threads)) as pool:
            yield from enumerate(pool.map(_fit_in_worker, runs, [resumable] * len(runs)))
        return
    if backend != "stacked":
        for i, run in enumerate(runs):
            yield i, fit([run], device, resumable=resumable)[0]
        return
    groups = defaultdict(list)
    for i, run in enumerate(runs):
        groups[run.stack_signature()].append(i)
    for indices in groups.values():
        for start in range(0, len(indices), stack_size or len(indices)):
            chunk = indices[start:start + (stack_size or len(indices))]
            yield from zip(chunk, fit([runs[i] for i in chunk], device, stacked=len(chunk) > 1, resumable=resumable))


def worker_devices(device: torch.device, workers: int | None = None) -> list[torch.device]:
    """The device of each worker process of the ``processes`` back-end: on a CPU ``workers``
    (default: one per core) sharing it; on ``cuda`` one per visible GPU by default, ``workers``
    of them spread over the GPUs in turn; on ``cuda:N`` all on GPU N (default: one)."""
    device = torch.device(device)
    if device.type != "cuda":
        return [device] * (workers or cpu_cores())
    if device.index is not None:
        return [device] * (workers or 1)
    n_gpus = torch.cuda.device_count()
    return [torch.device("cuda", i % n_gpus) for i in range(workers or n_gpus)]


_worker_device = None  # the device of this worker process (``_take_device``)


def _take_device(handed_out, threads: int) -> None:
    global _worker_device
    _worker_device = torch.device(handed_out.get())
    torch.set_num_threads(threads)
    if _worker_device.type == "cuda":
        torch.cuda.set_device(_worker_device)  # its one CUDA context, on its own GPU


def _fit_in_worker(run: Run, resumable: bool) -> RunResult:
    return fit([run], _worker_device, resumable=resumable)[0]


@torch.no_grad()
def predict(run: Run, weights: dict, data: Data | None = None, *, device=None, all_outputs: bool = False
            ) -> torch.Tensor:
    """Softmax (eval mode, n x c) of ``run``'s network with ``weights`` on ``data`` (default: the
    run's training instances); ``all_outputs``: over every output, DAC's abstention one included."""
    device = resolve_device(device)
    model = init_networks(run.replace(init=weights, step=Single()), device)[0]
    bank = ModuleBank([model])
    bank.train(False)
    n_outputs = run.n_classes + (run.objective.extra_outputs if all_outputs else 0)
    return _probs(bank, (data or run.data).source(device), n_outputs, run.precision, device)[0]
