"""What only shows on CUDA, tested on a CPU: both forms of running out of GPU memory halve K,
submitit-local's jobs land on the GPUs CUDA_VISIBLE_DEVICES names, the processes back-end gives
each worker a GPU, TF32 and determinism are set as asked and recorded, CUDA results have their
own cache keys, stacked calls free what they copied, and the GPU check's own code runs."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from idnhelpers import engine, training
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


def test_a_misspelt_executor_option_is_refused_by_name():
    with pytest.raises(TypeError, match="stacksize"):
        executor_options("local", stacksize=4)


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
    from idnhelpers.grid import build_grid
    from idnhelpers.study import Study

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
    monkeypatch.setattr(executors, "jobs_device_type", lambda *a: "cpu")  # the fake jobs train here, on the CPU
    spec = Study(dataset="digits", methods=["ce", "gce"], family="symmetric", noise_rates=[0.2], seeds=[0],
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

    loss = Forward.make([Forward(((0.8, 0.2), (0.3, 0.7)))], 2, 1)
    copies = []
    real_to = torch.Tensor.to
    torch.Tensor.to = lambda self, *a, **k: (self is loss.T and copies.append(1)) or real_to(self, *a, **k)
    try:
        for _ in range(5):
            loss(torch.zeros(1, 4, 2, device="meta"), torch.zeros(1, 4, dtype=torch.long, device="meta"), 0, None)
    finally:
        torch.Tensor.to = real_to
    assert len(copies) == 1  # not one per step


def fake_gpu(monkeypatch, capability=(9, 0), name="NVIDIA H100 80GB HBM3"):
    """This CPU-only process told it has one GPU of ``capability``: what resolve_precision reads."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_tf32_and_bf16_only_where_the_gpu_has_them(monkeypatch):
    from idnhelpers.hardware import resolve_precision

    with pytest.raises(ValueError, match="precision='tf32'.*on a CPU"):
        resolve_precision("tf32", "cpu")
    fake_gpu(monkeypatch)
    assert resolve_precision("tf32", "cuda") == "tf32" and resolve_precision("auto", "cuda") == "bf16"
    fake_gpu(monkeypatch, (7, 0), "Tesla V100-SXM2-16GB")
    for precision in ("tf32", "bf16"):
        with pytest.raises(ValueError, match=f"precision='{precision}'.*V100.*compute capability 7.0"):
            resolve_precision(precision, "cuda")
    assert resolve_precision("auto", "cuda") == "fp32"


def test_fp32_on_cuda_turns_pytorchs_tf32_convolutions_off_and_tf32_turns_them_on():
    from idnhelpers.hardware import training_settings

    switches = torch.backends.cuda.matmul, torch.backends.cudnn
    before = [s.allow_tf32 for s in switches]
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default: TF32 convolutions
    with training_settings(torch.device("cuda"), "fp32"):
        assert [s.allow_tf32 for s in switches] == [False, False]
        assert torch._C._get_cudnn_allow_tf32() is False and torch.get_float32_matmul_precision() == "highest"
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):  # code inside a run may still use them
            assert torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    with training_settings(torch.device("cuda"), "tf32"):
        assert [s.allow_tf32 for s in switches] == [True, True]
        assert torch.get_float32_matmul_precision() == "high"
    with training_settings(torch.device("cpu"), "fp32"):
        assert [s.allow_tf32 for s in switches] == before  # a CPU run leaves CUDA's switches alone
    assert [s.allow_tf32 for s in switches] == before  # restored after the run


