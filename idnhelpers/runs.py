"""Train-or-load: expensive results cached on disk under a hash of their full configuration.

Files are written atomically (temporary file + ``os.replace``), so an interrupted run never
leaves a corrupt entry behind and a grid that was stopped resumes where it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_VERSION = 2  # bump when a change to the code invalidates stored results
_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    """``$IDNHELPERS_CACHE`` if set, else ``~/.cache/idnhelpers/runs``."""
    return Path(os.environ.get("IDNHELPERS_CACHE", Path.home() / ".cache" / "idnhelpers" / "runs"))


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fingerprint(t: torch.Tensor) -> str:
    """A short content hash of a tensor (shape, dtype and values)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_key(config: dict) -> str:
    text = json.dumps({"cache_version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _path(kind: str, config: dict) -> Path:
    return cache_dir() / kind / f"{config_key(config)}.pt"


def load_cached(kind: str, config: dict) -> dict | None:
    """The stored result of ``config``, or None if it has not run."""
    path = _path(kind, config)
    return torch.load(path, weights_only=False)["result"] if path.exists() else None


def cached(kind: str, config: dict, compute: Callable[[], dict], use_cache: bool = True) -> dict:
    """Return ``compute()``'s dict, loading it from the cache when the same ``config`` ran before."""
    if not use_cache:
        return compute()
    result = load_cached(kind, config)
    if result is not None:
        return result
    result = compute()
    path = _path(kind, config)
    atomic_write(path, lambda f: torch.save({"config": config, "result": result}, f))
    return result
