"""Slurm jobs that cannot go wrong without a word (issue 33): a GPU job on a node without one stops,
a job asks for at most the one GPU it uses, and a job needing many time limits is requeued."""

import pytest
import submitit

from idnhelpers.grid import build_grid, executors
from idnhelpers.grid.plan import make_jobs
from idnhelpers.study import Study


def test_a_job_keyed_for_a_gpu_refuses_a_node_without_one():
    study = Study(dataset="digits", methods=["ce"], family="symmetric", noise_rates=[0.2], noise_seed=0, seeds=[0],
                  n_epochs=1, device="cpu", precision="fp32")
    job = make_jobs(build_grid(study, device_type="cuda").cells)[0]
    with pytest.raises(ValueError, match="keyed for CUDA and this node shows no GPU"):
        executors.run_job(job)  # on this machine: no CUDA; before, the runs trained on the CPU as CPU runs


def test_a_slurm_job_asks_for_at_most_the_one_gpu_it_uses():
    assert executors.executor_options("slurm", gpus=1)["gpus"] == 1
    assert executors.executor_options("slurm", gpus=0)["cpus"] == executors.CPUS_PER_GPU
    with pytest.raises(ValueError, match="gpus=2 is not allowed: 0 or 1 per Slurm job"):
        executors.executor_options("slurm", gpus=2)


def test_slurm_jobs_are_requeued_after_many_time_limits(monkeypatch, tmp_path):
    made = {}

    class Recorder:
        def __init__(self, **kwargs):
            made.update(kwargs)

        def update_parameters(self, **params):
            made.update(params)

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    executors.make_executor("slurm", executors.executor_options("slurm", folder=tmp_path), n_jobs=3)
    assert made["slurm_max_num_timeout"] == executors.MAX_TIMEOUTS >= 50 and made["cluster"] == "slurm"


def test_every_benchmark_script_imports():
    """The scripts of benchmarks/ use the library's names: a rename there must not break them unseen."""
    import importlib
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "benchmarks").glob("[a-z]*.py")):
        assert callable(importlib.import_module(f"benchmarks.{path.stem}").main), path.name


@pytest.mark.parametrize("train_labels", [False, True])
def test_tf32_jobs_from_a_machine_without_a_gpu_train_their_labelling_network_here_in_fp32(train_labels):
    """Algorithm 1's network trains on this machine (a CPU: TF32 is IEEE fp32 here); the cells keep tf32."""
    study = Study(dataset="digits", methods=["ce"], family="idn", noise_rates=[0.2], seeds=[0], n_epochs=1,
                  device="cpu", precision="tf32", train_seed=101 + train_labels)  # a network no other test trains
    grid = build_grid(study, device_type="cuda", train_labels=train_labels)
    assert {(c.run.precision, c.run.device_type) for c in grid.cells} == {("tf32", "cuda")}
    assert [(r.precision, r.device_type) for r in grid.prerequisites] == ([] if train_labels else [("fp32", "cpu")])


def test_building_a_runs_networks_leaves_every_gpu_generator_alone(monkeypatch):
    """``init_networks`` seeds the CPU's generator inside ``fork_rng(devices=[])``, which restores that
    one only: ``torch.manual_seed`` there reseeded every CUDA generator for good (issue 33)."""
    import torch

    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.runs import make_run
    from idnhelpers.training import init_networks

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    X, y = load_dataset("digits")
    run = make_run(X[:100], y[:100], protocol("digits", n_epochs=1), dataset="digits", seed=3)
    before = torch.random.get_rng_state()
    first = init_networks(run, torch.device("cpu"))[0].state_dict()
    again = init_networks(run, torch.device("cpu"))[0].state_dict()
    assert not reseeded and torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(first[k], again[k]) for k in first)  # seeded: the same weights each time
