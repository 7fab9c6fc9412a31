"""Label files from the command line: any noise family's labels (``noise.FAMILIES``) for a
whole training split, written as files with a checksummed manifest, and a check of such a folder.

``idn-labels`` (also ``python -m idnhelpers.labels``)::

    idn-labels --dataset mnist --family idn --rates 0.1 0.2 0.3 0.4 --out labels/
    idn-labels --from-npz mine.npz --family xia --norm-std 0.2 --rates 0.2 --out labels/
    idn-labels --verify labels/

For each rate r, ``--out`` receives three files named ``{prefix}_{family}_{r:g}``, the prefix being
the data set's name (``npz-<stem>`` for ``--from-npz <stem>.npz``), e.g. ``mnist_idn_0.2``:

- ``mnist_idn_0.2.csv``: the official code's ``label,label_noisy`` rows (``published.write_noisy_csv``),
  row i = index i of the training split in torchvision's order;
- ``mnist_idn_0.2.npy``: the noisy labels (int64, same order);
- ``mnist_idn_0.2_corrupted.npy``: a boolean mask, True where the noisy label differs from the true one;

and one ``manifest.json``: the family and its settings (defaults filled in), seeds, the
data set (name, n, SHA-256 of X's and y's bytes; the npz file's name and SHA-256), the library
version, and per rate the exact flip count, the realised rate and every file's SHA-256. Files are
written atomically (a temporary file moved into place); the old manifest is removed first and the
new one written last, so a killed run leaves no half-written file and no manifest that lies.
The same arguments give byte-identical files (the manifest has no timestamp; keys sorted); for
``idn`` on the same kind of device (its network's training depends on it; the manifest records the
device, the precision it resolved and the torch version), whose network comes from the run cache on a re-run. ``--verify DIR`` re-hashes every listed
file and checks that the CSV, the two arrays and the flip counts agree (``verify_label_files``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .cache import atomic_write, file_digest
from .checks import check_float, check_int, check_rates, check_seed, fail
from .datasets import FEATURES_PROTOCOL, get_dataset, load_dataset, register_arrays
from .experiments import family_labels
from .hardware import PRECISION_CHOICES, resolve_device, resolve_precision
from .noise import FAMILIES, XIA_NORM_STD
from .published import read_noisy_csv, write_noisy_csv

MANIFEST = "manifest.json"
FORMAT = "idnhelpers-labels/1"
KINDS = ("csv", "noisy", "corrupted")  # a rate's files: label,label_noisy CSV, noisy labels, corrupted mask
GENERATE = ("dataset", "from_npz", "family", "rates", "noise_seed", "train_seed", "norm_std", "data_root", "device",
            "precision")  # the options that only writing labels takes


# ---------------------------------------------------------------- writing

def file_names(prefix: str, family: str, rate: float) -> dict[str, str]:
    """The three files of one rate (module docstring), by kind (``KINDS``)."""
    stem = f"{prefix}_{family}_{rate:g}"
    return dict(zip(KINDS, (f"{stem}.csv", f"{stem}.npy", f"{stem}_corrupted.npy")))


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _array_info(t: torch.Tensor) -> dict:
    return {"dtype": str(t.numpy().dtype), "shape": list(t.shape), "sha256": _sha256(t)}


def family_settings(family: str, norm_std: float | None = None) -> dict:
    """``family``'s settings with their defaults filled in; ``norm_std`` only for a family that has it."""
    defaults = FAMILIES[family].settings
    if norm_std is not None and "norm_std" not in defaults:
        having = [name for name, spec in FAMILIES.items() if "norm_std" in spec.settings]
        fail("--norm-std", norm_std, f"only with a family that has it ({having}); family {family!r} has "
             + (f"the settings {list(defaults)}" if defaults else "none"))
    settings = dict(defaults)
    if norm_std is not None:
        settings["norm_std"] = check_float(norm_std, "--norm-std", low=0.0, low_open=True)
    return settings


