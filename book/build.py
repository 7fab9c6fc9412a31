"""Execute the book's notebooks with papermill under a parameter profile, then write the status page.

    python book/build.py --profile cpu [notebooks/02_idn_generation.py ...]

Each ``notebooks/NN_*.py`` (jupytext percent format, the source of truth) is converted to
``notebooks/NN_*.ipynb`` and executed in place by papermill with the parameters of
``notebooks/profiles/<profile>.yaml``, updated by ``notebooks/profiles/<profile>/NN_*.yaml`` where
a chapter departs from the rest (papermill: ``-f <profile>.yaml -f <profile>/NN_*.yaml``).
Only the parameters a chapter declares are passed to it, and a profile key that no chapter
declares (a misspelt name) stops the build before anything runs. Any notebook error stops the
build with exit status 1.
Each executed notebook is then finished for reading (``finish``): it opens with a banner naming
the profile, the parameters in effect and the time it took (a smoke build says its numbers only
prove that the code runs), its two parameter cells (defaults, papermill's injected values) are
hidden, and stderr (progress bars) is dropped. ``book/status.md`` lists, per notebook, the
profile, the parameters and the run time; ``book/summary.md`` collects every chapter's checks of
the paper's claims (``idnbook.chapter.claims``) into the reproduction summary.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill

from idnbook import profiles
from idnbook.chapter import CLAIMS_GLUE, assigned_names, assignments
from idnbook.verdicts import CONTRADICTED, HOLDS, NOT_CHECKED, NOT_RESOLVED, VERDICTS
from idnhelpers.hardware import resolve_precision

ROOT = Path(__file__).resolve().parent.parent


def declared(source: Path) -> list[str]:
    """The parameters a chapter declares: the names its ``parameters`` cell assigns."""
    cells = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    return assigned_names(cells[0].source) if cells else []


def check_profile(profile: str, common: dict, sources: list[Path]) -> None:
    """Refuse profile keys that no chapter declares, and chapter overrides a chapter does not declare."""
    every = {Path(s).stem: declared(Path(s)) for s in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))}
    unknown = sorted(set(common) - {name for names in every.values() for name in names})
    if unknown:
        raise SystemExit(f"notebooks/profiles/{profile}.yaml: {unknown} declared by no chapter (a misspelt name?); "
                         f"the chapters' parameters: {sorted({n for names in every.values() for n in names})}")
    for source in sources:
        extra = sorted(set(profiles.chapter_exceptions(profile, Path(source).stem)) - set(declared(Path(source))))
        if extra:
            raise SystemExit(f"notebooks/profiles/{profile}/{Path(source).stem}.yaml: {extra} not parameters of "
                             f"{Path(source).name}")


def execute(source: Path, parameters: dict, profile: str) -> float:
    """Convert ``source`` (.py) to .ipynb beside it, execute it with ``parameters`` and finish it
    for reading; seconds."""
    target = source.with_suffix(".ipynb")
    names = declared(source)  # a profile serves every chapter; pass what this one takes
    parameters = {name: value for name, value in parameters.items() if name in names}
    nbformat.write(jupytext.read(source), target)
    start = time.perf_counter()
    papermill.execute_notebook(str(target), str(target), parameters=parameters, cwd=str(ROOT),
                               progress_bar=False, kernel_name="python3")
    seconds = time.perf_counter() - start
    finish(target, profile, parameters, seconds)
    return seconds


def banner(profile: str, parameters: dict, seconds: float) -> str:
    """The MyST admonition a chapter opens with: which profile built it, with what, how long."""
    shown = ", ".join(f"`{k}={v}`" + (f" ({resolved(parameters)} on this machine)" if k == "precision" and v == "auto"
                                       else "") for k, v in parameters.items() if k != "profile")
    took = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
    if profile == "smoke":
        head, kind = f"Smoke build ({took}): these numbers only prove that the code runs", "warning"
        body = ("Tiny subsets and a couple of epochs: no number on this page is a result. Build the book with "
                "`make book` (the `cpu` profile) or `make book PROFILE=paper` for results.")
    else:
        head, kind = f"Built with the `{profile}` profile in {took}", "note"
        body = "Re-run it with other settings as [How to run](../book/how_to_run.md) shows."
    return f":::{{admonition}} {head}\n:class: {kind}\nParameters in effect: {shown}.\n\n{body}\n:::"


def resolved(parameters: dict) -> str:
    """The precision a chapter's ``precision: auto`` trained in here (the chapter resolves it the same way)."""
    return resolve_precision("auto", parameters.get("device", "auto"))


