"""Runs that survive being killed: a run stopped after any epoch, or killed mid-epoch, resumes in a
new call or process from its checkpoint and ends bit for bit where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from idnhelpers import cache, checkpoint
from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.engine import train, train_many
from idnhelpers.grid.plan import make_jobs
from idnhelpers.dividemix import DivideMix
from idnhelpers.losses import DAC, PLC
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import make_run
from idnhelpers.steps import Peers
from idnhelpers.study import Study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", "0")  # short runs: a checkpoint after every epoch
    return tmp_path / "cache"


def digits_run(**fields):
    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return make_run(X, symmetric_noise(y, 0.3, 10, seed=0), protocol("digits", n_epochs=5), dataset="digits",
                    y_true=y, X_test=Xt, y_test=yt, X_val=Xt[:100], y_val=yt[:100], **fields)


def cifar_run():  # a WRN with BatchNorm and augmentation: buffers and the augmentation draws resume too
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.integers(0, 256, (48, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 10, 48)).long()
    return make_run(X, y, protocol("cifar10", n_epochs=3, model="wrn16_2", batch_size=16, lr=0.1), dataset="cifar10",
                    seed=2, X_test=X[:16], y_test=y[:16])


def same(a, b):
    assert torch.equal(a.S, b.S) and a.best_epoch == b.best_epoch
    assert json.dumps(a.history) == json.dumps(b.history)  # NaN (an epoch DAC abstains on all) equal to NaN
    assert (a.weights is None) == (b.weights is None)
    if a.weights is not None:
        assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


CASES = {
    "ce, keeping the best on validation": lambda: [digits_run(keep="best_val")],
    "dac (loss state)": lambda: [digits_run(objective=DAC(warmup_epochs=1))],
    "plc (corrected labels)": lambda: [digits_run(objective=PLC(warmup_epochs=1))],
    "co-teaching (two networks)": lambda: [digits_run(step=Peers(0.3, t_k=2))],
    "wrn with batch norm and augmentation": lambda: [cifar_run()],
    "three runs stacked": lambda: [digits_run(seed=s) for s in range(3)],
}


# a step that runs its own epochs stores between epochs only
BETWEEN_EPOCHS = {**CASES, "dividemix (own epochs, loss history)": lambda: [
    digits_run(step=DivideMix(warmup_epochs=1, lambda_u=25.0, loss_epochs=2))]}


@pytest.mark.parametrize("name", list(BETWEEN_EPOCHS))
@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_result(name, stop_after, private_cache,
                                                                          monkeypatch, capsys):
    stop_and_resume(BETWEEN_EPOCHS[name](), stop_after, monkeypatch, capsys)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("stop_after", [2, 6])
def test_a_run_stopped_within_an_epoch_resumes_to_the_uninterrupted_result(name, stop_after, private_cache,
                                                                           monkeypatch, capsys):
    """Stores after every step (a long epoch's checkpoints); stopped after the 2nd or 6th store:
    within the first epoch or, for the WRN's three steps an epoch, within the second."""
    monkeypatch.setattr(checkpoint, "WITHIN_EPOCH_SECONDS", 0.0)
    stop_and_resume(CASES[name](), stop_after, monkeypatch, capsys, within=True)


def stop_and_resume(runs, stop_after, monkeypatch, capsys, within=False):
    backend = "stacked" if len(runs) > 1 else "loop"
    uninterrupted = train_many(runs, backend=backend, use_cache=False)
    real_save, saves = cache.save, []
    key = checkpoint.checkpoint_key(runs, len(runs) > 1)

    def save_then_die(k, payload, *suffix):
        real_save(k, payload, *suffix)
        saves.append(k)
        if k == key and saves.count(key) == stop_after:
            raise KeyboardInterrupt("killed")  # as a process dies: after its last checkpoint

    monkeypatch.setattr(cache, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_many(runs, backend=backend)
    monkeypatch.setattr(cache, "save", real_save)
    stored = cache.load(key, checkpoint.SUFFIX)
    capsys.readouterr()
    resumed = train_many(runs, backend=backend)
    if within:
        assert stored["step"] > 0
        assert f"resuming in epoch {stored['epoch'] + 1}, after step {stored['step']}," in capsys.readouterr().err
    else:
        assert stored["epoch"] == stop_after
        assert f"resuming after epoch {stop_after} of" in capsys.readouterr().err  # not trained again from epoch 0
    for a, b in zip(resumed, uninterrupted):
        same(a, b)
    assert not cache.exists(key, checkpoint.SUFFIX)  # removed once the results are stored


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from idnhelpers import progress
from idnhelpers.engine import train
import test_resume
progress.LINE_SECONDS = 0.0  # IDNHELPERS_CHECKPOINT_SECONDS=0 (private_cache)
train(test_resume.mnist_run())
"""


def mnist_run():
    X, y, _ = subset(*load_dataset("mnist"), 3000, seed=0)
    Xt, yt = load_dataset("mnist", train=False)
    return make_run(X, symmetric_noise(y, 0.4, 10, seed=1), protocol("mnist", n_epochs=6), dataset="mnist",
                    y_true=y, X_test=Xt[:500], y_test=yt[:500], label="CE")


@pytest.mark.parametrize("when", ["between epochs", "mid-epoch"])
def test_sigkill_and_resume_in_a_new_process(when, private_cache):
    run = mnist_run()
    key = checkpoint.checkpoint_key([run], False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IDNHELPERS_PROGRESS": "lines"}
    worker = subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=str(ROOT / "tests"))], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = private_cache / f"{key}{checkpoint.SUFFIX}"
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline and worker.poll() is None:
        time.sleep(0.005)
    if when == "mid-epoch":
        stored = path.stat().st_mtime
        time.sleep(0.3 * _epoch_seconds(worker, path, stored))
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    stopped_at = cache.load(key, checkpoint.SUFFIX)["epoch"]
    assert 1 <= stopped_at < 6 and not cache.exists(run.key())
    resumed = train(run)  # a new call, this process: carries on after the stored epoch
    same(resumed, train(run, use_cache=False))


def _epoch_seconds(worker, path, stored) -> float:
    """The time one epoch takes in the worker: until the checkpoint is stored again."""
    start = time.time()
    while path.exists() and path.stat().st_mtime == stored and worker.poll() is None and time.time() - start < 60:
        time.sleep(0.005)
    return time.time() - start


def test_a_job_interrupted_as_slurm_preempts_requeues_itself_and_resumes(tmp_path, monkeypatch):
    """The job gets the signal submitit has Slurm send before a pre-emption or the time limit
    (SIGUSR2); it checkpoints through GridJob.checkpoint, is requeued (submitit's local controller
    starts it again, as Slurm would), and resumes its run from the run's own checkpoint."""
    from idnhelpers import grid

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("IDNHELPERS_CACHE", str(cache_dir))
    monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", "0")  # the job stores a checkpoint after every epoch
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "lines")
    spec = Study(dataset="mnist", methods=["ce"], family="symmetric", noise_rates=[0.3], seeds=[0], n_epochs=8,
                         n_train=3000, n_test=200, precision="fp32")
    g = grid.build_grid(spec, device="cpu")
    (job,) = make_jobs(g.cells)
    options = grid.executor_options("submitit-local", folder=tmp_path / "jobs", parallel=1)
    handle = grid.executors.make_executor("submitit-local", options, 1).submit(grid.executors.GridJob(), job, "cpu",
                                                                             None, 1, None)
    deadline = time.time() + 120
    while not list(cache_dir.glob(f"*{checkpoint.SUFFIX}")) and time.time() < deadline and not handle.done():
        time.sleep(0.01)
    assert not handle.done(), "the job ended before it could be interrupted"
    controller = handle._process.pid  # submitit's local controller; the job is its child
    (task,) = map(int, Path(f"/proc/{controller}/task/{controller}/children").read_text().split())
    os.kill(task, signal.SIGUSR2)
    assert handle.result() == 1  # requeued and finished
    log = Path(handle.paths.stdout).read_text() + Path(handle.paths.stderr).read_text()
    assert "Calling checkpoint method" in log and "Requeued job" in log
    assert "resuming after epoch" in log and grid.collect(g).frame["method"].tolist() == ["ce"]


def test_a_slow_store_spaces_the_next_ones_by_twenty_times_its_duration(monkeypatch):
    """A checkpoint that takes 3 s to store (3.5 GB to a shared file system) is stored again 60 s after,
    not after the 30 s of ``$IDNHELPERS_CHECKPOINT_SECONDS``; with 0 it is still stored after every epoch."""
    from types import SimpleNamespace

    clock, stores = [0.0], []
    monkeypatch.setattr(checkpoint.time, "perf_counter", lambda: clock[0])

    def three_second_save(key, state, suffix):
        stores.append(clock[0])
        clock[0] += 3.0
    monkeypatch.setattr(cache, "save", three_second_save)
    monkeypatch.setattr(cache, "load", lambda key, suffix: None)
    training = SimpleNamespace(generators=[], state=dict, protocol=SimpleNamespace(n_epochs=100), label="run")
    for every, epoch_ends, wanted in (("30", [13, 23, 33, 43, 53, 63], [0, 63]), ("0", [13, 26], [0, 13, 26])):
        monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", every)
        clock[0], stores[:] = 0.0, []
        points = checkpoint.Checkpoints(training, "key")
        points.store(0)  # at 0 s, done at 3 s
        for epoch, end in enumerate(epoch_ends):
            clock[0] = float(end)
            points.store_if_due(epoch + 1)
        assert stores == wanted, every


HALVED = {
    "ce": lambda seed: digits_run(seed=seed),
    "plc (loss state with the runs along dim 1)": lambda seed: digits_run(seed=seed, objective=PLC(warmup_epochs=1)),
    "co-teaching (two networks a run)": lambda seed: digits_run(seed=seed, step=Peers(0.3, t_k=2)),
}


@pytest.mark.parametrize("name", list(HALVED))
@pytest.mark.parametrize("k", [2, 1])
def test_runs_stacked_four_at_a_time_resume_k_at_a_time_from_their_slices(name, k, private_cache, monkeypatch,
                                                                           capsys):
    """Four stacked runs killed after epoch 2 resume K = 2 or 1 at a time (K halved after running out of
    memory, or a requeue on a smaller GPU) from their slots of the stacked checkpoint, not from epoch 0;
    the results are the uninterrupted stack's up to float summation order (stacked and sequential runs
    differ by that), and no checkpoint or pointer is left behind."""
    runs = [HALVED[name](seed) for seed in range(4)]
    uninterrupted = train_many(runs, backend="stacked", use_cache=False)
    real_save, key = cache.save, checkpoint.checkpoint_key(runs, True)

    def save_then_die(k_, payload, *suffix):
        real_save(k_, payload, *suffix)
        if k_ == key and payload["epoch"] == 2:
            raise KeyboardInterrupt("killed")
    monkeypatch.setattr(cache, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_many(runs, backend="stacked")
    monkeypatch.setattr(cache, "save", real_save)
    capsys.readouterr()
    resumed = train_many(runs, backend="stacked", stack_size=k)
    assert capsys.readouterr().err.count("resuming after epoch 2 of 5") == 4 // k
    for a, b in zip(resumed, uninterrupted):
        assert (a.S - b.S).abs().max() < 0.02 and a.hardware["stacked_runs"] == k
        assert a.history["test_acc"] == pytest.approx(b.history["test_acc"], abs=0.01)
        assert a.history["loss"] == pytest.approx(b.history["loss"], rel=0.01)
    assert not list(private_cache.glob("*.ckpt")) and not list(private_cache.glob("*.point"))
