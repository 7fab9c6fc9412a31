"""Running a grid's jobs: here (``local``), as a Slurm job array, in submitit's local processes or
its debug executor. Jobs share the cache, whose per-key lock keeps two from training one run; a run
is stored once trained, so a grid run again after a failure trains only what is missing. On CUDA a
stage trains its cells K at a time, stacked, with K halved until it fits the GPU's memory."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import cache, engine
from ..checks import check_choice, check_int, fail
from ..hardware import cpu_cores, resolve_device, resolve_precision
from ..methods import Trainer, run_stages
from ..progress import clock, use_bars
from ..results import Results
from ..models import build_model
from ..runs import Run, RunResult, Tensors
from ..study import Study
from .plan import Job, as_grid, build_grid, collect, plan

# the executors and the options each takes (``executor_options``)
OPTIONS = {"local": (), "slurm": ("folder", "partition", "gpus", "cpus", "time_min", "array_parallelism"),
           "submitit-local": ("folder", "gpus", "time_min", "parallel"), "debug": ("folder",)}
EXECUTORS = tuple(OPTIONS)
DEFAULT_TIME_MIN = 24 * 60  # a submitit job's time limit (minutes) unless given
CPUS_PER_GPU = 8  # a Slurm job's CPU cores per GPU unless given: Clothing1M's image decoders run on them
MAX_TIMEOUTS = 100  # requeues after a Slurm time limit where a job's hours are unknown (submitit's default: 3)
STACK_SIZES = "stack_sizes.json"  # in the cache folder: make gpu-check's seconds per run-epoch by K
POLL_SECONDS = {"slurm": 1.0, "submitit-local": 0.1, "debug": 0.0}  # between checks of the jobs' states


@dataclass(frozen=True)
class JobTrainer(Trainer):
    """A grid job's trainer: each stage's run keys go first to the file ``report`` (``grid_progress`` reads
    it); K is ``stack_size``, else the fastest measured (``measured_stack_size``), else all the stage's runs;
    on CUDA a stacked call out of memory is retried with half as many runs, a K kept for later stages."""

    report: str | None = None
    fitted: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, runs: list[Run]) -> list[RunResult]:
        if self.report is not None:
            with open(self.report, "a") as f:
                f.write("".join(f"{run.key()}\n" for run in runs))
        k = self.fitted.get("k", self.stack_size or measured_stack_size(runs[0]))
        while True:
            try:
                return engine.train_many(runs, backend=self.backend, device=self.device, use_cache=self.use_cache,
                                         stack_size=k, workers=self.workers)
            except RuntimeError as error:  # torch.cuda.OutOfMemoryError is one
                tried = min(k or len(runs), len(runs))
                if not out_of_memory(error) or tried == 1 or self.backend == "loop":  # halving K helps stacks only
                    raise
                k = self.fitted["k"] = (tried + 1) // 2
                print(f"out of GPU memory with {tried} stacked runs ({type(error).__name__}): retrying {k} at a time",
                      file=sys.stderr)
            # here, after the except block, the traceback and the failed step's tensors are gone
            torch.cuda.empty_cache()


def measured_stack_size(run: Run) -> int | None:
    """The K with the fewest seconds per run-epoch that ``make gpu-check`` measured on this cluster for
    ``run``'s model, device type and precision (``STACK_SIZES``, in the cache folder; 1: the loop pays
    best), or None where nothing was measured."""
    path = cache.cache_dir() / STACK_SIZES
    if not path.exists():
        return None
    try:
        measured = json.loads(path.read_text()).get(f"{run.protocol.model} {run.device_type} {run.precision}", {})
        seconds = {int(k): float(s) for k, s in measured.items()}
    except (ValueError, AttributeError, TypeError):
        fail(STACK_SIZES, str(path), '{"<model> <device> <precision>": {"<K>": seconds per run-epoch}}, as '
             "python -m benchmarks.gpu_check writes it (delete it to stack every run of a stage)")
    return min(seconds, key=seconds.get) if seconds else None


# besides torch.cuda.OutOfMemoryError, cuDNN raises a plain RuntimeError near the limit
OUT_OF_MEMORY_MESSAGES = ("CUDA out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                          "unable to find an engine to execute this computation", "CUDA error: out of memory")


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the GPU running out of memory, in any of the forms CUDA and cuDNN raise."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in OUT_OF_MEMORY_MESSAGES))


def visible_gpus() -> list[int]:
    """The GPU indices submitit-local gives its jobs: ``CUDA_VISIBLE_DEVICES``'s (index 0 under
    ``CUDA_VISIBLE_DEVICES=2,3`` would be the machine's GPU 0), else 0..n-1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return list(range(torch.cuda.device_count()))
    names = [d.strip() for d in listed.split(",") if d.strip()]
    if not all(d.lstrip("-").isdigit() for d in names):
        fail("CUDA_VISIBLE_DEVICES", listed, "GPU indices (e.g. 2,3) for submitit-local, which passes indices on")
    return list(itertools.takewhile(lambda d: d >= 0, map(int, names)))  # CUDA stops at an invalid index


