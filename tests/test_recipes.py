"""Every command in README.md and book/how_to_run.md, run as written (issue 14).

What is taken from a page: every ```bash (or ```sh, ```shell) block and every block indented by
four spaces, one command per line once backslash continuations are joined and comments (a ``#``
outside quotes that starts a word) dropped; and every ```python block, as one program. Blocks
without a language are text (the layout tree); one that holds a line starting with a command fails
the test, as does a block in a language this test does not know. So a new recipe is either run
here or listed in ``NOT_RUN`` with the reason: it cannot go untested by accident.

Where they run: each page in its own scratch copy of the repository's sources (``notebooks/*.py``,
``notebooks/profiles``, ``book/``, ``_config.yml``, ``_toc.yml``, ``Makefile``,
``pyproject.toml``) with ``.venv`` a link to this environment, from the copy's root, in page
order, each command in its own ``bash -c`` (so a command cannot rely on an earlier ``cd`` or
``export``; those are refused unless listed). ``PATH`` loses this environment's ``bin``, so a
recipe that forgets the ``.venv/bin/`` prefix fails. The run cache is this session's
(``$IDNHELPERS_CACHE``, tests/conftest.py); the data are the usual ones (``$IDNHELPERS_DATA``).
No command other than ``book/build.py`` (and ``make``) may create or change ``notebooks/*.ipynb``,
the executed copies the book renders.

The one substitution, mechanical: the ``smoke`` profile wherever a command names a heavier one.

1. ``notebooks/profiles/paper.yaml`` or ``cpu.yaml`` becomes ``notebooks/profiles/smoke.yaml``;
   ``notebooks/profiles/paper/NN_x.yaml`` (or ``cpu/``) becomes ``notebooks/profiles/smoke/NN_x.yaml``
   where that file exists, else the ``-f`` naming it is dropped; ``PROFILE=paper|cpu`` becomes
   ``PROFILE=smoke``.
2. papermill gets the smoke sizes first: ``-f notebooks/profiles/smoke.yaml`` (and
   ``-f notebooks/profiles/smoke/NN_x.yaml`` where chapter NN has one: the notebook's name starts
   with NN) right after the output notebook. papermill applies the ``-f`` files in order and every
   ``-y`` and ``-p`` after them, so the recipe's own values still win.
3. A papermill recipe that takes a whole data set (``n_train: null``) and names none gets
   ``-y "dataset: digits"``: the smallest registered image data set (1,400 training rows), so
   "all of it" is smoke-sized; all of MNIST, 60,000 images, costs minutes even at smoke's 2 epochs.
4. ``idn-grid`` without ``--profile`` (the paper's protocol) gets chapter 05's smoke grid
   (``--profile notebooks/profiles/smoke.yaml notebooks/profiles/smoke/05_benchmarks.yaml``) and,
   with ``--executor slurm``, the paper's precision (``--set precision=fp32``: Slurm jobs submitted
   from a machine without a GPU need one stated, where ``smoke`` says ``auto``); with ``--executor
   slurm`` it also gets ``--dry-run`` (there is no Slurm here): the plan is built from the same
   arguments, so a bad option still fails.
5. papermill's ``-p trained_on cuda`` (collecting a cluster's GPU runs) becomes ``-p trained_on auto``:
   the runs collected here were trained on this machine's device, by the recipes before it.

A command that has already passed word for word in this session, on this page or the other (the book's
how-to page repeats the README's recipes), is not run again: the test names where it ran.

``make`` targets are listed (the book and the test suite are minutes to an hour, and CI runs
``make test``); each is still checked with ``make -n`` (the target exists and expands).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "book/how_to_run.md")
SHELL = {"bash", "sh", "shell"}
TIMEOUT = 600  # seconds for one command

# Commands not run here, exactly as the page writes them (continuations joined, comment dropped).
_TABLE2 = "CIFAR-10 (Table 2) is not on this machine (a 160 MB download; hours of training)"
_TABLE3 = "Clothing1M (Table 3) and its ImageNet ResNet-50 weights are not on this machine (not redistributable)"
_MAKE_BOOK = ("executes every chapter under the cpu/paper profile, then jupyter-book; tests/test_book.py runs its "
              "two steps under smoke (book/build.py --profile smoke, then the same jupyter-book build)")
NOT_RUN = {
    "make book": _MAKE_BOOK,
    "make book PROFILE=paper": _MAKE_BOOK,
    "make book PROFILE=smoke": _MAKE_BOOK,
    "make test": "the test suite that runs this test (CI: make test)",
    "make bench": "a timing benchmark: about a minute of 2 cores, meaningless on a shared machine (NOTES.md records "
                  "its runs)",
    "make html": "needs every chapter executed first (make book, minutes); tests/test_book.py builds the pages from "
                 "the smoke-executed chapters with the same jupyter-book command",
    ".venv/bin/papermill scratch/05_benchmarks.ipynb scratch/table2.ipynb -p dataset cifar10 -p data_root /data "
    "-p n_epochs 150 -p n_iterations 3 -p val_fraction 0 "
    "-y \"{n_train: null, dmi_epochs: null, noise_rates: [0.1, 0.2, 0.3, 0.4], seeds: [0, 1, 2]}\"": _TABLE2,
    ".venv/bin/papermill scratch/05_benchmarks.ipynb scratch/table3.ipynb -p data_root /data "
    "-p clothing1m_weights /data/resnet50_imagenet.pth -y \"methods: [ce, coteaching, dmi, seal, seal_dmi]\"": _TABLE3,
    "export IDNHELPERS_CACHE=/shared/idn/runs IDNHELPERS_DATA=/shared/idn/data":
        "a cluster's shared file system; the test keeps its own cache and data",
    ".venv/bin/idn-grid --table 2 --set precision=bf16 --executor slurm --partition gpu --time 2880 "
    "--cells-per-job 3":
        _TABLE2 + "; even the plan reads its labels",
    ".venv/bin/idn-grid --table 3 --set precision=bf16 --data-root /shared/idn/data "
    "--set clothing1m_weights=/shared/idn/resnet50.pth --executor slurm --partition gpu": _TABLE3,
    "rsync -a cluster:/shared/idn/runs/ ~/.cache/idnhelpers/runs/": "needs the cluster; the chapter-05 recipe before "
                                                                     "it filled this session's cache instead",
    '.venv/bin/pip install -e ".[lab]"': "installs JupyterLab from PyPI into this environment; "
                                        "test_the_lab_extra_brings_a_jupyter_front_end checks the extra",
    ".venv/bin/jupyter lab scratch/02_idn_generation.ipynb":
        "an interactive server, and JupyterLab is only in the lab extra; test_the_jupyter_pairing_* does what "
        "saving in it does",
}


# --- reading the pages --------------------------------------------------------------------------------------------

def blocks(path: Path) -> list[tuple[str, int, str]]:
    """(kind, line number, text) of every code block of a Markdown page: a fenced block's kind is its
    language ("" when none), an indented block's is "indented"."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w+-]*)", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
            found.append((fence.group(2), i + 1, "\n".join(lines[i + 1:end])))
            i = end + 1
        elif lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            found.append(("indented", i + 1, "\n".join(line[4:] for line in lines[i:end]).strip("\n")))
            i = end
        else:
            i += 1
    return found


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` outside quotes at the start of a word."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def shell_commands(text: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for raw in text.splitlines():
        line = pending + (raw.strip() if pending else raw.rstrip())
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        line = strip_comment(line).strip()
        if line:
            commands.append(re.sub(r"\s+(?=(?:[^\"']|\"[^\"]*\"|'[^']*')*$)", " ", line))  # one space between words
    assert not pending, f"a continuation runs off the end of the block:\n{text}"
    return commands


def recipes(doc: str) -> list[tuple[str, int, str]]:
    """("shell" or "python", line, text) of every recipe of ``doc``, in page order."""
    out = []
    for kind, line, text in blocks(ROOT / doc):
        if kind in SHELL or kind == "indented":
            out += [("shell", line, command) for command in shell_commands(text)]
        elif kind == "python":
            out.append(("python", line, text))
        elif kind in ("", "text"):
            looks_like_commands = [t for t in text.splitlines() if _starts_with_a_command(t)]
            assert not looks_like_commands, (f"{doc}:{line}: a block without a language holds commands "
                                             f"{looks_like_commands}: mark it ```bash so that it is run")
        else:
            pytest.fail(f"{doc}:{line}: a ```{kind} block; this test runs bash and python blocks only: teach it "
                        f"{kind}, or make it a bash block")
    return out


