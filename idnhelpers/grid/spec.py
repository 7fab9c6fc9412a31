"""A grid as data: ``Cell`` (one method on one base run), ``Grid`` and ``build_grid(study)``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import clothing1m, engine, paper
from ..checks import check_choice, fail
from ..experiments import network_run, noisy_runs
from ..families import FAMILIES
from ..hardware import resolve_device, resolve_precision
from ..runs import DEVICE_TYPES, Run
from ..study import Study


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
            net = network_run(data, train_seed=study.train_seed, precision=label_precision,
                              keep="last" if family.network == "final" else "none")
            if engine.load(net) is None:
                prerequisites.append(net)
    labels = {r: _placeholder(data, i) for i, r in enumerate(rates)} if prerequisites else study.labels(
        data, rates, device=device, precision=label_precision)
    base = noisy_runs(data, labels, proto, study.seeds, precision=study.precision,
                      device_type=device_type)
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
