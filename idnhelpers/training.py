"""The one epoch loop that trains every run: ``fit(runs, device)``, called by ``engine.train_many``.

Per epoch it sets the protocol's learning rate (Appendix A), takes one step per batch, then records
the eval-mode softmax of the training instances (averaged into the ``S`` of Eq. (3) / Algorithm 2),
test and validation accuracy, the memorisation split, CSR (Eq. 4) and tracked rows. ``Training``
holds the call's state, ``checkpoint.Checkpoints`` resumes and stores it.
"""

from __future__ import annotations

import torch

from . import checkpoint
from .csr import critical_sample_ratio
from .hardware import autocast, describe, training_settings, tune_cpu_allocator
from .lossparts import rows_of, sgd_step, train_logits
from .models import build_model
from .progress import EpochProgress
from .runs import Run, RunResult
from .sources import OFFICIAL_SOFTMAX_BATCH, eval_batch
from .steps import ModuleBank, StackedBank


def init_networks(run: Run, device: torch.device) -> list[torch.nn.Module]:
    """The run's networks with seeded initial weights (drawn one after the other from the run's
    seed; the caller's RNG untouched), the first loaded with ``run.init`` if given."""
    proto, extra = run.protocol, run.objective.extra_outputs
    with torch.random.fork_rng(devices=[]):  # the CPU's generator only: built there, then moved
        torch.default_generator.manual_seed(run.seed)  # torch.manual_seed would reseed every GPU's too
        models = [build_model(proto.model, run.n_classes + extra, run.spec.input_shape, proto.pretrained)
                  for _ in range(run.step.n_networks)]
    if run.init is not None:
        models[0].load_state_dict(run.init.state)
    # channels-last convolutions: 1.8x faster on CPU, same fp32 arithmetic
    layout = torch.channels_last if any(isinstance(m, torch.nn.Conv2d) for m in models[0].modules()) else None
    return [m.to(device, memory_format=layout) for m in models]


class Recorder:
    """Per-epoch records of one run: the epoch-averaged softmax S, the history and snapshots."""

    def __init__(self, run: Run):
        self.labels = run.targets if run.targets.dim() == 1 else run.targets.argmax(1)
        self.y_true, self.track, self.objective, self.n_classes = run.y_true, run.track, run.objective, run.n_classes
        self.y_eval = {name: getattr(run, name).y for name in ("test", "val") if getattr(run, name) is not None}
        self.S_sum = torch.zeros(len(self.labels), run.n_classes, dtype=torch.float64) if run.record_softmax else None
        self.averaged = run.average_epochs or run.protocol.n_epochs  # S averages the first `averaged` epochs
        names = ["loss", "fit_acc", "train_acc", "true_acc", "test_acc", "csr"]
        if self.y_true is not None:
            self.corrupted = self.labels != self.y_true
            names += ["mem_noisy", "mem_true", "mem_other", "clean_correct"]
        self.history = {name: [] for name in names + (["val_acc"] if "val" in self.y_eval else [])}
        self.snapshots = []

    def add(self, mean_loss: float, fit_acc: float, probs, preds: dict, csr) -> dict:
        """Record one epoch (``preds``: the test and validation predictions); the progress postfix."""
        def mean(hits):  # an empty split's mean is nan
            return hits.float().mean().item()

        acc = {split: mean(pred == self.y_eval[split]) for split, pred in preds.items()}
        pred = None if probs is None else probs.argmax(1)
        row = dict(loss=mean_loss, fit_acc=fit_acc, train_acc=None if pred is None else mean(pred == self.labels),
                   true_acc=None, test_acc=acc.get("test"), csr=csr)
        if "val" in acc:
            row["val_acc"] = acc["val"]
        for split, split_pred in preds.items():
            scores = self.objective.scores(split_pred, self.y_eval[split], self.n_classes)
            row.update({f"{split}_{name}": value for name, value in scores.items()})
        if pred is not None and self.y_true is not None:
            as_noisy, as_true = (pred == self.labels)[self.corrupted], (pred == self.y_true)[self.corrupted]
            row.update(true_acc=mean(pred == self.y_true), mem_noisy=mean(as_noisy), mem_true=mean(as_true),
                       mem_other=mean(~as_noisy & ~as_true), clean_correct=mean((pred == self.y_true)[~self.corrupted]))
        h = self.history
        for name, value in row.items():
            h.setdefault(name, []).append(value)
        if probs is not None and len(h["loss"]) <= self.averaged:
            self.S_sum += probs
        if probs is not None and self.track is not None:
            self.snapshots.append(probs[self.track])
        return {"loss": f"{mean_loss:.3f}", **({"train": f"{h['train_acc'][-1]:.3f}"} if pred is not None else {}),
                **({"test": f"{acc['test']:.3f}"} if "test" in acc else {})}

    def S(self):
        return None if self.S_sum is None else (self.S_sum / min(self.averaged, len(self.history["loss"]))).float()


