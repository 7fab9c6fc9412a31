"""Running a grid's jobs: in this process (``local``), as a Slurm job array or submitit's local
processes (``slurm``, ``submitit-local``) or submitit's debug executor (``debug``); ``run_grid``
trains the runs the cache lacks and returns their ``results.Results``.

Jobs write to the shared on-disk cache (``cache``; a shared file system on a cluster), whose
per-key lock keeps two jobs from training one run; a run is stored as soon as it is trained, so
after a failed, pre-empted or killed job, running the grid again trains only what is missing.
Results are always gathered from the cache. On CUDA each stage of a job trains its cells stacked,
K runs per call, with K halved until it fits the GPU's memory.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import cache, engine
from ..checks import check_choice, check_int, fail
from ..hardware import cpu_cores, resolve_device
from ..methods import Trainer, run_stages
from ..progress import clock, use_bars
from ..results import Results
from ..runs import Run, RunResult
from ..study import Study
from .plan import Job, _cells, collect, plan, trace
from .spec import Grid, build_grid

EXECUTORS = ("local", "slurm", "submitit-local", "debug")
DEFAULT_TIME_MIN = 24 * 60  # a submitit job's time limit (minutes) unless given
CPUS_PER_GPU = 8  # a Slurm job's CPU cores per GPU unless given: Clothing1M's image decoders run on them
POLL_SECONDS = {"slurm": 1.0, "submitit-local": 0.1, "debug": 0.0}  # between checks of the jobs' states


@dataclass(frozen=True)
class JobTrainer(Trainer):
    """The trainer of a grid job: ``report`` hears the keys of each stage's runs before they train
    (the progress bar), and on CUDA a stacked call that runs out of memory is retried with half as
    many runs per call; the K that fitted is kept for the job's later stages."""

    report: Callable[[list[str]], None] | None = None
    fitted: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, runs: list[Run]) -> list[RunResult]:
        if self.report is not None:
            self.report([run.key() for run in runs])
        k = self.fitted.get("k", self.stack_size)
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


# What CUDA and cuDNN say when memory runs out: besides torch.cuda.OutOfMemoryError, cuDNN raises a
# plain RuntimeError near the limit (its workspace could not be allocated)
OUT_OF_MEMORY_MESSAGES = ("CUDA out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                          "unable to find an engine to execute this computation", "CUDA error: out of memory")


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the GPU running out of memory, in any of the forms CUDA and cuDNN raise."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in OUT_OF_MEMORY_MESSAGES))


def visible_gpus() -> list[int]:
    """The GPUs this process may use, as the indices submitit-local's jobs are given: those of
    ``CUDA_VISIBLE_DEVICES`` (a job given 0 under ``CUDA_VISIBLE_DEVICES=2,3`` would land on GPU 0
    of the machine, not 2), else 0..n-1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return list(range(torch.cuda.device_count()))
    names = [d.strip() for d in listed.split(",") if d.strip()]
    if not all(d.lstrip("-").isdigit() for d in names):
        fail("CUDA_VISIBLE_DEVICES", listed, "GPU indices (e.g. 2,3) for submitit-local, which passes indices on")
    visible = []
    for d in map(int, names):
        if d < 0:  # CUDA stops at the first invalid index
            break
        visible.append(d)
    return visible


class _FileReport:
    """Appends the keys a job is about to train to its progress file (read by ``Progress``)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, keys: list[str]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(f"{key}\n" for key in keys))


def run_job(job: Job, device=None, stack_size: int | None = None, threads: int | None = None,
            progress=None) -> int:
    """Train one job (in this process or a submitit worker): ``methods.run_stages`` over all its
    cells, each stage one ``train_many`` call. ``threads``: torch's CPU threads here; ``progress``:
    a file to list the stages' run keys in, or a callable given them. Returns its number of cells."""
    if threads is not None:
        torch.set_num_threads(threads)
    report = _FileReport(progress) if isinstance(progress, (str, Path)) else progress
    trainer = JobTrainer("auto", device, stack_size=stack_size, report=report)  # streamed images: the loop
    run_stages(job.method, [c.run for c in job.cells], [c.noise_rate for c in job.cells], trainer, **job.options)
    return len(job.cells)


