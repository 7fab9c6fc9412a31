"""What the command lines (``idn-labels``, ``idn-grid``, ``idn-noisy``) share: an option given at
most once (``Parser``), every refusal as one line and exit code 2 (``run_main``), output paths checked
before any work (``check_output``) and output folders written under a lock with a manifest last
(``output_folder``, ``write_manifest``)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .cache import Lock, atomic_write, lock_holder
from .checks import Refused, fail
from .environment import check_all

MANIFEST = "manifest.json"
LOCK = ".idn-writer.lock"  # held while a command writes an output folder


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses an option given twice (``--rates 0.2 --rates 0.4`` would
    keep only the last), except the repeatable ones (``action="append"``), and no abbreviations. An
    option of a ``Study`` setting named otherwise has the setting as its ``dest`` (``--rates``:
    ``noise_rates``), so that a refusal names the option typed (``option_names``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.given: set[str] = set()  # the options on the command line (``parse_args``)

    def option_names(self) -> dict[str, str]:
        """The option of each destination: ``{"data_root": "--data-root", "noise_rates": "--rates"}``; where
        settings may also come from ``--profile`` files, only the options typed (a profile's value keeps
        its setting's name)."""
        names = {a.dest: a.option_strings[-1] for a in self._actions if a.option_strings}
        if "--profile" not in self._option_string_actions:
            return names
        return {name: option for name, option in names.items() if option in self.given}

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else [str(a) for a in args]
        self.given = set()
        for token in argv:
            if token == "--":
                break
            action = self._option_string_actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
            if action is None:
                continue
            if action.option_strings[-1] in self.given and not isinstance(action, argparse._AppendAction):
                self.error(f"{token.split('=', 1)[0]} is given twice: give it once"
                           + (", with all its values after it" if action.nargs in ("+", "*") else ""))
            self.given.add(action.option_strings[-1])
        return super().parse_args(argv, namespace)


def run_main(p: Parser, body, argv=None) -> int:
    """``body(args)`` of the parsed ``argv``: a ValueError, OSError or error of this library (a bad option,
    file, value or environment variable) ends as one line and exit code 2, never a traceback; a refused
    setting is named by its option (``Parser.option_names``)."""
    args = p.parse_args(argv)
    try:
        check_all()  # every IDNHELPERS_* variable, before any work
        return body(args)
    except Exception as error:
        if not (isinstance(error, (ValueError, OSError)) or type(error).__module__.startswith("idnhelpers.")):
            raise
        if isinstance(error, Refused):
            error = error.renamed(p.option_names())
        p.error(" ".join(str(error).split("\n")) or type(error).__name__)


def check_output(path, option: str, folder: bool = True) -> Path:
    """``path`` as a folder (``folder=False``: a file) this process can create or write into (its folder
    too), checked before any work."""
    path = Path(path)
    what = "a folder" if folder else "a file"
    if path.exists() and path.is_dir() != folder:
        fail(option, str(path), "a folder (this path is a file)" if folder else "a file path (this path is a folder)")
    if path.is_file() and not os.access(path, os.W_OK):
        fail(option, str(path), f"{what} this user can write")
    existing = path if folder else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        fail(option, str(path), f"{what} that can be created ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(option, str(path), f"{what} this user can write ({existing} is not writable)")
    return path


def write_bytes(path: Path, data: bytes) -> str:
    """``data`` written atomically to ``path``; its SHA-256, of the bytes written (not of a later file)."""
    atomic_write(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def output_folder(folder: Path, fmt: str, echo=print):
    """Hold ``folder``'s lock (a second writer waits; a dead holder's is taken over), remove the temporary
    files of killed writers and refuse a manifest of another format, all before any work; yields the old
    manifest (None: none). To write: remove the manifest, write the files, then ``write_manifest`` (a killed
    writer leaves no manifest that lies)."""
    lock = Lock.acquire("folder", folder / LOCK)
    if lock is None:
        echo(f"waiting for another process writing {folder} ({lock_holder('folder', folder / LOCK) or '?'})")
    while lock is None:
        time.sleep(0.2)
        lock = Lock.acquire("folder", folder / LOCK)
    with lock:
        for partial in folder.glob(".*.tmp"):
            partial.unlink(missing_ok=True)
        old = None
        if (folder / MANIFEST).exists():
            with contextlib.suppress(ValueError):  # UnicodeDecodeError too
                old = json.loads((folder / MANIFEST).read_text())
            found = old.get("format") if isinstance(old, dict) else None
            if found != fmt:
                fail("--out", str(folder), f"a folder without another tool's {MANIFEST} (its format is "
                     f"{found!r}, not {fmt!r}); choose another folder or remove it")
        yield old
