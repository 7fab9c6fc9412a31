"""A grid as data: ``GridSpec`` (the settings that choose the cells: chapter 05's parameters of the
same names), ``Cell`` (one method on one base run) and ``build_grid(spec)``, which expands methods x
label sets x seeds into cells on one ``sample.Sample``. The labels come from
``experiments.family_labels`` for any noise family or published label set (``spec.family``), so the
grid, ``idn-grid`` and the chapters build the same runs and share their cache keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch



from .. import clothing1m, engine, paper
from ..checks import check_choice, check_distinct, check_float, check_int, check_seed, check_seeds, fail
from ..datasets import get_dataset, protocol
from ..experiments import family_labels, network_run, noisy_runs
from ..hardware import PRECISION_CHOICES, resolve_device, resolve_precision
from ..methods import get_method
from ..noise import FAMILIES
from ..runs import DEVICE_TYPES, Run
from ..sample import sample


@dataclass(frozen=True)
class GridSpec:
    """The settings that choose a grid's cells (chapter 05's parameters of the same names). Lists
    become tuples and noise rates are sorted; every value is checked here, before any work.
    ``family`` (``noise.FAMILIES``; default the authors' published IDN labels) with its own
    ``family_settings`` chooses the labels, seeded by ``noise_seed`` / ``train_seed`` where the family
    is (None: its defaults); a fixed family (human labels) takes ``noise_rates=None``.
    ``n_epochs``/``n_iterations`` None: the paper's for the data set (its protocol's epochs; SEAL
    iterations 10, 3 on CIFAR and Clothing1M); ``n_train``/``n_test`` None: every row;
    ``dmi_epochs`` None: DMI's own stage as long as the others. ``seed`` picks the training
    subset and the validation split; ``seeds`` are the runs' seeds."""

    dataset: str = "mnist"
    methods: tuple = paper.TABLE_METHODS
    family: str = "idn_published"
    family_settings: dict = field(default_factory=dict)
    noise_rates: tuple | None = paper.RATES
    seeds: tuple = (0, 1, 2)
    n_epochs: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    val_fraction: float = 0.0
    n_iterations: int | None = None
    dmi_epochs: int | None = None
    noise_seed: int | None = None
    train_seed: int | None = None
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
        check_distinct(self.methods, "methods", "method names")
        for name in self.methods:
            get_method(name)
        if self.dataset != "clothing1m":
            family = FAMILIES[check_choice(self.family, "family", FAMILIES)]
            if not isinstance(self.family_settings, dict):
                fail("family_settings", self.family_settings, "a dict of the family's settings, e.g. {'norm_std': 0.2}")
            family.with_defaults(self.family, self.family_settings)
            family.check_dataset(self.family, self.dataset)
            rates = family.check_rates(self.family, self.noise_rates)
            set_("noise_rates", None if family.fixed else tuple(sorted(rates)))
            for name in ("noise_seed", "train_seed"):
                value = getattr(self, name)
                if value is not None and name not in family.seeded_by:
                    fail(name, value, f"None: family {self.family!r} is seeded by {list(family.seeded_by) or 'nothing'}")
        set_("seeds", check_seeds(self.seeds))
        for name in ("n_epochs", "n_train", "n_test"):
            check_int(getattr(self, name), name, minimum=1, none_ok=True)
        check_int(self.n_iterations, "n_iterations", minimum=0, none_ok=True)
        check_int(self.dmi_epochs, "dmi_epochs", minimum=1, none_ok=True)
        set_("val_fraction", check_float(self.val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True))
        for name in ("seed", "noise_seed", "train_seed"):
            if getattr(self, name) is not None:
                check_seed(getattr(self, name), name)
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
    def epochs(self) -> int:
        """The runs' epochs: ``n_epochs``, else the data set's protocol's."""
        return self.n_epochs or get_dataset(self.dataset).protocol.n_epochs

    def options(self, method: str) -> dict:
        """The method's options in this grid (``paper.method_options``)."""
        return paper.method_options(self.dataset, method, n_epochs=self.epochs, n_iterations=self.n_iterations,
                                    dmi_epochs=self.dmi_epochs)


@dataclass(frozen=True, eq=False)
class Cell:
    """One grid cell: ``method`` with ``options`` on the base ``run`` (training rows, noisy labels,
    seed, what to record). ``family`` and ``labels`` name the label set (the noise rate, or the
    family's one set); ``noise_rate`` goes to the methods that take it (Co-teaching's forget rate:
    the target rate, or the measured rate of a fixed label set)."""

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
    """A spec's cells, with a line describing the data, labels and protocol they train on, and the
    runs its labels need that the cache lacks (``prerequisites``: a labelling network, when the
    grid was built without training it; its cells then carry placeholder labels)."""

    spec: GridSpec
    cells: tuple[Cell, ...]
    description: str
    prerequisites: tuple[Run, ...] = ()


