"""Speed benchmark: the paper's MNIST protocol written the way the official code does it, against
this project's engine, on the same machine, data and number of epochs and runs.

    python -m benchmarks.speed --epochs 2 --n-train 10000 --runs 2 --device cpu

The reference follows the official ``train_mnist.py``: per-sample PIL images with ``ToTensor`` +
``Normalize``, a shuffling ``DataLoader`` of batch 64, the official CNN in NCHW fp32 with log-softmax
+ NLL, then a test pass and a softmax pass over the training set (batch 1000) every epoch. Both it
and the engine (``engine.train_many``, several runs at once) print seconds per epoch, as a multiple
of the *limit* (the epoch's FLOPs at the measured matrix-product rate) too, and final accuracies (a
speed-up is never bought with a different result); the last line is ``speedup: X.XX``.
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

from idnhelpers.datasets import get_dataset, load_dataset, protocol, subset
from idnhelpers.engine import BACKENDS, train_many
from idnhelpers.hardware import (PRECISION_CHOICES, cpu_model, matmul_gflops, native_bf16, resolve_device,
                       resolve_precision)
from idnhelpers.models import MnistCNN
from idnhelpers.runs import make_run


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


class OfficialMnistCNN(MnistCNN):
    """The official ``networks/cnn_mnist.py`` forward: relu, then ATen's max-pool, on every pass (the
    engine's ``MnistCNN`` pools first and pools without indices when no gradient is wanted: the
    same values, less work). Same parameters, so a seed gives the same initial weights."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def reference_run(X, y, X_test, y_test, n_epochs: int, seed: int, device: torch.device) -> dict:
    """One run of the official code's MNIST loop: its seconds and accuracies (train: the averaged softmax's)."""
    torch.manual_seed(seed)
    train_set, test_set = _PerSampleMNIST(X, y), _PerSampleMNIST(X_test, y_test)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    softmax_loader = DataLoader(train_set, batch_size=1000, shuffle=False)
    test_loader = DataLoader(test_set, batch_size=1000, shuffle=False)
    model = OfficialMnistCNN().to(device)
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
                train_acc=float((S.argmax(1) == y.numpy()).mean()))


def engine_runs(X, y, X_test, y_test, n_epochs: int, n_runs: int, device, precision: str, backend: str):
    """``n_runs`` seeds of the same protocol through ``train_many``; returns (wall seconds, results)."""
    proto = protocol("mnist", n_epochs=n_epochs)
    runs = [make_run(X, y, proto, dataset="mnist", X_test=X_test, y_test=y_test, seed=s, precision=precision,
                     keep="none") for s in range(n_runs)]
    start = time.perf_counter()
    results = train_many(runs, device=device, use_cache=False, backend=backend)
    return time.perf_counter() - start, [
        dict(test_acc=r.history["test_acc"][-1], train_acc=float((r.S.argmax(1) == y).float().mean())) for r in results]


def epoch_limit(n_train: int, n_test: int, gflops: float) -> tuple[float, int]:
    """(seconds, FLOPs per image) of one epoch of the MNIST protocol at ``gflops``: a training step costs
    3x a forward pass (forward, and the two products of the backward pass), then the softmax of every
    training instance is recorded and the test set scored (one forward pass each). A forward pass
    costs 2 FLOPs per multiply-add of the convolutions and linear layers."""
    flops = []

    def count(module, inputs, output):  # weight[0]: (C_in / groups) x kernel area, or in_features
        flops.append(2 * module.weight[0].numel() * output[0].numel())

    model = MnistCNN()  # counted once, then dropped with its hooks
    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            layer.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, *get_dataset("mnist").input_shape))
    per_image = sum(flops)
    return per_image * (3 * n_train + n_train + n_test) / (gflops * 1e9), per_image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--n-train", type=int, default=10000, help="training instances (default 10000; 60000: all)")
    parser.add_argument("--runs", type=int, default=1, help="independent runs (seeds 0..runs-1) of each (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="the engine's precision (default auto: bf16 where the device has it natively, else fp32)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="how the engine trains several runs")
    parser.add_argument("--data-root", default=None, help="data root (default: $IDNHELPERS_DATA)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.runs < 1 or args.n_train < 1:
        parser.error("--epochs, --runs and --n-train must be positive")
    try:
        device = resolve_device(args.device)
        precision = resolve_precision(args.precision, device)
    except ValueError as error:
        parser.error(str(error))
    X, y, _ = subset(*load_dataset("mnist", args.data_root), args.n_train, seed=0)
    X_test, y_test = load_dataset("mnist", args.data_root, train=False)
    where = (f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else
             f"{cpu_model()}, {torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}")
    print(f"device: {device} ({where}); native bf16: {'yes' if native_bf16(device) else 'no'}; "
          f"precision: {args.precision} -> {precision}")
    rates = {p: matmul_gflops(dtype, device=str(device)) for p, dtype in (("fp32", torch.float32),
                                                                           ("bf16", torch.bfloat16))}
    limit, per_image = epoch_limit(len(y), len(y_test), rates["bf16" if precision == "bf16" else "fp32"])
    print("1024 x 1024 matrix product: " + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in rates.items())
          + f"; MNIST CNN {per_image / 1e6:.2f} MFLOP forward per image")
    print(f"MNIST CNN, {len(y)} training instances, {len(y_test)} test instances, {args.epochs} epochs x "
          f"{args.runs} runs; limit at the {precision} matrix-product rate: {limit:.3f} s/epoch")
    # warm-up, not timed: each pipeline once on a few rows (first-call costs: torch.optim's import of
    # torch._dynamo for the reference, kernel set-up for both)
    reference_run(X[:128], y[:128], X_test[:128], y_test[:128], 1, 0, device)
    engine_runs(X[:128], y[:128], X_test[:128], y_test[:128], 1, 1, device, precision, args.backend)
    reference = [reference_run(X, y, X_test, y_test, args.epochs, s, device) for s in range(args.runs)]
    engine_seconds, engine = engine_runs(X, y, X_test, y_test, args.epochs, args.runs, device, precision,
                                         args.backend)
    reference_seconds = sum(r["seconds"] for r in reference)
    for label, total, results in (("reference (fp32)", reference_seconds, reference),
                                  (f"engine ({precision}, {args.backend})", engine_seconds, engine)):
        seconds = total / (args.epochs * args.runs)
        print(f"{label:>28}: {seconds:7.2f} s/epoch ({seconds / limit:.2f}x the limit) | test acc "
              + " ".join(f"{100 * r['test_acc']:.2f}" for r in results) + " | train acc (averaged softmax) "
              + " ".join(f"{100 * r['train_acc']:.2f}" for r in results))
    print(f"speedup: {reference_seconds / engine_seconds:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