class GridJob:
    """``run_job`` as the callable submitit runs, with submitit's checkpointing hook: when Slurm
    warns a job of its time limit or pre-emption, submitit calls ``checkpoint`` and requeues the
    same call. The requeued job loads the runs already stored and resumes the one that was
    training from its last checkpoint (``checkpoint``), so it trains only what is left."""

    def __call__(self, *args):
        return run_job(*args)

    def checkpoint(self, *args):
        import submitit

        return submitit.helpers.DelayedSubmission(GridJob(), *args)


class Progress:
    """Progress over the runs this call trains: the keys jobs report (in this process through
    ``report``, or in files under ``folder``) whose results appear in the cache after it started.
    A thread refreshes it every second until ``close``: a tqdm bar on a terminal, else a line
    each time a run finishes, with elapsed time and ETA (``progress``)."""

    def __init__(self, total: int, folder: Path | None = None, enabled: bool = True):
        self.folder, self.keys, self.start = folder, set(), time.time() - 1
        self.total, self.lines, self.shown = total, enabled and not use_bars(), 0
        self.bar = tqdm(total=total, desc="grid", unit="run", disable=not enabled or self.lines, file=sys.stderr)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def report(self, keys: list[str]) -> None:
        with self._lock:
            self.keys.update(keys)

    def _finished(self) -> int:
        keys = set(self.keys)
        if self.folder is not None and self.folder.exists():
            for path in self.folder.glob("*.keys"):
                keys.update(path.read_text().split())
        n = 0
        for key in keys:
            try:
                n += (cache.cache_dir() / f"{key}.pt").stat().st_mtime >= self.start
            except FileNotFoundError:
                pass
        return n

    def refresh(self) -> None:
        with self._lock:
            self.bar.n = self._finished()
            self.bar.refresh()
            if self.lines and self.bar.n > self.shown:
                self.shown = self.bar.n
                elapsed = time.time() - self.start
                eta = elapsed / self.shown * (self.total - self.shown)
                print(f"grid: {self.shown}/{self.total} runs done, {clock(elapsed)} elapsed, ETA {clock(eta)}",
                      file=sys.stderr, flush=True)

    def _loop(self):
        while not self._stop.wait(1.0):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.bar.close()


def executor_options(executor: str, *, folder=None, partition=None, gpus=None, cpus=None, time_min=None,
                     array_parallelism=None, parallel=None) -> dict:
    """Checked options of ``executor`` (see ``run_grid``), with their defaults filled in."""
    check_choice(executor, "executor", EXECUTORS)
    given = dict(partition=partition, gpus=gpus, cpus=cpus, time_min=time_min, array_parallelism=array_parallelism,
                 parallel=parallel, folder=folder)
    allowed = {"local": (), "debug": ("folder",), "slurm": ("folder", "partition", "gpus", "cpus", "time_min",
                                                            "array_parallelism"),
               "submitit-local": ("folder", "gpus", "time_min", "parallel")}[executor]
    for name, value in given.items():
        if value is not None and name not in allowed:
            fail(name, value, f"None with executor={executor!r} (it takes {list(allowed) or 'no options'})")
    for name in ("gpus",):
        check_int(gpus, name, minimum=0, none_ok=True)
    for name, value in (("cpus", cpus), ("time_min", time_min), ("array_parallelism", array_parallelism),
                        ("parallel", parallel)):
        check_int(value, name, minimum=1, none_ok=True)
    if parallel is not None and parallel > cpu_cores():
        fail("parallel", parallel, f"at most the {cpu_cores()} CPU cores of this machine")
    if executor == "local":
        return {}
    options = dict(folder=str(folder or cache.cache_dir() / "jobs"))
    if executor == "slurm":
        gpus = 1 if gpus is None else gpus
        options.update(partition=partition, gpus=gpus, cpus=cpus or CPUS_PER_GPU * max(1, gpus),
                       time_min=time_min or DEFAULT_TIME_MIN, array_parallelism=array_parallelism)
    elif executor == "submitit-local":  # one GPU per job where there are GPUs, else one core each
        available = visible_gpus()
        gpus = len(available) if gpus is None else gpus
        if gpus > len(available):
            fail("gpus", gpus, f"at most the {len(available)} GPUs this process sees ({available})")
        options.update(gpus=gpus, time_min=time_min or DEFAULT_TIME_MIN, parallel=parallel or min(gpus or cpu_cores(),
                                                                                                cpu_cores()))
    return options


