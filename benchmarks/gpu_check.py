"""A five-minute check of every CUDA path, offline: ``make gpu-check`` / ``python -m benchmarks.gpu_check``.

Runs each of ``CHECKS`` once on synthetic MNIST- and CIFAR-shaped tensors (no data set is read or
fetched; PASS, FAIL or SKIP with its seconds and what it measured; the README's cluster section gives
each one's tolerance), then times an epoch of the MNIST CNN and of WRN-28-10 in the steady state and
estimates the hours of the paper's Tables 1 and 2 (and 3, given Clothing1M) at the K and precision
``idn-grid`` would train them with; on a GPU it records the seconds by K where the grid reads them
(``executors.STACK_SIZES``), so its jobs stack the fastest K measured. Everything goes to one JSON
report (``--report``). By arithmetic about three minutes on one H100, under the five it is sized for.
Without a CUDA device it says so and exits 0; ``--device cpu`` runs the checks on the CPU (those that
need CUDA say SKIP). Exit status 1 if a check failed. Each check has its own run cache; the report
goes to stdout, the runs' progress lines to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from idnhelpers import cache, checkpoint
from idnhelpers.datasets import get_dataset, protocol, register_dataset
from idnhelpers.grid.executors import STACK_SIZES
from idnhelpers.engine import choose_backend, fit, on_device, train_many, worker_devices
from idnhelpers.hardware import describe, native_bf16, resolve_device, resolve_precision, training_settings
from idnhelpers.losses import DAC, DMI, ELR, GCE, PLC, Forward, TruncatedGCE
from idnhelpers.methods import METHODS, Trainer, run_stages
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import make_run
from idnhelpers.steps import Peers

CUDA_ONLY = "needs CUDA"
N_TEST = 128  # test rows of the synthetic runs


class Skipped(Exception):
    """A check that cannot run on this device (its reason)."""


class Failed(Exception):
    """A check whose results differ beyond its tolerance (what differs)."""


@contextlib.contextmanager
def _cache():
    """A fresh, private run cache (``IDNHELPERS_CACHE``; the environment is restored after)."""
    with tempfile.TemporaryDirectory(prefix="idn-gpu-check-") as folder, \
            mock.patch.dict(os.environ, {"IDNHELPERS_CACHE": folder}):
        yield folder


# ---------------------------------------------------------------- synthetic runs (nothing read or fetched)

def _images(n_rows: int, shape: tuple[int, ...], seed: int = 0):
    """``n_rows`` uint8 images of ``shape`` and labels 0-9: a random template per class plus noise, so a
    network learns them and accuracies mean something."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_rows,), generator=g)
    templates = torch.randint(0, 256, (10, *shape), generator=g)
    noise = torch.randint(0, 256, (n_rows, *shape), generator=g)
    return ((3 * templates[y] + noise) // 4).to(torch.uint8), y


def _mnist_runs(n_runs: int, n_rows: int, precision: str, n_epochs: int = 2, batch_size=None, **fields):
    """MNIST CNN runs on ``n_rows`` MNIST-shaped rows (uint8 28 x 28, 10 classes), 30% symmetric noise,
    scored on ``N_TEST`` more; ``fields``: other ``Run`` fields."""
    X, y = _images(n_rows + N_TEST, (1, 28, 28))
    proto = protocol("mnist", n_epochs=n_epochs, batch_size=batch_size)
    return [make_run(X[:n_rows], symmetric_noise(y[:n_rows], 0.3, 10, seed=s), proto, dataset="mnist", seed=s,
                     precision=precision, y_true=y[:n_rows], X_test=X[n_rows:], y_test=y[n_rows:], **fields)
            for s in range(n_runs)]


def _cifar_runs(n_runs: int, n_rows: int, precision: str, model: str = "wrn16_2", n_epochs: int = 2,
                batch_size=None, **fields):
    """WRN runs on CIFAR-shaped rows (uint8 3 x 32 x 32, 10 classes), with augmentation."""
    n_test = min(N_TEST, n_rows)
    X, y = _images(n_rows + n_test, (3, 32, 32))
    proto = protocol("cifar10", n_epochs=n_epochs, model=model, batch_size=batch_size or min(128, n_rows // 2),
                     lr=0.05)
    return [make_run(X[:n_rows], y[:n_rows], proto, dataset="cifar10", seed=s, precision=precision,
                     X_test=X[n_rows:], y_test=y[n_rows:], **fields) for s in range(n_runs)]


# ---------------------------------------------------------------- comparing results

def _agree(tried, alone, *, S_tol=0.02, weight_tol=None) -> str:
    """The largest S difference between pairs of results; Failed where a pair differs by more than
    ``S_tol``, in loss by 2% or in weights by ``weight_tol`` (relative): float summation order."""
    worst = 0.0
    for k, (a, b) in enumerate(zip(tried, alone)):
        if a.S is not None:
            worst = max(worst, (a.S - b.S).abs().max().item())
            if worst > S_tol:
                raise Failed(f"run {k}: S differs by {worst:.3g}")
        gap = max(abs(p - q) for p, q in zip(a.history["loss"], b.history["loss"]))
        if gap > 0.02 * max(b.history["loss"]):
            raise Failed(f"run {k}: losses differ by {gap:.3g}")
        if weight_tol is None:
            continue
        for name, w in a.weights.items():
            v = b.weights[name]
            if w.is_floating_point() and (w - v).abs().max() > weight_tol * (1 + v.abs().max()):
                raise Failed(f"run {k}: {name} differs by {(w - v).abs().max():.3g}")
    return f"max |S difference| {worst:.2g}"


def _same(first, again) -> None:
    """Failed unless each pair of results is equal bit for bit (S, history, weights)."""
    for k, (a, b) in enumerate(zip(first, again)):
        if (a.S is None) != (b.S is None) or (a.S is not None and not torch.equal(a.S, b.S)):
            raise Failed(f"run {k}: S differs")
        if json.dumps(a.history) != json.dumps(b.history):  # NaN equal to NaN
            raise Failed(f"run {k}: histories differ")
        wa, wb = a.weights or {}, b.weights or {}
        if wa.keys() != wb.keys() or not all(torch.equal(wa[name], wb[name]) for name in wa):
            raise Failed(f"run {k}: weights differ")


def _versus_loop(runs, device, backend="stacked", workers=None, **tolerances) -> str:
    """``runs`` trained by ``backend`` against the loop, one by one (``_agree``)."""
    tried = train_many(runs, backend=backend, device=device, use_cache=False, workers=workers)
    alone = train_many(runs, backend="loop", device=device, use_cache=False)
    return _agree(tried, alone, **tolerances)


# ---------------------------------------------------------------- the checks

def check_stacked_mnist(device, precision, quick):
    """Four MNIST CNN runs stacked into one batched call equal the same runs one by one."""
    return _versus_loop(_mnist_runs(4, 128 if quick else 4000, precision), device)


def check_stacked_wrn_batchnorm(device, precision, quick):
    """Stacked WRN-16-2s (BatchNorm, augmentation) equal the loop in fp32, running statistics included."""
    return _versus_loop(_cifar_runs(2, 32 if quick else 512, "fp32"), device, S_tol=0.05, weight_tol=0.01)


def check_stacked_wrn_bf16(device, precision, quick):
    """Two WRN-16-2s stacked in bf16 equal the loop in bf16 (S within 0.05, weights within 5%)."""
    if not native_bf16(device):
        raise Skipped("bf16 is not native here")
    return _versus_loop(_cifar_runs(2, 32 if quick else 512, "bf16"), device, S_tol=0.05, weight_tol=0.05)


def check_coteaching_stacked(device, precision, quick):
    """Co-teaching's two networks per run, stacked over runs, equal the loop."""
    runs = [r.replace(step=Peers(0.3, t_k=1)) for r in _mnist_runs(2, 128 if quick else 4000, precision)]
    return _versus_loop(runs, device)


def check_processes_backend(device, precision, quick):
    """The processes back-end (one worker per GPU) gives each run the loop's result."""
    if device.type == "cuda" and torch.cuda.device_count() > 1 and len(set(worker_devices(device, 2))) != 2:
        raise Failed("two workers did not get two GPUs")
    # One GPU per worker runs the loop's kernels; CPU workers split the cores, so their sums run in another order.
    return _versus_loop(_mnist_runs(2, 128 if quick else 2000, precision), device, "processes", workers=2,
                        S_tol=1e-4 if device.type == "cuda" else 0.02)


def _sync_variants(precision: str):
    """(label, runs of n rows in batches of 32) of the steps the sync check counts: CE one run per call,
    stacked 4 and 12 (Table 1's K), WRN-16-2 with augmentation stacked 2, and stacked pairs of Co-teaching
    and of each loss with code of its own in the step."""
    T = tuple(tuple(0.91 if i == j else 0.01 for j in range(10)) for i in range(10))
    losses = (Forward(T), GCE(), TruncatedGCE(prune_start=1, prune_every=1), DAC(warmup_epochs=0), DMI(), ELR(),
              PLC(warmup_epochs=0))

    def mnist(k, **fields):
        return lambda n_rows: _mnist_runs(k, n_rows, precision, n_epochs=2, batch_size=32, **fields)

    return [("CE, K = 1", mnist(1)), ("CE, K = 4 stacked", mnist(4)), ("CE, K = 12 stacked", mnist(12)),
            ("WRN-16-2 with augmentation, K = 2", lambda n_rows: _cifar_runs(2, n_rows, precision, batch_size=32)),
            ("Co-teaching, K = 2", mnist(2, step=Peers(0.3, 1))),
            *((f"{type(loss).__name__}, K = 2", mnist(2, objective=loss)) for loss in losses)]


def _count_syncs(runs, device) -> int:
    """Host-device synchronisations of ``fit(runs)`` (``torch.cuda.set_sync_debug_mode``'s warnings)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(runs, device, stacked=len(runs) > 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _syncs_per_step(device, precision, count=_count_syncs) -> str:
    """Per kind of step, the synchronisations of two epochs of 4 steps and of two epochs of 16 (128 and
    512 rows, batches of 32, one evaluation call per epoch either way, test sets of one size): Failed
    unless equal, i.e. unless the 24 steps more add a synchronisation."""
    counts = []
    for label, runs in _sync_variants(precision):
        count(runs(128), device)  # warm-up: a first call's set-up synchronisations are not the loop's
        few, many = count(runs(128), device), count(runs(512), device)
        if many != few:
            raise Failed(f"{label}: {many} synchronisations in 32 steps, {few} in 8: {(many - few) / 24:.2g} per step")
        counts.append(few)
    return f"{len(counts)} kinds of step: 0 per step ({min(counts)}-{max(counts)} per 2-epoch call, all set-up/scoring)"


def check_syncs_per_step(device, precision, quick):
    """The training loop's steps never wait on the GPU: 8 and 32 steps of each kind of step (CE at K = 1
    and stacked up to the grid's K, WRN with augmentation, Co-teaching, each loss) synchronise equally
    often (``torch.cuda.set_sync_debug_mode``)."""
    if device.type != "cuda":
        raise Skipped(CUDA_ONLY)
    return _syncs_per_step(device, precision)


def check_out_of_memory_halves_k(device, precision, quick):
    """A real out-of-memory error (allocator capped) makes a grid job halve K and finish."""
    if device.type != "cuda":
        raise Skipped(CUDA_ONLY)
    from idnhelpers.grid.executors import JobTrainer

    runs = _cifar_runs(8, 256, precision, model="wrn28_10", n_epochs=1)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fit(runs[:1], device)
    one = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 2.5 * one) / total), device)
    trainer = JobTrainer("stacked", device, use_cache=False)
    try:
        results = trainer(runs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    k = trainer.fitted.get("k")
    if k is None or k >= 8 or len(results) != 8:
        raise Failed(f"K was not halved (fitted: {k})")
    return f"one run's peak {one / 2 ** 30:.2f} GiB; capped at 2.5 runs: K went 8 -> {k}"


def check_grid_executors(device, precision, quick):
    """A tiny grid through the local and submitit-local executors gives the same table."""
    from idnhelpers.grid import build_grid, run_grid
    from idnhelpers.study import Study

    spec = Study(dataset="digits", methods=("ce", "coteaching"), family="symmetric", noise_rates=(0.2,),
                 seeds=(0, 1), n_epochs=2, n_train=400, n_test=100, precision=precision)
    tables = []
    for executor in ("local", "submitit-local"):
        with _cache() as folder:
            options = {} if executor == "local" else dict(folder=os.path.join(folder, "jobs"), parallel=1)
            tables.append(run_grid(build_grid(spec, device=device), executor, device=device if executor == "local"
                                   else None, progress=False, **options))
    gap = (tables[0].frame["last"] - tables[1].frame["last"]).abs().max()
    if len(tables[0]) != 4 or gap >= 2.0:
        raise Failed(f"the tables differ by {gap:.2f} points")
    return f"last test accuracies differ by {gap:.2g} points at most"


# Small settings under which each method's every stage and special step runs in 2 epochs
METHOD_OPTIONS = {"seal": dict(n_iterations=1), "seal_dmi": dict(n_iterations=1, dmi_options=dict(n_epochs=1)),
                  "dmi": dict(n_epochs=1), "gce_truncated": dict(prune_start=1, prune_every=1),
                  "plc": dict(warmup_epochs=0), "coteaching": dict(t_k=1), "dac": dict(warmup_epochs=1)}


def _method_result(name: str, run, device):
    """Method ``name`` (``METHOD_OPTIONS``' settings) on ``run``, trained on ``device``, no cache."""
    options = {k: v for k, v in METHOD_OPTIONS.get(name, {}).items() if k in METHODS[name].options}
    return run_stages(name, [run], [0.3], Trainer("loop", device, use_cache=False), **options)[0]


def check_methods_vs_cpu(device, precision, quick):
    """Every registered method, trained small on the device in fp32 with TF32 off, gives the CPU's
    result: max |S difference| over its stages <= 0.02, last test accuracy within 2 points (float
    summation order). On the CPU (CPU against CPU) every stage must be equal bit for bit."""
    (run,) = _mnist_runs(1, 128 if quick else 1024, "fp32")
    exact = device.type == "cpu"
    S_tol, acc_tol = (0.0, 0.0) if exact else (0.02, 0.02)
    worst_S = worst_acc = 0.0
    for name in METHODS:
        with training_settings(device, "fp32"):  # TF32 off also where a driver predicts outside fit (Forward's T)
            here = _method_result(name, run, device)
        there = _method_result(name, run, torch.device("cpu"))
        if len(here.stages) != len(there.stages):
            raise Failed(f"{name}: {len(here.stages)} stages here, {len(there.stages)} on the CPU")
        S_gap = max(((a.S - b.S).abs().max().item() for a, b in zip(here.stages, there.stages) if a.S is not None),
                    default=0.0)
        acc_gap = abs(here.history["test_acc"][-1] - there.history["test_acc"][-1])
        if not S_gap <= S_tol or not acc_gap <= acc_tol:
            raise Failed(f"{name}: S differs by {S_gap:.3g}, test accuracy by {100 * acc_gap:.3g} points")
        if exact:
            _same(here.stages, there.stages)
        worst_S, worst_acc = max(worst_S, S_gap), max(worst_acc, acc_gap)
    tolerance = "exact: CPU against CPU" if exact else f"tolerance {S_tol:g} and {100 * acc_tol:g} points"
    return (f"{len(METHODS)} methods: max |S difference| {worst_S:.3g}, test accuracy difference "
            f"{100 * worst_acc:.3g} points ({tolerance})")


class _Killed(Exception):
    """Raised where a process would die: just after a checkpoint is stored."""


def _stop_after_first_checkpoint(runs, device, key: str) -> None:
    """Train ``runs`` stacked, killed just after storing checkpoint ``key`` (after the first epoch)."""
    real_save = cache.save

    def save_then_die(k, payload, *suffix):
        real_save(k, payload, *suffix)
        if k == key and suffix == (checkpoint.SUFFIX,):
            raise _Killed

    with mock.patch.object(cache, "save", save_then_die), contextlib.suppress(_Killed):
        train_many(runs, backend="stacked", device=device)


def check_resume_on_the_device(device, precision, quick):
    """Two stacked WRN-16-2s (BatchNorm, augmentation; fp32, ``deterministic=True``) stopped after
    their first epoch resume on the device, from the checkpoint, to the uninterrupted result bit for bit."""
    runs = [on_device(r, device) for r in _cifar_runs(2, 16 if quick else 256, "fp32", deterministic=True)]
    whole = train_many(runs, backend="stacked", device=device, use_cache=False)
    key = checkpoint.checkpoint_key(runs, True)
    with mock.patch.dict(os.environ, {"IDNHELPERS_CHECKPOINT_SECONDS": "0"}):
        _stop_after_first_checkpoint(runs, device, key)
        stored = cache.load(key, checkpoint.SUFFIX)
        if stored is None or stored["epoch"] != 1:
            raise Failed("no checkpoint after the first epoch")
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            resumed = train_many(runs, backend="stacked", device=device)
    sys.stderr.write(said.getvalue())
    if "resuming after epoch 1" not in said.getvalue():
        raise Failed("the second call did not resume from the checkpoint")
    _same(resumed, whole)
    return "resumed after epoch 1 of 2: equal bit for bit"


def check_deterministic(device, precision, quick):
    """``deterministic=True``: an MNIST CNN run (K = 1) and a stack of two, each trained twice, give
    equal results bit for bit (S, history, weights)."""
    for n_runs in (1, 2):
        runs = _mnist_runs(n_runs, 128 if quick else 2000, precision, deterministic=True)
        first, again = (train_many(runs, backend="stacked" if n_runs > 1 else "loop", device=device,
                                   use_cache=False) for _ in range(2))
        _same(first, again)
    return "K = 1 and K = 2: equal bit for bit"


def check_tf32(device, precision, quick):
    """``precision='tf32'`` trains (its result records TF32) and differs from fp32 only slightly: the MNIST
    CNN's max |S difference| <= 0.05 and last test accuracy within 2 points."""
    if device.type != "cuda":
        raise Skipped(CUDA_ONLY)
    try:
        resolve_precision("tf32", device)
    except ValueError:
        raise Skipped("TF32 needs compute capability 8.0 or later") from None
    (run,) = [on_device(r, device) for r in _mnist_runs(1, 128 if quick else 2000, "fp32")]
    fp32, tf32 = (train_many([run.replace(precision=p)], backend="loop", device=device, use_cache=False)[0]
                  for p in ("fp32", "tf32"))
    if not tf32.hardware.get("tf32"):
        raise Failed("the tf32 result does not record TF32")
    S_gap = (fp32.S - tf32.S).abs().max().item()
    acc_gap = abs(fp32.history["test_acc"][-1] - tf32.history["test_acc"][-1])
    if S_gap > 0.05 or acc_gap > 0.02:
        raise Failed(f"S differs by {S_gap:.3g}, test accuracy by {100 * acc_gap:.3g} points")
    return f"max |S difference| {S_gap:.2g}, test accuracy difference {100 * acc_gap:.2g} points"


def _clothing_folder(root: Path) -> Path:
    """A tiny Clothing1M folder under ``root`` (as tests/test_benchmarks.py's fixture): key lists, label kv
    files and 40 x 48 JPEGs, 16 training and 8 each for validation and test, colour = class."""
    from PIL import Image

    base, rng, kv = root / "clothing1m", np.random.default_rng(0), {"noisy": [], "clean": []}
    for list_name, n in (("noisy_train", 16), ("clean_val", 8), ("clean_test", 8)):
        keys = [f"images/{i % 3}/{list_name}_{i}.jpg" for i in range(n)]
        for i, key in enumerate(keys):
            (base / key).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.full((40, 48, 3), 18 * (i % 14), np.uint8) + rng.integers(0, 10, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / key)
            kv[list_name[:5]].append(f"{key} {i % 14}")
        (base / f"{list_name}_key_list.txt").write_text("\n".join(keys) + "\n")
    for name, lines in kv.items():
        (base / f"{name}_label_kv.txt").write_text("\n".join(lines) + "\n")
    return root


def _streamed_epoch(source) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch of a ``StreamSource``'s augmented training batches of 4, then its evaluation batches."""
    batches = list(source.train_batches([torch.Generator().manual_seed(0)], 4, True, False))
    return batches + [(torch.zeros(0), x) for x in source.eval_batches()]


def check_clothing1m_loader(device, precision, quick):
    """Clothing1M's loader on a tiny synthetic folder: its worker processes deliver (pinned on CUDA)
    to the device the batches an in-process loader makes on the CPU, bit for bit, and a WRN-16-2
    trained an epoch on the streamed images there gives the CPU's result (S within 0.02; exact on the CPU)."""
    from idnhelpers.clothing1m import PROTOCOL, ImageFiles, StreamSource, load_clothing1m
    from idnhelpers.runs import Labelled, Run

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="idn-gpu-check-") as folder:
        root = str(_clothing_folder(Path(folder)))
        splits = load_clothing1m(root)

        def files(split, workers):
            return ImageFiles(splits[split][0], root, resize=36, crop=32, workers=workers)

        streamed, inline = StreamSource(files("train", 2), device), StreamSource(files("train", 0), cpu)
        for (rows, x), (rows0, x0) in zip(_streamed_epoch(streamed), _streamed_epoch(inline), strict=True):
            if x.device.type != device.type or not (torch.equal(rows.cpu(), rows0) and torch.equal(x.cpu(), x0)):
                raise Failed("the workers' batches on the device differ from the in-process loader's")
        if device.type == "cuda" and not all(loader.pin_memory for loader in streamed.loaders.values()):
            raise Failed("a CUDA loader does not pin its memory")
        proto = PROTOCOL.replace(model="wrn16_2", n_epochs=1, batch_size=8, milestones=())

        def trained(workers, on):
            run = Run(files("train", workers), splits["train"][1], proto,
                      test=Labelled(files("test", workers), splits["test"][1]))
            return train_many([run], backend="loop", device=on, use_cache=False)

        results = trained(2, device) + trained(0, cpu)
    if device.type == "cpu":
        _same(results[:1], results[1:])
        return "batches and an epoch's result equal bit for bit"
    return "batches equal bit for bit; an epoch's " + _agree(results[:1], results[1:])


CHECKS = {
    "stacked MNIST CNN": check_stacked_mnist,
    "stacked WRN with BatchNorm": check_stacked_wrn_batchnorm,
    "stacked WRN in bf16": check_stacked_wrn_bf16,
    "Co-teaching stacked": check_coteaching_stacked,
    "processes back-end": check_processes_backend,
    "syncs per step": check_syncs_per_step,
    "out of memory halves K": check_out_of_memory_halves_k,
    "grid executors": check_grid_executors,
    "methods vs CPU": check_methods_vs_cpu,
    "resume on the device": check_resume_on_the_device,
    "deterministic": check_deterministic,
    "tf32": check_tf32,
    "Clothing1M loader": check_clothing1m_loader,
}


def run_check(name: str, device, precision: str, quick: bool) -> dict:
    """Run check ``name`` in a private cache; print its verdict line; return verdict, seconds and figure."""
    start = time.perf_counter()
    try:
        with _cache():
            verdict, text = "PASS", CHECKS[name](device, precision, quick)
    except Skipped as why:
        verdict, text = "SKIP", str(why)
    except Failed as problem:
        verdict, text = "FAIL", str(problem)
    except Exception as error:  # a check that crashes is a failed check; the others still run
        verdict, text = "FAIL", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    seconds = time.perf_counter() - start
    print(f"{verdict} {name:<28} {seconds:6.1f} s" + (f"  {text}" if text else ""), flush=True)
    return dict(verdict=verdict, seconds=round(seconds, 1), figure=text)


# ---------------------------------------------------------------- seconds per epoch, the tables' hours, the report

def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(make_runs, k: int, device) -> float:
    """Seconds of one epoch of ``k`` runs (stacked if k > 1) in the steady state: a 2-epoch fit less a
    1-epoch fit, after an untimed 1-epoch fit (set-up, network initialisation and data upload cancel); half
    the 2-epoch fit where other work on the device leaves no difference (an upper bound, never zero)."""
    seconds = []
    for n_epochs in (1, 1, 2):
        runs = make_runs(k, n_epochs)
        _sync(device)
        start = time.perf_counter()
        fit(runs, device, stacked=k > 1)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    steady = seconds[2] - seconds[1]
    return steady if steady > 0 else seconds[2] / 2


@contextlib.contextmanager
def _synthetic(dataset: str):
    """``dataset`` (mnist, cifar10) registered as blank images, the training ones labelled with the published
    IDN files' true labels: what planning a table reads (it counts rows and epochs), so nothing is fetched."""
    from idnhelpers.published import PUBLISHED_RATES, load_published_idn

    spec = get_dataset(dataset)
    y_train = load_published_idn(dataset, PUBLISHED_RATES[0])[0].numpy()

    def load(root, train, verify):
        y = y_train if train else np.arange(10_000) % 10
        return np.zeros((len(y), *spec.input_shape), np.uint8), y

    register_dataset(dataclasses.replace(spec, load=load), replace=True)
    try:
        yield
    finally:
        register_dataset(spec, replace=True)


def table_precision(table: int, device) -> str:
    """The precision of the README's ``idn-grid --table N``: Table 1 in ``Study``'s default fp32, Tables 2
    and 3 with ``--set precision=bf16`` (fp32 where the device lacks bf16, as a V100 does)."""
    return "bf16" if table in (2, 3) and native_bf16(device) else "fp32"


def table_stacks(device, table: int, **settings):
    """Table ``table``'s grid as ``idn-grid --table N`` trains it on this kind of device, and its
    ``train_many`` calls' stacks ``(K, runs)``: one call per stage of a job (a method's cells,
    ``make_jobs``), the runs no earlier call trained grouped as ``engine.train_many`` groups them: on CUDA
    stacked by ``Run.stack_signature``, K the whole group at most (``JobTrainer``), on a CPU one run per
    call (``engine.choose_backend``)."""
    from idnhelpers.grid import build_grid
    from idnhelpers.grid.plan import make_jobs, trace
    from idnhelpers.paper import TABLES
    from idnhelpers.study import Study

    study = Study(**TABLES[table], precision=table_precision(table, device), **settings)
    stand_in = _synthetic(study.dataset) if study.dataset != "clothing1m" else contextlib.nullcontext()
    with stand_in, _cache():
        grid = build_grid(study, device="cpu", train_labels=False, device_type=device.type)
        traces = {id(t.cell): t for t in trace(grid.cells, progress=False)}
    stacks, seen = [(1, [run]) for run in grid.prerequisites], set()
    for job in make_jobs(grid.cells):
        for stage in zip(*(traces[id(cell)].stages for cell in job.cells)):
            new = list({run.key(): run for run, result in stage if result is None and run.key() not in seen}.values())
            seen.update(run.key() for run in new)
            if choose_backend("auto", device, new) != "stacked":
                stacks += [(1, [run]) for run in new]
                continue
            groups = {}
            for run in new:
                groups.setdefault(run.stack_signature(), []).append(run)
            stacks += [(len(group), group) for group in groups.values()]
    return grid, stacks


def measure(device, quick: bool, grid_ks) -> dict:
    """Seconds per epoch per run on 1000 rows by (model, precision, K), in the steady state: the MNIST CNN
    in Table 1's precision at K = 1, 8, 32 (quick: 1, 8) and ``grid_ks``; WRN-28-10 (WRN-16-2 with
    ``quick``) in Table 2's at K = 1, 2, 4 (quick: 1, 2). Prints each at the full training set."""
    wrn = "wrn16_2" if quick else "wrn28_10"
    plans = [("mnist_cnn", table_precision(1, device), sorted({1, 8, *grid_ks} | (set() if quick else {32})),
              60000, 256 if quick else 10000),
             (wrn, table_precision(2, device), (1, 2) if quick else (1, 2, 4), 50000, 16 if quick else 2500)]
    per_1000 = {}
    for model, precision, ks, full, rows in plans:
        for k in ks:
            def make_runs(n_runs, n_epochs):
                return (_mnist_runs(n_runs, rows, precision, n_epochs) if model == "mnist_cnn"
                        else _cifar_runs(n_runs, rows, precision, model=model, n_epochs=n_epochs))

            per_1000[model, precision, k] = epoch_seconds(make_runs, k, device) / k / rows * 1000
            print(f"{model} K={k:<3} {per_1000[model, precision, k] * full / 1000:8.2f} s per epoch per run "
                  f"({precision}, steady state, {full:,} rows)", flush=True)
    return per_1000


def _hours(stacks, seconds_per_1000_rows) -> float:
    """Hours of ``stacks`` at ``seconds_per_1000_rows(K)``: a run's epoch on 1000 rows, per network."""
    return sum(seconds_per_1000_rows(k) * len(run.data) / 1000 * run.protocol.n_epochs * run.step.n_networks
               for k, runs in stacks for run in runs) / 3600


def table_estimate(table: int, grid, stacks, per_1000: dict, model: str, device) -> dict:
    """Table ``table``'s grid as idn-grid trains it here (counts, precision, K) and its hours at ``model``'s
    measured seconds: a stage of K runs at the fastest K measured up to K (the grid stacks the fastest
    measured K, ``executors.measured_stack_size``), and one run per call."""
    precision = grid.study.precision
    measured = {k: s for (m, p, k), s in per_1000.items() if (m, p) == (model, precision)}
    runs = [run for _, group in stacks for run in group]
    estimate = dict(cells=len(grid.cells), runs=len(runs), precision=precision, model_timed=model,
                    run_epochs=sum(run.protocol.n_epochs * run.step.n_networks for run in runs),
                    stacks=sorted({k for k, _ in stacks}),
                    hours=_hours(stacks, lambda k: min(s for K, s in measured.items() if K <= k)),
                    hours_one_run_per_call=_hours(stacks, lambda k: measured[1]))
    how = (f"K = {', '.join(map(str, estimate['stacks']))} runs per stage, each call stacking the fastest "
           "K measured up to it" if device.type == "cuda" else "K = 1: a CPU trains one run per call")
    print(f"Table {table} (paper protocol): {estimate['cells']} cells, {estimate['runs']} runs, "
          f"{estimate['run_epochs']} run-epochs, as idn-grid --table {table} trains them on {device.type}: precision "
          f"{precision}, {how}: {estimate['hours']:.1f} hours on this device ({estimate['hours_one_run_per_call']:.1f} "
          f"one run per call; {model}'s seconds)", flush=True)
    return estimate


def table3_estimate(device, quick: bool, weights: str | None, per_1000: dict) -> dict:
    """Table 3's grid where Clothing1M is under the data root and ``weights`` names its ImageNet ResNet-50
    (its file lists give the rows), at ResNet-50's measured seconds on 224 x 224 images one run per call
    (its runs stream images): a lower bound, without the images' decoding; else why not."""
    from idnhelpers.clothing1m import clothing1m_available

    if weights is None or not clothing1m_available():
        why = ("not estimated: give --clothing1m-weights FILE (the ImageNet ResNet-50 of idn-grid --table 3) with "
               "Clothing1M under the data root: its file lists give the grid's rows")
        print(f"Table 3: {why}", flush=True)
        return dict(hours=None, why=why)
    grid, stacks = table_stacks(device, 3, clothing1m_weights=weights)
    precision, rows = grid.study.precision, 4 if quick else 256
    X, y = _images(rows, (3, 224, 224))
    proto = grid.cells[0].run.protocol.replace(pretrained=None, batch_size=min(rows, 64))

    def make_runs(n_runs, n_epochs):
        return [make_run(X, y, proto.replace(n_epochs=n_epochs), dataset="clothing1m", precision=precision)]

    per_1000["resnet50", precision, 1] = epoch_seconds(make_runs, 1, device) / rows * 1000
    print(f"resnet50 K=1   {per_1000['resnet50', precision, 1]:8.2f} s per 1000 images per run ({precision}, steady "
          "state, decoding not counted)", flush=True)
    return table_estimate(3, grid, stacks, per_1000, "resnet50", device)


def write_stack_sizes(per_1000: dict, device) -> None:
    """Record the measured seconds per run-epoch by K where the grid reads them (``executors.STACK_SIZES``
    in the run cache), so its jobs stack the fastest K measured on this kind of GPU."""
    path = cache.cache_dir() / STACK_SIZES
    table = json.loads(path.read_text()) if path.exists() else {}
    for (model, precision, k), seconds in per_1000.items():
        table.setdefault(f"{model} {device.type} {precision}", {})[str(k)] = seconds
    cache.atomic_write(path, lambda f: f.write(json.dumps(table, indent=1, sort_keys=True).encode()))
    print(f"stack sizes the grid will use ({path}): " + ", ".join(
        f"{key}: K = {min(by_k, key=by_k.get)}" for key, by_k in sorted(table.items())), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the checks that need no GPU)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check of the checks, not of the GPU")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), metavar="CHECK",
                        help=f"run only these checks: {', '.join(CHECKS)}")
    parser.add_argument("--clothing1m-weights", metavar="FILE", help="the ImageNet ResNet-50 state_dict of "
                        "idn-grid --table 3: with Clothing1M under the data root, Table 3's hours are estimated too")
    parser.add_argument("--report", default="gpu-check.json", metavar="FILE",
                        help="the JSON report: hardware, every check, seconds per epoch, the tables' hours "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the GPU checks need one; --device cpu runs those that do not)")
        return 0
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    precision = resolve_precision("auto", device)
    report = dict(device=describe(device, precision), quick=args.quick,
                  checks={name: run_check(name, device, precision, args.quick) for name in args.only or CHECKS})
    if not args.only:
        table1, table2 = table_stacks(device, 1), table_stacks(device, 2)
        per_1000 = measure(device, args.quick, {k for k, _ in table1[1]})
        wrn = "wrn16_2" if args.quick else "wrn28_10"
        report["seconds_per_epoch_per_1000_rows"] = [dict(model=m, precision=p, k=k, seconds=s)
                                                     for (m, p, k), s in per_1000.items()]
        report["tables"] = {"1": table_estimate(1, *table1, per_1000, "mnist_cnn", device),
                            "2": table_estimate(2, *table2, per_1000, wrn, device),
                            "3": table3_estimate(device, args.quick, args.clothing1m_weights, per_1000)}
        if device.type == "cuda" and not args.quick:
            write_stack_sizes(per_1000, device)
    Path(args.report).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"report: {args.report}")
    return 1 if any(c["verdict"] == "FAIL" for c in report["checks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