class GridJob:
    """``run_job``: train one job's cells (``methods.run_stages``) and return their number; ``progress``:
    the file of each stage's run keys (``JobTrainer.report``). As submitit runs it, warned of its time limit
    or pre-emption, a Slurm job is requeued (``checkpoint``) and trains only what is not stored, resuming a
    run from its checkpoint."""

    def __call__(self, job: Job, device=None, stack_size: int | None = None, threads: int | None = None,
                 progress: str | Path | None = None) -> int:
        if threads is not None:
            torch.set_num_threads(threads)
        if progress is not None:
            Path(progress).parent.mkdir(parents=True, exist_ok=True)
        wanted = {c.run.device_type for c in job.cells}
        if "cuda" in wanted and resolve_device(device).type != "cuda":  # a GPU job on a node that shows none
            fail("device", device or "auto", f"a GPU: this job's runs are keyed for CUDA and this node shows no "
                 f"GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); not training them on "
                 "the CPU")
        for precision in {c.run.precision for c in job.cells}:  # planned elsewhere: bf16 or tf32 on a V100 stops
            resolve_precision(precision, device)
        trainer = JobTrainer("auto", device, stack_size=stack_size, report=progress)  # streamed images: the loop
        run_stages(job.method, [c.run for c in job.cells], [c.noise_rate for c in job.cells], trainer, **job.options)
        return len(job.cells)

    def checkpoint(self, *args):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


run_job = GridJob()


@contextlib.contextmanager
def grid_progress(total: int, folder: Path, enabled: bool = True):
    """Runs finished in the cache since it started, of the keys jobs write to files in ``folder`` (``run_job``'s
    ``progress``), polled each second: a tqdm bar on a terminal, else a line per finished run."""
    start, stop, lines = time.time() - 1, threading.Event(), enabled and not use_bars()
    bar = tqdm(total=total, desc="grid", unit="run", disable=not enabled or lines, file=sys.stderr)

    def refresh() -> None:
        found = set()
        for path in folder.glob("*.keys"):
            found.update(path.read_text().split())
        done = 0
        for key in found:
            with contextlib.suppress(FileNotFoundError):
                done += (cache.cache_dir() / f"{key}.pt").stat().st_mtime >= start
        if lines and done > bar.n:
            elapsed = time.time() - start
            print(f"grid: {done}/{total} runs done, {clock(elapsed)} elapsed, ETA "
                  f"{clock(elapsed / done * (total - done))}", file=sys.stderr, flush=True)
        bar.n = done
        bar.refresh()

    def poll() -> None:
        while not stop.wait(1.0):
            refresh()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        refresh()
        bar.close()


def executor_options(executor: str, *, folder=None, partition=None, gpus=None, cpus=None, time_min=None,
                     array_parallelism=None, parallel=None) -> dict:
    """Checked options of ``executor`` (``OPTIONS``; see ``run_grid``), with their defaults filled in."""
    check_choice(executor, "executor", EXECUTORS)
    given = dict(partition=partition, gpus=gpus, cpus=cpus, time_min=time_min, array_parallelism=array_parallelism,
                 parallel=parallel, folder=folder)
    for name, value in given.items():
        if value is not None and name not in OPTIONS[executor]:
            fail(name, value, f"None with executor={executor!r} (it takes {list(OPTIONS[executor]) or 'no options'})")
    check_int(gpus, "gpus", minimum=0, none_ok=True)
    for name in ("cpus", "time_min", "array_parallelism", "parallel"):
        check_int(given[name], name, minimum=1, none_ok=True)
    if parallel is not None and parallel > cpu_cores():
        fail("parallel", parallel, f"at most the {cpu_cores()} CPU cores of this machine")
    if executor == "local":
        return {}
    options = dict(folder=str(folder or cache.cache_dir() / "jobs"))
    if executor == "slurm":
        gpus = 1 if gpus is None else gpus
        if gpus > 1:
            fail("gpus", gpus, "0 or 1 per Slurm job: a job trains on one GPU; run more jobs at once with "
                 "--array-parallelism")
        options.update(partition=partition, gpus=gpus, cpus=cpus or CPUS_PER_GPU * max(1, gpus),
                       time_min=time_min or DEFAULT_TIME_MIN, array_parallelism=array_parallelism)
    elif executor == "submitit-local":  # one GPU per job where there are GPUs, else one core each
        available = visible_gpus()
        gpus = len(available) if gpus is None else gpus
        if gpus > len(available):
            fail("gpus", gpus, f"at most the {len(available)} GPUs this process sees ({available})")
        options.update(gpus=gpus, time_min=time_min or DEFAULT_TIME_MIN,
                       parallel=parallel or min(gpus or cpu_cores(), cpu_cores()))
    return options


