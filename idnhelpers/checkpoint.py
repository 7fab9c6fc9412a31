"""Runs that survive being killed. ``training.fit`` stores the whole state of its call (networks,
optimiser, generators, losses, recorders, kept weights, epoch and step, within an epoch its running
sums) in the cache as ``<key>.ckpt``: after an epoch ending ``$IDNHELPERS_CHECKPOINT_SECONDS`` (default 30)
or more after the last store, and within an epoch every ``WITHIN_EPOCH_SECONDS``; never sooner than
``STORE_COST_FACTOR`` times the last store's own duration after it, so that a large checkpoint on a slow
shared file system costs at most a twentieth of the time (``$IDNHELPERS_CHECKPOINT_SECONDS=0``: after every
epoch). The next call that trains the same runs resumes from it and ends bit for bit where an
uninterrupted call ends on the same machine. Each run of a stacked call points to its slot there
(``pointer_key``), so a call of some of them, with K halved on running out of memory or on a smaller
GPU after a requeue, resumes from their slice (``Training.slice_state``) instead of starting again."""

from __future__ import annotations

import sys
import time

import torch

from . import cache
from .environment import checkpoint_seconds

SUFFIX = ".ckpt"  # beside the results (``.pt``) in the cache folder, never mistaken for one
POINTER = ".point"  # a run's pointer to the checkpoint holding it
WITHIN_EPOCH_SECONDS = 300.0
STORE_COST_FACTOR = 20  # at most 1/20 of the time goes to storing checkpoints


def checkpoint_key(runs, stacked: bool) -> str:
    """The key of a ``fit`` call's checkpoint: its runs' keys, in order, and whether they are stacked."""
    return cache.config_key({"checkpoint of": [run.key() for run in runs], "stacked": stacked, "format": 2})


def pointer_key(run_key: str) -> str:
    """The key of a run's pointer to the stacked checkpoint that holds it: {"checkpoint": key, "slot": k}."""
    return cache.config_key({"checkpoint holding": run_key, "format": 3})


def take_runs(value, slots: list[int], k: int, axis: int = 0, per_run: int = 1):
    """A tensor's entries of runs ``slots`` of the ``k`` along ``axis`` (``per_run`` entries a run:
    Co-teaching's two networks); any other value as it is."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.shape[axis] != k * per_run:
        raise ValueError(f"a checkpoint's tensor of shape {tuple(value.shape)} has no {k} runs along dim {axis}")
    return value.index_select(axis, torch.tensor([s * per_run + j for s in slots for j in range(per_run)]))


def _storable(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    return isinstance(value, (list, tuple)) and all(_storable(v) for v in value)


def object_state(obj) -> dict:
    """The attributes of a loss or optimiser that are data (tensors, numbers, lists of them): the
    state it carries from step to step, not its spec or derived caches."""
    return {k: v for k, v in getattr(obj, "__dict__", {}).items() if k != "params" and _storable(v)}


def to_device(value, device):
    """``value`` with its tensors on ``device`` (lists and tuples followed)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def restore_object(obj, state: dict, device) -> None:
    for name, value in state.items():
        setattr(obj, name, to_device(value, device))