def check_rate_names(rates) -> list[float]:
    """Noise rates, sorted; two rates whose files would share a name (``{r:g}``) are refused."""
    rates = sorted(check_rates(rates, "--rates"))
    shown = [f"{r:g}" for r in rates]
    if len(set(shown)) < len(shown):
        fail("--rates", rates, f"distinct rates: each names its files by {{rate:g}} ({shown})")
    return rates


def register_npz(path: str | Path) -> tuple[str, dict]:
    """Register the arrays ``X`` and ``y`` of an .npz as data set ``npz:<stem>`` (``register_arrays``;
    Algorithm 1's network for it is the MLP of ``datasets.FEATURES_PROTOCOL``). Returns the name
    and the file's manifest entry (name, SHA-256)."""
    path = Path(path)
    if not path.is_file():
        fail("--from-npz", str(path), "an existing .npz file holding arrays 'X' and 'y'")
    arrays = _npz_arrays(path)
    if not {"X", "y"} <= set(arrays):
        fail("--from-npz", str(path), f"an .npz holding arrays 'X' and 'y' (this one holds {sorted(arrays)})")
    name = f"npz:{path.stem}"
    register_arrays(name, arrays["X"], arrays["y"], protocol=FEATURES_PROTOCOL)
    return name, {"file": path.name, "sha256": file_digest(path)}


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, read without unpickling anything (a .npy file holds none)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return {}
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        fail("--from-npz", str(path), f"a readable .npz file of arrays, no pickles ({type(error).__name__}: {error})")


