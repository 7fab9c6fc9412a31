"""A grid as data (``Cell``, ``Grid``, ``build_grid(study)``) and what the cache holds of it: its jobs
(``make_jobs``), each cell's stages as the cache has them (``trace``), ``grid_status``, the results
(``collect``) and the ``plan``."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from tqdm import tqdm

from .. import cache, clothing1m, engine, paper
from ..checks import check_choice, check_int, fail
from ..experiments import labelling_run, noisy_runs
from ..families import FAMILIES
from ..hardware import resolve_device, resolve_precision
from ..methods import Trainer, method_label, run_stages
from ..progress import use_bars
from ..results import Results
from ..runs import DEVICE_TYPES, MethodResult, Run, RunResult
from ..study import Study

# Seconds per epoch per 1000 training rows and per network, measured on this project's 2-core CPU
# (AMD EPYC with native bf16; NOTES.md, "Grid"); a plan prefers its own finished runs' seconds.
MEASURED = {("mnist_cnn", "cpu", "fp32"): 0.250, ("mnist_cnn", "cpu", "bf16"): 0.170,
            ("wrn28_10", "cpu", "fp32"): 279.0, ("wrn28_10", "cpu", "bf16"): 105.0, ("mlp", "cpu", "fp32"): 0.009}


@dataclass(frozen=True, eq=False)
class Cell:
    """``method`` with ``options`` on the base ``run``; ``family`` and ``labels`` name the label set;
    ``noise_rate`` (the target rate, or a fixed set's measured rate) goes to Co-teaching's forget rate."""

    dataset: str
    method: str
    family: str
    labels: str
    noise_rate: float | None
    seed: int
    run: Run
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} on {self.dataset}, labels {self.family} {self.labels}, seed {self.seed}"


@dataclass(frozen=True, eq=False)
class Grid:
    """A study's cells, a line describing their data, labels and protocol, and the labelling network
    the cache lacks (``prerequisites``, when built without training it; the labels are then placeholders).
    A list of cells is a grid of no study (``plan.as_grid``)."""

    study: Study | None
    cells: tuple[Cell, ...]
    description: str
    prerequisites: tuple[Run, ...] = ()


def build_grid(study: Study, *, device=None, train_labels: bool = True, device_type: str | None = None) -> Grid:
    """The cells of ``study``: label sets x seeds x methods (each at ``Study.rates_of``), labelled by
    ``Study.labels``, whose network trains on ``device`` (default the study's).
    ``device_type``: "cpu" or "cuda", where the cells train (part of their keys; default ``device``'s).
    ``train_labels=False``: a missing labelling network goes to ``prerequisites`` untrained. The base
    runs record chapter 03's memorisation (``experiments.noisy_runs``), so chapters 01-05 share them."""
    if not isinstance(study, Study):
        fail("study", type(study).__name__, "a study.Study")
    device = study.device if device is None else device
    device_type = check_choice(device_type or resolve_device(device).type, "device_type", DEVICE_TYPES)
    study = study.replace(precision=resolve_precision(study.precision, device, device_type))  # where cells train
    if study.dataset == "clothing1m":
        return _clothing1m_grid(study, device_type)
    proto = study.protocol
    data = study.sample()
    rates = study.all_rates
    families = [FAMILIES[name] for name in {study.family_of(r) for r in rates}]
    label_precision = study.precision  # unused unless a labelling network trains: then here, on ``device``
    if any(family.needs == "network" for family in families):  # TF32 (a GPU's mode of fp32): IEEE fp32 on a CPU
        local_tf32 = study.precision == "tf32" and resolve_device(device).type != "cuda"
        label_precision = resolve_precision("fp32" if local_tf32 else study.precision, device)
    prerequisites = []
    for family in families:
        if family.needs == "network" and not train_labels:
            net = labelling_run(data, family, train_seed=study.train_seed, precision=label_precision)
            if engine.load(net) is None:
                prerequisites.append(net)
    labels = {r: _placeholder(data, i) for i, r in enumerate(rates)} if prerequisites else study.labels(
        data, rates, device=device, precision=label_precision)
    base = noisy_runs(data, labels, proto, study.seeds, precision=study.precision, device_type=device_type)
    cells = []
    for rate in rates:
        measured = float((labels[rate][data.train] != data.y[data.train]).float().mean())
        settings = {**study.noise_family.settings, **study.family_settings}
        name = f"{rate:g}" if rate is not None else " ".join(map(str, settings.values())) or study.family
        if study.family_of(rate) != study.family:  # a rate the family's files lack, labelled by another
            name = f"{100 * rate:g}% ({study.family_of(rate)})"
        methods = [m for m in study.methods if rate is None or rate in study.rates_of(m)]
        for seed in study.seeds:
            run = base[(rate, seed)]
            cells += [Cell(study.dataset, method, study.family, name, measured if rate is None else rate, seed, run,
                           study.options(method)) for method in methods]
    val = 0 if data.val is None else len(data.val)
    description = (f"labels: {study.labels_used(rates)}{', to be trained' if prerequisites else ''}; "
                   f"{len(data.train)} training rows, {val} validation rows, {len(data.test_rows)} test rows, "
                   f"{len(cells)} grid cells; protocol: {proto}, {study.precision}")
    return Grid(study, tuple(cells), description, tuple(prerequisites))


def _placeholder(data, i: int) -> torch.Tensor:
    """Random stand-in labels for label set ``i``, one set per rate so a plan counts each rate apart."""
    return torch.randint(data.n_classes, data.y.shape, generator=torch.Generator().manual_seed(i))


def _clothing1m_grid(study: Study, device_type: str) -> Grid:
    """Table 3: each method on Clothing1M's own noisy labels (Co-teaching forgets its estimated rate)."""
    proto = clothing1m.PROTOCOL.replace(n_epochs=study.n_epochs)
    cells = []
    for seed in study.seeds:
        base = clothing1m.clothing1m_runs(study.data_root, study.clothing1m_weights, proto, seed=seed,
                                          precision=study.precision, device_type=device_type)
        cells += [Cell("clothing1m", method, "clothing1m", "clothing1m", paper.CLOTHING1M_NOISE_RATE, seed, base,
                       study.options(method)) for method in study.methods]
    description = (f"Clothing1M: {len(base.data)} noisy training images, {len(base.val.data)} clean validation and "
                   f"{len(base.test.data)} clean test images, {len(cells)} grid cells; protocol: {proto}, "
                   f"{study.precision}")
    return Grid(study, tuple(cells), description)


class MissingRuns(RuntimeError):
    """Cells of a grid whose runs are not (all) in the cache; ``cells`` names them."""

    def __init__(self, message: str, cells: list):
        super().__init__(message)
        self.cells = cells


@dataclass(frozen=True, eq=False)
class Job:
    """One slice of a grid: ``method`` with ``options`` on ``cells`` (all of one data set); each stage
    of the method is one ``engine.train_many`` call over the job's cells."""

    method: str
    options: dict
    cells: tuple[Cell, ...]


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
class _Tracer(Trainer):
    """A trainer that trains nothing: it loads what the cache has, answers the rest with placeholders
    (a random softmax seeded by the run's key) and logs ``(run, result or None)``; it stores nothing."""

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
    """One cell's stages' runs in order with their cached results (None: missing), and the method's
    result if every stage is there."""

    cell: Cell
    stages: tuple[tuple[Run, RunResult | None], ...]
    result: MethodResult | None

    @property
    def missing(self) -> list[Run]:
        return [run for run, result in self.stages if result is None]

    @property
    def status(self) -> str:
        """``done``, ``running`` (its first missing run is locked by another process) or ``missing``."""
        if self.result is not None:
            return "done"
        return "running" if cache.lock_holder(self.missing[0].key()) is not None else "missing"


def trace(cells, progress: bool = True) -> list[CellTrace]:
    """Each cell's method driver run against the cache; trains nothing."""
    traces = []
    for cell in tqdm(list(cells), desc="reading the cache", unit="cell", disable=not progress or not use_bars(),
                     file=sys.stderr):
        tracer = _Tracer()
        result = run_stages(cell.method, [cell.run], [cell.noise_rate], tracer, **cell.options)[0]
        traces.append(CellTrace(cell, tuple(tracer.log), None if tracer.placeholders else result))
    return traces


def as_grid(grid) -> Grid:
    """``grid``, or a list of cells as a grid of no study, description or prerequisites."""
    if isinstance(grid, Grid):
        return grid
    cells = tuple(grid)
    for i, cell in enumerate(cells):
        if not isinstance(cell, Cell):
            fail(f"cells[{i}]", type(cell).__name__, "a grid.Cell (build_grid(study).cells)")
    return Grid(None, cells, "")


def grid_status(grid, traces: list[CellTrace] | None = None) -> pd.DataFrame:
    """One row per cell: data set, method, labels, seed, ``status`` (done / running / missing) and
    how many of its stages are in the cache."""
    traces = trace(as_grid(grid).cells) if traces is None else traces
    return pd.DataFrame([dict(dataset=t.cell.dataset, method=t.cell.method, family=t.cell.family, labels=t.cell.labels,
                              seed=t.cell.seed, status=t.status, stages_done=sum(r is not None for _, r in t.stages))
                         for t in traces])


def format_status(status: pd.DataFrame) -> str:
    """The status table as text: a line of counts, then method x (labels, seed) per data set."""
    counts = status["status"].value_counts()
    lines = [f"{len(status)} cells: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "missing"))
             + f" (cache: {cache.cache_dir()})"]
    for dataset, part in status.groupby("dataset", sort=False):
        part = part.assign(cell=part["family"] + " " + part["labels"] + " seed " + part["seed"].astype(str),
                           name=part["method"].map(method_label))
        table = part.pivot(index="name", columns="cell", values="status")
        table = table.loc[part["name"].unique(), part["cell"].unique()]
        table.index.name, table.columns.name = dataset, None
        lines.append(table.to_string())
    return "\n".join(lines)


def collect(grid, traces: list[CellTrace] | None = None) -> Results:
    """The results of a grid read from the cache (``traces``: its cells' ``trace``, if just read); trains
    nothing. Raises ``MissingRuns`` listing each cell not all there (and its first missing run), or the
    labelling network the grid lacks."""
    grid = as_grid(grid)
    if grid.prerequisites:
        keys = ", ".join(run.key() for run in grid.prerequisites)
        raise MissingRuns(f"the labels of this grid need their labelling network (run {keys}), which is not in the "
                          f"cache ({cache.cache_dir()}): train it with `idn-grid` (same settings) or run_grid",
                          list(grid.cells))
    traces = trace(grid.cells) if traces is None else traces
    todo = [t for t in traces if t.result is None]
    if todo:
        lines = [f"  {t.cell.name}: {t.missing[0].label or 'a run'} (run {t.missing[0].key()}; {t.status}; "
                 f"{sum(r is not None for _, r in t.stages)} stage(s) before it in the cache)" for t in todo]
        raise MissingRuns(f"{len(todo)} of {len(grid.cells)} cells are not in the cache ({cache.cache_dir()}):\n"
                          + "\n".join(lines) + "\nTrain them with `idn-grid` (same settings) or run_grid; "
                          "`idn-grid --status` shows their progress.", [t.cell for t in todo])
    return Results([(t.cell, t.result) for t in traces], grid.description)


@dataclass(frozen=True)
class Plan:
    """What running a grid would do: its ``jobs``, ``table`` (a row per job: runs to train, hours,
    where the seconds came from), the distinct ``runs`` to train, ``hours`` in all on ``device``."""

    jobs: list[Job]
    table: pd.DataFrame
    runs: int
    hours: float
    device: str
    status: pd.DataFrame
    traces: list[CellTrace]  # what the cache held when planned


def measured_rates(traces: list[CellTrace]) -> dict:
    """``MEASURED``'s rates by (model, device type, precision) from the finished runs of these cells."""
    samples: dict[tuple, list[float]] = {}
    for t in traces:
        for run, result in t.stages:
            if result is not None and result.history.get("loss") and result.seconds > 0:
                key = (run.protocol.model, torch.device(result.device).type, run.precision)
                per = result.seconds / len(result.history["loss"]) / (len(run.data) / 1000) / run.step.n_networks
                samples.setdefault(key, []).append(per)
    return {key: sum(v) / len(v) for key, v in samples.items()}


def _rate(model: str, device: str, precision: str, rates: dict) -> tuple[float, str]:
    """(seconds per epoch per 1000 rows and network, where it came from); NaN where not measured."""
    for source, table in (("this grid's runs", rates), ("NOTES.md", MEASURED)):
        if (model, device, precision) in table:
            return table[(model, device, precision)], f"{source}, {device}"
    for source, table in (("this grid's runs", rates), ("NOTES.md", MEASURED)):
        for other in ("fp32", "bf16"):
            if (model, "cpu", other) in table and device != "cpu":
                return table[(model, "cpu", other)], f"{source}, cpu {other} (no {device} measurement)"
    return float("nan"), f"not measured ({model} on {device})"


def plan(grid, *, device: str = "cpu", cells_per_job: int | None = None, progress: bool = True) -> Plan:
    """The jobs and runs ``run_grid`` would start, with hours on ``device`` ("cpu" or "cuda") from
    ``measured_rates``, else ``MEASURED``; a grid's ``prerequisites`` come first, as job "labels"."""
    check_choice(device, "device", ("cpu", "cuda"))
    grid = as_grid(grid)
    traces = trace(grid.cells, progress)
    todo = [t for t in traces if t.result is None]
    jobs = make_jobs([t.cell for t in todo], cells_per_job)
    by_cell = {id(t.cell): t for t in todo}
    rates, seen, rows = measured_rates(traces), set(), []
    slices = [("labels", "labelling network", list(grid.prerequisites), None)]
    slices += [(i, job.method, [run for cell in job.cells for run in by_cell[id(cell)].missing], job)
               for i, job in enumerate(jobs)]
    for name, method, runs, job in slices:
        new = [seen.add(run.key()) or run for run in runs if run.key() not in seen]
        if job is None and not new:
            continue
        rated = [(run, *_rate(run.protocol.model, device, run.precision, rates)) for run in new]
        rows.append(dict(job=name, dataset=(job.cells[0].dataset if job else new[0].data.dataset), method=method,
                         cells=len(job.cells) if job else 0, runs=len(new),
                         run_epochs=sum(run.protocol.n_epochs * run.step.n_networks for run in new),
                         rows=len((job.cells[0].run if job else new[0]).data),
                         hours=sum(rate * len(run.data) / 1000 * run.protocol.n_epochs * run.step.n_networks / 3600
                                   for run, rate, _ in rated),
                         seconds_from="; ".join(sorted({source for *_, source in rated})) or "-"))
    table = pd.DataFrame(rows, columns=["job", "dataset", "method", "cells", "runs", "run_epochs", "rows", "hours",
                                        "seconds_from"])
    return Plan(jobs, table, len(seen), float(table["hours"].sum(min_count=1)) if len(table) else 0.0, device,
                grid_status(grid, traces), traces)


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
