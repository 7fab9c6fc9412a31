"""The book's parameter profiles: ``notebooks/profiles/<name>.yaml`` (``smoke``, ``cpu``,
``paper``), with a chapter's exceptions in ``<name>/<chapter>.yaml``. ``files`` gives the paths,
the same files ``idn-grid --profile`` reads (``idnhelpers.study.load_profile``), so a chapter
and the command line read the same settings."""

from __future__ import annotations

from pathlib import Path

from idnhelpers.checks import fail
from idnhelpers.study import load_profile

FOLDER = Path(__file__).resolve().parents[2] / "notebooks" / "profiles"


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def files(name: str, chapter: str | None = None) -> list[Path]:
    """Profile ``name``'s file, then chapter ``chapter``'s exceptions (a chapter's file stem, e.g.
    ``05_benchmarks``) where it has some."""
    if name not in names():
        fail("profile", name, f"one of {names()} (in {FOLDER})")
    own = FOLDER / name / f"{chapter}.yaml"
    return [FOLDER / f"{name}.yaml"] + ([own] if chapter is not None and own.is_file() else [])


def settings(name: str, chapter: str | None = None) -> dict:
    """The settings of profile ``name`` for ``chapter`` (its exceptions applied)."""
    return load_profile(files(name, chapter))


def chapter_exceptions(name: str, chapter: str) -> dict:
    """The settings of ``<name>/<chapter>.yaml`` (empty if the chapter has none)."""
    own = files(name, chapter)[1:]
    return load_profile(own) if own else {}