@torch.no_grad()
def softmax_of(bank, source, n_classes: int, precision: str, device, augment_generators=None, batch_size=None):
    """K x n x c softmax of each run's network on a source's instances; the rows per call (default
    ``sources.eval_batch``) are shared by the K runs, so a stacked call holds one run's activations."""
    out = []
    batch_size = max(1, (batch_size or eval_batch(device)) // bank.K)
    with autocast(device, precision):
        for x in source.eval_batches(batch_size, augment_generators):
            out.append(bank.probs(x, n_classes, per_run=augment_generators is not None))
    return torch.cat(out, 1).cpu()


def record_softmax(bank, source, run: Run, generators, device) -> torch.Tensor:
    """K x n x c eval-mode softmax of the training instances after an epoch: on the clean instances (the
    paper's f^t(x)) or, with ``softmax_mode="official"``, on one augmented copy per run in batches of
    1000, as the official scripts do."""
    official = run.softmax_mode == "official"
    bank.train(False)
    return softmax_of(bank, source, run.n_classes, run.precision, device,
                      generators if official and run.protocol.augment else None,
                      OFFICIAL_SOFTMAX_BATCH if official else None)


def train_step(training: Training, rows: torch.Tensor, x: torch.Tensor, epoch: int):
    """One SGD step of the K runs on their batch (rows K x b, inputs ``x`` K x b x ...), every call
    batched over K: the K runs' summed losses and fitted rows (arg-max = the noisy label)."""
    logits = train_logits(training, training.bank.logits, x)  # K x n x b x c
    total, logged = training.step_losses(logits, rows_of(training.targets, rows), epoch, rows, training.loss)
    sgd_step(training, total)  # run k's loss depends on run k's weights only
    training.loss_step()
    fitted = (logits[:, 0, :, :training.n_classes].argmax(-1) == rows_of(training.labels, rows)).sum(1)
    return logged.detach() * rows.shape[1], fitted


def on_device(run: Run, device: torch.device) -> Run:
    """``run`` as trained on ``device``: its ``device_type`` (part of its cache key) set to the device's."""
    return run if run.device_type == device.type else run.replace(device_type=device.type)


def fit(runs: list[Run], device: torch.device, stacked: bool = False, resumable: bool = False) -> list[RunResult]:
    """Train ``runs`` (one, or several stacked) and record them, under their precision's TF32 and
    determinism settings; ``resumable``: store checkpoints and resume from one (``checkpoint``)."""
    runs = [on_device(run, device) for run in runs]
    if device.type == "cpu":
        tune_cpu_allocator()
    with training_settings(device, runs[0].precision, runs[0].deterministic):
        return _train(runs, device, stacked, resumable)


def _train(runs: list[Run], device: torch.device, stacked: bool, resumable: bool) -> list[RunResult]:
    training = Training(runs, device, stacked)
    saver = checkpoint.Checkpoints(training, checkpoint.checkpoint_key(runs, stacked) if resumable else None,
                                   [run.key() for run in runs])
    n_epochs = training.protocol.n_epochs
    progress = EpochProgress(n_epochs, training.label, done=saver.first_epoch)
    own_epoch = getattr(training.step_losses, "train_epoch", None)
    for epoch in range(saver.first_epoch, n_epochs):
        skip, sums = saver.begin_epoch(epoch)  # (0, None) but in the epoch a killed call stopped in
        training.begin_epoch(epoch, fresh=not skip)
        if own_epoch is not None:  # a step that runs its epoch itself (DivideMix); stored after it
            loss_sum, correct = own_epoch(training, epoch)
        else:
            loss_sum, correct = sums or training.zero_sums()
            for step, (rows, x) in training.batches(skip):
                batch_loss, batch_correct = train_step(training, rows, x, epoch)
                loss_sum += batch_loss
                correct += batch_correct
                saver.store_if_due(epoch, step, (loss_sum, correct))
        progress.epoch_done(training.end_epoch(epoch, loss_sum, correct))
        saver.store_if_due(epoch + 1)
    progress.close()
    return training.results(saver.finish())


class Training:
    """What one ``fit`` call trains and has recorded (networks, objective, step, optimiser, generators,
    recorders, the weights kept so far); a checkpoint stores ``state()`` and ``restore``s it."""

    def __init__(self, runs: list[Run], device: torch.device, stacked: bool):
        run0 = self.run0 = runs[0]
        self.runs, self.device, self.protocol, self.n_classes = runs, device, run0.protocol, run0.n_classes
        self.source = run0.data.source(device)
        self.evals = {name: getattr(run0, name).data.source(device) for name in ("test", "val") if getattr(run0, name)}
        networks = [init_networks(run, device) for run in runs]
        self.bank = StackedBank(networks) if stacked else ModuleBank(networks[0], run0.step.ensemble)
        del networks  # stacked: the K runs' modules were copied into the bank's stacked tensors; free them
        self.loss = run0.objective.make([run.objective for run in runs], run0.n_classes, self.protocol.n_epochs)
        self.step_losses = run0.step.make([run.step for run in runs])
        self.loss_step = getattr(self.loss, "after_step", lambda: None)  # an objective's own parameters (SOP's)
        self.optimizer = self.protocol.make_optimizer(self.bank.parameters())
        self.generators = [torch.Generator().manual_seed(run.seed) for run in runs]
        self.targets = torch.stack([run.targets for run in runs]).to(device)  # K x n, or K x n x c soft labels
        self.labels = self.targets if self.targets.dim() == 2 else self.targets.argmax(-1)  # soft: their arg-max
        self.records = [Recorder(run) for run in runs]
        self.best = [(-1.0, 0, None)] * len(runs)  # per run: validation accuracy, epoch, weights
        self.probs = None  # the training softmax recorded after the last epoch (K x n x c)
        label = run0.label or f"{self.protocol.model} seed {run0.seed}"
        self.label = f"{len(runs)} runs of {label} (stacked)" if stacked else label

    def begin_epoch(self, epoch: int, fresh: bool) -> None:
        """Set up ``epoch``; not ``fresh``: resumed within it, its start restored from a checkpoint."""
        if epoch and self.protocol.fresh_optimizer and fresh:  # the official scripts' optim.SGD(...) in the epoch loop
            self.optimizer = self.protocol.make_optimizer(self.bank.parameters())
        self.optimizer.lr = self.protocol.lr_at(epoch)
        if self.run0.objective.row_weighted and fresh:
            self.loss.before_epoch(epoch, self.training_softmax, self.labels)
        self.bank.train(True)

    def training_softmax(self) -> torch.Tensor:
        """The eval-mode softmax of the training instances before an epoch: the one just recorded, if any."""
        if self.probs is not None and self.run0.softmax_mode == "eval":
            return self.probs
        self.bank.train(False)
        return softmax_of(self.bank, self.source, self.n_classes, self.run0.precision, self.device)

    def zero_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's running loss and fitted-row sums, one per run."""
        return torch.zeros(len(self.runs), device=self.device), torch.zeros(len(self.runs), device=self.device)

    def batches(self, skip: int = 0):
        """``(step, (rows, x))`` of an epoch, from step ``skip + 1``."""
        proto = self.protocol
        batches = self.source.train_batches(self.generators, proto.batch_size, proto.augment,
                                            self.run0.objective.drop_last, skip)
        return enumerate(batches, start=skip + 1)

    def end_epoch(self, epoch: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> dict:
        """Record the epoch for every run; the progress line's postfix (the first run's)."""
        bank, source, run0 = self.bank, self.source, self.run0
        self.probs = record_softmax(bank, source, run0, self.generators, self.device) if run0.record_softmax else None
        bank.train(False)  # test and validation sets are scored in eval mode, whether or not S is recorded
        n_scored = self.n_classes + run0.objective.extra_outputs  # test and validation predictions: every output
        preds = {name: softmax_of(bank, s, n_scored, run0.precision, self.device).argmax(-1)
                 for name, s in self.evals.items()}
        postfix = []
        for k, (run, record) in enumerate(zip(self.runs, self.records)):
            probs = None if self.probs is None else self.probs[k]
            postfix.append(record.add(loss_sum[k].item() / len(source), correct[k].item() / len(source), probs,
                                      {name: pred[k] for name, pred in preds.items()}, self.csr(k, epoch)))
            if run.keep == "best_val" and record.history["val_acc"][-1] > self.best[k][0]:
                self.best[k] = (record.history["val_acc"][-1], epoch + 1, bank.state(k))
        return postfix[0]

    def csr(self, k: int, epoch: int) -> float | None:
        """Run ``k``'s critical-sample ratio (Eq. 4) after ``epoch``, where its probe measures one."""
        run = self.runs[k]
        if run.csr is None or (epoch + 1) % run.csr.every:
            return None
        test = self.evals.get("test")
        rows = run.csr.rows if run.csr.rows is not None else run.csr.test_rows(len(test), run.seed, epoch)
        probe = (self.source if run.csr.rows is not None else test).X[rows.to(self.device)]
        return critical_sample_ratio(self.bank.module(k), probe, dataset=run.data.dataset, radius=run.csr.radius,
                                     search=run.csr.search, seed=run.seed)

    def state(self) -> dict:
        """Everything a checkpoint stores of the call (live tensors: save them before the next step); of
        the step, the attributes its ``state_names`` lists (DivideMix's)."""
        step = {name: getattr(self.step_losses, name) for name in getattr(self.step_losses, "state_names", ())}
        return dict(best=self.best, probs=self.probs if self.run0.objective.row_weighted else None,
                    networks=self.bank.checkpoint(), optimizer=checkpoint.object_state(self.optimizer),
                    loss=checkpoint.object_state(self.loss), step_state=step,
                    records=[{name: getattr(rec, name) for name in ("S_sum", "history", "snapshots")}
                             for rec in self.records])

    def slice_state(self, saved: dict, slots: list[int]) -> dict:
        """The state of runs ``slots`` of a larger stacked call's checkpoint ``saved``, as this call's
        ``state()`` has it (stacked, or one run's modules): how a call with K halved resumes."""
        k, n, stacked = len(saved["records"]), self.run0.step.n_networks, isinstance(self.bank, StackedBank)

        def take(value, axis=0, per_run=1):  # a tensor's entries of the slots' runs (per_run entries each)
            if not isinstance(value, torch.Tensor):
                return value
            if value.shape[axis] != k * per_run:
                raise ValueError(f"a checkpoint's tensor of shape {tuple(value.shape)} has no {k} runs "
                                 f"along dim {axis}")
            return value.index_select(axis, torch.tensor([s * per_run + j for s in slots for j in range(per_run)]))

        def per_tensor(tensors):  # one per parameter tensor, K * n networks along dim 0: one run's network by network
            taken = [take(t, per_run=n) for t in tensors]
            return taken if stacked else [None if t is None else t[j] for j in range(n) for t in taken]

        parts = saved["networks"]  # "params" and "buffers": K * n networks along dim 0
        networks = {part: {name: take(t, per_run=n) for name, t in parts[part].items()} for part in parts}
        if not stacked:  # one run: its n modules' state_dicts
            networks = [{name: t[j] for part in networks.values() for name, t in part.items()} for j in range(n)]
        optimizer = {name: per_tensor(value) if isinstance(value, list) else value
                     for name, value in saved["optimizer"].items()}
        axes = getattr(type(self.loss), "run_axes", {})  # the runs of the loss's tensors: dim 0 but these
        loss = {name: take(value, axes.get(name, 0)) for name, value in saved["loss"].items()}
        sums = None if saved["sums"] is None else tuple(take(t) for t in saved["sums"])
        return dict(saved, networks=networks, optimizer=optimizer, loss=loss, probs=take(saved["probs"]), sums=sums,
                    **{name: [saved[name][s] for s in slots] for name in ("best", "records", "generators")})

    def restore(self, saved: dict) -> None:
        self.best, self.probs = saved["best"], saved["probs"]
        self.bank.restore(saved["networks"])  # copied into the networks' tensors, on their device
        for g, state in zip(self.generators, saved["generators"]):
            g.set_state(state)
        for obj, state in ((self.optimizer, saved["optimizer"]), (self.loss, saved["loss"]),
                           (self.step_losses, saved.get("step_state", {}))):  # absent: stored before steps had state
            checkpoint.restore_object(obj, state, self.device)
        for rec, state in zip(self.records, saved["records"]):
            checkpoint.restore_object(rec, state, "cpu")

    def results(self, seconds: float) -> list[RunResult]:
        """The runs' results; ``seconds``: the call's training time, shared between its runs."""
        n_epochs, precision, run0 = self.protocol.n_epochs, self.run0.precision, self.run0
        results = []
        for k, (run, rec) in enumerate(zip(self.runs, self.records)):
            weights, best_epoch = {"last": (self.bank.state(k), n_epochs), "none": (None, n_epochs),
                                   "best_val": (self.best[k][2], self.best[k][1])}[run.keep]
            results.append(RunResult(
                S=rec.S(), history=rec.history, snapshots=torch.stack(rec.snapshots) if rec.snapshots else None,
                weights=weights, best_epoch=best_epoch, precision=precision, device=str(self.device),
                seconds=seconds / len(self.runs), threads=torch.get_num_threads(),
                hardware={**describe(self.device, precision, run0.deterministic), "stacked_runs": len(self.runs)}))
        return results