def test_deterministic_sets_what_pytorch_needs_and_refuses_what_it_cannot_make_deterministic(monkeypatch):
    from idnhelpers.hardware import training_settings

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with training_settings(torch.device("cuda"), "fp32", deterministic=True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    message = "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you set ..."
    with pytest.raises(ValueError, match="deterministic=True.*False for this run: adaptive_avg_pool2d_backward_cuda"):
        with training_settings(torch.device("cuda"), "fp32", deterministic=True):
            raise RuntimeError(message)
    with pytest.raises(RuntimeError, match="deterministic"):  # not asked for: PyTorch's own error
        with training_settings(torch.device("cuda"), "fp32"):
            raise RuntimeError(message)


def test_cpu_gpu_tf32_and_deterministic_results_never_share_a_cache_entry():
    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.runs import make_run

    X, y = load_dataset("digits")
    cpu = make_run(X[:50], y[:50], protocol("digits", n_epochs=1), dataset="digits")
    gpu = cpu.replace(device_type="cuda")
    keys = {cpu.key(), gpu.key(), gpu.replace(precision="tf32").key(), gpu.replace(deterministic=True).key()}
    assert len(keys) == 4
    assert engine.on_device(cpu, torch.device("cuda")).key() == gpu.key()  # the engine keys a run by its device
    assert engine.on_device(gpu, torch.device("cpu")).key() == cpu.key()
    with pytest.raises(ValueError, match="precision='tf32'.*device_type='cpu'"):
        cpu.replace(precision="tf32")
    with pytest.raises(ValueError, match="device_type='tpu'"):
        cpu.replace(device_type="tpu")


def test_every_result_records_the_hardware_that_made_it(tmp_path, monkeypatch):
    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.hardware import fingerprint
    from idnhelpers.runs import RunResult, make_run

    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    X, y = load_dataset("digits")
    result = engine.train(make_run(X[:64], y[:64], protocol("digits", n_epochs=1), dataset="digits"))
    assert result.hardware == {"device": "cpu", "precision": "fp32", "deterministic": False, **fingerprint(),
                               "stacked_runs": 1}
    old = {k: v for k, v in result.payload().items() if k != "hardware"}  # stored before hardware was recorded
    assert RunResult(**old).hardware is None


def test_slurm_jobs_on_gpus_key_their_cells_for_cuda_even_when_submitted_from_a_cpu():
    assert executors.jobs_device_type("slurm", executor_options("slurm")) == "cuda"  # one GPU per job by default
    assert executors.jobs_device_type("slurm", executor_options("slurm", gpus=0)) == "cpu"
    assert executors.jobs_device_type("local", executor_options("local"), "cpu") == "cpu"


def test_the_processes_backend_gives_each_worker_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = [torch.device("cuda", i) for i in range(2)]
    assert engine.worker_devices(torch.device("cuda")) == cuda  # one worker per GPU, not one per CPU core
    assert engine.worker_devices(torch.device("cuda"), 4) == cuda * 2
    assert engine.worker_devices(torch.device("cuda:1")) == [torch.device("cuda:1")]
    assert engine.worker_devices(torch.device("cpu"), 3) == [torch.device("cpu")] * 3
    assert engine.worker_devices(torch.device("cpu")) == [torch.device("cpu")] * engine.cpu_cores()


def test_a_stacked_call_frees_the_runs_modules_and_evaluates_in_shared_batches(monkeypatch):
    """Stacked WRNs on a GPU: the K modules the runs start from are freed once copied into the
    stacked weights, and an evaluation call holds eval_batch rows in all, not K x eval_batch."""
    import gc
    import weakref

    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.runs import make_run
    from idnhelpers.sources import eval_batch
    from idnhelpers.steps import StackedBank

    built, alive_at_first_step, rows = [], [], []
    real_init, real_logits, real_probs = training.init_networks, StackedBank.logits, StackedBank.probs

    def init_networks(run, device):
        models = real_init(run, device)
        built.extend(weakref.ref(m) for m in models)
        return models

    def logits(self, xs):
        if not alive_at_first_step:
            gc.collect()
            alive_at_first_step.append(sum(ref() is not None for ref in built))
        return real_logits(self, xs)

    def probs(self, x, n_classes, per_run=False):
        rows.append(len(x[0]) if per_run else len(x))
        return real_probs(self, x, n_classes, per_run)

    monkeypatch.setattr(training, "init_networks", init_networks)
    monkeypatch.setattr(StackedBank, "logits", logits)
    monkeypatch.setattr(StackedBank, "probs", probs)
    X, y = load_dataset("digits")
    runs = [make_run(X[:600], y[:600], protocol("digits", n_epochs=1), dataset="digits", seed=s) for s in range(4)]
    engine.fit(runs, torch.device("cpu"), stacked=True)
    assert len(built) == 4 and alive_at_first_step == [0]
    assert max(rows) == eval_batch(torch.device("cpu")) // 4 and sum(rows) == 600  # one softmax pass of 600 rows


def test_the_gpu_check_says_there_is_no_cuda_device_and_exits_0(capsys):
    from benchmarks import gpu_check

    assert not torch.cuda.is_available()
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out.startswith("no CUDA device")


def test_the_gpu_checks_themselves_pass_on_the_cpu(capsys, monkeypatch, tmp_path):
    """Each check's code runs (small sizes, on the CPU) offline, with no data set to read; those that need
    CUDA say so; the methods' CPU-against-CPU comparison is exact; epochs are timed in the steady state."""
    from benchmarks import gpu_check
    from idnhelpers.datasets import get_dataset
    from idnhelpers.hardware import native_bf16
    from idnhelpers.methods import METHODS

    monkeypatch.setenv("IDNHELPERS_DATA", str(tmp_path / "no data"))  # no MNIST here,
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nor can any process (the workers too) fetch it
    mnist, cifar10 = get_dataset("mnist"), get_dataset("cifar10")
    assert gpu_check.main(["--device", "cpu", "--quick", "--report", str(tmp_path / "report.json")]) == 0
    assert get_dataset("mnist") is mnist and get_dataset("cifar10") is cifar10  # the plans' stand-ins are gone
    out = capsys.readouterr().out
    skipped = {"syncs per step", "out of memory halves K", "tf32"} | (
        set() if native_bf16("cpu") else {"stacked WRN in bf16"})
    for name in gpu_check.CHECKS:
        verdict = "SKIP" if name in skipped else "PASS"
        assert re.search(rf"^{verdict} {re.escape(name)} +[\d.]+ s", out, re.M), (name, out)
    assert re.search(rf"^PASS methods vs CPU .* {len(METHODS)} methods: max \|S difference\| 0, test accuracy "
                     r"difference 0 points \(exact: CPU against CPU\)$", out, re.M)
    for name in ("resume on the device", "deterministic", "Clothing1M loader"):
        assert re.search(rf"^PASS {name} .*equal bit for bit", out, re.M), name
    wrn_precision = "bf16" if native_bf16("cpu") else "fp32"  # Table 2's, as the README's command trains it
    for model, k, precision in (("mnist_cnn", 1, "fp32"), ("mnist_cnn", 8, "fp32"), ("wrn16_2", 1, wrn_precision),
                                ("wrn16_2", 2, wrn_precision)):
        assert re.search(rf"^{model} K={k} +[\d.]+ s per epoch per run \({precision}, steady state", out, re.M), model
    for table, cells, precision in ((1, 84, "fp32"), (2, 84, wrn_precision)):
        assert re.search(rf"Table {table} \(paper protocol\): {cells} cells, \d+ runs, \d+ run-epochs, as idn-grid "
                         rf"--table {table} trains them on cpu: precision {precision}, K = 1: a CPU trains one run "
                         r"per call: [\d.]+ hours", out), table
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"]["device"] == "cpu" and set(report["checks"]) == set(gpu_check.CHECKS)
    assert report["checks"]["methods vs CPU"]["verdict"] == "PASS" and report["checks"]["tf32"]["verdict"] == "SKIP"
    assert {(e["model"], e["k"]) for e in report["seconds_per_epoch_per_1000_rows"]} == {
        ("mnist_cnn", 1), ("mnist_cnn", 8), ("wrn16_2", 1), ("wrn16_2", 2)}
    tables = report["tables"]
    assert tables["1"]["cells"] == 84 and tables["1"]["stacks"] == [1] and tables["1"]["hours"] > 0
    assert tables["2"]["model_timed"] == "wrn16_2" and tables["3"]["hours"] is None
    assert not (Path(os.environ["IDNHELPERS_CACHE"]) / "stack_sizes.json").exists()  # --quick, a CPU: not recorded


def test_the_sync_check_counts_the_steps_synchronisations_alone():
    """Set-up and scoring synchronising as often for 8 steps as for 32 pass; one more per step fails."""
    from benchmarks import gpu_check

    def steps(runs):
        return 2 * len(runs[0].data) // runs[0].protocol.batch_size

    cpu = torch.device("cpu")
    assert gpu_check._syncs_per_step(cpu, "fp32", lambda runs, device: 7).startswith("12 kinds of step: 0 per step")
    with pytest.raises(gpu_check.Failed, match=r"^CE, K = 1: 39 synchronisations in 32 steps, 15 in 8: 1 per step"):
        gpu_check._syncs_per_step(cpu, "fp32", lambda runs, device: 7 + steps(runs))


def test_the_table_1_estimate_uses_the_k_and_precision_of_the_grid_on_cuda():
    """On CUDA each stage of a Table 1 job stacks its 12 cells (4 rates x 3 seeds), in fp32 (Study's
    default): the hours are those of the fastest K measured up to 12, not of a larger K."""
    from benchmarks import gpu_check

    cuda = torch.device("cuda")
    grid, stacks = gpu_check.table_stacks(cuda, 1)
    assert grid.study.precision == "fp32" and {k for k, _ in stacks} == {12}
    assert sum(len(runs) for _, runs in stacks) == 192
    # K = 32 measured fastest, but a stage has 12 runs: the grid stacks 12 (1.0 s), not the loop's 12.0 s
    per_1000 = {("mnist_cnn", "fp32", 1): 12.0, ("mnist_cnn", "fp32", 8): 1.5, ("mnist_cnn", "fp32", 12): 1.0,
                ("mnist_cnn", "fp32", 32): 0.5, ("mnist_cnn", "bf16", 12): 0.1}
    estimate = gpu_check.table_estimate(1, grid, stacks, per_1000, "mnist_cnn", cuda)
    assert (estimate["cells"], estimate["runs"], estimate["precision"], estimate["stacks"]) == (84, 192, "fp32", [12])
    assert estimate["hours_one_run_per_call"] == pytest.approx(12 * estimate["hours"])


def test_the_readme_lists_every_gpu_check():
    from pathlib import Path

    from benchmarks import gpu_check

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Run the paper's grid on a cluster"):readme.index("## Edit notebooks")]
    assert "make gpu-check" in section
    assert all(f"| {name} |" in section for name in gpu_check.CHECKS)


def test_a_laptop_collects_a_clusters_gpu_runs_by_their_device_type():
    from idnbook.chapter import CHECKS
    from idnhelpers.grid import build_grid
    from idnhelpers.study import Study

    spec = Study(dataset="digits", methods=["ce"], family="symmetric", noise_rates=[0.2], seeds=[0], n_epochs=1,
                  n_train=100, n_test=50)
    here, there = build_grid(spec, device="cpu"), build_grid(spec, device="cpu", device_type="cuda")
    assert here.cells[0].run.device_type == "cpu" and there.cells[0].run.device_type == "cuda"
    assert here.cells[0].run.key() != there.cells[0].run.key()
    assert CHECKS["trained_on"]("cuda", "trained_on") == "cuda"
    with pytest.raises(ValueError, match="trained_on='gpu'"):
        CHECKS["trained_on"]("gpu", "trained_on")


def test_predictions_outside_training_use_the_runs_tf32_setting(monkeypatch, tmp_path):
    """``engine.predict`` (Forward's T, DAC's abstentions) scores under the run's settings: an fp32 run's
    predictions on CUDA are IEEE fp32, not PyTorch's default TF32 convolutions."""
    import contextlib

    from idnhelpers.datasets import load_dataset, protocol
    from idnhelpers.runs import make_run

    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    X, y = load_dataset("digits")
    run = make_run(X[:64], y[:64], protocol("digits", n_epochs=1), dataset="digits")
    result = engine.train(run)
    entered = []

    @contextlib.contextmanager
    def settings(device, precision, deterministic=False):
        entered.append((str(device), precision, deterministic))
        yield
    monkeypatch.setattr(engine, "training_settings", settings)
    assert engine.predict(run, result.weights).shape == (64, 10) and entered == [("cpu", "fp32", False)]


def test_the_stack_sizes_gpu_check_measures_are_the_ones_a_grid_job_stacks(monkeypatch, tmp_path, capsys):
    """gpu-check's seconds per run-epoch by K, written where the grid reads them: a job of MNIST CNN runs in
    fp32 on CUDA stacks 8 at a time (fastest measured), WRN-28-10 in bf16 goes one run per call."""
    from benchmarks import gpu_check
    from idnhelpers.datasets import protocol
    from idnhelpers.runs import make_run

    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    gpu_check.write_stack_sizes({("mnist_cnn", "fp32", 1): 3.0, ("mnist_cnn", "fp32", 8): 1.0,
                                 ("mnist_cnn", "fp32", 32): 1.2, ("wrn28_10", "bf16", 1): 5.0,
                                 ("wrn28_10", "bf16", 2): 5.5}, torch.device("cuda"))
    assert "mnist_cnn cuda fp32: K = 8, wrn28_10 cuda bf16: K = 1" in capsys.readouterr().out
    X = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    run = make_run(X, torch.zeros(8, dtype=torch.long), protocol("mnist"), dataset="mnist", device_type="cuda")
    assert executors.measured_stack_size(run) == 8
    assert executors.measured_stack_size(run.replace(precision="bf16", device_type="cuda")) is None  # not measured


def test_the_table_3_estimate_reads_clothing1ms_lists_and_times_resnet50(monkeypatch, tmp_path, capsys):
    """Given Clothing1M (here a tiny stand-in folder) and its ResNet-50 weights, Table 3's grid is planned
    from its file lists and its hours come from ResNet-50's measured seconds; without them, why not."""
    from torchvision.models import resnet50

    from benchmarks import gpu_check

    cpu = torch.device("cpu")
    assert gpu_check.table3_estimate(cpu, True, None, {})["hours"] is None
    assert "give --clothing1m-weights FILE" in capsys.readouterr().out
    monkeypatch.setenv("IDNHELPERS_DATA", str(gpu_check._clothing_folder(tmp_path)))
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    per_1000 = {}
    estimate = gpu_check.table3_estimate(cpu, True, str(tmp_path / "resnet50.pth"), per_1000)
    assert (estimate["cells"], estimate["model_timed"], estimate["stacks"]) == (5, "resnet50", [1])  # 5 methods, a seed
    assert estimate["hours"] > 0 and list(per_1000) == [("resnet50", estimate["precision"], 1)]
    assert re.search(r"Table 3 \(paper protocol\): 5 cells, \d+ runs", capsys.readouterr().out)
