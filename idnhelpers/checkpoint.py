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


def pointers(run_keys: list[str]) -> list[dict | None]:
    """Each run's pointer to the checkpoint holding it, or None."""
    return [cache.load(pointer_key(k), POINTER) for k in run_keys]


def _storable(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    return isinstance(value, (list, tuple)) and all(_storable(v) for v in value)


def object_state(obj) -> dict:
    """The attributes of a loss or optimiser that are data (tensors, numbers, lists of them): the
    state it carries from step to step, not its spec or derived caches."""
    return {k: v for k, v in getattr(obj, "__dict__", {}).items() if k != "params" and _storable(v)}


def restore_object(obj, state: dict, device) -> None:
    """Set the attributes ``state`` holds, their tensors (lists and tuples followed) moved to ``device``."""
    def to_device(value):
        if isinstance(value, (list, tuple)):
            return type(value)(to_device(v) for v in value)
        return value.to(device) if isinstance(value, torch.Tensor) else value

    for name, value in state.items():
        setattr(obj, name, to_device(value))


class Checkpoints:
    """The checkpoints of one ``fit`` call: resume ``training`` (a ``training.Training``) from the
    stored one, if any, and store its state as the loop goes; ``key`` None: neither."""

    def __init__(self, training, key: str | None, run_keys: list[str] = ()):
        self.training, self.key, self.every, self.run_keys = training, key, checkpoint_seconds(), list(run_keys)
        self.start = self.stored_at = time.perf_counter()
        self.store_seconds = 0.0  # how long the last store took
        self.saved, source = (cache.load(key, SUFFIX) if key is not None else None) or {}, ""
        larger = self._larger() if key is not None and not self.saved else None
        if larger is not None:  # a slice of a larger stack's checkpoint, stored as this call's own at once
            larger_key, stored, slots = larger
            self.saved, source = training.slice_state(stored, slots), f" of {len(stored['keys'])} stacked runs"
            cache.save(key, dict(self.saved, keys=self.run_keys), SUFFIX)
        if key is not None and (len(self.run_keys) > 1 or larger is not None):  # one run is never another's slice
            for slot, run_key in enumerate(self.run_keys):  # each run points to its slot here
                cache.save(pointer_key(run_key), {"checkpoint": key, "slot": slot}, POINTER)
        if larger is not None and all(p is None or p["checkpoint"] != larger_key for p in pointers(stored["keys"])):
            cache.remove(larger_key, SUFFIX)  # no run points to it any more: every slice resumed elsewhere
        self.first_epoch, self.first_step = self.saved.get("epoch", 0), self.saved.get("step", 0)
        self.seconds_before = self.saved.get("seconds", 0.0)
        if self.saved:
            training.restore(self.saved)
            where = (f"after epoch {self.first_epoch}" if not self.first_step
                     else f"in epoch {self.first_epoch + 1}, after step {self.first_step},")
            print(f"{training.label}: resuming {where} of {training.protocol.n_epochs} (checkpoint {key}{source})",
                  file=sys.stderr)

    def _larger(self) -> tuple[str, dict, list[int]] | None:
        """(key, state, slots) of the stacked checkpoint that holds every run of this call, if one does."""
        points = pointers(self.run_keys)
        if not points or None in points or len({p["checkpoint"] for p in points}) != 1:
            return None
        stored = cache.load(points[0]["checkpoint"], SUFFIX)
        if stored is None or isinstance(stored["networks"], list):  # gone, or one run's (not a stack)
            return None
        return points[0]["checkpoint"], stored, [p["slot"] for p in points]

    def begin_epoch(self, epoch: int) -> tuple[int, tuple | None]:
        """Keep the generators as ``epoch`` begins; the steps of it already done and the running sums
        after them if the stored call stopped inside it, else (0, None)."""
        within = epoch == self.first_epoch and self.first_step > 0
        self.epoch_generators = (self.saved["generators"] if within
                                 else [g.get_state() for g in self.training.generators])
        if not within:
            return 0, None
        return self.first_step, tuple(t.to(self.training.device) for t in self.saved["sums"])

    def store_if_due(self, epoch: int, step: int = 0, sums=None) -> None:
        """``store`` if the call stores checkpoints and one is due: within an epoch (``step``)
        ``WITHIN_EPOCH_SECONDS`` after the last store, after an epoch but the last ``every`` seconds after
        it, and for an interval above 0 ``STORE_COST_FACTOR`` times that store's duration after it."""
        if self.key is None or (not step and epoch == self.training.protocol.n_epochs):  # none, or after the last
            return
        interval = WITHIN_EPOCH_SECONDS if step else self.every
        wait = max(interval, STORE_COST_FACTOR * self.store_seconds) if interval else 0.0
        if time.perf_counter() - self.stored_at >= wait:
            self.store(epoch, step, sums)

    def store(self, epoch: int, step: int = 0, sums=None) -> None:
        """The call's state after ``epoch`` epochs and ``step`` more steps (then with the generators
        as the epoch began)."""
        generators = self.epoch_generators if step else [g.get_state() for g in self.training.generators]
        state = dict(epoch=epoch, step=step, seconds=self.seconds(), sums=sums, **self.training.state(),
                     generators=generators, keys=self.run_keys)
        start = time.perf_counter()
        cache.save(self.key, state, SUFFIX)
        self.stored_at = time.perf_counter()
        self.store_seconds = self.stored_at - start

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
