"""Noisy instances, ranked by an averaged softmax (SEAL's S-bar, Eq. 10) or any predicted probabilities,
with cleanlab: a label quality in [0, 1] (low: a likely issue) by one of ``RANKINGS``, cleanlab's
``self_confidence`` S[i, y_i] and ``normalized_margin`` (S[i, y_i] - max_{k != y_i} S[i, k] + 1) / 2, or
``mislabel`` 1 - N-bar(x_i) (Eq. 10); flagged by cleanlab's ``find_label_issues`` (confident learning,
Northcutt et al. 2021; ``filter_by`` one of ``FILTERS``; ``predicted_neq_given``: arg-max S is not the
label). ``idn-noisy`` (``python -m idnhelpers.noisy``) writes ``noisy.csv`` and ``manifest.json`` as
idn-labels does (``commands.output_folder``; README.md, "Noisy instances, ranked")."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .cache import file_digest
from .checks import check_assignments, check_choice, check_int, check_labels, check_same_length, check_softmax, fail
from .commands import MANIFEST, Parser, check_output, output_folder, run_main, write_bytes, write_manifest
from .engine import predict
from .hardware import PRECISION_CHOICES, resolve_device
from .labels import dataset_entry, register_npz
from .methods import Trainer, get_method, method_options, run_stages
from .noise import mislabel_scores
from .published import read_noisy_csv
from .runs import Run, Tensors
from .stats import auroc
from .study import Study

RANKINGS = ("self_confidence", "normalized_margin", "mislabel")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")  # cleanlab's find_label_issues(filter_by=...)
FORMAT = "idnhelpers-noisy/1"
CSV_NAME = "noisy.csv"


def _inputs(labels, pred_probs):
    S = check_softmax(pred_probs, name="pred_probs")
    return check_labels(labels, S.shape[1], "labels", n=len(S)), S


def label_quality(labels, pred_probs, method: str = "self_confidence") -> torch.Tensor:
    """Each instance's label quality in [0, 1] by ``method`` (one of ``RANKINGS``); low = likely noisy."""
    check_choice(method, "method", RANKINGS)
    return _quality(*_inputs(labels, pred_probs), method)


def _quality(y, S, method):
    if method == "mislabel":
        return 1 - mislabel_scores(S, y)[0]  # N-bar(x), Eq. 10
    from cleanlab.rank import get_label_quality_scores  # imported when used: about a second

    return torch.from_numpy(get_label_quality_scores(y.numpy(), S.numpy(), method=method))


def _flagged(y, S, filter_by):
    """cleanlab's ``find_label_issues`` mask by ``filter_by`` (one process: the same on every machine)."""
    from cleanlab.filter import find_label_issues

    return torch.from_numpy(find_label_issues(y.numpy(), S.numpy(), filter_by=filter_by, n_jobs=1))


def suggested_labels(labels, pred_probs) -> torch.Tensor:
    """Eq. (10)'s corrected label: argmax_{k != y_i} S_ik (the best class other than the given one)."""
    y, S = _inputs(labels, pred_probs)
    return mislabel_scores(S, y)[1]


def find_noisy(labels, pred_probs, *, return_indices_ranked_by: str | None = None, n: int | None = None,
               rank_by: str = "self_confidence", filter_by: str = "prune_by_noise_rate") -> torch.Tensor:
    """The mask of the instances cleanlab's ``find_label_issues`` flags by ``filter_by``, or with
    ``return_indices_ranked_by`` their indices, lowest quality first; with ``n``, the ``n``
    lowest-quality ones (by ``return_indices_ranked_by``, else ``rank_by``) are flagged instead."""
    y, S = _inputs(labels, pred_probs)
    if return_indices_ranked_by is not None:
        check_choice(return_indices_ranked_by, "return_indices_ranked_by", RANKINGS)
    method = return_indices_ranked_by or check_choice(rank_by, "rank_by", RANKINGS)
    check_choice(filter_by, "filter_by", FILTERS)
    check_int(n, "n", minimum=0, maximum=len(y), none_ok=True)
    if n is None and return_indices_ranked_by is None:
        return _flagged(y, S, filter_by)  # the mask alone: no ranking
    order = torch.argsort(_quality(y, S, method), stable=True)  # most likely noisy first, ties to the lower index
    if n is None:
        mask = _flagged(y, S, filter_by)
    else:  # the n lowest-quality
        mask = torch.zeros(len(y), dtype=torch.bool).index_fill_(0, order[:n], True)
    return order[mask[order]] if return_indices_ranked_by is not None else mask


