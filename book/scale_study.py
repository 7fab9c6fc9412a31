"""The scale study that sizes the `cpu` profile by the paper's own criterion (Section 4: "make sure
the training accuracy is converged and it is as high as possible").

For each training size, CE trains with the paper's MNIST protocol (Appendix A: its CNN, SGD lr
0.01 momentum 0.5, batch 64) on the authors' published IDN labels for up to ``--max-epochs``
epochs; the table gives the epoch at which the training accuracy on the noisy labels converges (the
first epoch within ``--tolerance`` points of the run's highest), that accuracy, and CE's peak and
last test accuracy. Then, at the epochs chosen for that size (the highest rate's convergence epoch,
rounded up to a multiple of 5), CE and SEAL (``--iterations`` iterations) train afresh and the table
gives SEAL's gain over CE at the last epoch. Every run goes through the run cache, so a re-run only
prints.

    .venv/bin/python book/scale_study.py --sizes 1000 2000 4000 8000 --rates 0.2 0.4 --seeds 0 1

The table for NOTES.md is printed as Markdown; ``--json FILE`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from idnhelpers.datasets import protocol
from idnhelpers.experiments import family_labels
from idnhelpers.hardware import resolve_precision
from idnhelpers.methods import Trainer, run_stages
from idnhelpers.sample import sample


def converged_epoch(fit_acc: list[float], tolerance: float) -> int:
    """The first epoch (1-based) whose training accuracy is within ``tolerance`` (a fraction) of the
    run's highest: from there on, more epochs raise it by less than that."""
    top = max(fit_acc)
    return next(t + 1 for t, a in enumerate(fit_acc) if a >= top - tolerance)


def study(size: int, rates, seeds, max_epochs: int, iterations: int, n_test: int, tolerance: float,
          precision: str, device: str) -> list[dict]:
    """One training size: the long CE runs, the epochs chosen, then CE and SEAL at those epochs."""
    rows = sample("mnist", n_train=size, n_test=n_test, seed=0)
    labels = family_labels(rows, "idn_published", rates)
    trainer = Trainer(device=device)

    def train(name, n_epochs, **options):
        base = [rows.run(labels[r], protocol("mnist", n_epochs=n_epochs), seed=s, precision=precision, keep="none")
                for r in rates for s in seeds]
        return dict(zip([(r, s) for r in rates for s in seeds], run_stages(name, base, trainer=trainer, **options)))

    long = train("ce", max_epochs)
    fit = {cell: result.history["fit_acc"] for cell, result in long.items()}
    epochs = 5 * math.ceil(max(converged_epoch(fit[(max(rates), s)], tolerance) for s in seeds) / 5)
    chosen = train("seal", epochs, n_iterations=iterations)
    out = []
    for r in rates:
        def mean(values):
            return float(np.mean(values))

        test = [long[(r, s)].history["test_acc"] for s in seeds]
        ce_last = [chosen[(r, s)].stages[0].history["test_acc"][-1] for s in seeds]
        seal_last = [[chosen[(r, s)].stages[m].history["test_acc"][-1] for s in seeds] for m in range(1, iterations + 1)]
        out.append(dict(
            n_train=size, rate=r, seeds=list(seeds), max_epochs=max_epochs,
            converged_epoch=mean([converged_epoch(fit[(r, s)], tolerance) for s in seeds]),
            train_acc_at_convergence=mean([max(fit[(r, s)]) for s in seeds]),
            peak_test=mean([max(t) for t in test]), peak_epoch=mean([int(np.argmax(t)) + 1 for t in test]),
            last_test_long=mean([t[-1] for t in test]), epochs=epochs,
            train_acc=mean([chosen[(r, s)].stages[0].history["fit_acc"][-1] for s in seeds]),
            ce_last=mean(ce_last), ce_best=mean([max(chosen[(r, s)].stages[0].history["test_acc"]) for s in seeds]),
            seal_gain=[mean(np.subtract(v, ce_last)) for v in seal_last],
            seal_gain_std=[float(np.std(np.subtract(v, ce_last))) for v in seal_last],
            seconds_per_epoch=mean([chosen[(r, s)].stages[0].seconds / epochs for s in seeds]),
            fit_acc_curve=np.mean([fit[(r, s)] for s in seeds], 0).round(4).tolist(),
            test_acc_curve=np.mean(test, 0).round(4).tolist()))
    return out


def markdown(rows: list[dict]) -> str:
    head = ("| training rows | rate | CE train acc. converged at epoch (acc.) | CE peak test (epoch) | epochs chosen | "
            "CE train acc. there | CE last (best) | SEAL gain, iterations 1..m | s per epoch |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        gains = ", ".join(f"{100 * g:+.2f} ± {100 * s:.2f}" for g, s in zip(r["seal_gain"], r["seal_gain_std"]))
        lines.append(f"| {r['n_train']} | {r['rate']:.0%} | {r['converged_epoch']:.0f} ({100 * r['train_acc_at_convergence']:.1f}) | "
                     f"{100 * r['peak_test']:.2f} ({r['peak_epoch']:.0f}) | {r['epochs']} | {100 * r['train_acc']:.1f} | "
                     f"{100 * r['ce_last']:.2f} ({100 * r['ce_best']:.2f}) | {gains} | {r['seconds_per_epoch']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000], help="training rows")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.4], help="published IDN rates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (the rows: seed 0)")
    parser.add_argument("--max-epochs", type=int, default=80, help="epochs of the long CE runs")
    parser.add_argument("--iterations", type=int, default=2, help="SEAL iterations at the chosen epochs")
    parser.add_argument("--n-test", type=int, default=2000, help="clean test rows scored every epoch")
    parser.add_argument("--tolerance", type=float, default=0.01, help="converged: within this of the highest")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args(argv)
    precision = resolve_precision(args.precision, args.device)
    rows = []
    for size in args.sizes:
        rows += study(size, args.rates, args.seeds, args.max_epochs, args.iterations, args.n_test, args.tolerance,
                      precision, args.device)
        print(markdown(rows), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(precision=precision, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
