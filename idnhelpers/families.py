"""The noise families and published label sets by name (``FAMILIES``, README.md), generators in ``noise``
and ``published``: ``noisy_labels`` of your own arrays, ``experiments.family_labels`` of a data set's rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .checks import (check_choice, check_float, check_labels, check_labels_softmax, check_new_name,
                     check_noise_seed, check_rates, check_same_length, fail)
from .noise import (XIA_NORM_STD, _class_count, _pmd_type, flip_count, idn_labels, pair_noise,
                    pmd_noise, symmetric_noise, xia_noise, xia_rate_distribution)
from .published import (CAL_DATASETS, CAL_RATES, PUBLISHED, PUBLISHED_RATES, check_cifar_n_labels, load_cal_idn,
                        load_cifar_n, load_published_idn, read_noisy_csv)
from .stats import binomial_se


@dataclass(frozen=True)
class LabelInputs:
    """What a generator may read of the rows it labels: for a network, its softmax ``S``; for a published
    file, where the rows come from (``dataset``, ``rows`` of its training split, ``root``)."""

    y: torch.Tensor
    n_classes: int
    X: torch.Tensor | None = None
    S: torch.Tensor | None = None
    dataset: str | None = None
    rows: torch.Tensor | None = None
    root: str | None = None


@dataclass(frozen=True)
class NoiseFamily:
    """A label-noise family: ``make(inputs, rate, seed, **settings)`` gives the noisy labels of
    ``LabelInputs`` (rate None for a ``fixed`` family). ``needs``: None, "instances", "network" (its softmax
    "averaged" over epochs or the "final" one's) or "file" (for ``datasets`` and ``rates`` only).
    ``settings``: defaults, checked by ``checks``; ``exact``: ``flip_count`` flips; ``nested``: a lower
    rate's flips are a higher one's subset; ``expected(rate, **settings)``: the realised rate's mean;
    ``completed_by``: the family a ``study.Study`` labels the rates this one's files lack with."""

    label: str
    make: Callable
    needs: str | None = None
    seeded_by: tuple[str, ...] = ("noise_seed",)
    exact: bool = True
    nested: bool = False
    settings: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    network: str = "averaged"
    datasets: tuple[str, ...] | None = None
    rates: tuple[float, ...] | None = None
    fixed: bool = False
    instance_dependent: bool = True
    expected: Callable | None = None
    completed_by: str | None = None

    def __post_init__(self):
        if not callable(self.make):
            fail("make", self.make, "a function (inputs, rate, seed, **settings) -> noisy labels")
        if self.needs is not None:
            check_choice(self.needs, "needs", ["instances", "network", "file"])
        check_choice(self.network, "network", ["averaged", "final"])
        for name in self.seeded_by:
            check_choice(name, "seeded_by", ["noise_seed", "train_seed"])
        for name in self.checks:
            if name not in self.settings:
                fail("checks", name, f"a check of one of the family's settings {list(self.settings)}")

    def with_defaults(self, family: str, settings: dict) -> dict:
        """``settings`` checked against this family's and completed with their defaults."""
        for name, value in settings.items():
            if name not in self.settings:
                fail(name, value, f"a setting of family {family!r}: one of {list(self.settings)}"
                     if self.settings else f"no setting: family {family!r} has none")
            if name in self.checks:
                self.checks[name](value, name)
        return {**self.settings, **settings}

    def check_rates(self, family: str, rates, name: str = "noise_rates") -> list:
        """``rates`` checked for this family: [None] for a fixed one, else those of its files if it has any."""
        if self.fixed:
            if rates not in (None, [None], (None,)):
                fail(name, rates, f"None: family {family!r} is one fixed set of labels, with no rate")
            return [None]
        checked = check_rates(rates, name)
        for r in checked:
            if not self.has_rate(r):
                fail(name, r, f"one of the rates family {family!r} has: {list(self.rates)}"
                     + (f" (or family {self.completed_by!r}, which gives any rate)" if self.completed_by else ""))
        return checked

    def has_rate(self, rate: float) -> bool:
        return self.rates is None or any(abs(rate - p) < 1e-9 for p in self.rates)

    def check_dataset(self, family: str, dataset: str) -> None:
        if self.datasets is not None and dataset not in self.datasets:
            fail("dataset", dataset, f"one of {list(self.datasets)}: family {family!r} has labels for those only"
                 + (f"; family {self.completed_by!r} gives labels on any data set" if self.completed_by else ""))


def expected_rate(family: str, rate: float, n: int, **settings) -> tuple[float, float] | None:
    """(mean, sd) of ``family``'s realised noise rate over ``n`` labels at ``rate`` (None: unknown): the sd
    of Binomial(n, mean) (Xia's; PMD's Poisson-binomial sd is at most that)."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    if spec.exact and spec.needs != "file":
        return flip_count(rate, n) / n, 0.0
    if spec.expected is None:
        return None
    mean = spec.expected(rate, **spec.with_defaults(family, settings))
    return mean, binomial_se(mean, n)


def _published(load):
    """A file family's ``make``: the rows' labels of ``load(dataset, rate, root, **settings)``, checked."""
    def make(inputs, rate, seed, **settings):
        y_all, y_noisy_all = load(inputs.dataset, rate, inputs.root, **settings)
        if (inputs.rows >= len(y_all)).any() or not torch.equal(y_all[inputs.rows], inputs.y):
            fail("labels", f"{inputs.dataset}'s published file", "a file whose true labels are the data set's "
                 "(row i = training index i)")
        return y_noisy_all[inputs.rows]
    return make


FAMILIES: dict[str, NoiseFamily] = {}


def register_family(name: str, family: NoiseFamily, *, replace: bool = False) -> NoiseFamily:
    """Add ``family`` to the registry under ``name`` (an existing name only with ``replace=True``)."""
    check_new_name(FAMILIES, name, "noise family", replace)
    if not isinstance(family, NoiseFamily):
        fail("family", family, "a families.NoiseFamily")
    FAMILIES[name] = family
    return family


_XIA = dict(needs="instances", settings={"norm_std": XIA_NORM_STD},
            checks={"norm_std": lambda value, name: check_float(value, name, low=0.0, low_open=True)})
_PMD = dict(needs="network", network="final", seeded_by=("train_seed", "noise_seed"), settings={"type": 1},
            checks={"type": _pmd_type})
_FILE = dict(needs="file", seeded_by=(), exact=False)
register_family("idn", NoiseFamily("IDN (Algorithm 1)", lambda inputs, r, seed: idn_labels(inputs.y, inputs.S, r),
                                   needs="network", seeded_by=("train_seed",), nested=True))
register_family("idn_published", NoiseFamily(
    "IDN (the authors' published labels)", _published(lambda dataset, r, root: load_published_idn(dataset, r)),
    needs="file", seeded_by=(), nested=True, datasets=tuple(PUBLISHED), rates=PUBLISHED_RATES, completed_by="idn"))
register_family("xia", NoiseFamily(
    "Xia et al.", lambda inputs, r, seed, norm_std: xia_noise(inputs.X, inputs.y, r, inputs.n_classes, seed, norm_std),
    **_XIA, exact=False, expected=lambda r, norm_std: float(xia_rate_distribution(r, norm_std).mean())))
register_family("xia_exact", NoiseFamily("Xia et al., exact count", lambda inputs, r, seed, norm_std: xia_noise(
    inputs.X, inputs.y, r, inputs.n_classes, seed, norm_std, exact=True), **_XIA))
register_family("pmd", NoiseFamily(
    "PMD (Zhang et al.)", lambda inputs, r, seed, type: pmd_noise(inputs.y, inputs.S, r, type, seed),
    **_PMD, exact=False, expected=lambda r, type: r))  # the factor is solved for the mean
register_family("pmd_exact", NoiseFamily(
    "PMD, exact count", lambda inputs, r, seed, type: pmd_noise(inputs.y, inputs.S, r, type, seed, exact=True), **_PMD))
register_family("pmd_factor", NoiseFamily(  # gen_noise_label.py --noise_factor: the rate is what the factor gives
    "PMD at the authors' hand-set factor",
    lambda inputs, r, seed, type, factor: pmd_noise(inputs.y, inputs.S, None, type, seed, factor=factor),
    **{**_PMD, "settings": {"type": 1, "factor": 1.2},
       "checks": {"type": _pmd_type, "factor": lambda value, name: check_float(value, name, low=1.0)}},
    exact=False, fixed=True))
register_family("symmetric", NoiseFamily(
    "symmetric CCN", lambda inputs, r, seed: symmetric_noise(inputs.y, r, inputs.n_classes, seed),
    instance_dependent=False))
register_family("pair", NoiseFamily(
    "pair CCN", lambda inputs, r, seed: pair_noise(inputs.y, r, inputs.n_classes, seed), instance_dependent=False))
register_family("cal_idn", NoiseFamily(
    "IDN of CAL (Zhu et al.)", _published(lambda dataset, r, root: load_cal_idn(dataset, r)), **_FILE,
    datasets=tuple(CAL_DATASETS), rates=CAL_RATES))
register_family("cifar10n", NoiseFamily(
    "CIFAR-10N human labels", _published(lambda dataset, r, root, labels: load_cifar_n(dataset, root, labels)),
    **_FILE, datasets=("cifar10",), fixed=True, settings={"labels": "worst"},
    checks={"labels": lambda value, name: check_cifar_n_labels(value, "cifar10")}))
register_family("cifar100n", NoiseFamily(
    "CIFAR-100N human labels", _published(lambda dataset, r, root: load_cifar_n(dataset, root, "noisy")), **_FILE,
    datasets=("cifar100",), fixed=True))
register_family("labels_file", NoiseFamily(
    "labels from a file", _published(lambda data, r, root, path: read_noisy_csv(path, None, data, root)),
    **_FILE, fixed=True, settings={"path": None}))


def labels_of(family: str, inputs: LabelInputs, noise_rate: float | None, *, noise_seed: int = 0,
              **settings) -> torch.Tensor:
    """Noisy labels of ``family`` for ``inputs`` at ``noise_rate`` (None for a fixed family), all checked."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    rate = spec.check_rates(family, None if noise_rate is None else [noise_rate])[0]
    check_noise_seed(noise_seed)
    settings = spec.with_defaults(family, settings)
    needed = {"network": ("S", inputs.S), "instances": ("X", inputs.X),
              "file": ("dataset/rows", None if inputs.rows is None else inputs.dataset)}
    if spec.needs in needed and needed[spec.needs][1] is None:
        fail(needed[spec.needs][0], None, f"what family {family!r} needs ({spec.needs}; experiments.family_labels "
             "provides it for a sample)")
    if not len(check_labels(inputs.y, inputs.n_classes)):
        fail("y", "no labels", "at least one label to make noisy")
    if inputs.S is not None:  # one row per label, one column per class: labels in [0, n_classes)
        check_labels_softmax(inputs.y, inputs.S, inputs.n_classes)
    if spec.needs == "file":
        spec.check_dataset(family, inputs.dataset)
        check_same_length(y=inputs.y, rows=inputs.rows)
    return spec.make(inputs, rate, noise_seed, **settings)


def noisy_labels(family: str, y: torch.Tensor, noise_rate: float | None, n_classes: int, *, noise_seed: int = 0,
                 X=None, S=None, **settings) -> torch.Tensor:
    """``labels_of`` for your own labels ``y``, with ``S`` (a softmax) or ``X`` as the family needs."""
    return labels_of(family, LabelInputs(_class_count(y, n_classes), n_classes, X, S), noise_rate,
                     noise_seed=noise_seed, **settings)
