"""The cache cannot be poisoned or go stale; runs are values that travel and key themselves."""

import hashlib
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from idnhelpers import cache, engine
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.engine import train
from idnhelpers.losses import GCE
from idnhelpers.runs import Run, RunResult, Tensors, make_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def run():
    X, y = load_dataset("digits")
    return make_run(X[:300], y[:300], protocol("digits", n_epochs=1), dataset="digits")


def count_fits(monkeypatch):
    calls = []
    real = engine.fit
    monkeypatch.setattr(engine, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


class Planted:
    """A pickle that would create a file when loaded, if loading executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def planted_payload(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"S": Planted(marker)}, buffer)
    return buffer.getvalue()


def valid_header(key: str, payload: bytes) -> bytes:
    return cache.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + key.encode() + b"\n"


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "tampered", "planted", "planted_with_header",
                                    "wrong_key", "empty"])
def test_a_bad_file_is_recomputed_with_a_warning_and_never_executed(store, run, monkeypatch, damage):
    good = train(run)
    path = store / f"{run.key()}.pt"
    blob = path.read_bytes()
    marker = store / "code-ran"
    other = make_run(run.data, run.targets, run.protocol, dataset="digits", seed=1)
    bad = {"truncated": blob[:len(blob) // 2],
           "corrupted": blob[:-100] + bytes(100),
           "tampered": blob[:len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 1]) + blob[len(blob) // 2 + 1:],
           "planted": pickle.dumps(Planted(marker)),
           "planted_with_header": valid_header(run.key(), planted_payload(marker)) + planted_payload(marker),
           "wrong_key": blob.replace(run.key().encode(), other.key().encode()),
           "empty": b""}[damage]
    assert bad != blob
    path.write_bytes(bad)
    calls = count_fits(monkeypatch)
    with pytest.warns(UserWarning, match=f"cached result {path}"):
        again = train(run)
    assert calls == [1] and not marker.exists()
    assert torch.equal(again.S, good.S)
    assert cache.load(run.key()) is not None  # the recomputed result replaced the bad file


def test_results_load_with_their_types_and_the_key_covers_every_field(store, run):
    result = train(run)
    assert isinstance(result, RunResult) and result.weights and result.best_epoch == 1
    loaded = engine.load(run)
    assert torch.equal(loaded.S, result.S) and loaded.history == result.history
    keys = {run.key(), run.replace(seed=1).key(), run.replace(precision="bf16").key(),
            run.replace(objective=GCE()).key(), run.replace(objective=GCE(0.5)).key(),
            run.replace(targets=run.targets.roll(1)).key(), run.replace(keep="none").key(),
            run.replace(protocol=protocol("digits", n_epochs=2)).key(), run.replace(record_softmax=False).key()}
    assert len(keys) == 8  # keep="none" shares its key: the stored result serves both
    assert run.replace(label="other name").key() == run.key()


def test_a_result_without_weights_does_not_serve_a_run_that_keeps_them(store, run, monkeypatch):
    assert train(run.replace(keep="none")).weights is None
    calls = count_fits(monkeypatch)
    assert train(run).weights is not None and calls == [1]
    assert train(run.replace(keep="none")).weights is None and calls == [1]


def test_locks_are_exclusive_and_stale_locks_are_recovered(store, monkeypatch):
    lock = cache.Lock.acquire("k1")
    assert lock is not None and cache.Lock.acquire("k1") is None
    assert cache.lock_holder("k1")["pid"] == os.getpid()
    lock.release()
    assert cache.lock_holder("k1") is None
    again = cache.Lock.acquire("k1")
    assert again is not None
    again.release()
    # a lock left by a killed process on this host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store / "k2.lock").write_text(json.dumps(dict(host=socket.gethostname(), pid=int(dead.stdout), time=0)))
    taken = cache.Lock.acquire("k2")
    assert taken is not None
    taken.release()
    # a lock of another host (a killed Slurm job) that stopped being refreshed
    (store / "k3.lock").write_text(json.dumps(dict(host="node-17", pid=1, time=0)))
    assert cache.Lock.acquire("k3") is None  # fresh: its holder may be alive
    monkeypatch.setenv("IDNHELPERS_LOCK_STALE", "1")
    os.utime(store / "k3.lock", (time.time() - 5, time.time() - 5))
    taken = cache.Lock.acquire("k3")
    assert taken is not None
    taken.release()


RACE = """
import sys
from idnhelpers import engine
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.runs import make_run
real = engine.fit
def fit(*a, **k):
    print("trained", flush=True)
    return real(*a, **k)
engine.fit = fit
X, y = load_dataset("digits")
result = engine.train(make_run(X, y, protocol("digits", n_epochs=4), dataset="digits"))
print("S", float(result.S.sum()))
"""


def test_two_processes_wanting_one_run_train_it_once(store):
    env = dict(os.environ, IDNHELPERS_CACHE=str(store), PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", RACE], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(out.count("trained") for out in outs) == 1
    assert len({line for out in outs for line in out.splitlines() if line.startswith("S")}) == 1


def test_interrupted_writes_leave_nothing_once_the_next_run_has_finished(store, run):
    leftover = store / f".{run.key()}.pt.1a2b3c.tmp"  # a writer killed mid-write
    leftover.write_bytes(b"half a file")
    old = store / ".other.pt.ffffff.tmp"
    old.write_bytes(b"older than an hour")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    train(run)
    assert not leftover.exists() and not old.exists()
    assert not list(store.glob("*.lock"))


def test_importing_the_library_leaves_the_umask_alone():
    code = "import os; os.umask(0o027); import idnhelpers.engine, idnhelpers.cache; print(oct(os.umask(0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(
        os.environ, PYTHONPATH=str(ROOT)), check=True).stdout
    assert out.strip() == "0o27"


def test_cache_files_get_the_usual_permissions(store, run):
    previous = os.umask(0o022)
    try:
        train(run)
    finally:
        os.umask(previous)
    assert (store / f"{run.key()}.pt").stat().st_mode & 0o777 == 0o644


def test_runs_are_picklable_values_and_dataset_rows_travel_as_references(run):
    copy = pickle.loads(pickle.dumps(run))
    assert isinstance(copy, Run) and copy.key() == run.key()
    rows = torch.tensor([3, 1, 4, 1, 5])
    data = Tensors.from_dataset("digits", rows)
    assert len(pickle.dumps(data)) < 1000  # a reference, not the pixels
    back = pickle.loads(pickle.dumps(data))
    assert torch.equal(back.X, data.X) and back.fingerprint == data.fingerprint
    assert len(pickle.dumps(Tensors(data.X, "digits"))) > data.X.numel()  # own tensors travel as they are