def jobs_device_type(executor: str, options: dict, device=None) -> str:
    """Where the jobs train: with Slurm or submitit-local, "cuda" when they are given GPUs, else "cpu"
    (whatever this machine has); here, on ``device``."""
    if executor in ("slurm", "submitit-local"):
        return "cuda" if options.get("gpus") else "cpu"
    return resolve_device(device).type


def make_executor(executor: str, options: dict, n_jobs: int):
    """A submitit executor; a submitit-local job sees no GPU until ``_submit`` gives it one."""
    import submitit

    if executor == "debug":
        return submitit.DebugExecutor(options["folder"])
    if executor == "submitit-local":
        ex = submitit.LocalExecutor(options["folder"])
        ex.update_parameters(timeout_min=options["time_min"], gpus_per_node=0)
        return ex
    ex = submitit.AutoExecutor(folder=options["folder"], cluster="slurm",
                               slurm_max_num_timeout=options.get("max_timeouts", MAX_TIMEOUTS))
    params = dict(name="idn-grid", timeout_min=options["time_min"], gpus_per_node=options["gpus"],
                  mem_gb=options.get("mem_gb"), cpus_per_task=options.get("cpus"),
                  slurm_partition=options.get("partition"),
                  slurm_array_parallelism=min(options.get("array_parallelism") or n_jobs, n_jobs))
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def with_job_resources(executor: str, options: dict, p) -> dict:
    """``options`` with what each Slurm job of plan ``p`` asks for. ``mem_gb``: 8 GB for the process, its
    CUDA context and loaders, plus the largest job's training images in memory and four copies of its stacked
    networks (weights, momentum or Adam's two moments, and the kept weights: what a checkpoint and the results
    hold). ``max_timeouts``: the time limits a job may reach and be requeued, twice as many as the longest
    job's estimated hours need (at least submitit's default, 3); ``MAX_TIMEOUTS`` where they are unknown."""
    if executor != "slurm" or not p.jobs:
        return options
    most = 0
    for job in p.jobs:
        run = job.cells[0].run
        shape = run.spec.input_shape
        data = len(run.data) * math.prod(shape) * (4 if run.spec.is_features else 1) if isinstance(
            run.data, Tensors) else 0
        with torch.device("meta"):
            params = sum(w.numel() for w in build_model(run.protocol.model, run.n_classes, shape).parameters())
        most = max(most, data + 4 * 4 * params * run.step.n_networks * len(job.cells))
    hours = p.table["hours"]
    timeouts = MAX_TIMEOUTS if hours.isna().any() else max(3, 2 * math.ceil(hours.max() * 60 / options["time_min"]))
    return dict(options, mem_gb=8 + math.ceil(most / 2 ** 30), max_timeouts=timeouts)


def run_study(study: Study, executor: str = "local", *, collect_only: bool = False, device_type: str | None = None,
              **options) -> Results:
    """Train ``study``'s grid and return its ``Results``; ``collect_only``: read them from the cache
    (``collect``). ``device_type``: where the runs train (``build_grid``)."""
    grid = build_grid(study, train_labels=not collect_only, device_type=device_type)
    return collect(grid) if collect_only else run_grid(grid, executor, **options)