def finish(target: Path, profile: str, parameters: dict, seconds: float) -> None:
    """Open the executed notebook with its banner, hide its parameter cells and drop stderr (the
    progress bars); a warning in it is printed here, for whoever builds the book."""
    nb = nbformat.read(target, as_version=4)
    effective = {}
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "code" and {"parameters", "injected-parameters"} & set(tags):
            effective.update(assignments(cell.source))
            tags.append("remove-cell")
        if cell.cell_type == "code":
            stderr = [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
            for line in "".join(o.text for o in stderr).splitlines():
                if "Warning" in line:
                    print(f"[{profile}] {target.stem}: {line.strip()}", file=sys.stderr)
            cell.outputs = [o for o in cell.outputs if o not in stderr]
    effective.update(parameters)
    first = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown")
    title, _, rest = nb.cells[first].source.partition("\n")  # the banner goes right under the title
    nb.cells[first].source = title
    nb.cells[first + 1:first + 1] = [nbformat.v4.new_markdown_cell(banner(profile, effective, seconds))] + (
        [nbformat.v4.new_markdown_cell(rest.strip("\n"))] if rest.strip() else [])
    nbformat.write(nb, target)


def chapter_claims(nb) -> list[dict]:
    """The claim rows a chapter glued (``idnbook.chapter.claims``), in order."""
    rows = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name", "")
            if name.startswith(CLAIMS_GLUE):
                text = next(v for k, v in output["data"].items() if k.endswith("text/plain"))
                rows += json.loads(ast.literal_eval(text))
    return rows


def write_summary(root: Path) -> Path:
    """Write ``book/summary.md``: every chapter's checks of the paper's claims in this build, each
    with its verdict (``idnbook.verdicts.judge``'s rule), counted per verdict."""
    lines = {"paper": [], "beyond": []}
    counts = {part: dict.fromkeys(VERDICTS, 0) for part in lines}
    for source in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        nb_path = source.with_suffix(".ipynb")
        if not nb_path.exists():
            continue
        nb = nbformat.read(nb_path, as_version=4)
        profile = nb.metadata.get("papermill", {}).get("parameters", {}).get("profile", "?")
        for row in chapter_claims(nb):
            part = "beyond" if "beyond the paper" in row["paper"] else "paper"
            counts[part][row["verdict"]] += 1
            verdict = row["verdict"] if row["verdict"] == HOLDS else f"**{row['verdict']}**"
            chapter = f"[{source.stem}](../notebooks/{source.stem})"
            cells = [row["paper"], row["claim"], verdict, row["evidence"], chapter, profile]
            lines[part].append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    head = "| paper | claim | verdict | decided by | chapter | profile |\n|---|---|---|---|---|---|\n"

    def tally(part):
        c = counts[part]
        one = {HOLDS: ("holds", "hold"), CONTRADICTED: ("is contradicted", "are contradicted"),
               NOT_RESOLVED: ("is not resolved at this scale", "are not resolved at this scale"),
               NOT_CHECKED: ("was not checked", "were not checked")}
        said = [f"{c[v]} {one[v][c[v] != 1]}" for v in VERDICTS]
        return ", ".join(said[:-1]) + " and " + said[-1]

    text = f"""# Reproduction summary

Every claim of the paper that a chapter of this build checks, with the chapter's verdict and the
numbers that decide it. A claim that compares accuracies or rates is decided by one rule over the
seeds of the build (`idnbook.verdicts.judge`): with d the mean of the claimed difference over the
seeds and se its standard error (their standard deviation / sqrt(k); for a single measured
proportion, its binomial standard error), the claim **holds** if d > 2 se, is **contradicted** if
d < -2 se, and is **not resolved at this scale** otherwise, with the reason (the margin within the
seeds' spread, a subset where the claim needs the whole data set, a test without the power at
this m) and what would resolve it. A claim that holds "at every rate" must hold at each rate.
Claims without a spread to weigh (arithmetic, a hypothesis test's decision) are facts. Not
checked: the data or settings it needs were missing from this build. A claim is judged under the
profile that built its chapter: under `smoke` the verdicts only show that the checks run. The
paper's protocol, where it has been run, is shown beside this build's numbers in each chapter.

## The paper's claims

In this build {tally("paper")}.

{head}""" + "\n".join(lines["paper"]) + f"""

## Beyond the paper

Checks of whether the paper's findings carry over to other noise families and data (chapters 06 and 07):
{tally("beyond")}.

{head}""" + "\n".join(lines["beyond"]) + "\n"
    path = root / "book" / "summary.md"
    path.write_text(text)
    return path


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
    known = profiles.names()
    if args.profile not in known:
        parser.error(f"--profile {args.profile!r} not found; choose one of {known}")
    common = profiles.settings(args.profile)
    sources = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    check_profile(args.profile, common, sources)
    failed = None
    for source in sources:
        parameters = profiles.settings(args.profile, Path(source).stem)
        print(f"[{args.profile}] executing {source.name} ...", flush=True)
        try:
            seconds = execute(Path(source).resolve(), parameters, args.profile)
            print(f"[{args.profile}] {source.name}: {seconds:.0f} s", flush=True)
        except papermill.PapermillExecutionError as error:
            print(f"[{args.profile}] {source.name} FAILED: {error.ename}: {error.evalue}", file=sys.stderr)
            failed = source
            break
    write_status(ROOT, args.profile)
    write_summary(ROOT)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
