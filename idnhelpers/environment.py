"""The ``IDNHELPERS_*`` environment variables, each read when needed (never at import, so a bad value
stops only what uses it) and checked: an error names the variable, its value and what is allowed.
Unset or empty: the default."""

from __future__ import annotations

import math
import os
from pathlib import Path

from .checks import fail

PROGRESS_MODES = ("bars", "lines")


def _folder(name: str, default: str) -> Path:
    value = os.environ.get(name)
    path = Path(value) if value else Path.home() / ".cache" / "idnhelpers" / default
    if value and not next(p for p in (path, *path.parents) if p.exists()).is_dir():
        fail(name, value, "a folder path (this is, or is below, a file)")
    return path


def _seconds(name: str, default: float, zero_ok: bool) -> float:
    value = os.environ.get(name)
    try:
        seconds = float(value) if value else default
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        fail(name, value, f"a number of seconds {'>= 0' if zero_ok else '> 0'}")
    return seconds


def cache_dir() -> Path:
    """``IDNHELPERS_CACHE``: the training results (default ``~/.cache/idnhelpers/runs``)."""
    return _folder("IDNHELPERS_CACHE", "runs")


def data_root() -> Path:
    """``IDNHELPERS_DATA``: the data sets (default ``~/.cache/idnhelpers/data``)."""
    return _folder("IDNHELPERS_DATA", "data")


def checkpoint_seconds() -> float:
    """``IDNHELPERS_CHECKPOINT_SECONDS``: at least this long between a run's checkpoints (default 30)."""
    return _seconds("IDNHELPERS_CHECKPOINT_SECONDS", 30.0, zero_ok=True)


def lock_stale_seconds() -> float:
    """``IDNHELPERS_LOCK_STALE``: a lock not refreshed for this long is taken over (default 300)."""
    return _seconds("IDNHELPERS_LOCK_STALE", 300.0, zero_ok=False)


def progress_mode() -> str | None:
    """``IDNHELPERS_PROGRESS``: "bars" or "lines"; None: bars on a terminal, else lines."""
    value = os.environ.get("IDNHELPERS_PROGRESS") or None
    if value is not None and value not in PROGRESS_MODES:
        fail("IDNHELPERS_PROGRESS", value,
             f"one of {list(PROGRESS_MODES)}, or unset (bars on a terminal, else lines)")
    return value


def check_all() -> None:
    """Read every variable: a command calls this first, so a bad value stops it before any work."""
    for read in (cache_dir, data_root, checkpoint_seconds, lock_stale_seconds, progress_mode):
        read()
