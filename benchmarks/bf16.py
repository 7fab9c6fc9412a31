"""Is bf16 autocast as good as fp32 for this project's results? Compared against seed-to-seed noise.

    python -m benchmarks.bf16 --n-train 10000 --epochs 20 --rate 0.4

Trains CE and one SEAL iteration on the published MNIST IDN labels three times: fp32 seed 0,
bf16 seed 0 and fp32 seed 1. If bf16 differs from fp32 (same seed, same initial weights and batch
order) by less than a second fp32 seed does, its results are as trustworthy as another fp32 run.
Compared: test accuracy, the averaged softmax S (mean absolute difference, arg-max agreement),
and the instances Algorithm 1 / Eq. (10) would flag (overlap of the top-k by N(x)).
"""

from __future__ import annotations

import argparse

import torch

from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.methods import run_method
from idnhelpers.noise import flip_count, mislabel_scores
from idnhelpers.published import load_published_idn
from idnhelpers.stats import correction_metrics


def compare(a: dict, b: dict, y_noisy: torch.Tensor, k: int) -> dict:
    """Differences between two runs' results (same iteration)."""
    top = [set(torch.sort(mislabel_scores(r.S, y_noisy)[0], descending=True, stable=True).indices[:k].tolist())
           for r in (a, b)]
    return dict(test_acc_diff=100 * abs(a.history["test_acc"][-1] - b.history["test_acc"][-1]),
                S_mean_abs_diff=float((a.S - b.S).abs().mean()),
                argmax_agreement=100 * float((a.S.argmax(1) == b.S.argmax(1)).float().mean()),
                flagged_overlap=100 * len(top[0] & top[1]) / k)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.4, choices=(0.1, 0.2, 0.3, 0.4))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    X, y, idx = subset(*load_dataset("mnist"), args.n_train, seed=0)
    X_test, y_test = load_dataset("mnist", train=False)
    y_noisy = load_published_idn("mnist", args.rate)[1][idx]
    proto = protocol("mnist", n_epochs=args.epochs)
    runs = {(p, s): run_method("seal", X, y_noisy, proto, n_iterations=1, dataset="mnist", seed=s, y_true=y,
                               X_test=X_test, y_test=y_test, device=args.device, precision=p, keep="none").stages
            for p, s in (("fp32", 0), ("bf16", 0), ("fp32", 1))}
    k = flip_count(args.rate, len(y))
    print(f"MNIST {len(y)} instances, published IDN {args.rate:.0%}, {args.epochs} epochs")
    for m, name in ((0, "CE"), (1, "SEAL 1")):
        for (p, s), r in runs.items():
            c = correction_metrics(r[m].S, y, y_noisy)
            print(f"{name:>7} {p} seed {s}: test acc {100 * r[m].history['test_acc'][-1]:.2f}  "
                  f"argmax S acc {100 * c['acc_argmax']:.2f}  AUROC {100 * c['auroc']:.2f}  {r[m].seconds:.0f} s")
        for label, other in (("bf16 vs fp32, seed 0", ("bf16", 0)), ("fp32 seed 1 vs seed 0", ("fp32", 1))):
            d = compare(runs[("fp32", 0)][m], runs[other][m], y_noisy, k)
            print(f"{name:>7} {label:>22}: |test acc diff| {d['test_acc_diff']:.2f} pts, mean |dS| "
                  f"{d['S_mean_abs_diff']:.4f}, argmax agree {d['argmax_agreement']:.2f}%, "
                  f"top-{k} N(x) overlap {d['flagged_overlap']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
