"""Slurm jobs that cannot go wrong without a word (issue 33): a GPU job on a node without one stops,
a job asks for at most the one GPU it uses, and a job needing many time limits is requeued."""

from types import SimpleNamespace

import pandas as pd
import pytest
import submitit
import torch

from idnhelpers.datasets import protocol
from idnhelpers.grid import build_grid, executors
from idnhelpers.grid.plan import make_jobs
from idnhelpers.runs import make_run
from idnhelpers.study import Study


def test_a_job_keyed_for_a_gpu_refuses_a_node_without_one():
    study = Study(dataset="digits", methods=["ce"], family="symmetric", noise_rates=[0.2], noise_seed=0, seeds=[0],
                  n_epochs=1, device="cpu", precision="fp32")
    job = make_jobs(build_grid(study, device_type="cuda").cells)[0]
    with pytest.raises(ValueError, match="keyed for CUDA and this node shows no GPU"):
        executors.run_job(job)  # on this machine: no CUDA; before, the runs trained on the CPU as CPU runs


def test_a_job_refuses_a_precision_its_gpu_lacks_before_training(monkeypatch):
    """Planned on a login node that cannot see the GPUs: a bf16 job that lands on a V100 stops, naming fp32."""
    import torch

    study = Study(dataset="digits", methods=["ce"], family="symmetric", noise_rates=[0.2], noise_seed=0, seeds=[0],
                  n_epochs=1, device="cpu", precision="bf16")
    job = make_jobs(build_grid(study, device_type="cuda").cells)[0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(executors, "run_stages", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="precision='bf16'.*'fp32' or 'auto' on Tesla V100.*compute capability 7.0"):
        executors.run_job(job, device="cuda")


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
    options = executors.executor_options("slurm", folder=tmp_path, time_min=720)
    executors.make_executor("slurm", options, n_jobs=3)  # hours unknown: many requeues
    assert made["slurm_max_num_timeout"] == executors.MAX_TIMEOUTS >= 50 and made["cluster"] == "slurm"
    executors.make_executor("slurm", dict(options, mem_gb=15, max_timeouts=6), n_jobs=3)
    assert (made["slurm_max_num_timeout"], made["mem_gb"]) == (6, 15)
    # twice the time limits the estimated hours need, at least submitit's 3; unknown hours: MAX_TIMEOUTS
    assert max_timeouts(100.0, 2880) == 2 * 3 and max_timeouts(0.5, 720) == 3
    assert max_timeouts(float("nan"), 720) == executors.MAX_TIMEOUTS


def resources(jobs, hours=(1.0,), time_min=720) -> dict:
    """What each Slurm job of a plan of ``jobs`` (its hours per job) asks for."""
    p = SimpleNamespace(jobs=jobs, table=pd.DataFrame({"hours": hours}))
    return executors.with_job_resources("slurm", dict(time_min=time_min), p)


def cifar10_run(n: int, **protocol_changes):
    return make_run(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.zeros(n, dtype=torch.long),
                    protocol("cifar10", **protocol_changes), dataset="cifar10")


def max_timeouts(hours: float, time_min: int) -> int:
    job = SimpleNamespace(cells=[SimpleNamespace(run=cifar10_run(10, model="wrn16_2"))])
    return resources([job], [hours], time_min)["max_timeouts"]


def test_a_slurm_job_asks_for_the_memory_its_stacked_runs_hold():
    """Table 2's job of 12 stacked WRN-28-10s (36.5M parameters each, Zagoruyko & Komodakis) on CIFAR-10's
    50,000 images: 8 GB, the images, and four copies of the 12 networks (weights, momentum or Adam's two moments,
    the kept weights)."""
    import math

    run = cifar10_run(50_000)
    job = SimpleNamespace(cells=[SimpleNamespace(run=run)] * 12)
    assert resources([job])["mem_gb"] == 8 + math.ceil((50_000 * 3 * 32 * 32 + 4 * 4 * 36_479_194 * 12) / 2 ** 30) == 15
    small = SimpleNamespace(cells=[SimpleNamespace(run=cifar10_run(50_000, model="wrn16_2"))])
    assert resources([small])["mem_gb"] == 9 and resources([small, job], [1.0, 1.0])["mem_gb"] == 15  # the largest


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


def test_a_job_stacks_the_k_measured_fastest_and_each_result_records_its_k(monkeypatch, tmp_path):
    """``make gpu-check``'s seconds per run-epoch by K (``STACK_SIZES`` in the cache folder) choose K: 2 of
    4 runs per call here; K = 1 measured fastest gives the loop; a damaged file is refused by name."""
    import json

    import torch

    from idnhelpers import engine
    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.noise import symmetric_noise
    from idnhelpers.runs import make_run

    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    X, y = load_dataset("digits")
    runs = [make_run(X, symmetric_noise(y, 0.2, 10, seed=s), protocol("digits", n_epochs=1), dataset="digits", seed=s)
            for s in range(4)]
    calls = []
    real_fit = engine.fit
    monkeypatch.setattr(engine, "fit", lambda runs, device, stacked=False, **k: calls.append(
        len(runs)) or real_fit(runs, device, stacked, **k))
    for seconds, wanted in (({"1": 0.5, "2": 0.3, "4": 0.4}, [2, 2]), ({"1": 0.2, "4": 0.4}, [1, 1, 1, 1])):
        (tmp_path / executors.STACK_SIZES).write_text(json.dumps({"mlp cpu fp32": seconds, "mlp cuda bf16": {"8": 1}}))
        calls.clear()
        results = executors.JobTrainer("stacked", torch.device("cpu"), use_cache=False)(runs)
        assert calls == wanted and [r.hardware["stacked_runs"] for r in results] == [wanted[0]] * 4
    (tmp_path / executors.STACK_SIZES).write_text('{"mlp cpu fp32": [1, 2]}')
    with pytest.raises(ValueError, match="stack_sizes.json=.* seconds per run-epoch.*benchmarks.gpu_check"):
        executors.JobTrainer("stacked", torch.device("cpu"), use_cache=False)(runs)
