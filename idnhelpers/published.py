"""Published label sets, each a "file" family of ``families.FAMILIES``, and the ``label,label_noisy`` CSV
format (provenance, checksums, licences: ``published_labels/PROVENANCE.md``): this paper's IDN labels
(Tables 1 and 2, ``chenpf1025/IDN``; ``write_noisy_csv`` gives back the original files byte for byte),
CAL's (Zhu et al., CVPR 2021), and CIFAR-10N/100N human labels (Wei et al., ICLR 2022; not shipped:
read from the user's copy under ``$IDNHELPERS_DATA/cifar-10-100n``, MD5 checked, numpy-only unpickling).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .checks import check_choice, check_labels, check_rate, check_same_length, fail
from .commands import write_bytes
from .datasets import get_dataset, load_dataset
from .environment import data_root

PUBLISHED = {"mnist": 60_000, "cifar10": 50_000}
PUBLISHED_RATES = (0.1, 0.2, 0.3, 0.4)
CAL_DATASETS = ("cifar10", "cifar100")
CAL_RATES = (0.2, 0.4, 0.6)


def _shipped(name: str, noise_rate, rates) -> tuple[dict, float]:
    """The arrays of the shipped ``published_labels/{name}.npz``, and which of its ``rates`` is ``noise_rate``."""
    check_rate(noise_rate)
    rate = next((r for r in rates if abs(noise_rate - r) < 1e-9), None)
    if rate is None:
        fail("noise_rate", noise_rate, f"one of the published rates {rates}")
    with resources.files("idnhelpers").joinpath(f"published_labels/{name}.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as d:
            return {key: d[key].astype(np.int64) for key in d.files}, rate


def load_published_idn(dataset: str, noise_rate: float):
    """The authors' ``(y, y_noisy)`` for ``dataset`` at ``noise_rate`` (row i = torchvision index i)."""
    check_choice(dataset, "dataset", sorted(PUBLISHED))
    d, rate = _shipped(dataset, noise_rate, PUBLISHED_RATES)
    y, first_level = d["label"], d["first_level"]
    y_noisy = np.where((first_level > 0) & (first_level <= PUBLISHED_RATES.index(rate) + 1), d["label_noisy_max"], y)
    return torch.from_numpy(y), torch.from_numpy(y_noisy)


def load_cal_idn(dataset: str, noise_rate: float):
    """CAL's ``(y, y_noisy)`` for CIFAR-10 or CIFAR-100 at 20, 40 or 60% (row i = torchvision index i)."""
    check_choice(dataset, "dataset", CAL_DATASETS)
    d, rate = _shipped("cal_idn", noise_rate, CAL_RATES)
    return torch.from_numpy(d[f"{dataset}_label"]), torch.from_numpy(d[f"{dataset}_noisy_{rate:g}"])


@dataclass(frozen=True)
class HumanLabels:
    """One CIFAR-N file: its name, the MD5 of every published version, and the key of each label set."""

    file: str
    md5: tuple[str, ...]
    keys: dict


CIFAR_N_FOLDER = "cifar-10-100n"  # under the data root: the repository's name
CIFAR_N = {
    "cifar10": HumanLabels("CIFAR-10_human.pt", ("96644db5574813cae939af5f7f2a0aec",),
                           {"clean": "clean_label", "aggre": "aggre_label", "worst": "worse_label",
                            "random1": "random_label1", "random2": "random_label2", "random3": "random_label3"}),
    # the 2023 file (coarse labels corrected) and the original; their fine labels are the same
    "cifar100": HumanLabels("CIFAR-100_human.pt",
                            ("a67b45c1d7992051865b5c755bd68bb1", "3957ab2a1b5fd13bfbd6ab956831f9b3"),
                            {"clean": "clean_label", "noisy": "noisy_label", "clean_coarse": "clean_coarse_label",
                             "noisy_coarse": "noisy_coarse_label"}),
}
CIFAR_N_AUTHORS = {"rand1": "random1", "rand2": "random2", "rand3": "random3", "noisy100": "noisy",
                   "clean100": "clean"}  # their --noise_type names and ours
CIFAR_100_SUPERCLASSES = 20
# what those files' pickles may construct: numpy arrays and their dtypes, under numpy 1's and 2's names
_CIFAR_N_GLOBALS = [(np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                    np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.int64))]


def check_cifar_n_labels(labels, dataset: str) -> str:
    """One of the data set's CIFAR-N label sets; the authors' names (``rand1``, ``noisy100``) get ours."""
    variants = [name for name in CIFAR_N[dataset].keys if not name.startswith("clean")]
    if labels in CIFAR_N_AUTHORS:
        fail("labels", labels, f"{CIFAR_N_AUTHORS[labels]!r}: the authors' --noise_type {labels!r} is called "
             f"{CIFAR_N_AUTHORS[labels]!r} here (one of {variants})")
    return check_choice(labels, "labels", variants)


