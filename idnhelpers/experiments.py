"""The paper's experiments that train, built on the engine, each on a ``sample.Sample``:
Algorithm 1 end to end (``generate_idn``), any noise family's labels (``family_labels``, the one
way to noisy labels for a sample, training the network a family needs), Theorem 1's CCN
experiment (``ccn_experiment``) and what the chapters record of memorisation
(``memorisation_records``). SEAL and the baselines over a grid are ``methods`` and ``grid``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_choice, check_int, check_rates, check_seed, check_seeds, fail
from .csr import CSR_RADIUS
from .datasets import get_dataset
from .engine import predict, train
from .hardware import resolve_precision
from .noise import idn_labels, mislabel_scores
from .families import FAMILIES, LabelInputs, labels_of
from .protocol import Protocol
from .runs import CSRProbe, Run
from .sample import Sample
from .stats import ccn_bound, ccn_test

CSR_PROBES = ("train", "test")  # memorisation_records' CSR probe sets


@dataclass
class GeneratedIDN:
    """Output of ``generate_idn``: the ``sample`` whose rows were labelled, their true labels
    ``y``, the averaged softmax ``S``, the scores N(x) and candidates of Eq. (3), the noisy labels
    per rate, the training history of the labelling network and its run."""

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
    """Algorithm 1 end to end on the rows of ``sample`` (all its labelled rows): train on their
    clean labels with the data set's generation protocol (``DatasetSpec.generation_protocol``:
    MNIST's CNN, SGD lr 0.01 momentum 0.5, batch 64, 20 epochs; CIFAR's WRN-28-10 for the full
    150-epoch schedule, as the official generators do; ``n_epochs`` and ``protocol_overrides``
    change it), average the softmax over epochs (Eq. 3) and return noisy labels for every rate
    in ``noise_rates`` from that single run. ``train_seed`` (default the sample's seed) seeds the
    labelling network (initial weights, batch order). ``softmax_mode="official"`` records the
    softmax as the official code does (see ``runs``); ``precision``: also ``"auto"``
    (``hardware.resolve_precision`` for ``device``)."""
    rates = check_rates(noise_rates)
    run = network_run(sample, train_seed=train_seed, n_epochs=n_epochs, precision=resolve_precision(precision, device),
                      softmax_mode=softmax_mode, **protocol_overrides)
    result = train(run, device=device, use_cache=use_cache)
    score, candidate = mislabel_scores(result.S, sample.y)
    noisy = {r: idn_labels(sample.y, result.S, r) for r in rates}
    return GeneratedIDN(sample, sample.y, result.S, score, candidate, noisy, result.history, result.seconds, run)


def network_run(sample: Sample, *, train_seed: int | None = None, n_epochs: int | None = None,
                precision: str = "fp32", softmax_mode: str = "eval", keep: str = "none", **protocol_overrides) -> Run:
    """The run of a labelling network on ``sample``'s rows: their clean labels, the data set's
    generation protocol (Algorithm 1's network; PMD's eta with ``keep="last"``), seeded by
    ``train_seed`` (default the sample's seed)."""
    if not isinstance(sample, Sample):
        fail("sample", sample, "a sample.Sample (sample.sample(dataset, n_train=..., seed=...))")
    proto = get_dataset(sample.dataset).generation_protocol.replace(n_epochs=n_epochs, **protocol_overrides)
    seed = sample.seed if train_seed is None else check_seed(train_seed, "train_seed")
    return Run(sample.data("rows"), sample.y, proto, seed=seed, precision=precision, softmax_mode=softmax_mode,
               keep=keep, label=f"labelling network on {sample.dataset}")


def family_labels(sample: Sample, family: str, noise_rates=None, *, noise_seed: int | None = None,
                  train_seed: int | None = None, n_epochs: int | None = None, device=None, precision: str = "fp32",
                  use_cache: bool = True, **settings) -> dict[float | None, torch.Tensor]:
    """Noisy labels of ``family`` (``families.FAMILIES``) for every row of ``sample.rows``, per rate
    of ``noise_rates`` (a fixed family, such as human labels, takes none: its one set is keyed
    None). What the family needs comes from its entry: the instances (as stored), a network
    trained on the sample's clean labels (``network_run``: trained here or loaded from the cache;
    Algorithm 1's averaged softmax, or the final network's softmax on the clean instances in eval
    mode), or a published file for the sample's rows. ``noise_seed`` (default 0) and ``train_seed``
    (default the sample's seed) only where the family is seeded by them; ``n_epochs``, ``device``
    and ``precision`` (also "auto") only where it trains a network; ``settings``: the family's own."""
    spec = FAMILIES[check_choice(family, "family", FAMILIES)]
    if not isinstance(sample, Sample):
        fail("sample", sample, "a sample.Sample (sample.sample(dataset, n_train=..., seed=...))")
    rates = spec.check_rates(family, noise_rates)
    settings = spec.with_defaults(family, settings)
    for name, value in (("noise_seed", noise_seed), ("train_seed", train_seed)):
        if value is not None and name not in spec.seeded_by:
            fail(name, value, f"None: family {family!r} is seeded by {list(spec.seeded_by) or 'nothing'}")
        if value is not None:
            check_seed(value, name)
    if spec.needs != "network" and n_epochs is not None:
        fail("n_epochs", n_epochs, f"None: family {family!r} trains no network")
    if spec.needs == "file":
        spec.check_dataset(family, sample.dataset)
    S = None
    if spec.needs == "network":
        S = network_softmax(sample, spec.network, train_seed=train_seed, n_epochs=n_epochs, device=device,
                            precision=precision, use_cache=use_cache)
    inputs = LabelInputs(sample.y, sample.n_classes, sample.X if spec.needs == "instances" else None, S,
                         sample.dataset, sample.rows, sample.root)
    return {r: labels_of(family, inputs, r, noise_seed=noise_seed or 0, **settings) for r in rates}


def network_softmax(sample: Sample, kind: str = "averaged", *, train_seed=None, n_epochs=None, device=None,
                    precision: str = "fp32", use_cache: bool = True) -> torch.Tensor:
    """The softmax a noise family reads of a network trained on ``sample``'s clean labels:
    "averaged" over its epochs (Algorithm 1's S, Eq. 3) or the "final" network's, in eval mode on
    the clean instances (PMD's eta; the authors record it during their last training epoch, in
    train mode on augmented images, before each batch's step)."""
    precision = resolve_precision(precision, device)
    run = network_run(sample, train_seed=train_seed, n_epochs=n_epochs, precision=precision,
                      keep="last" if kind == "final" else "none")
    result = train(run, device=device, use_cache=use_cache)
    return result.S if kind == "averaged" else predict(run, result.weights, device=device)


def memorisation_records(sample: Sample, y_noisy, *, csr_size: int = 500, csr_every: int = 2,
                         csr_radius: float = CSR_RADIUS, csr_search: str = "lass", csr_probe: str = "train",
                         n_tracked: int = 20) -> dict:
    """``Run`` fields that record memorisation (Section 3.2) on the ``sample``'s training rows with
    labels ``y_noisy`` (one per row of ``sample.rows``): CSR (Eq. 4) every ``csr_every`` epochs
    (images only) on ``csr_size`` instances, the first training rows (``csr_probe="train"``) or
    random test rows drawn afresh every epoch (``"test"``, Ma et al.'s choice), and the softmax of
    the first ``n_tracked`` corrupted rows every epoch (Fig. 3). The grid and chapters 01 and 03-05
    record these defaults (``noisy_runs``), so one run per noise rate and seed serves them all."""
    check_int(csr_size, "csr_size", minimum=1)
    check_int(n_tracked, "n_tracked", minimum=0)
    check_choice(csr_probe, "csr_probe", CSR_PROBES)
    corrupted = (torch.as_tensor(y_noisy)[sample.train] != sample.y[sample.train]).nonzero().squeeze(1)
    csr = None
    if not get_dataset(sample.dataset).is_features:
        where = dict(rows=torch.arange(min(csr_size, len(sample.train)))) if csr_probe == "train" else dict(
            test_draw=min(csr_size, len(sample.test_rows)))
        csr = CSRProbe(**where, every=csr_every, radius=csr_radius, search=csr_search)
    return dict(track=corrupted[:n_tracked] if n_tracked else None, csr=csr)


def noisy_runs(sample: Sample, labels: dict, proto: Protocol, seeds, *, precision: str = "fp32",
               **records) -> dict:
    """The runs the grid and the chapters start every method from: one per (label set, seed) of
    ``labels`` (``{key: labels of every row of sample.rows}``, e.g. per noise rate) and ``seeds``,
    on the ``sample``'s training rows, each recording memorisation (``memorisation_records``, with
    ``records`` as its options). Equal settings give equal runs, so the chapters share them through
    the cache. Returns ``{(key, seed): Run}``."""
    check_seeds(seeds)
    out = {}
    for key, y_noisy in labels.items():
        recorded = memorisation_records(sample, y_noisy, **records)
        for seed in seeds:
            out[(key, seed)] = sample.run(y_noisy, proto, seed=seed, precision=precision, **recorded)
    return out


def ccn_experiment(sample: Sample, y_noisy, M, w, proto: Protocol, *, seed: int = 0, alpha: float = 0.05,
                   device=None, use_cache: bool = True, **run_fields) -> dict:
    """Theorem 1 applied to a noisy data set: train with cross-entropy (``proto``) on the
    ``sample``'s training rows with their labels of ``y_noisy`` (one per row of ``sample.rows``), and
    test CCN with the error on its noisy validation rows at the last epoch.

    ``M`` and ``w`` are the transition matrix and class priors the CCN hypothesis would imply
    (estimated elsewhere, e.g. from a clean subset). ``run_fields``: other ``Run`` fields (what to
    record; ``precision``, also "auto"). Returns the ``CCNTest`` (``test``), the per-epoch
    validation error (``val_error``) and the training history."""
    ccn_bound(M, w)  # validate before training
    if not isinstance(sample, Sample) or sample.val is None:
        fail("sample", sample, "a sample.Sample with noisy validation rows (val_fraction > 0): Theorem 1's m")
    if "precision" in run_fields:
        run_fields["precision"] = resolve_precision(run_fields["precision"], device)
    run = sample.run(y_noisy, proto, seed=seed, keep="none", **run_fields)
    history = train(run, device=device, use_cache=use_cache).history
    val_error = [1 - a for a in history["val_acc"]]
    return dict(test=ccn_test(val_error[-1], M, w, len(sample.val), alpha), val_error=val_error, history=history)