def _starts_with_a_command(line: str) -> bool:
    word = line.strip().split(" ")[0] if line.strip() else ""
    if not word or word.endswith("/"):
        return False
    return (word.startswith((".venv/", "./")) or word in {"make", "export", "cd", "python", "python3", "pip"}
            or shutil.which(word, path=str(Path(sys.prefix) / "bin")) is not None)


# --- the one substitution ----------------------------------------------------------------------------------------

def smoke(command: str, root: Path = ROOT) -> str:
    """``command`` with the smoke profile for any heavier one it names (the module's docstring)."""
    profiles = root / "notebooks" / "profiles"

    def chapter_file(match):  # the chapter's smoke exception, or no -f at all
        replacement = profiles / "smoke" / f"{match.group('name')}.yaml"
        if not replacement.exists():
            return ""
        return f"{match.group('opt')}notebooks/profiles/smoke/{match.group('name')}.yaml"

    out = re.sub(r"(?P<opt>\s(?:-f|--parameters_file)\s+)notebooks/profiles/(?:paper|cpu)/(?P<name>[\w-]+)\.yaml",
                 chapter_file, command)
    out = re.sub(r"notebooks/profiles/(?:paper|cpu)\.yaml", "notebooks/profiles/smoke.yaml", out)
    out = re.sub(r"\bPROFILE=(?:paper|cpu)\b", "PROFILE=smoke", out)
    words = shlex.split(out)
    program = Path(words[0]).name
    if program == "papermill":
        source, target = [w for w in words[1:] if not w.startswith("-")][:2]  # the input and output notebooks
        chapter = re.match(r"(\d\d)_?", Path(source).name)
        extra = "-f notebooks/profiles/smoke.yaml"
        if chapter:
            own = sorted((profiles / "smoke").glob(f"{chapter.group(1)}_*.yaml"))
            extra += "".join(f" -f notebooks/profiles/smoke/{p.name}" for p in own)
        at = out.index(target, out.index(source) + len(source)) + len(target)
        out = f"{out[:at]} {extra}{out[at:]}"
        out = re.sub(r"(-p\s+trained_on\s+)cuda\b", r"\1auto", out)
        given = _papermill_values(words)
        if "n_train" in given and given["n_train"] is None and "dataset" not in given:
            out += ' -y "dataset: digits"'
    slurm = program == "idn-grid" and re.search(r"--executor(\s+|=)slurm\b", out)
    if program == "idn-grid" and "--profile" not in out:  # the paper's protocol: chapter 05's smoke grid instead
        out += " --profile notebooks/profiles/smoke.yaml notebooks/profiles/smoke/05_benchmarks.yaml"
        if slurm and "precision=" not in out:  # the paper's precision: Slurm jobs from a machine without a GPU need one
            out += " --set precision=fp32"
    if slurm and not re.search(r"--(dry-run|status)\b", out):
        out += " --dry-run"
    left = re.findall(r"profiles/(?:paper|cpu)\b|PROFILE=(?:paper|cpu)\b", out)
    assert not left, f"{command!r}: {left} left after the smoke substitution; extend smoke()"
    return out


