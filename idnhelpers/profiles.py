"""The parameter profiles (``notebooks/profiles/<name>.yaml``, with a chapter's exceptions in
``<name>/<chapter>.yaml``): one loader for ``book/build.py`` and ``idn-grid``, so a chapter and
the command line read the same settings."""

from __future__ import annotations

import os
from pathlib import Path

from .checks import fail


def profiles_dir(folder=None) -> Path:
    """Where the profiles are: ``folder``, else ``$IDNHELPERS_PROFILES``, else ``notebooks/profiles``
    of the repository this package lies in, else of the current directory."""
    candidates = [Path(p) for p in (folder, os.environ.get("IDNHELPERS_PROFILES")) if p] or [
        Path(__file__).resolve().parent.parent / "notebooks" / "profiles", Path.cwd() / "notebooks" / "profiles"]
    for path in candidates:
        if path.is_dir():
            return path
    fail("profiles_dir", [str(p) for p in candidates], "a folder of profiles (notebooks/profiles of a clone of this "
                                                       "project): pass --profiles-dir or set IDNHELPERS_PROFILES")


def profile_names(folder=None) -> list[str]:
    return sorted(p.stem for p in profiles_dir(folder).glob("*.yaml"))


def load_profile(name: str, chapter: str | None = None, folder=None) -> dict:
    """The settings of profile ``name``: ``<name>.yaml``, updated by ``<name>/<chapter>.yaml``
    where ``chapter`` (a chapter's file stem, e.g. ``05_benchmarks``) has exceptions there."""
    import yaml

    root = profiles_dir(folder)
    path = root / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        fail("profile", name, f"one of {profile_names(folder)} (in {root})")
    settings = yaml.safe_load(path.read_text()) or {}
    if chapter is not None:
        settings.update(chapter_exceptions(name, chapter, folder))
    return settings


def chapter_exceptions(name: str, chapter: str, folder=None) -> dict:
    """The settings of ``<name>/<chapter>.yaml`` (empty if the chapter has none)."""
    import yaml

    path = profiles_dir(folder) / name / f"{chapter}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
