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
from .checks import check_choice, check_labels, check_n_classes, check_rate, check_same_length, fail

PUBLISHED = {"mnist": 60_000, "cifar10": 50_000}
PUBLISHED_RATES = (0.1, 0.2, 0.3, 0.4)


def load_published_idn(dataset: str, noise_rate: float):
    """The authors' ``(y, y_noisy)`` for ``dataset`` at ``noise_rate`` (row i = torchvision index i)."""
    check_choice(dataset, "dataset", sorted(PUBLISHED))
    check_rate(noise_rate)
    level = next((i + 1 for i, r in enumerate(PUBLISHED_RATES) if abs(noise_rate - r) < 1e-9), None)
    if level is None:
        fail("noise_rate", noise_rate, f"one of the published rates {PUBLISHED_RATES}")
    with resources.files("idnhelpers").joinpath(f"published_labels/{dataset}.npz").open("rb") as f:
        d = np.load(f)
        y, noisy_max, first_level = d["label"], d["label_noisy_max"], d["first_level"]
    flipped = (first_level > 0) & (first_level <= level)
    y_noisy = np.where(flipped, noisy_max, y)
    return torch.from_numpy(y.astype(np.int64)), torch.from_numpy(y_noisy.astype(np.int64))


def read_noisy_csv(path: str | Path, n_classes: int | None = None):
    """Read a ``label,label_noisy`` CSV (the official code's format) as two int64 tensors. Every
    row must hold exactly two integer labels >= 0 (below ``n_classes`` when given)."""
    if n_classes is not None:
        check_n_classes(n_classes)
    path = Path(path)
    if not path.is_file():
        fail("path", str(path), "an existing label,label_noisy CSV file")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != "label,label_noisy":
        fail("path", str(path), f"a CSV whose header is 'label,label_noisy' (found {lines[0][:40] if lines else ''!r})")
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    if not rows:
        fail("path", str(path), "a label,label_noisy CSV with at least one row (this one has only its header)")
    for number, row in enumerate(rows, start=2):
        if len(row) != 2 or not all(field.strip().isdigit() for field in row):
            fail("path", f"{path}, line {number}: {','.join(row)[:40]!r}",
                 "rows of exactly two non-negative integer labels, e.g. '3,5'")
    a = np.array(rows, dtype=np.int64)
    y = check_labels(a[:, 0].copy(), n_classes, f"{path}: label")
    y_noisy = check_labels(a[:, 1].copy(), n_classes, f"{path}: label_noisy")
    return y, y_noisy


def write_noisy_csv(path: str | Path, y, y_noisy) -> None:
    """Write ``label,label_noisy`` rows (readable by the official code and by ``read_noisy_csv``);
    both label vectors must be integer class indices >= 0, one per instance."""
    y, y_noisy = (check_labels(torch.as_tensor(np.asarray(t)), None, name) for t, name in ((y, "y"), (y_noisy, "y_noisy")))
    check_same_length(y=y, y_noisy=y_noisy)
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
