"""Execute the book's notebooks with papermill under a parameter profile, then write the status page.

    python book/build.py --profile cpu [notebooks/02_idn_generation.py ...]

Each ``notebooks/NN_*.py`` (jupytext percent format, the source of truth) is converted to
``notebooks/NN_*.ipynb`` and executed in place by papermill with the parameters of
``notebooks/profiles/<profile>.yaml``, updated by ``notebooks/profiles/<profile>/NN_*.yaml`` where
a chapter departs from the rest (papermill: ``-f <profile>.yaml -f <profile>/NN_*.yaml``).
Only the parameters a chapter declares are passed to it, and a profile key that no chapter
declares (a misspelt name) stops the build before anything runs. Any notebook error stops the
build with exit status 1.
``book/status.md`` then lists, per notebook, the profile, the parameters and the run time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

from idnhelpers.chapter import assigned_names

ROOT = Path(__file__).resolve().parent.parent


def declared(source: Path) -> list[str]:
    """The parameters a chapter declares: the names its ``parameters`` cell assigns."""
    cells = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    return assigned_names(cells[0].source) if cells else []


def check_profile(profile_path: Path, common: dict, sources: list[Path]) -> None:
    """Refuse profile keys that no chapter declares, and chapter overrides a chapter does not declare."""
    every = {Path(s).stem: declared(Path(s)) for s in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))}
    unknown = sorted(set(common) - {name for names in every.values() for name in names})
    if unknown:
        raise SystemExit(f"{profile_path.relative_to(ROOT)}: {unknown} declared by no chapter (a misspelt name?); "
                         f"the chapters' parameters: {sorted({n for names in every.values() for n in names})}")
    for source in sources:
        override = profile_path.with_suffix("") / f"{Path(source).stem}.yaml"
        if override.exists():
            extra = sorted(set(yaml.safe_load(override.read_text()) or {}) - set(declared(Path(source))))
            if extra:
                raise SystemExit(f"{override.relative_to(ROOT)}: {extra} not parameters of {Path(source).name}")


def execute(source: Path, parameters: dict) -> float:
    """Convert ``source`` (.py) to .ipynb beside it and execute it with ``parameters``; seconds."""
    target = source.with_suffix(".ipynb")
    names = declared(source)  # a profile serves every chapter; pass what this one takes
    parameters = {name: value for name, value in parameters.items() if name in names}
    nbformat.write(jupytext.read(source), target)
    start = time.perf_counter()
    papermill.execute_notebook(str(target), str(target), parameters=parameters, cwd=str(ROOT),
                               progress_bar=False, kernel_name="python3")
    return time.perf_counter() - start


def write_status(root: Path, profile: str) -> Path:
    """Write ``book/status.md`` from the papermill metadata of the executed notebooks."""
    rows = []
    for source in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        nb_path = source.with_suffix(".ipynb")
        if not nb_path.exists():
            continue
        meta = nbformat.read(nb_path, as_version=4).metadata.get("papermill", {})
        params = meta.get("parameters", {})
        shown = ", ".join(f"`{k}={v}`" for k, v in params.items() if k != "profile")
        duration = meta.get("duration")
        rows.append(f"| [{nb_path.stem}](../notebooks/{nb_path.stem}.ipynb) | {params.get('profile', '?')} | "
                    f"{(meta.get('end_time') or '?')[:19].replace('T', ' ')} | "
                    f"{'?' if duration is None else f'{duration:.0f}'} | "
                    f"{'error' if meta.get('exception') else 'ok'} | {shown} |")
    text = f"""# Build status

Every chapter is a notebook executed by papermill with a parameter profile (`{profile}` for this
build; see [how to run](how_to_run.md)). Times are wall-clock seconds of that execution; results
of training runs are cached, so a re-run that finds its cache is much faster than the first.

| notebook | profile | finished (UTC) | seconds | status | parameters |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    path = root / "book" / "status.md"
    path.write_text(text)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="parameter file in notebooks/profiles (smoke, cpu, paper)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all)")
    args = parser.parse_args(argv)
    profile_path = ROOT / "notebooks" / "profiles" / f"{args.profile}.yaml"
    if not profile_path.exists():
        known = sorted(p.stem for p in profile_path.parent.glob("*.yaml"))
        parser.error(f"--profile {args.profile!r} not found; choose one of {known}")
    common = yaml.safe_load(profile_path.read_text())
    sources = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    check_profile(profile_path, common, sources)
    failed = None
    for source in sources:
        override = profile_path.with_suffix("") / f"{Path(source).stem}.yaml"
        parameters = {**common, **(yaml.safe_load(override.read_text()) if override.exists() else {})}
        print(f"[{args.profile}] executing {source.name} ...", flush=True)
        try:
            print(f"[{args.profile}] {source.name}: {execute(Path(source).resolve(), parameters):.0f} s", flush=True)
        except papermill.PapermillExecutionError as error:
            print(f"[{args.profile}] {source.name} FAILED: {error.ename}: {error.evalue}", file=sys.stderr)
            failed = source
            break
    write_status(ROOT, args.profile)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
