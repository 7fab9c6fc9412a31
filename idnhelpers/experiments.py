"""The paper's experiments that train, each on a ``sample.Sample``: Algorithm 1 (``generate_idn``), any
noise family's labels (``family_labels``), Theorem 1's CCN test (``ccn_experiment``) and the records of
memorisation (``memorisation_records``, Section 3.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_choice, check_int, check_noise_seed, check_rates, check_seed, check_seeds, fail
from .csr import CSR_RADIUS
from .datasets import get_dataset
from .engine import predict, train
from .hardware import resolve_precision
from .noise import idn_labels, mislabel_scores
from .families import FAMILIES, LabelInputs, NoiseFamily, labels_of
from .protocol import Protocol
from .runs import CSRProbe, Run
from .sample import Sample
from .stats import ccn_bound, ccn_test

CSR_PROBES = ("train", "test")  # memorisation_records' CSR probe sets


@dataclass
class GeneratedIDN:
    """``generate_idn``'s output: true labels ``y``, averaged softmax ``S``, Eq. (3)'s scores and
    candidates, the noisy labels per rate, and the labelling network's history and run."""

    sample: Sample
    y: torch.Tensor
    S: torch.Tensor
    score: torch.Tensor
    candidate: torch.Tensor
    noisy: dict[float, torch.Tensor]
    history: dict
    seconds: float
    run: Run


def generate_idn(sample: Sample, noise_rates, *, n_epochs: int | None = None, train_seed: int | None = None,
                 device=None, precision: str = "fp32", softmax_mode: str = "eval", use_cache: bool = True,
                 **protocol_overrides) -> GeneratedIDN:
    """Algorithm 1 on ``sample``'s rows: one ``network_run``, its softmax averaged over epochs (Eq. 3), noisy
    labels for every rate (``softmax_mode="official"``: as the official code records it)."""
    rates = check_rates(noise_rates)
    run = network_run(sample, train_seed=train_seed, n_epochs=n_epochs, precision=resolve_precision(precision, device),
                      softmax_mode=softmax_mode, **protocol_overrides)
    result = train(run, device=device, use_cache=use_cache)
    score, candidate = mislabel_scores(result.S, sample.y)
    noisy = {r: idn_labels(sample.y, result.S, r) for r in rates}
    return GeneratedIDN(sample, sample.y, result.S, score, candidate, noisy, result.history, result.seconds, run)


def network_run(sample: Sample, *, train_seed: int | None = None, n_epochs: int | None = None,
                precision: str = "fp32", softmax_mode: str = "eval", keep: str = "none", **protocol_overrides) -> Run:
    """A labelling network's run on ``sample``'s clean labels with the data set's generation protocol,
    seeded by ``train_seed`` (default the sample's seed)."""
    if not isinstance(sample, Sample):
        fail("sample", sample, "a sample.Sample (sample.sample(dataset, n_train=..., seed=...))")
    proto = get_dataset(sample.dataset).generation_protocol.replace(n_epochs=n_epochs, **protocol_overrides)
    seed = sample.seed if train_seed is None else check_seed(train_seed, "train_seed")
    return Run(sample.data("rows"), sample.y, proto, seed=seed, precision=precision, softmax_mode=softmax_mode,
               keep=keep, label=f"labelling network on {sample.dataset}")


def labelling_run(sample: Sample, spec: NoiseFamily, *, train_seed: int | None = None, n_epochs: int | None = None,
                  precision: str = "fp32") -> Run:
    """The clean-label network whose softmax a family that ``needs`` one labels by: its softmax averaged
    over epochs (Algorithm 1's S, Eq. 3) or, ``network="final"`` (PMD), its last weights kept."""
    return network_run(sample, train_seed=train_seed, n_epochs=n_epochs, precision=precision,
                       keep="last" if spec.network == "final" else "none")


