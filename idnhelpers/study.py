"""A study: the settings of one experiment as one frozen value, checked once when built;
``Study.load(profile, **overrides)`` reads it from YAML settings files (``load_profile``: read with
``yaml.safe_load``, so a file cannot execute code; ``idn-grid --profile`` and the book's profiles)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import paper
from .checks import (check_choice, check_fields, check_float, check_int, check_list, check_noise_seed, check_seed,
                     check_seeds, checked, fail)
from .datasets import DatasetSpec, get_dataset, protocol
from .experiments import family_labels
from .hardware import PRECISION_CHOICES, resolve_precision
from .methods import METHODS
from .families import FAMILIES, NoiseFamily
from .protocol import Protocol
from .sample import Sample, sample


def load_profile(paths) -> dict:
    """The settings of the YAML files ``paths`` (a path or a list of them), merged in order."""
    import yaml

    settings = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        if not Path(path).is_file():
            fail("profile", str(path), "an existing YAML file of settings")
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            fail("profile", str(path), "a YAML file of name: value settings")
        settings.update(values)
    return settings


@dataclass(frozen=True)
class Study:
    """An experiment's settings; the defaults are Table 1 as the paper ran it. ``family``
    (``families.FAMILIES``) with ``family_settings`` chooses the labels (a fixed family takes
    ``noise_rates=None``; the published IDN labels take any rate, Algorithm 1 giving those they lack:
    ``family_of``); ``baseline_rates``: every method's but CE's and SEAL's (None:
    ``noise_rates``). None means the paper's ``n_epochs``/``n_iterations``, every row (``n_train``/
    ``n_test``), DMI's stage as long as the others, the family's ``noise_seed``/``train_seed``.
    ``seed`` picks the rows, ``seeds`` seed the runs; ``profile`` names the settings. ``family=None``:
    the caller brings the labels (``idn-noisy``: a data set's own or a file's)."""

    dataset: str = "mnist"
    methods: tuple = paper.TABLE_METHODS
    family: str | None = "idn_published"
    family_settings: dict = field(default_factory=dict)
    noise_rates: tuple | None = paper.RATES
    baseline_rates: tuple | None = None
    seeds: tuple = (0, 1, 2)
    n_epochs: int | None = checked(None, check_int, minimum=1, none_ok=True)
    n_train: int | None = checked(None, check_int, minimum=1, none_ok=True)
    n_test: int | None = checked(None, check_int, minimum=1, none_ok=True)
    val_fraction: float = 0.0
    n_iterations: int | None = checked(None, check_int, minimum=0, none_ok=True)
    dmi_epochs: int | None = checked(None, check_int, minimum=1, none_ok=True)
    noise_seed: int | None = checked(None, check_noise_seed, none_ok=True)
    train_seed: int | None = checked(None, check_seed, none_ok=True)
    seed: int = checked(0, check_seed)
    precision: str = checked("fp32", check_choice, choices=PRECISION_CHOICES)
    device: str = "auto"
    data_root: str | None = None
    clothing1m_weights: str | None = None
    profile: str | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        get_dataset(self.dataset)
        methods = check_list(self.methods, "methods", lambda m, name: check_choice(m, name, sorted(METHODS)),
                             "method names, e.g. ['ce', 'seal']", "method names")
        set_("methods", tuple(methods))
        if self.family is None:  # the caller's labels: no rates, seeds or settings of a family
            for name in ("noise_seed", "train_seed", "family_settings"):
                if getattr(self, name) not in (None, {}):
                    fail(name, getattr(self, name), "none with family=None (a study that brings its own labels)")
            set_("noise_rates", None)
            set_("baseline_rates", None)
        elif self.dataset != "clothing1m":
            self._check_family(set_)
        set_("seeds", check_seeds(self.seeds))
        check_fields(self)
        set_("val_fraction", check_float(self.val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True))
        try:
            torch.device(self.device if self.device != "auto" else "cpu")
        except (RuntimeError, TypeError):
            fail("device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("data_root", "clothing1m_weights", "profile"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                fail(name, value, "a path or None" if name != "profile" else "a name (a string) or None")
            set_(name, None if value is None else str(value))
        if self.dataset == "clothing1m" and self.clothing1m_weights is None:
            fail("clothing1m_weights", None, "the ImageNet ResNet-50 weights (a torchvision state_dict file) for "
                                             "dataset='clothing1m'")

    def _check_family(self, set_) -> None:
        family = FAMILIES[check_choice(self.family, "family", FAMILIES)]
        if not isinstance(self.family_settings, dict):
            fail("family_settings", self.family_settings, "a dict of the family's settings, e.g. {'norm_std': 0.2}")
        family.with_defaults(self.family, self.family_settings)
        family.check_dataset(self.family, self.dataset)
        rates_family = FAMILIES[family.completed_by] if family.completed_by else family  # any rate, if completed
        if self.noise_rates is None and not family.fixed:
            fail("noise_rates", None, f"one or more noise rates for family {self.family!r}, e.g. [0.2, 0.4]")
        rates = rates_family.check_rates(self.family, self.noise_rates)
        set_("noise_rates", None if family.fixed else tuple(sorted(rates)))
        if self.baseline_rates is not None:
            baseline = rates_family.check_rates(self.family, self.baseline_rates, "baseline_rates")
            set_("baseline_rates", tuple(sorted(baseline)))
        seeded_by = {s for r in self.all_rates for s in FAMILIES[self.family_of(r)].seeded_by}
        for name in ("noise_seed", "train_seed"):
            value = getattr(self, name)
            if value is not None and name not in seeded_by:
                fail(name, value, f"None: the labels of family {self.family!r} at rates {list(self.all_rates)} "
                     f"are seeded by {sorted(seeded_by) or 'nothing'}")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def load(cls, files=None, /, **overrides) -> "Study":
        """The settings of ``files`` (a path or a list, read in order), then ``overrides``."""
        settings = {**(load_profile(files) if files is not None else {}), **overrides}
        unknown = sorted(set(settings) - set(cls.fields()))
        if unknown:
            fail("setting", ", ".join(unknown), f"a study setting: {list(cls.fields())}")
        return cls(**settings)

    def replace(self, **changes) -> "Study":
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "Study":
        """This study with ``precision`` "auto" decided for its device (``hardware.resolve_precision``)."""
        return self.replace(precision=resolve_precision(self.precision, self.device))

    @property
    def data_spec(self) -> DatasetSpec:
        return get_dataset(self.dataset)

    @property
    def noise_family(self) -> NoiseFamily:
        if self.family is None:
            fail("family", None, f"a noise family for labels of its own: one of {list(FAMILIES)} (family=None: "
                 "this study brings its own labels)")
        return FAMILIES[self.family]

    @property
    def protocol(self) -> Protocol:
        """The data set's training protocol (Appendix A) with this study's ``n_epochs``."""
        return protocol(self.dataset, n_epochs=self.n_epochs)

    @property
    def epochs(self) -> int:
        """The runs' epochs: ``n_epochs``, else the data set's protocol's."""
        return self.protocol.n_epochs

    def rates_of(self, method: str) -> tuple | None:
        """CE and SEAL run at ``noise_rates``, the others at ``baseline_rates`` where given."""
        if method in ("ce", "seal") or self.baseline_rates is None:
            return self.noise_rates
        return self.baseline_rates

    @property
    def all_rates(self) -> list:
        """Every rate a method of this study trains at ([None] for a fixed family)."""
        if self.family is None or self.noise_family.fixed:
            return [None]
        return sorted({r for m in self.methods for r in self.rates_of(m)})

    def family_of(self, rate: float | None) -> str:
        """The family that labels ``rate``: ``family``, or where its files lack the rate, the family that
        completes it (``NoiseFamily.completed_by``: the authors' IDN labels exist at 10-40%, Algorithm 1
        gives any other rate on the study's rows)."""
        spec = self.noise_family  # family=None: refused here, by name
        if rate is not None and spec.completed_by and not spec.has_rate(rate):
            return spec.completed_by
        return self.family

    def _by_family(self, rates) -> dict[str, list]:
        groups = {}
        for r in self.all_rates if rates is None else rates:
            groups.setdefault(self.family_of(r), []).append(r)
        return groups

    def labels_used(self, rates=None) -> str:
        """Which labels each rate uses: "IDN (the authors' published labels) at 20%; IDN (Algorithm 1) at 25%"."""
        parts = []
        for family, group in self._by_family(rates).items():
            at = "" if group == [None] else " at " + ", ".join(f"{100 * r:g}%" for r in group)
            parts.append(FAMILIES[family].label + at)
        return "; ".join(parts)

    def labels(self, data: Sample, rates=None, *, device=None, precision: str | None = None,
               use_cache: bool = True) -> dict:
        """``{rate: noisy labels}`` of ``data``'s rows at ``rates`` (default ``all_rates``), each rate by
        ``family_of(rate)`` (``experiments.family_labels``; a network trains in ``precision``, default the
        study's)."""
        out = {}
        for family, group in self._by_family(rates).items():
            spec = FAMILIES[family]
            seeds = {name: getattr(self, name) for name in spec.seeded_by}  # noise_seed, train_seed or both
            settings = self.family_settings if family == self.family else {}
            out.update(family_labels(data, family, None if spec.fixed else group, device=device or self.device,
                                     precision=precision or self.precision, use_cache=use_cache, **seeds, **settings))
        return {r: out[r] for r in (self.all_rates if rates is None else rates)}

    def options(self, method: str) -> dict:
        """The method's options in this study (``paper.method_options``)."""
        return paper.method_options(self.dataset, method, n_epochs=self.epochs, n_iterations=self.n_iterations,
                                    dmi_epochs=self.dmi_epochs)

    def sample(self) -> Sample:
        """The rows this study trains and scores on (``sample.sample``)."""
        return sample(self.dataset, n_train=self.n_train, n_test=self.n_test, val_fraction=self.val_fraction,
                      seed=self.seed, root=self.data_root)