def build_grid(spec: GridSpec, *, device=None, train_labels: bool = True, device_type: str | None = None) -> Grid:
    """The cells of ``spec``: methods x label sets (noise rates) x seeds, in that order, on the rows
    of ``sample(spec.dataset, ...)``. The labels are ``experiments.family_labels``' for
    ``spec.family``; a family that needs a network trains it on ``device`` (or loads it from the
    cache). ``device_type``: where the cells train, "cpu" or "cuda" (part of their cache keys;
    default: ``device``'s type; Slurm jobs submitted from a machine without a GPU: "cuda"). With ``train_labels=False`` a missing labelling network is not trained: the grid lists
    it in ``prerequisites`` and its cells carry random placeholder labels (a plan still
    counts every run; ``run_grid`` trains the network and builds the grid again). Every base run
    records what chapter 03 reads of memorisation (``experiments.noisy_runs``: CSR and 20 tracked
    corrupted rows, which cost little), so chapters 01, 03, 04 and 05 share the grid's runs."""
    if not isinstance(spec, GridSpec):
        fail("spec", type(spec).__name__, "a grid.GridSpec")
    spec = spec.replace(precision=resolve_precision(spec.precision, device))  # "auto": for the device that trains
    device_type = check_choice(device_type or resolve_device(device).type, "device_type", DEVICE_TYPES)
    if spec.dataset == "clothing1m":
        return _clothing1m_grid(spec, device_type)
    proto = protocol(spec.dataset, n_epochs=spec.n_epochs)
    data = sample(spec.dataset, n_train=spec.n_train, n_test=spec.n_test, val_fraction=spec.val_fraction,
                  seed=spec.seed, root=spec.data_root)
    family = FAMILIES[spec.family]
    rates = list(spec.noise_rates) if spec.noise_rates is not None else [None]
    prerequisites = []
    if family.needs == "network" and not train_labels:
        net = network_run(data, train_seed=spec.train_seed, precision=spec.precision,
                          keep="last" if family.network == "final" else "none")
        if engine.load(net) is None:
            prerequisites.append(net)
    labels = {r: _placeholder(data, i) for i, r in enumerate(rates)} if prerequisites else family_labels(
        data, spec.family, spec.noise_rates, noise_seed=spec.noise_seed, train_seed=spec.train_seed, device=device,
        precision=spec.precision, **spec.family_settings)
    base = noisy_runs(data, labels, proto, spec.seeds, precision=spec.precision)
    cells = []
    for rate in rates:
        y_noisy = labels[rate]
        measured = float((y_noisy[data.train] != data.y[data.train]).float().mean())
        name = f"{rate:g}" if rate is not None else " ".join(map(str, {**family.settings, **spec.family_settings}.values())) or spec.family
        for seed in spec.seeds:
            run = base[(rate, seed)].replace(device_type=device_type)
            cells += [Cell(spec.dataset, method, spec.family, name, measured if rate is None else rate, seed, run,
                           spec.options(method)) for method in spec.methods]
    val = 0 if data.val is None else len(data.val)
    description = (f"labels: {family.label} ({spec.family}{', to be trained' if prerequisites else ''}); "
                   f"{len(data.train)} training rows, {val} validation rows, {len(data.test_rows)} test rows, "
                   f"{len(cells)} grid cells; protocol: {proto}, {spec.precision}")
    return Grid(spec, tuple(cells), description, tuple(prerequisites))


def _placeholder(data, i: int) -> torch.Tensor:
    """Stand-in labels for label set ``i`` while its network is not trained: random, one set per
    rate, so that a plan counts each rate's runs apart."""
    return torch.randint(data.n_classes, data.y.shape, generator=torch.Generator().manual_seed(i))


def _clothing1m_grid(spec: GridSpec, device_type: str) -> Grid:
    """Table 3: each method on Clothing1M's own noisy labels (Co-teaching forgets Clothing1M's
    estimated noise rate)."""
    proto = clothing1m.PROTOCOL.replace(n_epochs=spec.n_epochs)
    cells = []
    for seed in spec.seeds:
        base = clothing1m.clothing1m_runs(spec.data_root, spec.clothing1m_weights, proto, seed=seed,
                                          precision=spec.precision).replace(device_type=device_type)
        cells += [Cell("clothing1m", method, "clothing1m", "clothing1m", paper.CLOTHING1M_NOISE_RATE, seed, base,
                       spec.options(method)) for method in spec.methods]
    description = (f"Clothing1M: {len(base.data)} noisy training images, {len(base.val.data)} clean validation and "
                   f"{len(base.test.data)} clean test images, {len(cells)} grid cells; protocol: {proto}, {spec.precision}")
    return Grid(spec, tuple(cells), description)
