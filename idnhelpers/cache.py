"""Training results stored as ``<key>.pt`` under ``$IDNHELPERS_CACHE`` (default
``~/.cache/idnhelpers/runs``), ``key`` a hash of all that changes the result (``runs.Run.key``). A file
is a header (magic, SHA-256 of the payload, its key) and a ``torch.save`` payload loaded with
``weights_only=True`` (nothing executes); one that fails a check is reported, removed and recomputed.
Writes are atomic.
``Lock``: one trainer per key; its file is refreshed every 30 s and taken over when its process is
gone (same host) or after ``$IDNHELPERS_LOCK_STALE`` seconds (default 300) without a refresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from .environment import cache_dir, lock_stale_seconds

MAGIC = b"IDNHELPERS-RESULT-1\n"
HEARTBEAT_SECONDS = 30.0
TMP_MAX_AGE = 3600.0
SUFFIXES = (".pt", ".ckpt", ".point")  # results; checkpoints of runs being trained and each run's pointer to one


def fingerprint(t: torch.Tensor) -> str:
    """A short content hash of a tensor (shape, dtype and values)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a new temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _path(key: str, suffix: str) -> Path:
    if suffix not in SUFFIXES:
        raise ValueError(f"suffix={suffix!r} is not allowed: one of {list(SUFFIXES)}")
    return cache_dir() / f"{key}{suffix}"


def load(key: str, suffix: str = ".pt") -> dict | None:
    """The stored payload of ``key`` (``suffix=".ckpt"``: its checkpoint), or None if absent or bad.
    Read from the file twice (checksum, then ``torch.load``), never held whole in memory."""
    path = _path(key, suffix)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    try:
        with f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a result file of this library (wrong header)")
            digest, stored_key = f.readline().strip(), f.readline().strip()
            if stored_key.decode("ascii") != key:
                raise ValueError(f"it holds the result of key {stored_key.decode('ascii')!r}")
            start, h = f.tell(), hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            if h.hexdigest() != digest.decode("ascii"):
                raise ValueError("its checksum does not match its contents (truncated or altered)")
            f.seek(start)
            return torch.load(f, weights_only=True, map_location="cpu")
    except Exception as error:  # every failure means the same: do not trust it, recompute
        warnings.warn(f"cached result {path} is unusable ({error}); it is removed and recomputed", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def save(key: str, payload: dict, suffix: str = ".pt") -> None:
    """Store ``payload`` under ``key`` atomically, first removing the key's leftover temporary files
    (we hold its lock) and any an hour old. The payload streams to the file (a checkpoint of 12
    stacked WRN-28-10s is 3.5 GB), its checksum written into the header after it."""
    path = _path(key, suffix)
    now = time.time()
    for tmp in path.parent.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.name.startswith(f".{path.name}.") or now - tmp.stat().st_mtime > TMP_MAX_AGE:
                tmp.unlink()

    def write(f):
        f.write(MAGIC + b"0" * 64 + b"\n" + key.encode() + b"\n")
        sha256 = hashlib.sha256()

        def write_hashed(data) -> int:
            sha256.update(data)
            return f.write(data)
        torch.save(payload, SimpleNamespace(write=write_hashed, flush=f.flush))  # a file that hashes what it writes
        f.seek(len(MAGIC))
        f.write(sha256.hexdigest().encode())
    atomic_write(path, write)


def remove(key: str, suffix: str = ".pt") -> None:
    _path(key, suffix).unlink(missing_ok=True)


def exists(key: str, suffix: str = ".pt") -> bool:
    """Whether a (not yet checked) file for ``key`` is present."""
    return _path(key, suffix).exists()


class Lock:
    """``Lock.acquire(key)``: the held lock of ``key`` (module docstring), or None if another live
    process holds it; ``release()`` or leaving a ``with`` block lets it go."""

    def __init__(self, path: Path):
        self.path = path
        self._stop = threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()

    @classmethod
    def acquire(cls, key: str, path: Path | None = None) -> "Lock | None":
        """``path``: the lock file, default ``<cache>/<key>.lock``."""
        path = _lock_path(key, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # second try after removing a stale lock
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                if not _break_if_stale(key, path):
                    return None
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(dict(host=socket.gethostname(), pid=os.getpid(), time=time.time()), f)
            return cls(path)
        return None

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _lock_path(key: str, path: Path | None) -> Path:
    return cache_dir() / f"{key}.lock" if path is None else Path(path)


def _break_if_stale(key: str, path: Path) -> bool:
    """Remove ``path`` if its lock is stale. Breakers take a lock of their own first, so two
    processes that both find the same stale lock cannot remove a fresh one between them."""
    breaker = path.with_name(path.name + ".break")
    try:
        os.close(os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > 60:  # a breaker killed mid-break
                breaker.unlink(missing_ok=True)
        return False
    try:
        if lock_holder(key, path) is not None:
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        breaker.unlink(missing_ok=True)


def lock_holder(key: str, path: Path | None = None) -> dict | None:
    """Who holds ``key``'s lock (host, pid, time; ``{}`` if unreadable), or None if it is free or
    stale: its process is gone (same host) or it has not been refreshed in time."""
    path = _lock_path(key, path)
    stale_after = lock_stale_seconds()
    try:
        age = time.time() - path.stat().st_mtime
        holder = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except ValueError:  # being written right now, or garbage: judge by age alone
        return None if age > stale_after else {}
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return None if age > stale_after else holder