class Checkpoints:
    """The checkpoints of one ``fit`` call: resume ``training`` (a ``training.Training``) from the
    stored one, if any, and store its state as the loop goes; ``key`` None: neither."""

    def __init__(self, training, key: str | None, run_keys: list[str] = ()):
        self.training, self.key, self.every = training, key, checkpoint_seconds()
        self.run_keys = list(run_keys)
        self.start = self.stored_at = time.perf_counter()
        self.store_seconds = 0.0  # how long the last store took
        self.saved = (cache.load(key, SUFFIX) if key is not None else None) or {}
        larger = self._larger() if key is not None and not self.saved else None
        if larger is not None:  # a slice of a larger stack's checkpoint, stored as this call's own at once
            self.saved = training.slice_state(larger[1], larger[2])
            cache.save(key, dict(self.saved, keys=self.run_keys), SUFFIX)
        if len(self.run_keys) > 1 or larger is not None:  # one run alone is never a slice of another call
            self._point()
        if larger is not None:
            self._release(larger[0], larger[1]["keys"])
        self.first_epoch, self.first_step = self.saved.get("epoch", 0), self.saved.get("step", 0)
        self.seconds_before = self.saved.get("seconds", 0.0)
        self.epoch_generators = None  # the generators as the current epoch began
        if self.saved:
            training.restore(self.saved)
            where = (f"after epoch {self.first_epoch}" if not self.first_step
                     else f"in epoch {self.first_epoch + 1}, after step {self.first_step},")
            source = f" of {len(larger[1]['keys'])} stacked runs" if larger is not None else ""
            print(f"{training.label}: resuming {where} of {training.protocol.n_epochs} (checkpoint {key}{source})",
                  file=sys.stderr)

    def _larger(self) -> tuple[str, dict, list[int]] | None:
        """(key, state, slots) of the stacked checkpoint that holds every run of this call, if one does."""
        pointers = [cache.load(pointer_key(k), POINTER) for k in self.run_keys]
        if not pointers or None in pointers or len({p["checkpoint"] for p in pointers}) != 1:
            return None
        stored = cache.load(pointers[0]["checkpoint"], SUFFIX)
        if stored is None or isinstance(stored["networks"], list):  # gone, or one run's (not a stack)
            return None
        return pointers[0]["checkpoint"], stored, [p["slot"] for p in pointers]

    def _point(self) -> None:
        """Point each run of the call to its slot in the call's checkpoint."""
        if self.key is not None:
            for slot, run_key in enumerate(self.run_keys):
                cache.save(pointer_key(run_key), {"checkpoint": self.key, "slot": slot}, POINTER)

    def _release(self, key: str, run_keys: list[str]) -> None:
        """Remove checkpoint ``key`` once no run points to it (every slice of it resumed elsewhere)."""
        pointers = [cache.load(pointer_key(k), POINTER) for k in run_keys]
        if all(p is None or p["checkpoint"] != key for p in pointers):
            cache.remove(key, SUFFIX)

    def begin_epoch(self, epoch: int) -> tuple[int, tuple | None]:
        """Keep the generators as ``epoch`` begins; the steps of it already done and the running sums
        after them if the stored call stopped inside it, else (0, None)."""
        within = epoch == self.first_epoch and self.first_step > 0
        if self.key is not None:
            self.epoch_generators = (self.saved["generators"] if within
                                     else [g.get_state() for g in self.training.generators])
        if not within:
            return 0, None
        return self.first_step, tuple(t.to(self.training.device) for t in self.saved["sums"])

    def after_step(self, epoch: int, step: int, sums: tuple) -> None:
        if self.key is not None and self._due(WITHIN_EPOCH_SECONDS):
            self.store(epoch, step, self.epoch_generators, sums)

    def after_epoch(self, epoch: int) -> None:
        """After an epoch but the last, store if ``every`` seconds have passed since the last store."""
        last = epoch + 1 == self.training.protocol.n_epochs
        if self.key is not None and not last and self._due(self.every):
            self.store(epoch + 1)

    def store(self, epoch: int, step: int = 0, epoch_generators=None, sums=None) -> None:
        """The call's state after ``epoch`` epochs and ``step`` more steps (then with the generators
        as the epoch began)."""
        state = dict(epoch=epoch, step=step, seconds=self.seconds(), sums=sums, **self.training.state(),
                     generators=epoch_generators or [g.get_state() for g in self.training.generators],
                     keys=self.run_keys)
        start = time.perf_counter()
        cache.save(self.key, state, SUFFIX)
        self.stored_at = time.perf_counter()
        self.store_seconds = self.stored_at - start

    def _due(self, interval: float) -> bool:
        """Whether ``interval`` seconds have passed since the last store, and (for an interval above 0)
        ``STORE_COST_FACTOR`` times that store's duration."""
        wait = max(interval, STORE_COST_FACTOR * self.store_seconds) if interval else 0.0
        return time.perf_counter() - self.stored_at >= wait

    def seconds(self) -> float:
        """The call's training time so far, the killed calls' before it included."""
        return self.seconds_before + time.perf_counter() - self.start

    def finish(self) -> float:
        """Remove the checkpoint and the runs' pointers to it; the call's training time."""
        if self.key is not None:
            cache.remove(self.key, SUFFIX)
            for run_key in self.run_keys:
                cache.remove(pointer_key(run_key), POINTER)
        return self.seconds()
