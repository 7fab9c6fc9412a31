"""A five-minute check of every CUDA path: ``make gpu-check`` / ``python -m benchmarks.gpu_check``.

Runs each of ``CHECKS`` once (PASS, FAIL or SKIP with its seconds; the README's cluster section says
what each proves), then times an epoch of the MNIST CNN (K = 1, 8, 32 stacked runs) and WRN-28-10
(K = 1, 2) and estimates the hours of the paper's Table 1 grid. Without a CUDA device it says so and
exits 0; ``--device cpu`` runs the checks that need no GPU. Exit status 1 if a check failed. Each
check has its own run cache; the report goes to stdout, the runs' progress lines to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from unittest import mock

import torch

from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.engine import fit, train_many, worker_devices
from idnhelpers.hardware import describe, native_bf16, resolve_device, resolve_precision
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import make_run
from idnhelpers.steps import Peers

CUDA_ONLY = "needs CUDA"


@contextlib.contextmanager
def _cache():
    """A fresh, private run cache (``IDNHELPERS_CACHE``; the environment is restored after)."""
    with tempfile.TemporaryDirectory(prefix="idn-gpu-check-") as folder, \
            mock.patch.dict(os.environ, {"IDNHELPERS_CACHE": folder}):
        yield folder


def _mnist_runs(n_runs: int, n_rows: int, precision: str, n_epochs: int = 2):
    X, y, _ = subset(*load_dataset("mnist"), n_rows, seed=0)
    Xt, yt = load_dataset("mnist", train=False)
    return [make_run(X, symmetric_noise(y, 0.3, 10, seed=s), protocol("mnist", n_epochs=n_epochs), dataset="mnist",
                     seed=s, precision=precision, X_test=Xt[:1000], y_test=yt[:1000]) for s in range(n_runs)]


def _cifar_runs(n_runs: int, n_rows: int, precision: str, model: str = "wrn16_2", n_epochs: int = 2):
    """WRN runs on random CIFAR-shaped images (what is checked is arithmetic, not accuracy)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (n_rows, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_rows,), generator=g)
    proto = protocol("cifar10", n_epochs=n_epochs, model=model, batch_size=min(128, n_rows // 2), lr=0.05)
    return [make_run(X, y, proto, dataset="cifar10", seed=s, precision=precision, X_test=X[:256], y_test=y[:256])
            for s in range(n_runs)]


def _agree(stacked, alone, *, S_tol=0.02, weight_tol=None) -> str:
    """'' if every pair of results agrees up to float summation order, else what differs."""
    for k, (a, b) in enumerate(zip(stacked, alone)):
        if a.S is not None and (a.S - b.S).abs().max() > S_tol:
            return f"run {k}: S differs by {(a.S - b.S).abs().max():.3g}"
        gap = max(abs(p - q) for p, q in zip(a.history["loss"], b.history["loss"]))
        if gap > 0.02 * max(b.history["loss"]):
            return f"run {k}: losses differ by {gap:.3g}"
        if weight_tol is not None:
            for name, w in a.weights.items():
                v = b.weights[name]
                if w.is_floating_point() and (w - v).abs().max() > weight_tol * (1 + v.abs().max()):
                    return f"run {k}: {name} differs by {(w - v).abs().max():.3g}"
    return ""


def _versus_loop(runs, device, backend="stacked", workers=None, **tolerances) -> str:
    """What differs between ``runs`` trained by ``backend`` and by the loop, one by one."""
    tried = train_many(runs, backend=backend, device=device, use_cache=False, workers=workers)
    alone = train_many(runs, backend="loop", device=device, use_cache=False)
    return _agree(tried, alone, **tolerances)


def check_stacked_mnist(device, precision, quick):
    """Four MNIST CNN runs stacked into one batched call equal the same runs one by one."""
    return _versus_loop(_mnist_runs(4, 600 if quick else 4000, precision), device)


def check_stacked_wrn_batchnorm(device, precision, quick):
    """Stacked WRN-16-2s (BatchNorm, augmentation) equal the loop, running statistics included, in fp32 and bf16."""
    for p in ("fp32", "bf16") if native_bf16(device) else ("fp32",):
        tol = 0.05 if p == "bf16" else 0.01
        problem = _versus_loop(_cifar_runs(2, 64 if quick else 512, p), device, S_tol=0.05, weight_tol=tol)
        if problem:
            return f"{p}: {problem}"
    return ""


def check_coteaching_stacked(device, precision, quick):
    """Co-teaching's two networks per run, stacked over runs, equal the loop."""
    runs = [r.replace(step=Peers(0.3, t_k=1)) for r in _mnist_runs(2, 600 if quick else 4000, precision)]
    return _versus_loop(runs, device)


def check_processes_backend(device, precision, quick):
    """The processes back-end (one worker per GPU) gives each run the loop's result."""
    if device.type == "cuda" and torch.cuda.device_count() > 1 and len(set(worker_devices(device, 2))) != 2:
        return "two workers did not get two GPUs"
    # One GPU per worker runs the loop's kernels; CPU workers split the cores, so their sums run in another order.
    return _versus_loop(_mnist_runs(2, 400 if quick else 2000, precision), device, "processes", workers=2,
                        S_tol=1e-4 if device.type == "cuda" else 0.02)


def check_syncs_per_epoch(device, precision, quick):
    """Training waits on the GPU a few times per epoch (recording, scoring), never once per step."""
    if device.type != "cuda":
        return CUDA_ONLY
    (run,) = _mnist_runs(1, 2048, precision, n_epochs=1)
    fit([run], device)  # warm-up: first-call set-up syncs are not the loop's
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit([run], device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    steps = -(-len(run.data) // run.protocol.batch_size)
    print(f"    {syncs} host-device synchronisations in an epoch of {steps} steps", file=sys.stderr)
    return "" if syncs < steps else f"{syncs} synchronisations for {steps} steps"


def check_out_of_memory_halves_k(device, precision, quick):
    """A real out-of-memory error (allocator capped) makes a grid job halve K and finish."""
    if device.type != "cuda":
        return CUDA_ONLY
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
    print(f"    one run's peak {one / 2 ** 30:.2f} GiB; capped at 2.5 runs: K went 8 -> {k}", file=sys.stderr)
    return "" if k is not None and k < 8 and len(results) == 8 else f"K was not halved (fitted: {k})"


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
    return "" if len(tables[0]) == 4 and gap < 2.0 else f"the tables differ by {gap:.2f} points"


CHECKS = {
    "stacked MNIST CNN": check_stacked_mnist,
    "stacked WRN with BatchNorm": check_stacked_wrn_batchnorm,
    "Co-teaching stacked": check_coteaching_stacked,
    "processes back-end": check_processes_backend,
    "syncs per epoch": check_syncs_per_epoch,
    "out of memory halves K": check_out_of_memory_halves_k,
    "grid executors": check_grid_executors,
}


def seconds_per_epoch(device, precision, quick) -> dict:
    """Seconds per epoch per run of the paper's networks stacked K at a time, scaled to the full
    training sets (60,000 MNIST rows, 50,000 CIFAR-10 rows) from a measured epoch on part of them."""
    sizes = {"mnist_cnn": ((1, 8, 32), 60000, 600 if quick else 10000),
             "wrn16_2" if quick else "wrn28_10": ((1, 2), 50000, 64 if quick else 5000)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda device: None)
    out = {}
    for model, (ks, full, rows) in sizes.items():
        for k in ks[:2] if quick else ks:
            runs = (_mnist_runs(k, rows, precision, n_epochs=1) if model == "mnist_cnn"
                    else _cifar_runs(k, rows, precision, model=model, n_epochs=1))
            fit(runs, device, stacked=k > 1)  # warm-up epoch, untimed
            sync(device)
            start = time.perf_counter()
            fit(runs, device, stacked=k > 1)
            sync(device)
            out[(model, k)] = (time.perf_counter() - start) * full / rows / k
    return out


def table1_estimate(per_run_seconds: dict) -> str:
    """GPU-hours of the paper's Table 1 grid (idn-grid --table 1) at the measured MNIST CNN seconds
    per epoch, one run per call and at the best K."""
    from idnhelpers.grid import build_grid, plan
    from idnhelpers.paper import TABLES
    from idnhelpers.study import Study

    study = Study(**TABLES[1], precision="fp32")
    with _cache():
        p = plan(build_grid(study, device="cpu", train_labels=False, device_type="cuda"), device="cuda")
    thousand_row_epochs = float((p.table["run_epochs"] * p.table["rows"] / 1000).sum())
    mnist = {k: s for (model, k), s in per_run_seconds.items() if model == "mnist_cnn"}
    best = min(mnist, key=mnist.get)
    hours = {k: thousand_row_epochs * mnist[k] / 60 / 3600 for k in (1, best)}
    return (f"Table 1 (paper protocol): {len(p.status)} cells, {p.runs} runs, {int(p.table['run_epochs'].sum())} "
            f"run-epochs of 60,000 rows: {hours[1]:.1f} hours on this device one run per call, {hours[best]:.1f} "
            f"at K = {best}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the checks that need no GPU)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check of the checks, not of the GPU")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), metavar="CHECK",
                        help=f"run only these checks: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the GPU checks need one; --device cpu runs those that do not)")
        return 0
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    precision = resolve_precision("auto", device)
    print(f"device: {describe(device, precision)}")
    failed = 0
    with _cache():
        for name in args.only or CHECKS:
            start = time.perf_counter()
            try:
                problem = CHECKS[name](device, precision, args.quick)
            except Exception as error:  # a check that crashes is a failed check; the others still run
                problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            verdict = "SKIP" if problem == CUDA_ONLY else "FAIL" if problem else "PASS"
            failed += verdict == "FAIL"
            print(f"{verdict} {name:<28} {time.perf_counter() - start:6.1f} s" + (f"  {problem}" if problem else ""),
                  flush=True)
        if not args.only:
            rates = seconds_per_epoch(device, precision, args.quick)
            for (model, k), seconds in rates.items():
                print(f"{model} K={k:<3} {seconds:8.2f} s per epoch per run ({precision})")
            print(table1_estimate(rates))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