def jobs_device_type(executor: str, options: dict, device=None) -> str:
    """Where the jobs of ``executor`` with ``options`` (``executor_options``') train, "cuda" or "cpu":
    on GPUs when Slurm or submitit-local gives them some, else on ``device`` (auto: CUDA where
    this machine has it)."""
    if executor in ("slurm", "submitit-local") and options.get("gpus"):
        return "cuda"
    return resolve_device(device).type


def make_executor(executor: str, options: dict, n_jobs: int):
    """A submitit executor for ``executor`` ("slurm", "submitit-local" or "debug") with ``options``
    (``executor_options``'s); a local job sees no GPU until ``_submit`` gives it one."""
    import submitit

    if executor == "debug":
        return submitit.DebugExecutor(options["folder"])
    if executor == "submitit-local":
        ex = submitit.LocalExecutor(options["folder"])
        ex.update_parameters(timeout_min=options["time_min"], gpus_per_node=0)
        return ex
    ex = submitit.AutoExecutor(folder=options["folder"], cluster="slurm")
    params = dict(name="idn-grid", timeout_min=options["time_min"], gpus_per_node=options["gpus"],
                  cpus_per_task=options.get("cpus"), slurm_partition=options.get("partition"),
                  slurm_array_parallelism=min(options.get("array_parallelism") or n_jobs, n_jobs))
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def run_study(study: Study, executor: str = "local", *, collect_only: bool = False, device_type: str | None = None,
              **options) -> Results:
    """Train ``study``'s grid (``build_grid``, ``run_grid``) and return its ``Results``; with
    ``collect_only``, train nothing and read them from the cache (``collect``: ``MissingRuns`` lists
    what is not there). ``device_type``: where the runs were or will be trained (``build_grid``)."""
    grid = build_grid(study, train_labels=not collect_only, device_type=device_type)
    return collect(grid) if collect_only else run_grid(grid, executor, **options)