def detector_metrics(scores, corrupted, flagged=None) -> dict:
    """How well any detector's ``scores`` (high: likely noisy) find the ``corrupted`` rows (a boolean
    mask): ``precision`` and ``recall`` of ``flagged`` (a boolean mask; None: the k highest scores, k
    the corrupted count, ties to the lower index, so precision = recall), ``auroc`` of the scores
    (``stats.auroc``: Mann-Whitney, ties one half) and the counts; NaN where a ratio has no denominator."""
    scores = torch.as_tensor(scores).double()
    corrupted = torch.as_tensor(corrupted)
    if scores.dim() != 1 or corrupted.dtype != torch.bool:
        fail("scores/corrupted", f"{tuple(scores.shape)} / {corrupted.dtype}", "a 1-d score and a boolean mask")
    k = int(corrupted.sum())
    if flagged is None:  # the k highest scores
        top = torch.sort(scores, descending=True, stable=True).indices[:k]
        flagged = torch.zeros(len(scores), dtype=torch.bool).index_fill_(0, top, True)
    flagged = torch.as_tensor(flagged)
    if flagged.dtype != torch.bool:
        fail("flagged", str(flagged.dtype), "a boolean mask (or None: the k highest scores)")
    check_same_length(scores=scores, corrupted=corrupted, flagged=flagged)
    nan, hits = float("nan"), int((flagged & corrupted).sum())
    return dict(n=len(scores), corrupted=k, flagged=int(flagged.sum()),
                precision=hits / int(flagged.sum()) if flagged.any() else nan, recall=hits / k if k else nan,
                auroc=auroc(scores, corrupted) if 0 < k < len(scores) else nan)


def noisy_metrics(labels, pred_probs, y_true, rank_by: str = "self_confidence",
                  filter_by: str = "prune_by_noise_rate") -> dict:
    """How well the ranking finds the labels != ``y_true``: ``find_noisy``'s ``precision`` and ``recall``,
    ``precision_at_k`` (k: the corrupted count), ``auroc`` of 1 - quality, and the counts
    (``detector_metrics``)."""
    y, S = _inputs(labels, pred_probs)
    y_true = check_labels(y_true, S.shape[1], "y_true", n=len(y))
    corrupted = y != y_true
    quality = _quality(y, S, check_choice(rank_by, "rank_by", RANKINGS))
    flagged = _flagged(y, S, check_choice(filter_by, "filter_by", FILTERS))  # find_noisy's mask
    return _metrics(quality, flagged, corrupted)


def _metrics(quality: torch.Tensor, flagged: torch.Tensor, corrupted: torch.Tensor) -> dict:
    """``noisy_metrics`` of a ranking's ``quality`` and ``flagged`` mask."""
    m = detector_metrics(1 - quality, corrupted, flagged)
    m["precision_at_k"] = detector_metrics(-quality, corrupted)["precision"]  # the k lowest-quality (-q: no new ties)
    return m