def load_cifar_n(dataset: str, root=None, labels: str = "worst", verify: bool = True):
    """``(y, y_noisy)`` of CIFAR-10N (``labels``: aggre, worst, random1-3) or CIFAR-100N (``noisy``, or
    ``noisy_coarse``: the 20 superclasses, with their clean ones; in the 2023 file only) from
    ``root/cifar-10-100n``; with ``verify``, only a published file."""
    spec = CIFAR_N[check_choice(dataset, "dataset", sorted(CIFAR_N))]
    check_cifar_n_labels(labels, dataset)
    clean = "clean_coarse" if labels.endswith("_coarse") else "clean"
    path = (Path(root) if root is not None else data_root()) / CIFAR_N_FOLDER / spec.file
    if not path.is_file():
        raise FileNotFoundError(f"{spec.file} not found in {path.parent}: get it from "
                                f"https://github.com/UCSC-REAL/cifar-10-100n (data/{spec.file}; CC BY-NC 4.0)")
    if verify:
        found = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        if found not in spec.md5:
            raise ValueError(f"{path} fails its checksum (MD5 {found}, expected one of {list(spec.md5)}): it is "
                             "damaged or not the published file, so it is not read (verify=False for a copy you made)")
    try:
        with torch.serialization.safe_globals(_CIFAR_N_GLOBALS):
            contents = torch.load(path, weights_only=True, map_location="cpu")
        n_classes = CIFAR_100_SUPERCLASSES if clean == "clean_coarse" else get_dataset(dataset).n_classes
        y, y_noisy = (check_labels(np.asarray(contents[spec.keys[k]]), n_classes, spec.keys[k])
                      for k in (clean, labels))
        check_same_length(**{spec.keys[clean]: y, spec.keys[labels]: y_noisy})
    except Exception as error:  # refused pickles, truncated archives, missing keys, bad labels: never trusted
        raise ValueError(f"{path} cannot be read as a CIFAR-N label file ({type(error).__name__}: "
                         f"{str(error)[:200]})") from None
    return y, y_noisy


def read_noisy_csv(path: str | Path, n_classes: int | None = None, dataset: str | None = None, root=None):
    """A ``label,label_noisy`` CSV (the official code's format) as two int64 label tensors (below
    ``n_classes`` when given); a byte-order mark, CRLF, blank lines and spaces are accepted. With ``dataset``
    (its files in ``root``), the ``label`` column must be its training labels: one row each, in order."""
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        fail("path", str(path), "an existing label,label_noisy CSV file")
    path = Path(path)
    try:  # utf-8-sig: a byte-order mark (spreadsheet programs write one) is not part of the header
        lines = path.read_bytes().decode("utf-8-sig").splitlines()  # \n, \r\n or \r
    except UnicodeDecodeError as error:
        fail("path", str(path), f"a UTF-8 text file (byte {error.start} is not UTF-8)")
    header = ",".join(field.strip() for field in lines[0].split(",")) if lines else ""
    if header != "label,label_noisy":
        fail("path", str(path), f"a CSV whose header is 'label,label_noisy' (found {lines[0][:40] if lines else ''!r})")
    numbered = [(number, line.split(",")) for number, line in enumerate(lines[1:], start=2) if line.strip()]
    if not numbered:
        fail("path", str(path), "a label,label_noisy CSV with at least one row (this one has only its header)")
    for number, row in numbered:
        if len(row) != 2 or not all(f.strip().isascii() and f.strip().isdigit() and len(f.strip()) <= 9 for f in row):
            fail("path", f"{path}, line {number}: {','.join(row)[:40]!r}",
                 "rows of exactly two non-negative integer labels (at most 9 digits), e.g. '3,5'")
    a = np.array([[int(f) for f in row] for _, row in numbered], dtype=np.int64)
    if dataset is not None:
        n_classes, y = get_dataset(dataset).n_classes, load_dataset(dataset, root)[1].numpy()
        wrong = np.flatnonzero(a[:len(y), 0] != y[:len(a)])
        if len(a) != len(y) or len(wrong):
            differs = f"; line {numbered[wrong[0]][0]} differs: rows in another order?" if len(wrong) else ""
            fail("path", str(path), f"{dataset}'s {len(y)} training labels in order, row i = training row i "
                 f"(this file: {len(a)} rows{differs})")
    return (check_labels(a[:, 0].copy(), n_classes, f"{path}: label"),
            check_labels(a[:, 1].copy(), n_classes, f"{path}: label_noisy"))


def write_noisy_csv(path: str | Path, y, y_noisy) -> str:
    """Write ``label,label_noisy`` rows (readable by the official code and by ``read_noisy_csv``); returns the
    SHA-256 of the bytes written."""
    y = check_labels(y, None, "y")
    y_noisy = check_labels(y_noisy, None, "y_noisy")
    check_same_length(y=y, y_noisy=y_noisy)
    text = "label,label_noisy\n" + "".join(f"{a},{b}\n" for a, b in zip(y.tolist(), y_noisy.tolist()))
    return write_bytes(path, text.encode())