def run_grid(grid, executor: str = "local", *, device=None, stack_size: int | None = None,
             cells_per_job: int | None = None, wait: bool = True, progress: bool = True,
             **options) -> Results | list:
    """Train the runs of ``grid`` (a ``Grid`` or its cells) the cache lacks and return their ``Results``.
    ``executor``: one of ``EXECUTORS``, with ``executor_options``: ``folder`` (submitit's, default
    ``jobs/`` in the cache; shared on a cluster), ``partition``, ``gpus`` per job (default 1), ``cpus``,
    ``time_min`` (default one day), ``array_parallelism``; submitit-local runs ``parallel`` jobs at
    once (default one per GPU, else per core), each on one of ``gpus`` (default: those visible).
    ``device`` (default the study's): here; submitted jobs train on ``jobs_device_type``'s. ``stack_size``
    (K at most) goes to every job. ``wait=False`` (Slurm) returns the submitted jobs. A missing labelling
    network (``prerequisites``) trains first, here."""
    options = executor_options(executor, **options)
    grid = as_grid(grid)
    if device is None and grid.study is not None:
        device = grid.study.device
    check_int(stack_size, "stack_size", minimum=1, none_ok=True)
    if not wait and executor != "slurm":
        fail("wait", wait, "True unless executor='slurm' (jobs on this machine end with this process)")
    device_type = jobs_device_type(executor, options, device)
    if grid.prerequisites:
        engine.train_many(list(grid.prerequisites), device=device)
        grid = build_grid(grid.study, device=device, device_type=device_type)
    # the cells as the jobs' device will key them (a grid built on a login node without a GPU says "cpu")
    grid = dataclasses.replace(grid, cells=tuple(dataclasses.replace(
        c, run=engine.on_device(c.run, torch.device(device_type))) for c in grid.cells))
    p = plan(grid, device=device_type, cells_per_job=cells_per_job, progress=progress)
    options = with_job_resources(executor, options, p)
    if p.jobs and executor == "local":
        with tempfile.TemporaryDirectory() as folder, grid_progress(p.runs, Path(folder), progress):
            for job in p.jobs:
                run_job(job, device, stack_size, progress=f"{folder}/local.keys")
    elif p.jobs:
        submitted = _submit(p, executor, options, device_type, stack_size, wait, progress)
        if not wait:
            return submitted
    return collect(grid, None if p.jobs else p.traces)  # nothing trained: the cache as planned


def _submit(p, executor: str, options: dict, device: str, stack_size, wait: bool, progress: bool) -> list:
    """Run plan ``p``'s jobs through submitit on ``device`` ("cpu" or "cuda": where their cells are keyed): a job
    array on Slurm; here at most ``parallel`` processes at once, each with its share of the CPU threads.
    Raises if a job failed."""
    jobs, folder = p.jobs, Path(options["folder"]) / "progress" / uuid.uuid4().hex[:12]
    ex = make_executor(executor, options, len(jobs))
    local = executor == "submitit-local"
    workers = options["parallel"] if local else len(jobs)
    threads = max(1, cpu_cores() // min(workers, len(jobs))) if local else options.get("cpus")
    pending = [(job, device, stack_size, threads, str(folder / f"{i}.keys")) for i, job in enumerate(jobs)]
    folder.mkdir(parents=True)
    handles, gpu_of = [], []  # submitit-local: the GPU each job was given
    if executor == "slurm":
        handles, pending = ex.map_array(run_job, *zip(*pending)), []
        print(f"submitted job array {handles[0].job_id.split('_')[0]} ({len(handles)} jobs); logs in "
              f"{options['folder']}", file=sys.stderr)
        if not wait:
            return handles
    with grid_progress(p.runs, folder, enabled=progress):
        while pending or not all(h.done() for h in handles):
            while pending and sum(not h.done() for h in handles) < workers:
                gpu = None
                if local and options["gpus"]:
                    busy = [g for h, g in zip(handles, gpu_of) if not h.done()]
                    gpu = min(visible_gpus()[:options["gpus"]], key=busy.count)
                    ex.update_parameters(gpus_per_node=1, visible_gpus=(gpu,))
                handles.append(ex.submit(run_job, *pending.pop(0)))
                gpu_of.append(gpu)
            time.sleep(POLL_SECONDS[executor])
    failed = []
    for job, handle in zip(jobs, handles):
        try:
            error = handle.exception()
        except Exception as e:  # a killed job has no result to read
            error = e
        if error is not None:
            failed.append(f"  {job.method} on {job.cells[0].dataset} ({len(job.cells)} cells) (job {handle.job_id}): "
                          f"{type(error).__name__}: {str(error).strip()[:300]}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} jobs failed (logs in {options['folder']}):\n"
                           + "\n".join(failed) + "\nRun the grid again: it trains only the runs that are missing.")
    return handles