def cross_validated_probs(run: Run, method: str = "ce", *, folds: int = 5, trainer: Trainer = Trainer(),
                          **options) -> torch.Tensor:
    """Out-of-sample predicted probabilities of ``run``'s training rows, cleanlab's convention (a network
    that memorised its labels hides its own noisy ones): ``method`` trained on all folds but one (rows
    permuted by the run's seed), its final network's softmax on that fold. The fold runs score nothing
    while they train (no test or validation rows, no averaged softmax): the last epoch's network is used."""
    if not isinstance(run, Run) or not isinstance(run.data, Tensors):
        fail("run", run, "a runs.Run on tensors (streamed images are not split into folds)")
    n = len(run.data)
    check_int(folds, "folds", minimum=2, maximum=n)
    held_out = torch.randperm(n, generator=torch.Generator().manual_seed(run.seed)).chunk(folds)
    fits = []
    for held in held_out:
        kept = torch.ones(n, dtype=torch.bool).index_fill_(0, held, False)
        fits.append(run.replace(data=Tensors(run.data.X[kept], run.data.dataset), targets=run.targets[kept],
                                y_true=None, track=None, csr=None, test=None, val=None, keep="last",
                                record_softmax=False))
    results = run_stages(method, fits, trainer=trainer, **options)  # the K runs in one call: the back-end's choice
    probs = torch.empty(n, run.n_classes)
    for held, fit, result in zip(held_out, fits, results):
        scored = fit.replace(data=Tensors(run.data.X[held], run.data.dataset), targets=run.targets[held])
        probs[held] = predict(scored, result.final.weights, device=trainer.device)
    return probs


def read_ranking(folder: str | Path) -> dict:
    """An ``idn-noisy`` folder's CSV columns as tensors and its manifest, the CSV's SHA-256 checked."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["format"] != FORMAT:
            raise ValueError(f"format {manifest['format']!r}")
        if file_digest(folder / CSV_NAME) != manifest["files"][CSV_NAME]:
            raise ValueError(f"its {CSV_NAME} lacks the SHA-256 its manifest records")
    except (OSError, ValueError, KeyError, TypeError) as error:
        fail("folder", str(folder), f"a folder written by idn-noisy, with its {MANIFEST} "
             f"({type(error).__name__}: {error})")
    rows = np.loadtxt(folder / CSV_NAME, delimiter=",", skiprows=1, ndmin=2)
    return dict(index=torch.as_tensor(rows[:, 0]).long(), score=torch.as_tensor(rows[:, 1]).float(),
                suggested_label=torch.as_tensor(rows[:, 2]).long(), flagged=torch.as_tensor(rows[:, 3]).bool(),
                manifest=manifest)


def _read_labels(path: Path, data) -> torch.Tensor:
    """Noisy labels of ``data``'s rows from a ``label,label_noisy`` CSV (its ``label`` column the data
    set's) or an integer .npy, one per training row."""
    if path.suffix == ".csv":
        return read_noisy_csv(path, dataset=data.dataset, root=data.root)[1]
    if path.suffix != ".npy":
        fail("--labels", str(path), "a label,label_noisy .csv (idn-labels, the official code) or an integer .npy")
    try:
        labels = torch.as_tensor(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        fail("--labels", str(path), f"a readable .npy of integer labels ({type(error).__name__}: {error})")
    return check_labels(labels, data.n_classes, f"--labels {path}", n=len(data.y))


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="idn-noisy", description="Train a method on a training split with given labels and rank "
               "its instances by how likely their label is wrong (noisy.csv and manifest.json).",
               epilog="Example: idn-noisy --dataset mnist --labels labels/mnist_idn_0.4.csv --method seal --out noisy/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered data set (mnist, cifar10, digits, ...)")
    src.add_argument("--from-npz", metavar="FILE", help="an .npz holding X and y, registered as npz:<stem>")
    p.add_argument("--labels", metavar="FILE", help="the training labels to rank: a label,label_noisy .csv or an "
                   "integer .npy, row i = training row i (default: the data set's own labels)")
    p.add_argument("--method", default="seal", help="the method whose averaged softmax ranks (default seal)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an option of the method (YAML value), e.g. n_iterations=3")
    p.add_argument("--rank-by", default="self_confidence", choices=RANKINGS, help="the label quality score")
    p.add_argument("--cv", type=int, metavar="K", help="rank by K-fold cross-validated (out-of-sample) "
                   "probabilities: the method trained K times, each on all folds but one, scoring that one "
                   "(default: its averaged softmax on the rows it trained on)")
    p.add_argument("--filter-by", default="prune_by_noise_rate", choices=FILTERS,
                   help="cleanlab's rule for the flagged instances (default prune_by_noise_rate: confident learning)")
    p.add_argument("--epochs", dest="n_epochs", type=int, metavar="EPOCHS",
                   help="epochs per training run (default: the data set's protocol)")
    p.add_argument("--seed", dest="seeds", type=int, default=0, metavar="SEED", help="the training seed (default 0)")
    p.add_argument("--data-root", help="folder with the data sets (default $IDNHELPERS_DATA)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help="auto (default), fp32 or bf16")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for noisy.csv and manifest.json")
    return p


