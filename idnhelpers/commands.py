"""What the command lines (``idn-labels``, ``idn-grid``, ``idn-noisy``) share: an option given at
most once (``Parser``), output paths checked before any work (``check_output_folder``,
``check_output_file``), and every refusal as one line and exit code 2 (argparse's ``error``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .checks import fail


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses an option given twice (``--rates 0.2 --rates 0.4`` would
    keep only the last), except the repeatable ones (``action="append"``), and no abbreviations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else [str(a) for a in args]
        seen = {}
        for token in argv:
            if token == "--":
                break
            action = self._option_string_actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
            if action is None or isinstance(action, argparse._AppendAction):
                continue
            if action.dest in seen:
                self.error(f"{token.split('=', 1)[0]} is given twice: give it once"
                           + (", with all its values after it" if action.nargs in ("+", "*") else ""))
            seen[action.dest] = True
        return super().parse_args(argv, namespace)


def _creatable(folder: Path, option: str, shown: Path, what: str) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        fail(option, str(shown), f"{what} that can be created ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(option, str(shown), f"{what} this user can write ({existing} is not writable)")


def check_output_folder(path, option: str) -> Path:
    """``path`` as a folder this process can create or write into, checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(option, str(path), "a folder (this path is a file)")
    _creatable(path, option, path, "a folder")
    return path


def check_output_file(path, option: str) -> Path:
    """``path`` as a file this process can create (its folder too) or overwrite, checked before any work."""
    path = Path(path)
    if path.is_dir():
        fail(option, str(path), "a file path (this path is a folder)")
    if path.exists() and not os.access(path, os.W_OK):
        fail(option, str(path), "a file this user can write")
    _creatable(path.parent, option, path, "a file")
    return path
