"""Speed benchmark: the paper's MNIST protocol written the way the official code does it, against
this project's engine, on the same machine, data and number of epochs and runs.

    python -m idnhelpers.bench --epochs 2 --n-train 10000 --runs 2 --device cpu

The reference follows the official ``train_mnist.py``: a torchvision-style data set that makes
a PIL image and applies ``ToTensor`` + ``Normalize`` per sample, a shuffling ``DataLoader`` of
batch 64, the CNN in NCHW fp32 with log-softmax + NLL, a test pass and a separate softmax pass
over the training set (batch 1000) after every epoch. The engine runs the same protocol
(``idnhelpers.engine.train_many``: several runs at once). Both print seconds per epoch (wall time
divided by epochs x runs) and final accuracies, so a speed-up is never
bought with a different result; the last line is ``speedup: X.XX`` (reference / engine time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from .datasets import get_dataset, load_dataset, protocol, subset
from .engine import BACKENDS, resolve_device, train_many
from .models import MnistCNN
from .runs import PRECISIONS, make_run


class _PerSampleMNIST(Dataset):
    """What ``torchvision.datasets.MNIST`` does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y = X[:, 0].numpy(), y.numpy()
        spec = get_dataset("mnist")
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.X[i], mode="L")), int(self.y[i])


def reference_run(X, y, X_test, y_test, n_epochs: int, seed: int, device: torch.device) -> dict:
    """One run of the official code's MNIST loop; returns its averaged softmax and accuracies."""
    torch.manual_seed(seed)
    train_set, test_set = _PerSampleMNIST(X, y), _PerSampleMNIST(X_test, y_test)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    softmax_loader = DataLoader(train_set, batch_size=1000, shuffle=False)
    test_loader = DataLoader(test_set, batch_size=1000, shuffle=False)
    model = MnistCNN().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    S = np.zeros((len(y), 10))
    start = time.perf_counter()
    for _ in range(n_epochs):
        model.train()
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            F.nll_loss(F.log_softmax(model(data), 1), target).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(d.to(device)).argmax(1).cpu() == t).sum()) for d, t in test_loader)
            S += torch.cat([F.softmax(model(d.to(device)), 1).cpu() for d, _ in softmax_loader]).numpy()
    return dict(seconds=time.perf_counter() - start, test_acc=correct / len(y_test),
                train_acc=float((S.argmax(1) == y.numpy()).mean()), S=torch.from_numpy(S / n_epochs).float())


def engine_runs(X, y, X_test, y_test, n_epochs: int, n_runs: int, device, precision: str, backend: str):
    """``n_runs`` seeds of the same protocol through ``train_many``; returns (wall seconds, results)."""
    proto = protocol("mnist", n_epochs=n_epochs)
    runs = [make_run(X, y, proto, dataset="mnist", X_test=X_test, y_test=y_test, seed=s, precision=precision,
                     keep="none") for s in range(n_runs)]
    start = time.perf_counter()
    results = train_many(runs, device=device, use_cache=False, backend=backend)
    return time.perf_counter() - start, [
        dict(test_acc=r.history["test_acc"][-1], train_acc=float((r.S.argmax(1) == y).float().mean()), S=r.S)
        for r in results]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--n-train", type=int, default=10000, help="training instances (default 10000; 60000: all)")
    parser.add_argument("--runs", type=int, default=1, help="independent runs (seeds 0..runs-1) of each (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the engine's precision")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="how the engine trains several runs")
    parser.add_argument("--data-root", default=None, help="data root (default: $IDNHELPERS_DATA)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.runs < 1 or args.n_train < 1:
        parser.error("--epochs, --runs and --n-train must be positive")
    device = resolve_device(args.device)
    X, y, _ = subset(*load_dataset("mnist", args.data_root), args.n_train, seed=0)
    X_test, y_test = load_dataset("mnist", args.data_root, train=False)
    print(f"MNIST CNN, {len(y)} training instances, {args.epochs} epochs x {args.runs} runs on {device} "
          f"({torch.get_num_threads()} threads)")
    reference = [reference_run(X, y, X_test, y_test, args.epochs, s, device) for s in range(args.runs)]
    totals = {"reference": sum(r["seconds"] for r in reference)}
    totals["engine"], engine = engine_runs(X, y, X_test, y_test, args.epochs, args.runs, device, args.precision,
                                           args.backend)
    for label, results in (("reference", reference), (f"engine ({args.precision}, {args.backend})", engine)):
        seconds = totals["reference" if label == "reference" else "engine"]
        print(f"{label:>28}: {seconds / (args.epochs * args.runs):7.2f} s/epoch | test acc "
              + " ".join(f"{100 * r['test_acc']:.2f}" for r in results) + " | train acc (averaged softmax) "
              + " ".join(f"{100 * r['train_acc']:.2f}" for r in results))
    print(f"speedup: {totals['reference'] / totals['engine']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
