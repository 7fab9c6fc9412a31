"""The library apart from the book: installed from the clone's files, not editable, into a fresh
virtual environment outside it, its command lines run with the book nowhere in reach."""

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_non_editable_install_outside_the_clone_runs_the_command_lines(tmp_path):
    source = tmp_path / "source"  # what the wheel is built from: no notebooks, no profiles
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "idnhelpers", source / "idnhelpers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "book" / "idnbook", source / "book" / "idnbook", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, ...) and pip from this environment; its own idnhelpers is an editable
    # finder that a path added this way does not run, so only the fresh install can be imported
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run = dict(capture_output=True, text=True, cwd=tmp_path, timeout=300,
               env={**os.environ, "IDNHELPERS_CACHE": str(tmp_path / "cache")})
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                str(source)], **run)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run([python, "-c", "import idnhelpers; print(idnhelpers.__file__)"], **run)
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr
    labels = subprocess.run([env_dir / "bin" / "idn-labels", "--dataset", "digits", "--family", "symmetric",
                             "--rates", "0.2", "--out", tmp_path / "labels"], **run)
    assert labels.returncode == 0, labels.stderr
    assert (tmp_path / "labels" / "manifest.json").is_file()
    smoke = tmp_path / "smoke.yaml"  # a profile is a file given by its path
    shutil.copy(ROOT / "notebooks" / "profiles" / "smoke.yaml", smoke)
    plan = subprocess.run([env_dir / "bin" / "idn-grid", "--profile", smoke, "--dataset", "digits", "--family",
                           "symmetric", "--methods", "ce", "seal", "--rates", "0.2", "--dry-run"], **run)
    assert plan.returncode == 0, plan.stderr
    assert "runs to train: 4" in plan.stdout, plan.stdout  # smoke's seeds 0 and 1: CE, and SEAL's one iteration
