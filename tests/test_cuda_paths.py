"""What only shows on CUDA, tested on a CPU: both forms of running out of GPU memory halve K,
and submitit-local's jobs land on the GPUs CUDA_VISIBLE_DEVICES names."""

import sys

import pytest
import torch

from idnhelpers import engine
from idnhelpers.grid import executors
from idnhelpers.grid.executors import JobTrainer, executor_options, out_of_memory, visible_gpus

OOM_FORMS = [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
             RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
             RuntimeError("GET was unable to find an engine to execute this computation")]


@pytest.mark.parametrize("error", OOM_FORMS, ids=["cuda", "cudnn alloc", "cudnn engine"])
def test_an_out_of_memory_stack_is_retried_with_half_as_many_runs(error, monkeypatch):
    tried, freed_outside_the_handler = [], []

    def train_many(runs, stack_size=None, **kwargs):
        k = min(stack_size or len(runs), len(runs))
        tried.append(k)
        if k > 2:
            raise error
        return [f"result {i}" for i in range(len(runs))]

    monkeypatch.setattr(engine, "train_many", train_many)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed_outside_the_handler.append(sys.exc_info()[0] is None))
    trainer = JobTrainer("stacked", "cpu")
    assert trainer(list(range(8))) == [f"result {i}" for i in range(8)]  # the job finishes
    assert tried == [8, 4, 2] and trainer.fitted["k"] == 2
    assert freed_outside_the_handler == [True, True]  # the failed step's traceback released first
    tried.clear()
    trainer(list(range(8)))
    assert tried == [2]  # the K that fitted is kept for the job's later stages


def test_other_errors_and_single_runs_are_not_retried(monkeypatch):
    monkeypatch.setattr(engine, "train_many", lambda runs, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        JobTrainer("stacked", "cpu")(list(range(4)))
    monkeypatch.setattr(engine, "train_many", lambda runs, **k: (_ for _ in ()).throw(OOM_FORMS[1]))
    with pytest.raises(RuntimeError, match="ALLOC_FAILED"):
        JobTrainer("stacked", "cpu")([0])
    assert not out_of_memory(ValueError("CUDA out of memory")) and out_of_memory(OOM_FORMS[2])


def test_submitit_local_jobs_get_the_gpus_cuda_visible_devices_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == [2, 3]
    assert executor_options("submitit-local")["gpus"] == 2
    with pytest.raises(ValueError, match="gpus=3"):
        executor_options("submitit-local", gpus=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,3")
    assert visible_gpus() == [1]  # CUDA ignores everything from the first invalid index
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1b2c3d")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        visible_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == [0, 1]


def test_submitit_local_submits_each_job_to_a_visible_gpu(monkeypatch, tmp_path):
    from idnhelpers.grid import GridSpec, build_grid

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path / "cache"))
    given = []

    class Handle:
        job_id = "1"

        def done(self):
            return True

        def exception(self):
            return None

    class FakeExecutor:  # records the GPU of each job and runs it here, on the CPU
        def update_parameters(self, **params):
            if "visible_gpus" in params:
                given.append(params["visible_gpus"])

        def submit(self, fn, *args):
            fn(*args[:1], "cpu", *args[2:])
            return Handle()

    monkeypatch.setattr(executors, "make_executor", lambda *a: FakeExecutor())
    spec = GridSpec(dataset="digits", methods=["ce", "gce"], family="symmetric", noise_rates=[0.2], seeds=[0],
                    n_epochs=1, n_train=200, n_test=50, precision="fp32")
    table = executors.run_grid(build_grid(spec, device="cpu"), "submitit-local", folder=tmp_path / "jobs",
                               parallel=1, progress=False)
    assert len(table) == 2 and given and all(g in [(2,), (3,)] for g in given)


def test_auto_stacks_on_cuda_only_for_runs_on_tensors():
    from types import SimpleNamespace

    from idnhelpers.clothing1m import ImageFiles
    from idnhelpers.datasets import load_dataset
    from idnhelpers.runs import Tensors

    on_tensors = SimpleNamespace(data=Tensors(load_dataset("digits")[0], "digits"))
    streamed = SimpleNamespace(data=object.__new__(ImageFiles))  # only the type of a run's data is read
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert engine.choose_backend("auto", cuda, [on_tensors, on_tensors]) == "stacked"
    assert engine.choose_backend("auto", cuda, [streamed, streamed]) == "loop"  # StreamSource trains one run per call
    assert engine.choose_backend("auto", cpu, [on_tensors]) == "loop"
    assert engine.choose_backend("processes", cuda, [streamed]) == "processes"


def test_forward_copies_its_transition_matrix_to_a_device_once():
    from idnhelpers.losses import Forward

    loss = Forward(((0.8, 0.2), (0.3, 0.7))).make(2, 1)
    copies = []
    real_to = torch.Tensor.to
    torch.Tensor.to = lambda self, *a, **k: (self is loss.T and copies.append(1)) or real_to(self, *a, **k)
    try:
        for _ in range(5):
            loss(torch.zeros(4, 2, device="meta"), torch.zeros(4, dtype=torch.long, device="meta"), 0)
    finally:
        torch.Tensor.to = real_to
    assert len(copies) == 1  # not one per step