def write_label_files(dataset: str, family: str, rates, out: str | Path, *, noise_seed: int = 0,
                      train_seed: int = 0, root=None, device=None, precision: str = "fp32", npz: dict | None = None,
                      settings: dict | None = None, echo=print) -> dict:
    """Write every rate's files and the manifest into ``out`` (module docstring) and return the
    manifest. The labels are ``experiments.family_labels``' for the whole training split; all of
    them are made before the first file is written. ``settings``: the family's (default: its
    defaults, ``family_settings``); ``npz``: the source file's manifest entry; ``echo`` prints
    each rate's summary line."""
    rates = check_rate_names(rates)
    precision = resolve_precision(precision, device)  # the manifest records what trained
    settings = dict(family_settings(family) if settings is None else settings)
    X, y = load_dataset(dataset, root, train=True)
    noisy = family_labels(dataset, family, rates, noise_seed=noise_seed, train_seed=train_seed, root=root,
                          device=device, precision=precision, **settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    prefix = dataset.replace(":", "-")
    entries = [_write_rate(out, file_names(prefix, family, r), r, y, noisy[r], echo) for r in rates]
    spec = FAMILIES[family]
    data = {"name": dataset, "n": len(y), "n_classes": get_dataset(dataset).n_classes, "X": _array_info(X),
            "y": _array_info(y), **({"npz": npz} if npz else {})}
    manifest = {"format": FORMAT, "idnhelpers": __version__, "dataset": data, "family": family,
                "family_label": spec.label, "exact": spec.exact, "nested": spec.nested, "settings": settings,
                "noise_seed": noise_seed, "train_seed": train_seed, "rates": list(rates),
                "labels": entries}
    if family == "idn":  # Algorithm 1's network: its training depends on the hardware and the library
        manifest["network"] = {"device": resolve_device(device).type, "precision": precision, "torch": torch.__version__}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(out / MANIFEST, lambda f: f.write(text.encode()))
    echo(f"manifest: {out / MANIFEST}")
    return manifest


def _write_rate(out: Path, names: dict[str, str], rate: float, y: torch.Tensor, y_noisy: torch.Tensor, echo) -> dict:
    """One rate's three files and its manifest entry: flips, realised rate, each file's SHA-256."""
    corrupted = (y_noisy != y).numpy()
    write_noisy_csv(out / names["csv"], y, y_noisy)
    for kind, array in (("noisy", y_noisy.numpy().astype(np.int64)), ("corrupted", corrupted)):
        atomic_write(out / names[kind], lambda f, a=array: np.save(f, a, allow_pickle=False))
    flips = int(corrupted.sum())
    echo(f"rate {rate:g}: {flips} of {len(y)} labels flipped ({flips / len(y):.4f}) -> {', '.join(names.values())}")
    return {"rate": rate, "flips": flips, "realised_rate": round(flips / len(y), 6),
            "files": {kind: {"name": name, "sha256": file_digest(out / name)} for kind, name in names.items()}}


# ---------------------------------------------------------------- verifying

def verify_label_files(folder: str | Path) -> dict[str, list[str]]:
    """Check a folder ``write_label_files`` wrote against its manifest: each listed file exists and
    has its recorded SHA-256; the CSV's ``label_noisy`` equals the ``.npy``, the mask equals
    ``label != label_noisy``, the flip count and n are the manifest's and the CSV's true labels
    hash to the data set's y. Returns each file's problems (an empty list: OK), manifest first."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        entries = [({kind: (str(e["files"][kind]["name"]), str(e["files"][kind]["sha256"])) for kind in KINDS},
                    int(e["flips"])) for e in manifest["labels"]]
        n, y_sha = manifest["dataset"]["n"], manifest["dataset"]["y"]["sha256"]
    except FileNotFoundError:
        return {MANIFEST: ["missing"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return {MANIFEST: [f"not a manifest written by idn-labels ({type(error).__name__}: {error})"]}
    report = {MANIFEST: []}
    for files, flips in entries:
        report.update(_verify_rate(folder, files, flips, n, y_sha))
    return report


def _verify_rate(folder: Path, files: dict, flips: int, n: int, y_sha: str) -> dict[str, list[str]]:
    """One rate's files: each one's SHA-256, then (all three present) whether their contents agree."""
    names = {kind: name for kind, (name, _) in files.items()}
    problems = {name: _hash_problems(folder, name, sha256) for name, sha256 in files.values()}
    if any(p[:1] in (["missing"], ["not a file name inside the folder"]) for p in problems.values()):
        return problems
    try:
        y, y_noisy = (t.numpy() for t in read_noisy_csv(folder / names["csv"]))
    except ValueError as error:
        problems[names["csv"]].append(str(error))
        return problems
    problems[names["csv"]] += _csv_problems(y, y_noisy, flips, n, y_sha)
    expected = {"noisy": (y_noisy, "the CSV's label_noisy"), "corrupted": (y != y_noisy, "label != label_noisy")}
    for kind, (want, what) in expected.items():
        problems[names[kind]] += _array_problems(folder / names[kind], want, what)
    return problems


def _hash_problems(folder: Path, name: str, sha256: str) -> list[str]:
    if Path(name).name != name:
        return ["not a file name inside the folder"]
    if not (folder / name).is_file():
        return ["missing"]
    found = file_digest(folder / name)
    return [] if found == sha256 else [f"SHA-256 {found[:12]}... differs from the manifest's {sha256[:12]}..."]


def _csv_problems(y: np.ndarray, y_noisy: np.ndarray, flips: int, n: int, y_sha: str) -> list[str]:
    found = int((y != y_noisy).sum())
    return ([f"{len(y)} rows, the manifest says n = {n}"] if len(y) != n else []) + (
        [f"{found} flipped labels, the manifest says {flips}"] if found != flips else []) + (
        ["its true labels are not the data set's (their SHA-256 differs from the manifest's y)"]
        if hashlib.sha256(y.astype("<i8").tobytes()).hexdigest() != y_sha else [])


def _array_problems(path: Path, want: np.ndarray, what: str) -> list[str]:
    try:
        found = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        return [f"not a readable .npy ({type(error).__name__}: {error})"]
    if found.dtype != want.dtype or found.shape != want.shape:
        return [f"a {found.dtype} array of shape {found.shape}, expected {want.dtype} {want.shape}"]
    rows = np.flatnonzero(found != want)
    return [f"differs from {what} in {len(rows)} rows (first: row {rows[0]})"] if len(rows) else []


# ---------------------------------------------------------------- the command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idn-labels", description="Write a noise family's labels for a data set's "
                                "training split (label,label_noisy CSV, .npy labels, corrupted mask, manifest.json), "
                                "or verify such a folder.",
                                epilog="Examples: idn-labels --dataset mnist --family idn --rates 0.1 0.2 0.3 0.4 "
                                "--out labels/; idn-labels --from-npz mine.npz --family symmetric --rates 0.2 --out "
                                "labels/; idn-labels --verify labels/")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="a registered data set (mnist, cifar10, breast_cancer, ...)")
    src.add_argument("--from-npz", metavar="FILE", help="an .npz holding X (uint8 images N x C x H x W or features "
                     "N x d) and y (integer labels); registered as npz:<stem>")
    p.add_argument("--family", choices=list(FAMILIES), help="the noise family (noise.FAMILIES)")
    p.add_argument("--rates", nargs="+", type=float, metavar="RATE", help="noise rates in [0, 1), e.g. 0.2 0.4")
    p.add_argument("--noise-seed", type=int, help="seeds xia, xia_exact, symmetric and pair (default 0)")
    p.add_argument("--train-seed", type=int, help="seeds idn's labelling network (default 0)")
    p.add_argument("--norm-std", type=float, help=f"xia and xia_exact: spread of the per-instance flip rates "
                   f"(default {XIA_NORM_STD})")
    p.add_argument("--data-root", help="folder with the data sets (default $IDNHELPERS_DATA)")
    p.add_argument("--device", help="idn's training device: auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="idn's training precision: auto (default: bf16 "
                   "where the device has it natively, else fp32), fp32 or bf16")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", metavar="DIR", help="write the label files and manifest.json into this folder")
    what.add_argument("--verify", metavar="DIR", help="check a folder against its manifest.json; exit 1 on a mismatch")
    return p


def _generate(args, p: argparse.ArgumentParser) -> int:
    """Check every option (errors name the option), then write the files."""
    missing = [option for option, value in (("--dataset or --from-npz", args.dataset or args.from_npz),
                                            ("--family", args.family), ("--rates", args.rates)) if value is None]
    if missing:
        p.error(f"writing labels (--out) also needs {', '.join(missing)}")
    try:
        settings = family_settings(args.family, args.norm_std)
        noise_seed = check_seed(0 if args.noise_seed is None else args.noise_seed, "--noise-seed")
        if args.family in ("xia", "xia_exact"):  # their draws use numpy's RandomState
            check_int(noise_seed, "--noise-seed", maximum=2 ** 32 - 1)
        train_seed = check_seed(0 if args.train_seed is None else args.train_seed, "--train-seed")
        device = resolve_device(args.device)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            fail("--out", args.out, "a folder (this path is a file)")
        dataset, npz = register_npz(args.from_npz) if args.from_npz else (get_dataset(args.dataset).name, None)
        write_label_files(dataset, args.family, args.rates, out, noise_seed=noise_seed, train_seed=train_seed,
                          root=args.data_root, device=device, precision=args.precision or "auto", npz=npz,
                          settings=settings)
    except (ValueError, OSError) as error:  # OSError: a data set's files not found, a folder not writable
        p.error(str(error))
    return 0


def _verify(args, p: argparse.ArgumentParser) -> int:
    """Print OK / MISSING / MISMATCH per file; 0 if every file is OK, else 1."""
    given = [f"--{o.replace('_', '-')}" for o in GENERATE if getattr(args, o) is not None]
    if given:
        p.error(f"--verify checks a folder against its manifest: it takes none of {', '.join(given)}")
    if not Path(args.verify).is_dir():
        p.error(f"--verify={args.verify!r} is not allowed: an existing folder holding {MANIFEST}")
    report = verify_label_files(args.verify)
    for name, problems in report.items():
        status = "OK" if not problems else "MISSING" if problems == ["missing"] else "MISMATCH"
        print(f"{status:<9}{name}" + (f": {'; '.join(problems)}" if problems else ""))
    bad = [name for name, problems in report.items() if problems]
    if bad:
        print(f"idn-labels: {args.verify} fails verification: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"all {len(report)} files OK")
    return 0


def main(argv=None) -> int:
    """``idn-labels`` / ``python -m idnhelpers.labels``: see ``--help``."""
    p = parser()
    args = p.parse_args(argv)
    return _verify(args, p) if args.verify is not None else _generate(args, p)


if __name__ == "__main__":
    sys.exit(main())