def family_labels(sample: Sample, family: str, noise_rates=None, *, noise_seed: int | None = None,
                  train_seed: int | None = None, n_epochs: int | None = None, device=None, precision: str = "fp32",
                  use_cache: bool = True, **settings) -> dict[float | None, torch.Tensor]:
    """``{rate: noisy labels}`` of ``family`` for ``sample.rows`` (a fixed family's keyed None), training
    the network it needs; seeds only where it is seeded by them, ``n_epochs`` only where it trains."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    if not isinstance(sample, Sample):
        fail("sample", sample, "a sample.Sample (sample.sample(dataset, n_train=..., seed=...))")
    rates = spec.check_rates(family, noise_rates)
    settings = spec.with_defaults(family, settings)
    for name, value, check in (("noise_seed", noise_seed, check_noise_seed), ("train_seed", train_seed, check_seed)):
        if value is not None and name not in spec.seeded_by:
            fail(name, value, f"None: family {family!r} is seeded by {list(spec.seeded_by) or 'nothing'}")
        if value is not None:
            check(value, name)  # before a network trains
    if spec.needs != "network" and n_epochs is not None:
        fail("n_epochs", n_epochs, f"None: family {family!r} trains no network")
    S = None
    if spec.needs == "network":  # a clean-trained network's softmax: averaged (Algorithm 1's S, Eq. 3) or final (PMD)
        precision = resolve_precision(precision, device)
        run = labelling_run(sample, spec, train_seed=train_seed, n_epochs=n_epochs, precision=precision)
        result = train(run, device=device, use_cache=use_cache)
        S = result.S if spec.network == "averaged" else predict(run, result.weights, device=device)
    inputs = LabelInputs(sample.y, sample.n_classes, sample.X if spec.needs == "instances" else None, S,
                         sample.dataset, sample.rows, sample.root)
    return {r: labels_of(family, inputs, r, noise_seed=noise_seed or 0, **settings) for r in rates}


def memorisation_records(sample: Sample, y_noisy, *, csr_size: int = 500, csr_every: int = 2,
                         csr_radius: float = CSR_RADIUS, csr_search: str = "lass",
                         csr_probe: str = "train") -> dict:
    """``Run`` fields recording memorisation (Section 3.2) with labels ``y_noisy``: CSR (Eq. 4, images only)
    every ``csr_every`` epochs on ``csr_size`` first training rows or (``csr_probe="test"``) random test
    rows drawn each time, and the softmax of the first 20 corrupted rows every epoch (Fig. 3)."""
    check_int(csr_size, "csr_size", minimum=1)
    check_choice(csr_probe, "csr_probe", CSR_PROBES)
    corrupted = (torch.as_tensor(y_noisy)[sample.train] != sample.y[sample.train]).nonzero().squeeze(1)
    csr = None
    if not get_dataset(sample.dataset).is_features:
        where = dict(rows=torch.arange(min(csr_size, len(sample.train)))) if csr_probe == "train" else dict(
            test_draw=min(csr_size, len(sample.test_rows)))
        csr = CSRProbe(**where, every=csr_every, radius=csr_radius, search=csr_search)
    return dict(track=corrupted[:20], csr=csr)


def noisy_runs(sample: Sample, labels: dict, proto: Protocol, seeds, *, precision: str = "fp32",
               device_type: str = "cpu", **records) -> dict:
    """``{(key, seed): Run}`` the grid and chapters start every method from: one per label set of
    ``labels`` (``{key: labels of sample.rows}``) and seed, recording ``memorisation_records(**records)``."""
    check_seeds(seeds)
    out = {}
    for key, y_noisy in labels.items():
        recorded = memorisation_records(sample, y_noisy, **records)
        for seed in seeds:
            out[(key, seed)] = sample.run(y_noisy, proto, seed=seed, precision=precision,
                                          device_type=device_type, **recorded)
    return out


def ccn_experiment(sample: Sample, y_noisy, M, w, proto: Protocol, *, seed: int = 0, alpha: float = 0.05,
                   device=None, use_cache: bool = True, **run_fields) -> dict:
    """Theorem 1: train with cross-entropy on ``y_noisy``, test CCN (``M``, class priors ``w``) with the last
    epoch's noisy validation error; returns ``test`` (a ``CCNTest``), ``val_error`` and ``history``."""
    ccn_bound(M, w)  # validate before training
    if not isinstance(sample, Sample) or sample.val is None:
        fail("sample", sample, "a sample.Sample with noisy validation rows (val_fraction > 0): Theorem 1's m")
    if "precision" in run_fields:
        run_fields["precision"] = resolve_precision(run_fields["precision"], device)
    run = sample.run(y_noisy, proto, seed=seed, keep="none", **run_fields)
    history = train(run, device=device, use_cache=use_cache).history
    val_error = [1 - a for a in history["val_acc"]]
    return dict(test=ccn_test(val_error[-1], M, w, len(sample.val), alpha), val_error=val_error, history=history)
