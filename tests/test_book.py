"""Smoke execution of every notebook with papermill, then the book build, in a scratch copy."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def copy_book(dst):
    """The book's sources (not the executed notebooks or built pages) copied to ``dst``."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "book", dst / "book", ignore=shutil.ignore_patterns("status.md", "__pycache__"))
    shutil.copytree(ROOT / "notebooks", dst / "notebooks", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    return dst


@pytest.fixture(scope="module")
def book_copy(tmp_path_factory):
    return copy_book(tmp_path_factory.mktemp("book"))


def test_every_notebook_is_in_the_toc_and_has_parameters():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in NOTEBOOKS:
        text = nb.read_text()
        assert f"notebooks/{nb.stem}" in toc
        assert '# %% tags=["parameters"]' in text and "kernelspec" in text


def test_notebooks_execute_under_smoke_profile(book_copy):
    subprocess.run([sys.executable, "book/build.py", "--profile", "smoke"], cwd=book_copy, check=True)
    for nb in NOTEBOOKS:
        executed = nbformat.read(book_copy / "notebooks" / f"{nb.stem}.ipynb", as_version=4)
        assert executed.metadata.papermill.parameters["profile"] == "smoke"
        assert not executed.metadata.papermill.exception
    assert "| smoke |" in (book_copy / "book" / "status.md").read_text()


def test_a_failing_notebook_fails_the_build(tmp_path):
    copy = copy_book(tmp_path)
    broken = copy / "notebooks" / "99_broken.py"
    header = (ROOT / "notebooks" / "02_idn_generation.py").read_text().split("# ---\n\n")[0] + "# ---\n\n"
    broken.write_text(header + '# %% tags=["parameters"]\nprofile = "x"\n\n# %%\nraise RuntimeError("boom")\n')
    result = subprocess.run([sys.executable, "book/build.py", "--profile", "smoke", str(broken)],
                            cwd=copy, capture_output=True, text=True)
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr
    status = (copy / "book" / "status.md").read_text()
    assert re.search(r"\[99_broken\].*\| smoke \|.*\| error \|", status)


def test_book_builds_offline_with_bundled_mathjax(book_copy):
    if not (book_copy / "book" / "status.md").exists():
        pytest.skip("needs the executed notebooks")
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(book_copy), "--warningiserror", "--nitpick", "--keep-going"], check=True)
    html = book_copy / "_build" / "html"
    assert (html / "index.html").exists() and (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    page = (html / "notebooks" / "02_idn_generation.html").read_text()
    assert '_static/mathjax/tex-chtml.js' in page
    assert not re.search(r'<script[^>]+src="https?://', page), "pages must not load scripts from the network"
    assert "Traceback" not in page