def main(argv=None) -> int:
    return run_main(parser(), _main, argv)


def _main(args) -> int:
    """Check every option (the settings as a ``Study``), train, rank, write and say what was found."""
    if get_method(args.method).uses_noise_rate:  # an unknown one refused as --method, not as Study's methods
        fail("--method", args.method, "a method that needs no noise rate (this one sets its forget rate from it)")
    dataset, npz = register_npz(args.from_npz) if args.from_npz else (args.dataset, None)
    study = Study(dataset=dataset, family=None, methods=(args.method,), n_epochs=args.n_epochs, seeds=(args.seeds,),
                  device=args.device or "auto", precision=args.precision, data_root=args.data_root).resolved()
    options = check_assignments(args.option, "--option", list(method_options(args.method)), "n_iterations=3")
    check_int(args.cv, "--cv", minimum=2, none_ok=True)
    out = check_output(args.out, "--out")
    trainer, data = Trainer(device=resolve_device(study.device)), study.sample()
    labels = data.y if args.labels is None else _read_labels(Path(args.labels), data)
    given = None if args.labels is None else {"file": Path(args.labels).name,
                                              "sha256": file_digest(args.labels)}  # the file read, not after training
    with output_folder(out, FORMAT):
        base = data.run(labels, study.protocol, seed=args.seeds, precision=study.precision, test=None, keep="none",
                        label=args.method)
        if args.cv:
            S = cross_validated_probs(base, args.method, folds=args.cv, trainer=trainer, **options)
        else:
            S = run_stages(args.method, [base], trainer=trainer, **options)[0].S
        if S is None:
            fail("--method", args.method, "a method whose last stage records the averaged softmax")
        flagged, quality = find_noisy(labels, S, filter_by=args.filter_by), label_quality(labels, S, args.rank_by)
        suggested = suggested_labels(labels, S)
        rows = "".join(f"{i},{quality[i]:.6f},{suggested[i]},{int(flagged[i])}\n"
                       for i in torch.argsort(quality, stable=True).tolist())  # lowest quality first
        (out / MANIFEST).unlink(missing_ok=True)
        sha = write_bytes(out / CSV_NAME, ("index,score,suggested_label,flagged\n" + rows).encode())
        corrupted = labels != data.y
        m = _metrics(quality, flagged, corrupted) if corrupted.any() else None  # noisy_metrics, not computed twice
        write_manifest(out, {"format": FORMAT, "idnhelpers": __version__, "dataset": dataset_entry(dataset, data, npz),
                             "method": args.method, "options": options, "rank_by": args.rank_by,
                             "filter_by": args.filter_by, "labels": given, "folds": args.cv, "seed": args.seeds,
                             "protocol_epochs": study.epochs, "device": trainer.device.type,
                             "flagged": int(flagged.sum()), "precision": study.precision, "torch": torch.__version__,
                             "score": "label quality (lower: more likely mislabelled)", "metrics": m,
                             "files": {CSV_NAME: sha}})
    source = f"{args.cv}-fold cross-validated probabilities" if args.cv else "the averaged softmax"
    print(f"{out / CSV_NAME}: {len(labels)} instances ranked by {args.rank_by} of {source}, "
          f"{int(flagged.sum())} flagged (cleanlab's find_label_issues, filter_by={args.filter_by})")
    if m:
        print(f"against the data set's labels ({m['corrupted']} differ): precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f}, precision@{m['corrupted']} {m['precision_at_k']:.3f}, AUROC {m['auroc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
