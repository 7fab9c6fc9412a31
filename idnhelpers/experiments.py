"""The paper's experiments that train, built on the engine: Algorithm 1 end to end
(``generate_idn``), IDN label sets for a training subset (``idn_label_sets``), any noise
family's labels for a data set (``family_labels``), Theorem 1's CCN experiment
(``ccn_experiment``) and what the chapters record of memorisation (``memorisation_records``).
SEAL and the baselines over a grid are ``methods.run_methods``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_choice, check_int, check_rates, check_seed, fail
from .datasets import get_dataset, load_dataset, subset
from .engine import train
from .hardware import resolve_precision
from .noise import FAMILIES, idn_labels, mislabel_scores, noisy_labels
from .protocol import Protocol
from .published import PUBLISHED_RATES, load_published_idn
from .csr import CSR_RADIUS
from .runs import CSRProbe, Run, Tensors
from .sample import Sample
from .stats import ccn_bound, ccn_test


@dataclass
class GeneratedIDN:
    """Output of ``generate_idn``: rows ``idx`` of the training set, their true labels ``y``,
    the averaged softmax ``S``, the scores N(x) and candidates of Eq. (3), the noisy labels per
    rate, and the training history of the labelling network."""

    idx: torch.Tensor
    y: torch.Tensor
    S: torch.Tensor
    score: torch.Tensor
    candidate: torch.Tensor
    noisy: dict[float, torch.Tensor]
    history: dict
    seconds: float


def generate_idn(dataset: str, noise_rates, *, root=None, n_train: int | None = None,
                 n_epochs: int | None = None, seed: int = 0, train_seed: int | None = None, device=None,
                 precision: str = "fp32", softmax_mode: str = "eval", use_cache: bool = True, verify: bool = True,
                 **protocol_overrides) -> GeneratedIDN:
    """Algorithm 1 end to end: train on the clean labels with the data set's generation protocol
    (``DatasetSpec.generation_protocol``: MNIST's CNN, SGD lr 0.01 momentum 0.5, batch 64, 20
    epochs; CIFAR's WRN-28-10 for the full 150-epoch schedule, as the official generators do;
    ``n_epochs`` and ``protocol_overrides`` change it), average the softmax over epochs (Eq. 3)
    and return noisy labels for every rate in ``noise_rates`` from that single run. ``n_train``
    takes a random subset (``seed``) of the training set; ``train_seed`` (default ``seed``) seeds the
    labelling network (initial weights, batch order). ``softmax_mode="official"`` records the
    softmax as the official code does (see ``runs``); ``verify``: see ``datasets.load_dataset``;
    ``precision``: also ``"auto"`` (``hardware.resolve_precision`` for ``device``)."""
    rates = check_rates(noise_rates)
    precision = resolve_precision(precision, device)
    run = idn_run(dataset, root=root, n_train=n_train, n_epochs=n_epochs, seed=seed, train_seed=train_seed,
                  precision=precision, softmax_mode=softmax_mode, verify=verify, **protocol_overrides)
    y = run.targets
    result = train(run, device=device, use_cache=use_cache)
    score, candidate = mislabel_scores(result.S, y)
    noisy = {r: idn_labels(y, result.S, r) for r in rates}
    return GeneratedIDN(run.data.origin[1], y, result.S, score, candidate, noisy, result.history, result.seconds)


def idn_run(dataset: str, *, root=None, n_train: int | None = None, n_epochs: int | None = None, seed: int = 0,
            train_seed: int | None = None, precision: str = "fp32", softmax_mode: str = "eval", verify: bool = True,
            **protocol_overrides) -> Run:
    """The run of Algorithm 1's labelling network that ``generate_idn`` trains (same arguments):
    the clean labels of ``subset(..., n_train, seed)``'s rows, the data set's generation protocol."""
    proto = get_dataset(dataset).generation_protocol.replace(n_epochs=n_epochs, **protocol_overrides)
    X, y_all = load_dataset(dataset, root, train=True, verify=verify)
    _, y, idx = subset(X, y_all, n_train, seed)
    return Run(Tensors.of_rows(X, dataset, idx, root=root, verify=verify), y, proto,
               seed=seed if train_seed is None else train_seed, precision=precision, softmax_mode=softmax_mode,
               keep="none", label=f"Algorithm 1 on {dataset}")


def idn_label_sets(dataset: str, noise_rates, idx: torch.Tensor, *, use_published: bool = True, n_train=None,
                   seed: int = 0, **generate_kwargs):
    """IDN labels at every rate for the training rows ``idx`` (those ``subset(..., n_train, seed)``
    picks): the authors' published labels where they exist for every rate (and ``use_published``),
    otherwise Algorithm 1 (``generate_idn``) run on those rows. Returns ``({rate: y_noisy}, source)``
    with ``source`` either ``"published"`` or ``"Algorithm 1"``."""
    rates = check_rates(noise_rates)
    if use_published and get_dataset(dataset).published and all(
            any(abs(r - p) < 1e-9 for p in PUBLISHED_RATES) for r in rates):
        return {r: load_published_idn(dataset, r)[1][idx] for r in rates}, "published"
    keys = ("root", "verify")
    _, y_all = load_dataset(dataset, **{k: generate_kwargs[k] for k in keys if k in generate_kwargs})
    if not torch.equal(subset(y_all, y_all, n_train, seed)[2], torch.as_tensor(idx)):  # before training
        fail("idx", "rows that differ from subset(X, y, n_train, seed)'s",
             "the rows subset(X, y, n_train, seed) picks, for the same n_train and seed")
    return generate_idn(dataset, rates, n_train=n_train, seed=seed, **generate_kwargs).noisy, "Algorithm 1"


def family_labels(dataset: str, family: str, noise_rates, *, noise_seed: int = 0, train_seed: int | None = None,
                  n_train: int | None = None, seed: int = 0, n_epochs: int | None = None, root=None,
                  verify: bool = True, device=None, precision: str = "fp32", use_cache: bool = True,
                  **settings) -> dict[float, torch.Tensor]:
    """Noisy labels of ``family`` (``noise.FAMILIES``) at every rate for the training rows that
    ``subset(..., n_train, seed)`` picks (all rows, in torchvision's order, by default).
    ``idn`` trains Algorithm 1's network (``generate_idn``, seeded by ``train_seed``, default
    ``seed``, for
    ``n_epochs``, default the data set's generation protocol); Xia's
    families project the instances as their authors do (raw pixel values for images, the
    features for a feature data set), seeded by ``noise_seed``, as are the class-conditional
    ones. ``settings``: the family's own (``norm_std``)."""
    rates = check_rates(noise_rates)
    FAMILIES[check_choice(family, "family", FAMILIES)].with_defaults(family, settings)
    check_seed(noise_seed, "noise_seed")
    if train_seed is not None:
        check_seed(train_seed, "train_seed")
    spec = get_dataset(dataset)
    if family == "idn":
        return generate_idn(dataset, rates, root=root, n_train=n_train, n_epochs=n_epochs, seed=seed,
                            train_seed=train_seed, device=device, precision=precision, use_cache=use_cache,
                            verify=verify).noisy
    X_all, y_all = load_dataset(dataset, root, train=True, verify=verify)
    X, y, _ = subset(X_all, y_all, n_train, seed)
    return {r: noisy_labels(family, y, r, spec.n_classes, noise_seed=noise_seed, X=X, **settings) for r in rates}


def memorisation_records(sample: Sample, y_noisy, *, csr_size: int = 500, csr_every: int = 2,
                         csr_radius: float = CSR_RADIUS, csr_search: str = "lass", n_tracked: int = 6) -> dict:
    """``Run`` fields that record memorisation (Section 3.2) on the ``sample``'s training rows with
    labels ``y_noisy`` (one per row of ``sample.rows``): CSR (Eq. 4) of the first ``csr_size``
    training rows every ``csr_every`` epochs (images only) and the softmax of the first
    ``n_tracked`` corrupted ones every epoch (Fig. 3). Chapters 01, 03 and 04 record these
    defaults, so one run per noise rate serves all three."""
    check_int(csr_size, "csr_size", minimum=1)
    check_int(n_tracked, "n_tracked", minimum=0)
    corrupted = (torch.as_tensor(y_noisy)[sample.train] != sample.y[sample.train]).nonzero().squeeze(1)
    csr = None if get_dataset(sample.dataset).is_features else CSRProbe(
        torch.arange(min(csr_size, len(sample.train))), every=csr_every, radius=csr_radius, search=csr_search)
    return dict(track=corrupted[:n_tracked] if n_tracked else None, csr=csr)


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
