"""``idn-labels`` (also ``python -m idnhelpers.labels``): a noise family's labels for a whole training
split as files with a checksummed manifest (written as ``commands.output_folder`` says), and ``--verify``
of such a folder (README.md, "Label files"). The same arguments give byte-identical files (a trained
network's: on the same kind of device)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .cache import file_digest
from .checks import check_assignments, fail
from .commands import MANIFEST, Parser, check_output, output_folder, run_main, write_bytes, write_manifest
from .datasets import FEATURES_PROTOCOL, register_arrays
from .experiments import labelling_run
from .hardware import PRECISION_CHOICES, resolve_device
from .families import FAMILIES
from .published import read_noisy_csv, write_noisy_csv
from .study import Study

FORMAT = "idnhelpers-labels/1"
KINDS = ("csv", "noisy", "corrupted")  # a rate's files: label,label_noisy CSV, noisy labels, corrupted mask


def file_names(prefix: str, family: str, rate: float | None, settings: dict | None = None) -> dict[str, str]:
    """One label set's files by kind: ``{prefix}_{family}_{rate:g}...`` (fixed: ``..._cifar10n-worst``)."""
    if rate is not None:
        stem = f"{prefix}_{family}_{rate:g}"
    else:
        stem = f"{prefix}_{family}" + "".join(f"-{v}" for v in (settings or {}).values()
                                              if isinstance(v, str) and v.isidentifier())
    return dict(zip(KINDS, (f"{stem}.csv", f"{stem}.npy", f"{stem}_corrupted.npy")))


def array_info(t: torch.Tensor) -> dict:
    return {"dtype": str(t.numpy().dtype), "shape": list(t.shape),
            "sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()}


def dataset_entry(name: str, data, npz: dict | None) -> dict:
    """A manifest's data set: its rows, classes, arrays (``array_info``) and ``register_npz``'s file."""
    return {"name": name, "n": len(data.y), "n_classes": data.n_classes, "X": array_info(data.X),
            "y": array_info(data.y), **({"npz": npz} if npz else {})}


def register_npz(path: str | Path) -> tuple[str, dict]:
    """Register an .npz's arrays ``X`` and ``y`` as data set ``npz:<stem>``: (name, manifest entry)."""
    path = Path(path)
    if not path.is_file():
        fail("--from-npz", str(path), "an existing .npz file holding arrays 'X' and 'y'")
    arrays = {}
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):  # not a .npy
            with loaded:
                arrays = dict(loaded)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        fail("--from-npz", str(path), f"a readable .npz file of arrays, no pickles ({type(error).__name__}: {error})")
    if not {"X", "y"} <= set(arrays):
        fail("--from-npz", str(path), f"an .npz holding arrays 'X' and 'y' (this one holds {sorted(arrays)})")
    name = f"npz:{path.stem}"
    register_arrays(name, arrays["X"], arrays["y"], protocol=FEATURES_PROTOCOL, replace=True)  # the file's own name
    return name, {"file": path.name, "sha256": file_digest(path)}


def write_label_files(dataset: str, family: str, rates, out: str | Path, *, noise_seed: int | None = None,
                      train_seed: int | None = None, root=None, device=None, precision: str = "fp32",
                      npz: dict | None = None, settings: dict | None = None, echo=print) -> dict:
    """Write every label set's files and the manifest into ``out``; returns the manifest. The settings are
    checked as a ``Study`` before the output folder is made or locked; the rates (sorted) must be the
    family's own and stay distinct as file names (``{rate:g}``)."""
    study = Study(dataset=dataset, family=family, family_settings=settings or {}, noise_rates=rates,
                  noise_seed=noise_seed, train_seed=train_seed, data_root=root,
                  device="auto" if device is None else str(device), precision=precision).resolved()
    spec = study.noise_family
    rates = spec.check_rates(family, study.all_rates)  # its own: Study also takes those another family completes
    settings = spec.with_defaults(family, study.family_settings)
    names = {r: file_names(dataset.replace(":", "-"), family, r, settings) for r in rates}
    if len({files["csv"] for files in names.values()}) < len(names):
        fail("noise_rates", rates, "distinct rates: each names its files by {rate:g}")
    written = {name for files in names.values() for name in files.values()}
    data = study.sample()
    seeds = {"noise_seed": 0 if noise_seed is None else noise_seed, "train_seed": data.seed if train_seed is None
             else train_seed}
    manifest = {"format": FORMAT, "idnhelpers": __version__, "dataset": dataset_entry(dataset, data, npz),
                "family": family, "family_label": spec.label, "exact": spec.exact, "nested": spec.nested,
                "fixed": spec.fixed, "settings": settings, **{name: seeds[name] for name in spec.seeded_by},
                "rates": [] if spec.fixed else list(rates)}
    if spec.needs == "network":  # the network the labels come from: its training depends on the hardware and library
        run = labelling_run(data, spec, train_seed=train_seed, precision=study.precision)
        manifest["network"] = {"run": run.key(), "softmax": spec.network, "protocol": dataclasses.asdict(run.protocol),
                               "device": resolve_device(study.device).type, "precision": study.precision,
                               "torch": torch.__version__}
    out = Path(out)
    with output_folder(out, FORMAT, echo) as old:
        listed = _check_room(out, written, old, dataset, family)
        noisy = study.labels(data)
        (out / MANIFEST).unlink(missing_ok=True)
        for name in listed - written:  # the old set's files this one does not rewrite
            (out / name).unlink(missing_ok=True)
        manifest["labels"] = [_write_rate(out, names[r], r, data.y, noisy[r], echo) for r in rates]
        write_manifest(out, manifest)
    echo(f"manifest: {out / MANIFEST}")
    return manifest


