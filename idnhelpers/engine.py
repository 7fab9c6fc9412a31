"""Train-or-load: ``train(run)`` and ``train_many(runs, backend=...)`` return ``runs.RunResult``
values, loading runs already in the cache and training the others with ``training.fit``.

Back-ends: ``"loop"`` (one run after another), ``"processes"`` (worker processes, each with its share
of the CPU threads and, on CUDA, its own GPU; a script using it needs the ``__main__`` guard),
``"stacked"`` (runs that differ only in targets, seeds, starting weights and ``per_run`` fields train
K at a time as one batched network) and ``"auto"``. Each gives a run the result it gets alone
(stacked: up to float summation order).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from . import cache
from .checks import check_choice, check_int, fail
from .hardware import cpu_cores, resolve_device, training_settings
from .runs import Run, RunResult, Tensors
from .steps import ModuleBank, Single
from .training import fit, init_networks, on_device, softmax_of

BACKENDS = ("auto", "loop", "processes", "stacked")
WAIT_SECONDS = 2.0


def train(run: Run, *, device=None, use_cache: bool = True) -> RunResult:
    """Train ``run`` (or load its result from the cache)."""
    return train_many([run], backend="loop", device=device, use_cache=use_cache)[0]


def train_many(runs, *, backend: str = "auto", device=None, use_cache: bool = True, workers: int | None = None,
               stack_size: int | None = None) -> list[RunResult]:
    """Results of ``runs``, in order: loaded from the cache, the rest trained by ``backend``
    (``stack_size`` caps K, ``workers`` the processes), each locked while it trains; runs another
    process has locked are waited for and loaded."""
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
    results = [load(run) if use_cache else None for run in runs]
    while any(result is None for result in results):
        missing = defaultdict(list)  # key -> indices of the runs that want it
        for i, run in enumerate(runs):
            if results[i] is None:
                missing[run.key()].append(i)
        locks = {key: cache.Lock.acquire(key) for key in missing} if use_cache else {}
        held = [key for key in missing if not use_cache or locks[key] is not None]
        try:  # of the runs wanting a key, the one trained keeps its weights, if any does
            wanted = {key: next((runs[i] for i in missing[key] if runs[i].keep != "none"), runs[missing[key][0]])
                      for key in held}
            # another process may have stored a result between our first look and taking its lock
            stored = {key: load(wanted[key]) if use_cache else None for key in held}
            todo = [key for key in held if stored[key] is None]
            trained = {}
            for i, result in _train_runs([wanted[key] for key in todo], backend, device, workers, stack_size,
                                         resumable=use_cache):
                if use_cache:  # stored as soon as trained: a process killed mid-call keeps what it finished
                    cache.save(todo[i], result.payload())
                trained[todo[i]] = result
        finally:
            for lock in locks.values():
                if lock is not None:
                    lock.release()
        for key in held:
            for i in missing[key]:
                results[i] = _as_requested(trained[key] if key in trained else stored[key], runs[i])
        busy = [key for key in missing if key not in held]
        if busy:  # loaded by the next round, or trained here if their holder died first
            _wait_for(busy)
    return results


def choose_backend(backend: str, device: torch.device, runs: list[Run]) -> str:
    """``backend``, with "auto" resolved: stacked on CUDA for runs on tensors, else the loop (on a
    CPU batched convolutions measured slower; streamed images train one run per call)."""
    if backend != "auto":
        return backend
    on_tensors = all(isinstance(run.data, Tensors) for run in runs)
    return "stacked" if device.type == "cuda" and on_tensors else "loop"


def load(run: Run) -> RunResult | None:
    """The cached result of ``run``, or None (also when it lacks the weights the run keeps)."""
    payload = cache.load(run.key())
    if payload is None:
        return None
    try:
        result = RunResult(**payload)
    except TypeError as error:
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


def _train_runs(runs: list[Run], backend: str, device, workers, stack_size, resumable: bool):
    """Train ``runs``, yielding ``(index, result)`` as each ``fit`` call finishes."""
    if backend == "processes" and len(runs) > 1:
        devices = worker_devices(device, workers)[:len(runs)]
        context = get_context("spawn")
        handed_out = context.Queue()  # each worker takes one device when it starts
        for d in devices:
            handed_out.put(str(d))
        with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_take_device,
                                 initargs=(handed_out, max(1, cpu_cores() // len(devices)))) as pool:
            yield from enumerate(pool.map(_fit_in_worker, runs, [resumable] * len(runs)))
        return
    groups = defaultdict(list)  # stacked: the runs that can train in one call; else one group per run
    for i, run in enumerate(runs):
        groups[run.stack_signature() if backend == "stacked" else i].append(i)
    for indices in groups.values():
        size = stack_size or len(indices)
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            yield from zip(chunk, fit([runs[i] for i in chunk], device, stacked=len(chunk) > 1, resumable=resumable))


def worker_devices(device: torch.device, workers: int | None = None) -> list[torch.device]:
    """The device of each worker process: on a CPU ``workers`` (default: one per core) sharing it;
    on ``cuda`` ``workers`` (default: one per GPU) spread over the GPUs in turn; on ``cuda:N`` all
    on GPU N (default: one)."""
    device = torch.device(device)
    if device.type != "cuda":
        return [device] * (workers or cpu_cores())
    if device.index is not None:
        return [device] * (workers or 1)
    n_gpus = torch.cuda.device_count()
    return [torch.device("cuda", i % n_gpus) for i in range(workers or n_gpus)]


_worker_device = None  # this worker process's device


def _take_device(handed_out, threads: int) -> None:
    global _worker_device
    _worker_device = torch.device(handed_out.get())
    torch.set_num_threads(threads)
    if _worker_device.type == "cuda":
        torch.cuda.set_device(_worker_device)  # its one CUDA context, on its own GPU


def _fit_in_worker(run: Run, resumable: bool) -> RunResult:
    return fit([run], _worker_device, resumable=resumable)[0]


@torch.no_grad()
def predict(run: Run, weights: dict, *, device=None, all_outputs: bool = False) -> torch.Tensor:
    """Softmax (eval mode, n x c) of ``run``'s network with ``weights`` on its training instances;
    ``all_outputs``: over every output, DAC's abstention one included."""
    device = resolve_device(device)
    model = init_networks(run.replace(init=weights, step=Single()), device)[0]
    bank = ModuleBank([model])
    bank.train(False)
    n_outputs = run.n_classes + (run.objective.extra_outputs if all_outputs else 0)
    with training_settings(device, run.precision, run.deterministic):  # TF32 as the run trained: off for fp32
        return softmax_of(bank, run.data.source(device), n_outputs, run.precision, device)[0]
