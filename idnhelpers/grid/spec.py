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
    ``Study.labels``, whose network trains on ``device`` (default the study's); Table 3: each method on
    Clothing1M's own noisy labels (Co-teaching forgets its estimated rate).
    ``device_type``: "cpu" or "cuda", where the cells train (part of their keys; default ``device``'s).
    ``train_labels=False``: a missing labelling network goes to ``prerequisites`` untrained. The base
    runs record chapter 03's memorisation (``experiments.noisy_runs``), so chapters 01-05 share them."""
    if not isinstance(study, Study):
        fail("study", type(study).__name__, "a study.Study")
    device = study.device if device is None else device
    device_type = check_choice(device_type or resolve_device(device).type, "device_type", DEVICE_TYPES)
    study = study.replace(precision=resolve_precision(study.precision, device, device_type))  # where cells train
    prerequisites = []
    if study.dataset == "clothing1m":
        proto = clothing1m.PROTOCOL.replace(n_epochs=study.n_epochs)
        base = {(None, seed): clothing1m.clothing1m_runs(study.data_root, study.clothing1m_weights, proto, seed=seed,
                                                         precision=study.precision, device_type=device_type)
                for seed in study.seeds}
        sets = {None: ("clothing1m", paper.CLOTHING1M_NOISE_RATE, study.methods)}  # rate: name, noise rate, methods
        run = base[(None, study.seeds[0])]
        about = (f"Clothing1M: {len(run.data)} noisy training images, {len(run.val.data)} clean validation and "
                 f"{len(run.test.data)} clean test images")
    else:
        proto, data, rates = study.protocol, study.sample(), study.all_rates
        networks = [FAMILIES[name] for name in {study.family_of(r) for r in rates} if FAMILIES[name].needs == "network"]
        label_precision = study.precision  # unused unless a labelling network trains: then here, on ``device``
        if networks:  # TF32 (a GPU's mode of fp32): IEEE fp32 on a CPU
            local_tf32 = study.precision == "tf32" and resolve_device(device).type != "cuda"
            label_precision = resolve_precision("fp32" if local_tf32 else study.precision, device)
        if not train_labels:
            nets = [network_run(data, train_seed=study.train_seed, precision=label_precision,
                                keep="last" if family.network == "final" else "none") for family in networks]
            prerequisites = [net for net in nets if engine.load(net) is None]
        if prerequisites:  # random stand-in labels, one set per rate so a plan counts each rate apart
            labels = {r: torch.randint(data.n_classes, data.y.shape, generator=torch.Generator().manual_seed(i))
                      for i, r in enumerate(rates)}
        else:
            labels = study.labels(data, rates, device=device, precision=label_precision)
        base = noisy_runs(data, labels, proto, study.seeds, precision=study.precision, device_type=device_type)
        settings = {**study.noise_family.settings, **study.family_settings}
        sets = {}
        for rate in rates:
            name = f"{rate:g}" if rate is not None else " ".join(map(str, settings.values())) or study.family
            if study.family_of(rate) != study.family:  # a rate the family's files lack, labelled by another
                name = f"{100 * rate:g}% ({study.family_of(rate)})"
            measured = float((labels[rate][data.train] != data.y[data.train]).float().mean())
            sets[rate] = (name, measured if rate is None else rate,
                          [m for m in study.methods if rate is None or rate in study.rates_of(m)])
        val = 0 if data.val is None else len(data.val)
        about = (f"labels: {study.labels_used(rates)}{', to be trained' if prerequisites else ''}; "
                 f"{len(data.train)} training rows, {val} validation rows, {len(data.test_rows)} test rows")
    family = "clothing1m" if study.dataset == "clothing1m" else study.family
    cells = tuple(Cell(study.dataset, method, family, name, noise_rate, seed, base[(rate, seed)], study.options(method))
                  for rate, (name, noise_rate, methods) in sets.items() for seed in study.seeds for method in methods)
    description = f"{about}, {len(cells)} grid cells; protocol: {proto}, {study.precision}"
    return Grid(study, cells, description, tuple(prerequisites))