def label_files_in(folder: Path) -> list[str]:
    """The label files (``.csv``, ``.npy``) of a folder, hidden files aside."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".csv", ".npy")
                  and not p.name.startswith("."))


def _check_room(out: Path, written: set[str], old, dataset: str, family: str) -> set[str]:
    """The files an ``old`` manifest of the same data set and family lists; refuses label files that neither
    it nor ``written`` names."""
    listed = set()
    with contextlib.suppress(KeyError, TypeError):
        if (old["dataset"]["name"], old["family"]) == (dataset, family):
            listed = {str(f["name"]) for e in old["labels"] for f in e["files"].values()
                      if Path(str(f["name"])).name == str(f["name"])}
    foreign = [name for name in label_files_in(out) if name not in written | listed]
    if foreign:
        fail("--out", str(out), f"a folder for one label set: it holds {len(foreign)} label file(s) its manifest does "
             f"not list ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose another folder or "
             "remove them")
    return listed


def _write_rate(out: Path, names: dict[str, str], rate: float | None, y: torch.Tensor, y_noisy: torch.Tensor,
                echo) -> dict:
    """One label set's three files and its manifest entry: flips, realised rate, each file's SHA-256."""
    corrupted = (y_noisy != y).numpy()
    sha = {"csv": write_noisy_csv(out / names["csv"], y, y_noisy)}
    for kind, array in (("noisy", y_noisy.numpy().astype(np.int64)), ("corrupted", corrupted)):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        sha[kind] = write_bytes(out / names[kind], buffer.getvalue())
    flips = int(corrupted.sum())
    echo(f"{'rate ' + format(rate, 'g') if rate is not None else 'labels'}: {flips} of {len(y)} labels flipped "
         f"({flips / len(y):.4f}) -> {', '.join(names.values())}")
    return {"rate": rate, "flips": flips, "realised_rate": round(flips / len(y), 6),
            "files": {kind: {"name": name, "sha256": sha[kind]} for kind, name in names.items()}}


def verify_label_files(folder: str | Path) -> dict[str, list[str]]:
    """Each file's problems (an empty list: OK), manifest first, of a ``write_label_files`` folder."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        if found != FORMAT:
            raise ValueError(f"format {found!r}, not {FORMAT!r}")
        entries = [({kind: (str(e["files"][kind]["name"]), str(e["files"][kind]["sha256"])) for kind in KINDS},
                    int(e["flips"])) for e in manifest["labels"]]
        n, y_sha = manifest["dataset"]["n"], manifest["dataset"]["y"]["sha256"]
    except FileNotFoundError:
        return {MANIFEST: ["missing"]}
    except (ValueError, KeyError, TypeError) as error:  # a UnicodeDecodeError is a ValueError
        return {MANIFEST: [f"not a manifest written by idn-labels ({type(error).__name__}: {error})"]}
    report = {MANIFEST: [] if entries else ["lists no label files"]}
    for files, flips in entries:
        report.update(_verify_rate(folder, files, flips, n, y_sha))
    listed = {name for files, _ in entries for name, _ in files.values()}
    report.update({name: ["a label file the manifest does not list"] for name in label_files_in(folder)
                   if name not in listed})
    return report


