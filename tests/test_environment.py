"""The ``IDNHELPERS_*`` variables, read when needed and checked (issue 35), and the precision of Slurm
jobs checked for the GPUs they run on, not for the machine that submits them."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from idnhelpers import cache, checkpoint, environment, hardware
from idnhelpers.grid import cli, executors

ROOT = Path(__file__).resolve().parent.parent
SECONDS = "is not allowed: a number of seconds"


def test_a_bad_value_never_breaks_an_import():
    env = {**os.environ, "IDNHELPERS_CHECKPOINT_SECONDS": "abc", "IDNHELPERS_LOCK_STALE": "abc",
           "IDNHELPERS_PROGRESS": "foo", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", "import idnhelpers.engine, idnhelpers.grid.cli"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_checkpoint_seconds_checked_when_a_call_trains(value, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", value)
    with pytest.raises(ValueError, match=f"IDNHELPERS_CHECKPOINT_SECONDS='{value}' {SECONDS} >= 0"):
        checkpoint.Checkpoints(None, None)  # what training.fit makes first
    monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", "0")
    assert checkpoint.Checkpoints(None, None).every == 0.0


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_lock_stale_checked(value, monkeypatch, tmp_path):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    (tmp_path / "k.lock").write_text("{}")
    monkeypatch.setenv("IDNHELPERS_LOCK_STALE", value)
    with pytest.raises(ValueError, match=f"IDNHELPERS_LOCK_STALE='{value}' {SECONDS} > 0"):
        cache.lock_holder("k")


@pytest.mark.parametrize("name, read", [("IDNHELPERS_CACHE", cache.cache_dir),
                                        ("IDNHELPERS_DATA", environment.data_root)])
def test_a_folder_variable_naming_a_file_is_refused(name, read, monkeypatch, tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    for value in (file, file / "below"):
        monkeypatch.setenv(name, str(value))
        with pytest.raises(ValueError, match=f"{name}='{value}' is not allowed: a folder path"):
            read()
    monkeypatch.setenv(name, str(tmp_path / "new" / "folder"))
    assert read() == tmp_path / "new" / "folder"
    monkeypatch.setenv(name, "")
    assert read() == Path.home() / ".cache" / "idnhelpers" / ("runs" if name.endswith("CACHE") else "data")


def test_check_all_reads_every_variable(monkeypatch):
    for name in ("IDNHELPERS_CHECKPOINT_SECONDS", "IDNHELPERS_LOCK_STALE", "IDNHELPERS_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    environment.check_all()
    assert (environment.checkpoint_seconds(), environment.lock_stale_seconds()) == (30.0, 300.0)
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "foo")
    with pytest.raises(ValueError, match="IDNHELPERS_PROGRESS='foo' is not allowed: one of"):
        environment.check_all()


def test_precision_of_runs_on_gpus_this_machine_cannot_see(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bf16: no warning of this CPU's emulation
        assert hardware.resolve_precision("tf32", "auto", "cuda") == "tf32"
        assert hardware.resolve_precision("bf16", "auto", "cuda") == "bf16"
    with pytest.raises(ValueError, match="precision='auto' is not allowed: .*GPUs this machine cannot see"):
        hardware.resolve_precision("auto", "cpu", "cuda")
    with pytest.raises(ValueError, match="precision='tf32' is not allowed: .*on a CPU"):
        hardware.resolve_precision("tf32", "auto", "cpu")


def test_where_the_jobs_train(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    slurm = executors.executor_options("slurm")  # one GPU per job
    assert executors.jobs_device_type("slurm", slurm, "cuda") == "cuda"  # the nodes' GPUs, not this machine's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for executor in ("slurm", "submitit-local"):
        no_gpus = executors.executor_options(executor, gpus=0)
        assert executors.jobs_device_type(executor, no_gpus, "auto") == "cpu"  # this machine's GPU not given


def test_slurm_jobs_in_tf32_submitted_from_a_machine_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--dataset", "digits", "--family", "symmetric", "--rates", "0.2", "--seeds", "0",
            "--methods", "ce", "--executor", "slurm", "--dry-run"]
    assert cli.main(args + ["--set", "precision=tf32"]) == 0
    assert "tf32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(args + ["--set", "precision=auto"])
    assert "precision='auto' is not allowed" in capsys.readouterr().err
