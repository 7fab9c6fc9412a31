"""Runs that survive being killed: after an epoch that ends ``EVERY_SECONDS`` or more after the
last store (or the start), and within an epoch once ``WITHIN_EPOCH_SECONDS`` have passed since
the last store (a long epoch: Clothing1M's, a WRN's on a slow GPU), ``engine.fit`` stores the
whole state of its call (every network's weights and buffers, the optimiser, the runs' random
generators, the losses' state, the recorders' sums, history and snapshots, the weights kept so
far, the epoch and step, and within an epoch its running loss and accuracy sums; training draws
from no other generator) in the cache under a key of its runs (``checkpoint_key``, file
``<key>.ckpt``): atomic, checksummed and loaded with ``torch.load(weights_only=True)``, as every
cache entry. The next process that trains the same runs (the runs' locks make it one process)
resumes from the last stored epoch or step (within an epoch it draws the epoch's batch order
again from the generators as they were when it began and skips the steps done), and its result
equals an uninterrupted run's bit for bit on the same machine; the checkpoint is removed when the
call finishes. On Slurm a grid job requeues itself on pre-emption or time-out
(``grid.executors.GridJob``) and resumes so. A killed run loses at most ``EVERY_SECONDS`` and the
epoch it was in (of a long epoch, ``WITHIN_EPOCH_SECONDS``); a run shorter than that stores
nothing (a store costs about 19 ms for the MNIST CNN: a tenth of a small epoch)."""

from __future__ import annotations

import os

import torch

from . import cache

SUFFIX = ".ckpt"  # beside the results (``.pt``) in the cache folder, never mistaken for one
# at most this much training lost to a kill (plus the epoch it interrupted); IDNHELPERS_CHECKPOINT_SECONDS sets it
EVERY_SECONDS = float(os.environ.get("IDNHELPERS_CHECKPOINT_SECONDS", 30))
WITHIN_EPOCH_SECONDS = 300.0  # an epoch longer than this also stores every this many seconds within it


def checkpoint_key(runs, stacked: bool) -> str:
    """The key of a ``fit`` call's checkpoint: its runs' keys, in order, and whether they are stacked."""
    return cache.config_key({"checkpoint of": [run.key() for run in runs], "stacked": stacked, "format": 2})


def _storable(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    return isinstance(value, (list, tuple)) and all(_storable(v) for v in value)


def object_state(obj) -> dict:
    """The attributes of a loss or optimiser that are data (tensors, numbers, lists of them), the
    state it carries from step to step; its spec and derived caches are left out."""
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
