"""Settings files (YAML, read with ``yaml.safe_load``: a file cannot execute code) for ``idn-grid
--profile`` and the book's profiles."""

from __future__ import annotations

from pathlib import Path

from .checks import fail


def load_profile(paths) -> dict:
    """The settings of the YAML files ``paths`` (a path or a list of them), merged in order."""
    import yaml

    settings = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        if not Path(path).is_file():
            fail("profile", str(path), "an existing YAML file of settings")
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            fail("profile", str(path), "a YAML file of name: value settings")
        settings.update(values)
    return settings
