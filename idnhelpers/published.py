"""The IDN labels published by the paper's authors, and the ``label,label_noisy`` CSV format.

The authors released Algorithm 1's labels for MNIST and CIFAR-10 at 10-40% noise (GitHub
``chenpf1025/IDN``, ``data/{MNIST,CIFAR10}/label_noisy/dependent{r}.csv``). They are the labels
behind Tables 1 and 2, and new methods should use them for a fair comparison. The package ships
them in ``published_labels/{dataset}.npz`` (a few hundred kB instead of 3.5 MB of CSV): the
true labels, the noisy label at 40%, and for each instance the lowest rate at which it is flipped
(the four flipped sets are nested and share their flip targets). ``write_noisy_csv`` turns them
back into files byte-identical to the originals (SHA-256 recorded in ``PROVENANCE.md``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .cache import atomic_write

PUBLISHED = {"mnist": 60_000, "cifar10": 50_000}
PUBLISHED_RATES = (0.1, 0.2, 0.3, 0.4)


def load_published_idn(dataset: str, noise_rate: float):
    """The authors' ``(y, y_noisy)`` for ``dataset`` at ``noise_rate`` (row i = torchvision index i)."""
    if dataset not in PUBLISHED:
        raise ValueError(f"dataset={dataset!r}: published IDN labels exist for {sorted(PUBLISHED)} only")
    level = next((i + 1 for i, r in enumerate(PUBLISHED_RATES) if abs(noise_rate - r) < 1e-9), None)
    if level is None:
        raise ValueError(f"noise_rate={noise_rate!r}: published rates are {PUBLISHED_RATES}")
    with resources.files("idnhelpers").joinpath(f"published_labels/{dataset}.npz").open("rb") as f:
        d = np.load(f)
        y, noisy_max, first_level = d["label"], d["label_noisy_max"], d["first_level"]
    flipped = (first_level > 0) & (first_level <= level)
    y_noisy = np.where(flipped, noisy_max, y)
    return torch.from_numpy(y.astype(np.int64)), torch.from_numpy(y_noisy.astype(np.int64))


def read_noisy_csv(path: str | Path):
    """Read a ``label,label_noisy`` CSV (the official code's format) as two int64 tensors."""
    with open(path) as f:
        header = f.readline().strip()
        if header != "label,label_noisy":
            raise ValueError(f"{path}: header is {header!r}, expected 'label,label_noisy'")
        a = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    return torch.from_numpy(a[:, 0].copy()), torch.from_numpy(a[:, 1].copy())


def write_noisy_csv(path: str | Path, y, y_noisy) -> None:
    """Write ``label,label_noisy`` rows (readable by the official code and by ``read_noisy_csv``)."""
    y, y_noisy = np.asarray(y, dtype=np.int64), np.asarray(y_noisy, dtype=np.int64)
    if y.shape != y_noisy.shape or y.ndim != 1:
        raise ValueError(f"y and y_noisy must be 1-D of equal length, got {y.shape} and {y_noisy.shape}")
    text = "label,label_noisy\n" + "".join(f"{a},{b}\n" for a, b in zip(y.tolist(), y_noisy.tolist()))
    atomic_write(path, lambda f: f.write(text.encode()))


def pack_published(csv_dir: str | Path, out: str | Path) -> None:
    """Pack ``dependent{r}.csv`` for the four rates into the compact npz shipped with the package."""
    pairs = [tuple(t.numpy() for t in read_noisy_csv(Path(csv_dir) / f"dependent{r}.csv")) for r in PUBLISHED_RATES]
    y, noisy_max = pairs[0][0], pairs[-1][1]
    first_level = np.zeros(len(y), dtype=np.uint8)
    for level, (_, noisy) in reversed(list(enumerate(pairs, start=1))):
        first_level[noisy != y] = level
    for level, (y_r, noisy) in enumerate(pairs, start=1):
        rebuilt = np.where((first_level > 0) & (first_level <= level), noisy_max, y)
        if not (np.array_equal(y_r, y) and np.array_equal(rebuilt, noisy)):
            raise ValueError(f"{csv_dir}: the files are not nested with shared flip targets")
    atomic_write(out, lambda f: np.savez_compressed(
        f, label=y.astype(np.uint8), label_noisy_max=noisy_max.astype(np.uint8), first_level=first_level))
