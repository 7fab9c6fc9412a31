"""The paper's grids (Section 4.3, Tables 1-3) as data, run on one machine or across a cluster.

A grid is a list of ``Cell`` values: one method, with its options, on one base run (a data set's
training rows with the noisy labels of one noise rate, a seed, what to record). ``GridSpec`` holds
the settings that choose the cells (chapter 05's parameters; its defaults are Table 1 as the paper
ran it) and ``build_grid(spec)`` expands methods x noise rates (or label sets) x seeds into cells.
Chapter 05 and ``idn-grid`` both build their runs here, so they share cache keys: what one
trains, the other loads.

- ``run_grid(grid, executor)`` trains the runs the cache lacks and returns the results table;
- ``collect(grid)`` reads the table from the cache and trains nothing (``MissingRuns`` lists what is not there);
- ``grid_status(grid)``: done / running / missing per cell; ``plan(grid)``: jobs, runs, estimated hours.

**Jobs.** A job is one slice of the grid: one method on one data set with all its cells (or
``cells_per_job`` of them). It calls ``methods.run_stages`` with its cells, so each of the method's
stages (CE, Forward's and DMI's second stage, SEAL's iterations, each needing the one before) is
one ``engine.train_many`` call over every cell: stacked K runs at a time on CUDA, with K halved
until it fits the GPU's memory. Jobs write to the shared on-disk cache (``cache``; a shared file
system on a cluster), whose per-key lock keeps two jobs from training one run; a run is stored as
soon as it is trained, so after a failed, pre-empted or killed job, running the grid again trains
only what is missing. Results are always gathered from the cache.

**Executors.** ``local``: the jobs one after another in this process. ``slurm``: a submitit job
array (partition, GPUs, CPUs, time limit, array parallelism). ``submitit-local``: submitit's local
executor, one process per job, at most ``parallel`` at once (never more than the CPU cores), each
with its share of the threads. ``debug``: submitit's debug executor, in this process.

**What a plan counts.** ``trace`` runs each cell's method driver with a trainer that loads what
the cache has and answers the rest with placeholders (random softmax seeded by the run's key), so
the stages a method would train are its driver's own, not a second description of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm import tqdm

from . import cache, clothing1m, engine
from .checks import check_choice, check_float, check_int, check_rates, check_seed, fail
from .datasets import get_dataset, load_dataset, protocol, subset
from .experiments import idn_label_sets, idn_run
from .methods import Trainer, get_method, method_label, run_stages, summarize
from .published import PUBLISHED_RATES
from .hardware import PRECISION_CHOICES, resolve_device, resolve_precision
from .runs import MethodResult, Run, RunResult, Tensors, make_run
from .stats import estimate_transition_matrix, validation_split

TABLE_METHODS = ("ce", "forward", "coteaching", "gce", "dac", "dmi", "seal")  # the rows of Tables 1 and 2
CLOTHING1M_METHODS = ("ce", "coteaching", "dmi", "seal", "seal_dmi")  # Table 3's runs by the SEAL authors
# What selects each table's grid; PAPER_TABLES adds the paper's protocol where it differs from
# Table 1's (applied with the ``paper`` profile: other profiles keep their reduced sizes).
TABLES = {1: dict(dataset="mnist", methods=TABLE_METHODS),
          2: dict(dataset="cifar10", methods=TABLE_METHODS),
          3: dict(dataset="clothing1m", methods=CLOTHING1M_METHODS, seeds=(0,), n_epochs=None, n_iterations=None)}
PAPER_TABLES = {2: dict(n_epochs=150, n_iterations=3)}
PAPER_ITERATIONS = {"cifar10": 3, "cifar100": 3, "clothing1m": 3}  # SEAL iterations in the paper; 10 elsewhere
EXECUTORS = ("local", "slurm", "submitit-local", "debug")
CHAPTER = "05_benchmarks"  # the chapter whose profile overrides the grid reads
DEFAULT_TIME_MIN = 24 * 60  # a submitit job's time limit (minutes) unless given
POLL_SECONDS = 1.0
# Seconds per epoch per 1000 training rows and per network (training, softmax recording, test
# scoring), measured on this project's 2-core CPU (AMD EPYC with native bf16; NOTES.md, "Grid"); a
# plan prefers the seconds its own finished runs recorded on the device it plans for.
MEASURED = {("mnist_cnn", "cpu", "fp32"): 0.250, ("mnist_cnn", "cpu", "bf16"): 0.170,
            ("wrn28_10", "cpu", "fp32"): 279.0, ("wrn28_10", "cpu", "bf16"): 105.0, ("mlp", "cpu", "fp32"): 0.009}


# ---------------------------------------------------------------- the grid as data

@dataclass(frozen=True)
class GridSpec:
    """The settings that choose a grid's cells (chapter 05's parameters of the same names). Lists
    become tuples and noise rates are sorted; every value is checked here, before any work.
    ``n_epochs``/``n_iterations`` None: the paper's for the data set (its protocol's epochs; SEAL
    iterations 10, 3 on CIFAR and Clothing1M); ``n_train``/``n_test`` None: every row;
    ``dmi_epochs`` None: DMI's own stage as long as the others. ``seed`` picks the training
    subset and the validation split; ``seeds`` are the runs' seeds."""

    dataset: str = "mnist"
    methods: tuple = TABLE_METHODS
    noise_rates: tuple = PUBLISHED_RATES
    seeds: tuple = (0, 1, 2)
    n_epochs: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    val_fraction: float = 0.0
    n_iterations: int | None = None
    dmi_epochs: int | None = None
    use_published: bool = True
    seed: int = 0
    precision: str = "fp32"
    data_root: str | None = None
    clothing1m_weights: str | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        get_dataset(self.dataset)
        if isinstance(self.methods, str) or not self.methods:
            fail("methods", self.methods, "a non-empty list of method names, e.g. ['ce', 'seal']")
        set_("methods", tuple(self.methods))
        for name in self.methods:
            get_method(name)
        set_("noise_rates", tuple(sorted(check_rates(self.noise_rates))))
        if isinstance(self.seeds, (int, str)) or not self.seeds:
            fail("seeds", self.seeds, "a non-empty list of seeds, e.g. [0, 1, 2]")
        set_("seeds", tuple(check_seed(s, "seeds") for s in self.seeds))
        for name in ("n_epochs", "n_train", "n_test"):
            check_int(getattr(self, name), name, minimum=1, none_ok=True)
        check_int(self.n_iterations, "n_iterations", minimum=0, none_ok=True)
        check_int(self.dmi_epochs, "dmi_epochs", minimum=1, none_ok=True)
        set_("val_fraction", check_float(self.val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True))
        if not isinstance(self.use_published, bool):
            fail("use_published", self.use_published, "True or False")
        check_seed(self.seed)
        check_choice(self.precision, "precision", PRECISION_CHOICES)
        for name in ("data_root", "clothing1m_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                fail(name, value, "a path or None")
            set_(name, None if value is None else str(value))
        if self.dataset == "clothing1m" and self.clothing1m_weights is None:
            fail("clothing1m_weights", None, "the ImageNet ResNet-50 weights (a torchvision state_dict file) for "
                                             "dataset='clothing1m'")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_settings(cls, settings: dict, strict: bool = False) -> "GridSpec":
        """A spec from a parameter dict (a profile); names that are not fields are ignored, or
        refused with ``strict``."""
        unknown = sorted(set(settings) - set(cls.fields()))
        if strict and unknown:
            fail("setting", unknown, f"grid settings: {list(cls.fields())}")
        return cls(**{k: v for k, v in settings.items() if k in cls.fields()})

    def replace(self, **changes) -> "GridSpec":
        return dataclasses.replace(self, **changes)

    @property
    def iterations(self) -> int:
        """SEAL's iterations after the first run."""
        return PAPER_ITERATIONS.get(self.dataset, 10) if self.n_iterations is None else self.n_iterations

    def options(self, method: str) -> dict:
        """The method's options in this grid (SEAL's iterations, DMI's epochs; Clothing1M's own)."""
        if self.dataset == "clothing1m":  # as clothing1m.run_clothing1m (tests/test_grid.py checks)
            dmi, n_epochs = dict(clothing1m.DMI_OPTIONS), self.n_epochs or clothing1m.PROTOCOL.n_epochs
            return {"dmi": dmi, "coteaching": dict(t_k=max(1, n_epochs // 2)),
                    "seal": dict(n_iterations=self.iterations, retrain=False),
                    "seal_dmi": dict(n_iterations=self.iterations, retrain=False, dmi_options=dmi)}.get(method, {})
        return {"seal": dict(n_iterations=self.iterations),
                "seal_dmi": dict(n_iterations=self.iterations, dmi_options=dict(n_epochs=self.dmi_epochs)),
                "dmi": dict(n_epochs=self.dmi_epochs)}.get(method, {})


@dataclass(frozen=True, eq=False)
class Cell:
    """One grid cell: ``method`` with ``options`` on the base ``run`` (training rows, noisy labels,
    seed, what to record). ``labels`` names the label set (the noise rate, or ``clothing1m``);
    ``noise_rate`` goes to the methods that take it (Co-teaching's forget rate)."""

    dataset: str
    method: str
    labels: str
    noise_rate: float | None
    seed: int
    run: Run
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} on {self.dataset}, labels {self.labels}, seed {self.seed}"


@dataclass(frozen=True, eq=False)
class Grid:
    """A spec's cells, with a line describing the data, labels and protocol they train on."""

    spec: GridSpec
    cells: tuple[Cell, ...]
    description: str


class MissingRuns(RuntimeError):
    """Cells of a grid whose runs are not (all) in the cache; ``cells`` names them."""

    def __init__(self, message: str, cells: list):
        super().__init__(message)
        self.cells = cells


def build_grid(spec: GridSpec, *, device=None, train_labels: bool = True) -> Grid:
    """The cells of ``spec``: methods x noise rates x seeds, in that order. The noisy labels are
    the authors' published IDN labels where they exist (``use_published``), otherwise Algorithm 1
    run on the same rows (trained on ``device``, or loaded from the cache; with
    ``train_labels=False`` a missing labelling run raises ``MissingRuns`` instead)."""
    if not isinstance(spec, GridSpec):
        fail("spec", type(spec).__name__, "a grid.GridSpec")
    spec = spec.replace(precision=resolve_precision(spec.precision, device))  # "auto": for the device that trains
    if spec.dataset == "clothing1m":
        return _clothing1m_grid(spec)
    root, proto = spec.data_root, protocol(spec.dataset, n_epochs=spec.n_epochs)
    _, y_all = load_dataset(spec.dataset, root, train=True)
    _, y, idx = subset(y_all, y_all, spec.n_train, spec.seed)
    _, y_test_all = load_dataset(spec.dataset, root, train=False)
    _, y_test, test_idx = subset(y_test_all, y_test_all, spec.n_test, spec.seed, name="n_test")
    if not train_labels and not _published(spec):
        run = idn_run(spec.dataset, root=root, n_train=spec.n_train, seed=spec.seed, precision=spec.precision)
        if engine.load(run) is None:  # the run generate_idn would train
            raise MissingRuns(f"the IDN labels of this grid need Algorithm 1's run on {spec.dataset} (run {run.key()}), "
                              f"which is not in the cache ({cache.cache_dir()})", [])
    noisy, source = idn_label_sets(spec.dataset, spec.noise_rates, idx, use_published=spec.use_published,
                                   n_train=spec.n_train, seed=spec.seed, root=root, device=device,
                                   precision=spec.precision)
    train_rows, val_rows = (validation_split(len(y), spec.val_fraction, spec.seed) if spec.val_fraction
                            else (torch.arange(len(y)), None))
    data = Tensors.from_dataset(spec.dataset, idx[train_rows], root=root)
    val = None if val_rows is None else Tensors.from_dataset(spec.dataset, idx[val_rows], root=root)
    test = Tensors.from_dataset(spec.dataset, test_idx, train=False, root=root)
    cells = []
    for rate in spec.noise_rates:
        for seed in spec.seeds:
            base = make_run(data, noisy[rate][train_rows], proto, dataset=spec.dataset, seed=seed,
                            y_true=y[train_rows], X_test=test, y_test=y_test, precision=spec.precision,
                            X_val=val, y_val=None if val_rows is None else noisy[rate][val_rows])
            cells += [Cell(spec.dataset, name, f"{rate:g}", rate, seed, base, spec.options(name))
                      for name in spec.methods]
    description = (f"IDN labels: {source}; {len(data)} training rows, {0 if val is None else len(val)} validation "
                   f"rows, {len(test)} test rows, {len(cells)} grid cells; protocol: {proto}, {spec.precision}")
    return Grid(spec, tuple(cells), description)


def _published(spec: GridSpec) -> bool:
    return spec.use_published and get_dataset(spec.dataset).published and all(
        any(abs(r - p) < 1e-9 for p in PUBLISHED_RATES) for r in spec.noise_rates)


def _clothing1m_grid(spec: GridSpec) -> Grid:
    """Table 3: each method on Clothing1M's own noisy labels (the base run of
    ``clothing1m.run_clothing1m``; Co-teaching forgets Clothing1M's estimated noise rate)."""
    proto = clothing1m.PROTOCOL.replace(n_epochs=spec.n_epochs)
    cells = []
    for seed in spec.seeds:
        base = clothing1m.clothing1m_runs(spec.data_root, spec.clothing1m_weights, proto, seed=seed,
                                          precision=spec.precision)
        cells += [Cell("clothing1m", name, "clothing1m", clothing1m.NOISE_RATE, seed, base, spec.options(name))
                  for name in spec.methods]
    description = (f"Clothing1M: {len(base.data)} noisy training images, {len(base.val.data)} clean validation and "
                   f"{len(base.test.data)} clean test images, {len(cells)} grid cells; protocol: {proto}, {spec.precision}")
    return Grid(spec, tuple(cells), description)


# ---------------------------------------------------------------- jobs

@dataclass(frozen=True, eq=False)
class Job:
    """One slice of a grid: ``method`` with ``options`` on ``cells`` (all of one data set)."""

    method: str
    options: dict
    cells: tuple[Cell, ...]

    @property
    def name(self) -> str:
        return f"{self.method} on {self.cells[0].dataset} ({len(self.cells)} cells)"


def make_jobs(cells, cells_per_job: int | None = None) -> list[Job]:
    """One job per method and data set (and options), with all its cells or ``cells_per_job`` of them."""
    check_int(cells_per_job, "cells_per_job", minimum=1, none_ok=True)
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        key = (cell.dataset, cell.method, json.dumps(cell.options, sort_keys=True, default=str))
        groups.setdefault(key, []).append(cell)
    jobs = []
    for group in groups.values():
        size = cells_per_job or len(group)
        jobs += [Job(group[0].method, group[0].options, tuple(group[i:i + size])) for i in range(0, len(group), size)]
    return jobs


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
            except torch.cuda.OutOfMemoryError:
                tried = min(k or len(runs), len(runs))
                if tried == 1 or self.backend == "loop":  # halving K only helps a stacked call
                    raise
                k = self.fitted["k"] = (tried + 1) // 2
                print(f"out of GPU memory with {tried} stacked runs: retrying {k} at a time", file=sys.stderr)
                torch.cuda.empty_cache()


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
    streamed = not all(isinstance(c.run.data, Tensors) for c in job.cells)  # Clothing1M: one run per call
    trainer = JobTrainer("loop" if streamed else "auto", device, stack_size=stack_size, report=report)
    run_stages(job.method, [c.run for c in job.cells], [c.noise_rate for c in job.cells], trainer, **job.options)
    return len(job.cells)


# ---------------------------------------------------------------- reading the cache: trace, status, collect

@dataclass(frozen=True)
class _Tracer(Trainer):
    """A trainer that trains nothing: it loads what the cache has and answers each other run with a
    placeholder (a random softmax seeded by the run's key, no weights), recording ``(run, result or
    None)`` in ``log``. Nothing it computes from placeholders is stored."""

    log: list = field(default_factory=list, compare=False, repr=False)
    placeholders: set = field(default_factory=set, compare=False, repr=False)

    def __call__(self, runs: list[Run]) -> list[RunResult]:
        results = []
        for run in runs:
            result = engine.load(run)
            self.log.append((run, result))
            if result is None:
                self.placeholders.add(run.key())
                result = RunResult(_noise_softmax(len(run.data), run.n_classes, run.key()) if run.record_softmax
                                   else None, {}, None, None, 0, run.precision, "planned", 0.0, 0)
            results.append(result)
        return results

    def predict(self, run: Run, weights: dict, all_outputs: bool = False) -> torch.Tensor:
        if run.key() in self.placeholders:
            extra = run.objective.extra_outputs if all_outputs else 0
            return _noise_softmax(len(run.data), run.n_classes + extra, run.key())
        return super().predict(run, weights, all_outputs)

    def derive(self, key: str, compute: Callable[[], dict]) -> dict:
        stored = cache.load(key)
        return compute() if stored is None else stored


def _noise_softmax(n: int, c: int, key: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(key[:15], 16))
    return torch.softmax(torch.randn(n, c, generator=generator), 1)


@dataclass(frozen=True, eq=False)
class CellTrace:
    """What the cache holds of one cell: its stages' runs in order with their results (None: not
    in the cache; runs after a missing one have placeholder inputs), and the method's result if
    every stage is there."""

    cell: Cell
    stages: tuple[tuple[Run, RunResult | None], ...]
    result: MethodResult | None

    @property
    def missing(self) -> list[Run]:
        return [run for run, result in self.stages if result is None]

    @property
    def status(self) -> str:
        """``done``; ``running`` (another process holds the lock of its first missing run); ``missing``."""
        if self.result is not None:
            return "done"
        return "running" if cache.lock_holder(self.missing[0].key()) is not None else "missing"


def trace(cells, device=None, progress: bool = True) -> list[CellTrace]:
    """Each cell's method driver run against the cache (see the module docstring); trains nothing."""
    traces = []
    for cell in tqdm(list(cells), desc="reading the cache", unit="cell", disable=not progress, file=sys.stderr):
        tracer = _Tracer(device=device)
        result = run_stages(cell.method, [cell.run], [cell.noise_rate], tracer, **cell.options)[0]
        stages = tuple(tracer.log)
        done = all(r is not None for _, r in stages)
        traces.append(CellTrace(cell, stages, result if done else None))
    return traces


def _cells(grid) -> tuple[Cell, ...]:
    if isinstance(grid, Grid):
        return grid.cells
    cells = tuple(grid)
    for i, cell in enumerate(cells):
        if not isinstance(cell, Cell):
            fail(f"cells[{i}]", type(cell).__name__, "a grid.Cell (build_grid(spec).cells)")
    return cells


def grid_status(grid, traces: list[CellTrace] | None = None) -> pd.DataFrame:
    """One row per cell: data set, method, labels, seed, ``status`` (done / running / missing) and
    how many of its stages are in the cache."""
    traces = trace(_cells(grid)) if traces is None else traces
    return pd.DataFrame([dict(dataset=t.cell.dataset, method=t.cell.method, labels=t.cell.labels, seed=t.cell.seed,
                              status=t.status, stages_done=sum(r is not None for _, r in t.stages))
                         for t in traces])


def format_status(status: pd.DataFrame) -> str:
    """The status table as text: a line of counts, then method x (labels, seed) per data set."""
    counts = status["status"].value_counts()
    lines = [f"{len(status)} cells: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "missing"))
             + f" (cache: {cache.cache_dir()})"]
    for dataset, part in status.groupby("dataset", sort=False):
        part = part.assign(cell=[f"{labels} seed {seed}" for labels, seed in zip(part["labels"], part["seed"])],
                           name=[method_label(m) for m in part["method"]])
        table = part.pivot(index="name", columns="cell", values="status")
        table = table.loc[list(dict.fromkeys(part["name"])), list(dict.fromkeys(part["cell"]))]
        table.index.name, table.columns.name = dataset, None
        lines.append(table.to_string())
    return "\n".join(lines)


def T_error(cell: Cell, T: torch.Tensor | None) -> float:
    """Mean absolute difference between an estimated transition matrix (Forward's T) and the true
    one of the cell's noisy labels (NaN without T or without the true labels)."""
    run = cell.run
    if T is None or run.y_true is None:
        return float("nan")
    true = estimate_transition_matrix(run.y_true, run.targets, run.n_classes)
    return float((T.double() - true).abs().mean())


def results_table(traces: list[CellTrace]) -> pd.DataFrame:
    """One row per finished cell: test accuracy (%) at the last, best and validation-selected
    epochs (``methods.summarize``), Forward's ``T_error`` (``T_error``), the seconds its stages
    took and the device of its last one."""
    rows = []
    for t in traces:
        if t.result is not None:
            c = t.cell
            rows.append(dict(dataset=c.dataset, method=c.method, label=method_label(c.method), labels=c.labels,
                             noise_rate=c.noise_rate, seed=c.seed, **summarize(t.result),
                             T_error=T_error(c, t.result.T), seconds=sum(s.seconds for s in t.result.stages),
                             device=t.result.final.device))
    return pd.DataFrame(rows)


def collect(grid, traces: list[CellTrace] | None = None) -> pd.DataFrame:
    """The results table of a grid read from the cache; trains nothing. Raises ``MissingRuns``
    listing each cell whose runs are not all there (and its first missing run)."""
    cells = _cells(grid)
    traces = trace(cells) if traces is None else traces
    todo = [t for t in traces if t.result is None]
    if todo:
        lines = []
        for t in todo:
            run, n_done = t.missing[0], sum(r is not None for _, r in t.stages)
            lines.append(f"  {t.cell.name}: {run.label or 'a run'} (run {run.key()}; {t.status}; "
                         f"{n_done} stage(s) before it in the cache)")
        raise MissingRuns(f"{len(todo)} of {len(cells)} cells are not in the cache ({cache.cache_dir()}):\n"
                          + "\n".join(lines) + "\nTrain them with `idn-grid` (same settings) or run_grid; "
                          "`idn-grid --status` shows their progress.", [t.cell for t in todo])
    return results_table(traces)


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Plan:
    """What running a grid would do: its ``jobs`` (cells not done), ``table`` (one row per job: cells,
    runs to train, run-epochs, estimated hours, where the seconds per epoch came from), the number
    of distinct ``runs`` to train, ``hours`` in all and the ``device`` they are estimated for."""

    jobs: list[Job]
    table: pd.DataFrame
    runs: int
    hours: float
    device: str
    status: pd.DataFrame


def measured_rates(traces: list[CellTrace]) -> dict:
    """Seconds per epoch per 1000 training rows and network, by (model, device type, precision),
    from the finished runs of these cells (a stacked run records its share of the call)."""
    samples: dict[tuple, list[float]] = {}
    for t in traces:
        for run, result in t.stages:
            if result is not None and result.history.get("loss") and result.seconds > 0:
                key = (run.protocol.model, torch.device(result.device).type, run.precision)
                per = result.seconds / len(result.history["loss"]) / (len(run.data) / 1000) / run.step.n_networks
                samples.setdefault(key, []).append(per)
    return {key: sum(v) / len(v) for key, v in samples.items()}


def _rate(model: str, device: str, precision: str, rates: dict):
    """(seconds per epoch per 1000 rows and network, where it came from), or (None, why not)."""
    for source, table in (("this grid's runs", rates), ("NOTES.md", MEASURED)):
        if (model, device, precision) in table:
            return table[(model, device, precision)], f"{source}, {device}"
    for source, table in (("this grid's runs", rates), ("NOTES.md", MEASURED)):
        for other in ("fp32", "bf16"):
            if (model, "cpu", other) in table and device != "cpu":
                return table[(model, "cpu", other)], f"{source}, cpu {other} (no {device} measurement)"
    return None, f"not measured ({model} on {device})"


def plan(grid, *, device: str = "cpu", cells_per_job: int | None = None, traces=None) -> Plan:
    """The jobs and runs that ``run_grid`` would start, with hours estimated for ``device``
    ("cpu" or "cuda") from measured seconds per epoch (``measured_rates``, else ``MEASURED``)."""
    check_choice(device, "device", ("cpu", "cuda"))
    traces = trace(_cells(grid)) if traces is None else traces
    todo = [t for t in traces if t.result is None]
    jobs = make_jobs([t.cell for t in todo], cells_per_job)
    by_cell = {id(t.cell): t for t in todo}
    rates, seen, rows = measured_rates(traces), set(), []
    for i, job in enumerate(jobs):
        runs = [run for cell in job.cells for run in by_cell[id(cell)].missing]
        new = [seen.add(run.key()) or run for run in runs if run.key() not in seen]
        epochs = sum(run.protocol.n_epochs * run.step.n_networks for run in new)
        hours, sources = 0.0, set()
        for run in new:
            rate, source = _rate(run.protocol.model, device, run.precision, rates)
            sources.add(source)
            hours = None if rate is None or hours is None else hours + (
                rate * len(run.data) / 1000 * run.protocol.n_epochs * run.step.n_networks / 3600)
        rows.append(dict(job=i, dataset=job.cells[0].dataset, method=job.method, cells=len(job.cells), runs=len(new),
                         run_epochs=epochs, rows=len(job.cells[0].run.data),
                         hours=float("nan") if hours is None else hours,
                         seconds_from="; ".join(sorted(sources)) or "-"))
    table = pd.DataFrame(rows, columns=["job", "dataset", "method", "cells", "runs", "run_epochs", "rows", "hours",
                                        "seconds_from"])
    return Plan(jobs, table, len(seen), float(table["hours"].sum(min_count=1)) if len(table) else 0.0, device,
                grid_status(grid, traces))


def format_plan(p: Plan, executor: str = "local", executor_options: dict | None = None) -> str:
    """The plan as text: counts, the executor's settings, one line per job, the estimated hours."""
    counts = p.status["status"].value_counts()
    unit = "GPU-hours" if p.device == "cuda" else "CPU-hours"
    hours = "unknown (see seconds_from)" if pd.isna(p.hours) else _hours(p.hours)
    if p.table["seconds_from"].str.contains("no cuda measurement").any():
        hours += " (at this CPU's seconds per epoch: no GPU measurement yet, see seconds_from)"
    settings = ", ".join(f"{k}={v}" for k, v in (executor_options or {}).items() if v is not None)
    lines = [f"grid: {len(p.status)} cells ({counts.get('done', 0)} done, {counts.get('running', 0)} running, "
             f"{counts.get('missing', 0)} missing)",
             f"executor: {executor}" + (f" ({settings})" if settings else ""),
             f"jobs: {len(p.jobs)}; runs to train: {p.runs}; run-epochs: {int(p.table['run_epochs'].sum())}; "
             f"estimated {unit}: {hours}"]
    if len(p.table):
        lines.append(p.table.to_string(index=False, formatters={"hours": _hours}))
    return "\n".join(lines)


def _hours(h: float) -> str:
    return "?" if pd.isna(h) else f"{h:,.0f}" if h >= 100 else f"{h:.1f}" if h >= 1 else f"{h:.2g}"


# ---------------------------------------------------------------- running a grid

class Progress:
    """A tqdm bar over the runs this call trains: the keys jobs report (in this process through
    ``report``, or in files under ``folder``) whose results appear in the cache after it started.
    A thread refreshes it every second until ``close``."""

    def __init__(self, total: int, folder: Path | None = None, enabled: bool = True):
        self.folder, self.keys, self.start = folder, set(), time.time() - 1
        self.bar = tqdm(total=total, desc="grid", unit="run", disable=not enabled, file=sys.stderr)
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

    def _loop(self):
        while not self._stop.wait(POLL_SECONDS):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.bar.close()


def cpu_cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
        options.update(partition=partition, gpus=1 if gpus is None else gpus, cpus=cpus,
                       time_min=time_min or DEFAULT_TIME_MIN, array_parallelism=array_parallelism)
    elif executor == "submitit-local":  # one GPU per job where there are GPUs, else one core each
        gpus = torch.cuda.device_count() if gpus is None else gpus
        options.update(gpus=gpus, time_min=time_min or DEFAULT_TIME_MIN, parallel=parallel or min(gpus or cpu_cores(),
                                                                                                cpu_cores()))
    return options


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


def run_grid(grid, executor: str = "local", *, device=None, stack_size: int | None = None,
             cells_per_job: int | None = None, wait: bool = True, progress: bool = True,
             **options) -> pd.DataFrame | list:
    """Train the runs of ``grid`` (a ``Grid`` or its cells) that the cache lacks, as jobs (see
    the module docstring), and return the results table (``collect``). ``executor``: one of
    ``EXECUTORS``. Options: ``folder`` (submitit's logs and pickles, default ``jobs/`` in the cache
    folder; on a cluster it must be shared, as the cache is), ``partition``, ``gpus`` (per job, default 1), ``cpus`` (per job),
    ``time_min`` (time limit per job, default one day), ``array_parallelism`` (Slurm);
    submitit-local: ``parallel`` jobs at once (at most the CPU cores; default one per GPU, else
    one per core), each given one of ``gpus`` GPUs (default: those visible) and its share of the
    CPU threads. ``device``
    and ``stack_size`` (K at most; None: as many as fit) go to every job. ``wait=False`` (Slurm)
    submits and returns the submitit jobs (``grid_status`` follows them; ``collect`` gathers the table)."""
    cells = _cells(grid)
    options = executor_options(executor, **options)
    check_int(stack_size, "stack_size", minimum=1, none_ok=True)
    if not wait and executor != "slurm":
        fail("wait", wait, "True unless executor='slurm' (jobs on this machine end with this process)")
    if executor == "local":
        resolve_device(device)
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
    return collect(cells)


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
        handles = ex.map_array(run_job, *zip(*args))
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
                    gpu = min(range(options["gpus"]), key=busy.count)
                    ex.update_parameters(gpus_per_node=1, visible_gpus=(gpu,))
                handles.append(ex.submit(run_job, *pending.pop(0)))
                gpu_of[handles[-1]] = gpu if local and options["gpus"] else None
            time.sleep(0 if executor == "debug" else POLL_SECONDS)
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


# ---------------------------------------------------------------- profiles and the command line

def profiles_dir(folder=None) -> Path:
    """Where the profiles are: ``folder``, else ``$IDNHELPERS_PROFILES``, else ``notebooks/profiles``
    of the repository this package lies in, else of the current directory."""
    candidates = [Path(p) for p in (folder, os.environ.get("IDNHELPERS_PROFILES")) if p] or [
        Path(__file__).resolve().parent.parent / "notebooks" / "profiles", Path.cwd() / "notebooks" / "profiles"]
    for path in candidates:
        if path.is_dir():
            return path
    fail("profiles_dir", [str(p) for p in candidates], "a folder of profiles (notebooks/profiles of a clone of this "
                                                       "project): pass --profiles-dir or set IDNHELPERS_PROFILES")


def load_profile(name: str, folder=None) -> dict:
    """The chapter-05 parameters of profile ``name``: ``<name>.yaml`` updated by
    ``<name>/05_benchmarks.yaml``, as ``book/build.py`` passes them to the chapter."""
    import yaml

    root = profiles_dir(folder)
    path = root / f"{name}.yaml"
    if not isinstance(name, str) or not path.exists():
        fail("profile", name, f"one of {sorted(p.stem for p in root.glob('*.yaml'))} (in {root})")
    settings = yaml.safe_load(path.read_text()) or {}
    override = root / name / f"{CHAPTER}.yaml"
    if override.exists():
        settings.update(yaml.safe_load(override.read_text()) or {})
    return settings


def spec_from_args(args) -> tuple[GridSpec, dict]:
    """The grid spec of parsed command-line arguments, and the profile's settings."""
    import yaml

    settings = load_profile(args.profile, args.profiles_dir)
    if args.table is not None:
        settings.update(TABLES[args.table])
        if args.profile == "paper":
            settings.update(PAPER_TABLES.get(args.table, {}))
    explicit = dict(dataset=args.dataset, methods=args.methods, noise_rates=args.rates, seeds=args.seeds,
                    data_root=args.data_root)
    settings.update({k: v for k, v in explicit.items() if v is not None})
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            fail("--set", item, "NAME=VALUE, e.g. n_epochs=5 or n_train=null")
        if name not in GridSpec.fields():
            fail("--set", name, f"a grid setting: {list(GridSpec.fields())}")
        settings[name] = yaml.safe_load(value)
    return GridSpec.from_settings(settings), settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idn-grid", description="Run the paper's benchmark grids (chapter 05, "
                                "Tables 1-3) into the shared cache, on this machine or on Slurm.",
                                epilog="Examples: idn-grid --profile paper --table 1 --dry-run; idn-grid --profile "
                                "paper --table 1 --executor slurm --partition gpu --time 720; idn-grid --status")
    g = p.add_argument_group("the grid")
    g.add_argument("--profile", default="cpu", help="parameter profile of notebooks/profiles (smoke, cpu, paper); "
                   "default cpu, as make book")
    g.add_argument("--profiles-dir", help="folder of the profiles (default: the repository's notebooks/profiles)")
    g.add_argument("--table", type=int, choices=sorted(TABLES), help="the grid of the paper's Table 1 (MNIST), "
                   "2 (CIFAR-10) or 3 (Clothing1M); with --profile paper, the paper's protocol for it")
    g.add_argument("--dataset", help="data set (overrides the profile)")
    g.add_argument("--methods", nargs="+", help="method names (ce forward coteaching gce dac dmi seal seal_dmi)")
    g.add_argument("--rates", nargs="+", type=float, help="IDN noise rates, e.g. 0.2 0.4")
    g.add_argument("--seeds", nargs="+", type=int, help="run seeds, e.g. 0 1 2")
    g.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other grid setting, e.g. --set n_epochs=5 --set n_train=null (YAML values)")
    g.add_argument("--data-root", help="folder with the data sets")
    e = p.add_argument_group("how it runs")
    e.add_argument("--executor", default="local", choices=EXECUTORS, help="local: in this process (default); "
                   "slurm: a submitit job array; submitit-local: submitit's local processes; debug: submitit's debug "
                   "executor")
    e.add_argument("--device", help="auto, cpu or cuda (default: the profile's)")
    e.add_argument("--stack-size", type=int, help="at most K runs stacked per call on CUDA (default: as many as fit)")
    e.add_argument("--cells-per-job", type=int, help="cells per job (default: all cells of a method)")
    e.add_argument("--folder", help="submitit's folder for logs and pickles (default: jobs/ in the cache folder)")
    e.add_argument("--partition", help="Slurm partition")
    e.add_argument("--gpus", type=int, help="Slurm: GPUs per job (default 1); submitit-local: GPUs of this machine "
                   "the jobs share, one each (default: those visible)")
    e.add_argument("--cpus", type=int, help="CPUs per job (Slurm)")
    e.add_argument("--time", type=int, dest="time_min", help="time limit per job in minutes (default 1440)")
    e.add_argument("--array-parallelism", type=int, help="Slurm: at most this many jobs of the array at once")
    e.add_argument("--parallel", type=int, help="submitit-local: jobs at once (at most the CPU cores; default one "
                   "per GPU, else one per core)")
    e.add_argument("--no-wait", action="store_true", help="submit to Slurm and exit; --status follows the jobs")
    a = p.add_argument_group("what to do").add_mutually_exclusive_group()
    a.add_argument("--dry-run", action="store_true", help="print the plan: cells, jobs, runs, estimated hours")
    a.add_argument("--status", action="store_true", help="print done / running / missing per cell")
    p.add_argument("--csv", help="also write the results table to this CSV file")
    return p


def main(argv=None) -> int:
    """``idn-grid`` / ``python -m idnhelpers.grid``: see ``--help``."""
    p = parser()
    args = p.parse_args(argv)
    try:
        spec, settings = spec_from_args(args)
        device = args.device or settings.get("device") or "auto"
        if spec.precision == "auto" and args.executor == "slurm" and not torch.cuda.is_available():
            fail("precision", "auto", "'fp32' or 'bf16' for Slurm jobs submitted from a machine without a GPU: "
                 "'auto' is decided by the GPU that trains, which this machine cannot see (--set precision=bf16 for "
                 "GPUs of compute capability 8.0 or later, e.g. A100, H100)")
        options = executor_options(args.executor, folder=args.folder, partition=args.partition, gpus=args.gpus,
                                   cpus=args.cpus, time_min=args.time_min, array_parallelism=args.array_parallelism,
                                   parallel=args.parallel)
        check_int(args.stack_size, "--stack-size", minimum=1, none_ok=True)
        check_int(args.cells_per_job, "--cells-per-job", minimum=1, none_ok=True)
        if args.no_wait and args.executor != "slurm":
            fail("--no-wait", True, "only with --executor slurm")
        grid = build_grid(spec, device=device, train_labels=not (args.dry_run or args.status))
    except (ValueError, MissingRuns) as error:
        p.error(str(error))
    print(grid.description, file=sys.stderr)
    if args.status:
        print(format_status(grid_status(grid)))
        return 0
    if args.dry_run:
        target = "cuda" if options.get("gpus") or str(device).startswith("cuda") or (
            device == "auto" and torch.cuda.is_available()) else "cpu"
        print(format_plan(plan(grid, device=target, cells_per_job=args.cells_per_job), args.executor, options))
        return 0
    table = run_grid(grid, args.executor, device=device, stack_size=args.stack_size,
                     cells_per_job=args.cells_per_job, wait=not args.no_wait, **_run_options(options))
    if args.no_wait:
        print("submitted; follow with --status, gather the table by running the same command (or chapter 05 with "
              "collect_only: true) when they are done")
        return 0
    print(summary(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def _run_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def summary(table: pd.DataFrame) -> str:
    """Test accuracy at the last epoch (%), mean ± std over seeds: method x labels per data set."""
    lines = []
    for dataset, part in table.groupby("dataset", sort=False):
        stats = part.groupby(["label", "labels"], sort=False)["last"].agg(["mean", "std", "count"])
        text = stats.apply(lambda r: f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["count"] > 1 else ""), axis=1)
        wide = text.unstack("labels")
        wide = wide.loc[list(dict.fromkeys(part["label"])), list(dict.fromkeys(part["labels"]))]
        wide.index.name, wide.columns.name = f"{dataset}: last-epoch test accuracy (%)", None
        lines.append(wide.to_string())
    return "\n".join(lines)


if __name__ == "__main__":
    from idnhelpers.grid import main as _main  # the importable module, so submitit pickles its functions by name

    sys.exit(_main())