def _verify_rate(folder: Path, files: dict, flips: int, n: int, y_sha: str) -> dict[str, list[str]]:
    """One rate's files: each one's SHA-256, then (all three present) whether their contents agree."""
    problems, absent = {}, False
    for name, sha256 in files.values():
        problems[name] = []
        if Path(name).name != name or not (folder / name).is_file():
            problems[name].append("missing" if Path(name).name == name else "not a file name inside the folder")
            absent = True
        elif (found := file_digest(folder / name)) != sha256:
            problems[name].append(f"SHA-256 {found[:12]}... differs from the manifest's {sha256[:12]}...")
    if absent:
        return problems
    csv, noisy, corrupted = (problems[files[kind][0]] for kind in KINDS)
    try:
        y, y_noisy = (t.numpy() for t in read_noisy_csv(folder / files["csv"][0]))
    except ValueError as error:
        csv.append(str(error))
        return problems
    found = int((y != y_noisy).sum())
    csv += [f"{len(y)} rows, the manifest says n = {n}"] if len(y) != n else []
    csv += [f"{found} flipped labels, the manifest says {flips}"] if found != flips else []
    if hashlib.sha256(y.astype("<i8").tobytes()).hexdigest() != y_sha:
        csv.append("its true labels are not the data set's (their SHA-256 differs from the manifest's y)")
    for kind, listed, want, what in (("noisy", noisy, y_noisy, "the CSV's label_noisy"),
                                     ("corrupted", corrupted, y != y_noisy, "label != label_noisy")):
        try:
            array = np.load(folder / files[kind][0], allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            listed.append(f"not a readable .npy ({type(error).__name__}: {error})")
            continue
        if array.dtype != want.dtype or array.shape != want.shape:
            listed.append(f"a {array.dtype} array of shape {array.shape}, expected {want.dtype} {want.shape}")
        elif len(rows := np.flatnonzero(array != want)):
            listed.append(f"differs from {what} in {len(rows)} rows (first: row {rows[0]})")
    return problems


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="idn-labels", description="Write a noise family's labels for a data set's training split "
               "(label,label_noisy CSV, .npy labels, corrupted mask, manifest.json), or verify such a folder.",
               epilog="Examples: idn-labels --dataset mnist --family idn --rates 0.1 0.2 0.3 0.4 --out labels/; "
               "idn-labels --from-npz mine.npz --family symmetric --rates 0.2 --out labels/; "
               "idn-labels --verify labels/")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="a registered data set (mnist, cifar10, breast_cancer, ...)")
    src.add_argument("--from-npz", metavar="FILE", help="an .npz holding X (uint8 images N x C x H x W or "
                     "features N x d) and y, registered as npz:<stem>")
    p.add_argument("--family", choices=list(FAMILIES), help="the noise family (families.FAMILIES)")
    p.add_argument("--rates", dest="noise_rates", nargs="+", type=float, metavar="RATE",
                   help="rates in [0, 1) (none: cifar10n)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a family setting (YAML): norm_std=0.2 (xia), type=2 (pmd), labels=aggre")
    p.add_argument("--noise-seed", type=int, help="the noise draws' seed, for the families seeded by it (default 0)")
    p.add_argument("--train-seed", type=int, help="the labelling network's seed (idn, pmd; default 0)")
    p.add_argument("--data-root", help="folder with the data sets (default $IDNHELPERS_DATA)")
    p.add_argument("--device", help="training device of a family's network: auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="training precision of a family's network: "
                   "auto (default: bf16 where native, else fp32), fp32 or bf16")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", metavar="DIR", help="write the label files and manifest.json into this folder")
    what.add_argument("--verify", metavar="DIR", help="check a folder against its manifest.json; exit 1 on a mismatch")
    return p


def _generate(args, p: Parser) -> int:
    """Check the options (the rest as a ``Study``, in ``write_label_files``), then write the files."""
    missing = [option for option, value in (("--dataset or --from-npz", args.dataset or args.from_npz),
                                            ("--family", args.family)) if value is None]
    if missing:
        p.error(f"writing labels (--out) also needs {', '.join(missing)}")
    spec = FAMILIES[args.family]
    settings = check_assignments(args.setting, "--setting", list(spec.settings), "norm_std=0.2")
    for option, value in (("--device", args.device), ("--precision", args.precision)):
        if value is not None and spec.needs != "network":
            fail(option, value, f"nothing: family {args.family!r} trains no network")
    out = check_output(args.out, "--out")
    dataset, npz = register_npz(args.from_npz) if args.from_npz else (args.dataset, None)
    write_label_files(dataset, args.family, args.noise_rates, out, noise_seed=args.noise_seed,
                      train_seed=args.train_seed, root=args.data_root, device=args.device,
                      precision=args.precision or "auto", npz=npz, settings=settings)
    return 0


def _verify(args, p: Parser) -> int:
    """Print OK / MISSING / MISMATCH per file; 0 if every file is OK, else 1."""
    given = sorted(p.given - {"--verify"})  # the options typed
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
    p = parser()
    return run_main(p, lambda args: _verify(args, p) if args.verify is not None else _generate(args, p), argv)


if __name__ == "__main__":
    sys.exit(main())