def run_grid(grid, executor: str = "local", *, device=None, stack_size: int | None = None,
             cells_per_job: int | None = None, wait: bool = True, progress: bool = True,
             **options) -> Results | list:
    """Train the runs of ``grid`` (a ``Grid`` or its cells) that the cache lacks, as jobs (see
    the module docstring), and return their ``Results`` (``collect``). ``device``: default a
    ``Grid``'s study's. ``executor``: one of
    ``EXECUTORS``. Options: ``folder`` (submitit's logs and pickles, default ``jobs/`` in the cache
    folder; on a cluster it must be shared, as the cache is), ``partition``, ``gpus`` (per job,
    default 1), ``cpus`` (per job), ``time_min`` (time limit per job, default one day), ``array_parallelism`` (Slurm);
    submitit-local: ``parallel`` jobs at once (at most the CPU cores; default one per GPU, else
    one per core), each given one of ``gpus`` GPUs (default: those visible) and its share of the
    CPU threads. ``device``
    and ``stack_size`` (K at most; None: as many as fit) go to every job. ``wait=False`` (Slurm)
    submits and returns the submitit jobs (``grid_status`` follows them; ``collect`` gathers the results).
    A grid built without its labels' network (``prerequisites``) trains it here first and is built again."""
    options = executor_options(executor, **options)
    if device is None and isinstance(grid, Grid):
        device = grid.study.device
    check_int(stack_size, "stack_size", minimum=1, none_ok=True)
    if not wait and executor != "slurm":
        fail("wait", wait, "True unless executor='slurm' (jobs on this machine end with this process)")
    if executor == "local":
        resolve_device(device)
    device_type = jobs_device_type(executor, options, device)
    if isinstance(grid, Grid) and grid.prerequisites:
        engine.train_many(list(grid.prerequisites), device=device)
        grid = build_grid(grid.study, device=device, device_type=device_type)
    # the cells as the jobs' device will key them (a grid built on a login node without a GPU says "cpu")
    cells = [dataclasses.replace(c, run=engine.on_device(c.run, torch.device(device_type))) for c in _cells(grid)]
    traces = trace(cells, progress=progress)
    p = plan(cells, cells_per_job=cells_per_job, traces=traces)
    if p.jobs and executor == "local":
        bar = Progress(p.runs, enabled=progress)
        try:
            for job in p.jobs:
                run_job(job, device, stack_size, progress=bar.report)
        finally:
            bar.close()
    elif p.jobs:
        submitted = _submit(p.jobs, executor, options, device, stack_size, wait, progress, p.runs)
        if not wait:
            return submitted
    results = collect(cells)
    results.description = grid.description if isinstance(grid, Grid) else ""
    return results


def _submit(jobs: list[Job], executor: str, options: dict, device, stack_size, wait: bool, progress: bool,
            total: int) -> list:
    """Run ``jobs`` through submitit: a job array on Slurm; on this machine at most ``parallel``
    processes at once, each with its share of the CPU threads. Raises if a job failed."""
    folder = Path(options["folder"]) / "progress" / uuid.uuid4().hex[:12]
    ex = make_executor(executor, options, len(jobs))
    local = executor == "submitit-local"
    workers = options["parallel"] if local else len(jobs)
    threads = max(1, cpu_cores() // min(workers, len(jobs))) if local else options.get("cpus")
    args = [(job, device, stack_size, threads, str(folder / f"{i}.keys")) for i, job in enumerate(jobs)]
    if executor == "slurm":
        handles = ex.map_array(GridJob(), *zip(*args))
        print(f"submitted job array {handles[0].job_id.split('_')[0]} ({len(handles)} jobs); logs in "
              f"{options['folder']}", file=sys.stderr)
        if not wait:
            return handles
        pending = []
    else:
        handles, pending = [], list(args)
    gpu_of = {}  # submitit-local: the GPU each job was given
    bar = Progress(total, folder, enabled=progress)
    try:
        while pending or not all(h.done() for h in handles):
            while pending and sum(not h.done() for h in handles) < workers:
                if local and options["gpus"]:
                    busy = [g for h, g in gpu_of.items() if not h.done()]
                    gpu = min(visible_gpus()[:options["gpus"]], key=busy.count)
                    ex.update_parameters(gpus_per_node=1, visible_gpus=(gpu,))
                handles.append(ex.submit(GridJob(), *pending.pop(0)))
                gpu_of[handles[-1]] = gpu if local and options["gpus"] else None
            time.sleep(POLL_SECONDS[executor])
    finally:
        bar.close()
    failed = []
    for job, handle in zip(jobs, handles):
        try:
            error = handle.exception()
        except Exception as e:  # a killed job has no result to read
            error = e
        if error is not None:
            failed.append(f"  {job.name} (job {handle.job_id}): {type(error).__name__}: {str(error).strip()[:300]}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} jobs failed (logs in {options['folder']}):\n"
                           + "\n".join(failed) + "\nRun the grid again: it trains only the runs that are missing.")
    return handles