def _papermill_values(words: list[str]) -> dict:
    """The parameters a papermill command gives with -y and -p (as papermill reads them)."""
    import yaml

    values = {}
    for k, word in enumerate(words):
        if word in ("-y", "--parameters_yaml"):
            values.update(yaml.safe_load(words[k + 1]) or {})
        elif word in ("-p", "--parameters"):
            values[words[k + 1]] = words[k + 2]
    return values


# --- running -----------------------------------------------------------------------------------------------------

def scratch_copy(dst: Path) -> Path:
    """The repository's sources copied to ``dst`` (not the executed notebooks or built pages), .venv linked."""
    for name in ("_config.yml", "_toc.yml", "Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "book", dst / "book",
                    ignore=shutil.ignore_patterns("status.md", "summary.md", "__pycache__"))
    (dst / "notebooks").mkdir()
    for source in ROOT.glob("notebooks/[0-9][0-9]_*.py"):
        shutil.copy(source, dst / "notebooks" / source.name)
    shutil.copytree(ROOT / "notebooks" / "profiles", dst / "notebooks" / "profiles")
    (dst / ".venv").symlink_to(Path(sys.prefix))
    return dst


def environment() -> dict:
    """This process's environment without this environment's ``bin`` on ``PATH``."""
    env = dict(os.environ)
    ours = {str(Path(sys.prefix) / "bin"), str(ROOT / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p.rstrip("/") not in ours)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def rendered(copy: Path) -> dict:
    """The executed notebooks the book renders, by name: their modification times and sizes."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in (copy / "notebooks").glob("*.ipynb")}


def builds_the_book(command: str) -> bool:
    return "book/build.py" in command or shlex.split(command)[0] == "make"


def run_recipe(kind: str, text: str, copy: Path, n: int) -> tuple[str, subprocess.CompletedProcess]:
    """Run one recipe in ``copy``: (what ran, its result)."""
    if kind == "python":
        program = copy / f"recipe_{n}.py"
        program.write_text(text)
        return program.name, sh(f".venv/bin/python {program.name}", copy)
    command = smoke(text, copy)
    assert shlex.split(command)[0] not in ("cd", "export", "source", "."), (
        f"{text!r}: each command runs in its own shell, so this one would change nothing: list it in NOT_RUN "
        "with the reason, or teach the test")
    return command, sh(command, copy)


def report(doc: str, line: int, text: str, ran: str, result: subprocess.CompletedProcess) -> str:
    out = (result.stdout + result.stderr)[-4000:]
    return f"{doc}:{line}: {text}\n  ran: {ran}\n  exit status {result.returncode}; output ends:\n{out}"


# --- the tests ---------------------------------------------------------------------------------------------------

PASSED = {}  # (kind, text) of a recipe -> "page:line" where it passed in this session


@pytest.mark.parametrize("doc", DOCS)
def test_every_recipe_runs_as_written(doc, tmp_path):
    copy = scratch_copy(tmp_path)
    failures, ran = [], 0
    for n, (kind, line, text) in enumerate(recipes(doc)):
        if kind == "shell" and text in NOT_RUN:
            if shlex.split(text)[0] == "make":  # not run, but the target exists and expands
                result = sh(f"make -n {smoke(text, copy)[len('make '):]}", copy)
                if result.returncode:
                    failures.append(report(doc, line, text, "make -n ...", result))
            continue
        ran += 1
        if (kind, text) in PASSED:
            print(f"{doc}:{line}: passed as {PASSED[kind, text]}", flush=True)
            continue
        before, start = rendered(copy), time.perf_counter()
        what, result = run_recipe(kind, text, copy, n)
        print(f"{doc}:{line}: {what} -> exit status {result.returncode}, {time.perf_counter() - start:.0f} s",
              flush=True)
        if not result.returncode:
            PASSED[kind, text] = f"{doc}:{line}"
        if result.returncode:
            failures.append(report(doc, line, text if kind == "shell" else "```python block", what, result))
        elif kind == "shell" and not builds_the_book(text) and rendered(copy) != before:
            failures.append(f"{doc}:{line}: {text}\n  wrote notebooks/*.ipynb, the executed copies the book "
                            f"renders: write scratch notebooks elsewhere (scratch/)")
    assert not failures, f"{len(failures)} recipe(s) of {doc} failed:\n\n" + "\n\n".join(failures)
    assert ran, f"{doc}: no recipe ran"


def test_every_listed_command_is_on_a_page():
    on_pages = {text for doc in DOCS for kind, _, text in recipes(doc) if kind == "shell"}
    stale = sorted(set(NOT_RUN) - on_pages)
    assert not stale, f"NOT_RUN lists commands no page has any more (remove them): {stale}"


def test_the_substitution():
    assert smoke(".venv/bin/papermill scratch/02_x.ipynb scratch/out.ipynb -f notebooks/profiles/paper.yaml "
                 "-f notebooks/profiles/paper/02_idn_generation.yaml -y \"n_train: null\"") == (
        ".venv/bin/papermill scratch/02_x.ipynb scratch/out.ipynb -f notebooks/profiles/smoke.yaml "
        "-f notebooks/profiles/smoke.yaml -y \"n_train: null\" -y \"dataset: digits\"")
    assert smoke(".venv/bin/papermill scratch/05_benchmarks.ipynb t.ipynb -f notebooks/profiles/cpu.yaml "
                 "-f notebooks/profiles/cpu/05_benchmarks.yaml -p seed 1") == (
        ".venv/bin/papermill scratch/05_benchmarks.ipynb t.ipynb -f notebooks/profiles/smoke.yaml "
        "-f notebooks/profiles/smoke/05_benchmarks.yaml -f notebooks/profiles/smoke.yaml "
        "-f notebooks/profiles/smoke/05_benchmarks.yaml -p seed 1")
    assert smoke(".venv/bin/papermill scratch/05_benchmarks.ipynb t.ipynb -p collect_only True -p trained_on cuda") == (
        ".venv/bin/papermill scratch/05_benchmarks.ipynb t.ipynb -f notebooks/profiles/smoke.yaml "
        "-f notebooks/profiles/smoke/05_benchmarks.yaml -p collect_only True -p trained_on auto")
    assert smoke("make book PROFILE=paper") == "make book PROFILE=smoke"
    grid = " --profile notebooks/profiles/smoke.yaml notebooks/profiles/smoke/05_benchmarks.yaml"
    assert smoke(".venv/bin/idn-grid --table 1 --executor slurm --no-wait") == (
        f".venv/bin/idn-grid --table 1 --executor slurm --no-wait{grid} --set precision=fp32 --dry-run")
    assert smoke(".venv/bin/idn-grid --table 1 --status") == f".venv/bin/idn-grid --table 1 --status{grid}"
    assert shell_commands('a \\\n    b "x # y"   # comment\n# only a comment\nc') == ['a b "x # y"', "c"]


def test_a_broken_recipe_fails(tmp_path):
    """The runner surfaces a chapter's error: ``-p`` passes a list as a string, and the chapter stops."""
    copy = scratch_copy(tmp_path)
    for command in ("mkdir -p scratch",
                    ".venv/bin/jupytext --to ipynb -o scratch/02_idn_generation.ipynb notebooks/02_idn_generation.py"):
        assert sh(command, copy).returncode == 0
    _, result = run_recipe("shell", '.venv/bin/papermill scratch/02_idn_generation.ipynb scratch/out.ipynb '
                           '-p noise_rates "[0.35, 0.45]"', copy, 0)
    assert result.returncode != 0
    assert "as a string" in result.stdout + result.stderr


def test_the_jupyter_pairing_writes_the_source_not_the_rendered_notebook(tmp_path):
    """The pages' pairing recipe, then what Jupyter does on save (jupytext syncs the pair), then the restore."""
    copy = scratch_copy(tmp_path)
    source, scratch_nb = copy / "notebooks" / "02_idn_generation.py", copy / "scratch" / "02_idn_generation.ipynb"
    the_rendered = source.with_suffix(".ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("executed")]), the_rendered)
    rendered_before = the_rendered.read_bytes()
    commands = [text for doc in DOCS for kind, _, text in recipes(doc) if kind == "shell" and "jupytext --" in text]
    pair = next(c for c in commands if "--set-formats" in c)
    restore = next(c for c in commands if "--update-metadata" in c)
    assert sh(pair, copy).returncode == 0
    paired = sh(f".venv/bin/jupytext --paired-paths {source.relative_to(copy)}", copy)
    assert paired.stdout.split() == ["scratch/02_idn_generation.ipynb"], paired
    nb = nbformat.read(scratch_nb, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("edited in Jupyter"))
    nbformat.write(nb, scratch_nb)  # what saving in Jupyter writes, then jupytext's pair:
    assert sh(f".venv/bin/jupytext --sync {scratch_nb.relative_to(copy)}", copy).returncode == 0
    assert "# edited in Jupyter" in source.read_text()
    assert sh(restore, copy).returncode == 0
    assert "#     formats: py:percent,ipynb\n" in source.read_text() and "# edited in Jupyter" in source.read_text()
    assert the_rendered.read_bytes() == rendered_before, "the pairing recipe overwrote the rendered notebook"


def test_the_lab_extra_brings_a_jupyter_front_end():
    """``pip install -e ".[lab]"`` (the pages) installs JupyterLab; the book and test extras stay without it."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {e: {re.split(r"[<>=!~\[; ]", r)[0].lower() for r in reqs} for e, reqs in extras.items()}
    assert {"jupyterlab", "jupytext"} <= names["lab"]
    assert "jupyterlab" not in names["book"] | names["test"]


def test_lists_and_nulls_are_never_passed_with_p():
    """papermill's ``-p`` passes ``[...]`` and ``null`` as strings: the pages give them with ``-y`` or ``-f``."""
    for doc in DOCS:
        for kind, line, text in recipes(doc):
            if kind == "shell" and "papermill" in text:
                words = shlex.split(text)
                bad = [words[k + 1:k + 3] for k, w in enumerate(words[:-2]) if w in ("-p", "--parameters")
                       and (words[k + 2].lstrip().startswith(("[", "{")) or words[k + 2] in ("null", "None", "~"))]
                assert not bad, f"{doc}:{line}: -p {bad}: give lists and null with -y"
