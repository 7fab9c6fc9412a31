"""The grid runner (issue 15): grids as cells, the local executor, submitit's local and debug
executors on a shared cache, a killed job resumed, two racing processes, the command line
(--dry-run, --status, Slurm options), chapter 05's collect_only. Digits, 3-epoch runs."""

import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import pandas as pd
import pytest
import torch
import yaml

from idnhelpers import cache, clothing1m, engine, experiments, grid, paper
from idnhelpers.grid import build_grid, collect, run_grid
from idnhelpers.study import Study
from idnhelpers.grid import cli
from idnhelpers.grid.plan import make_jobs
from idnhelpers.sample import sample

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "notebooks" / "profiles"


def chapter_05_profile(name: str) -> list[str]:
    """``idn-grid --profile`` files of chapter 05's grid under the book's profile ``name``."""
    return [str(PROFILES / f"{name}.yaml"), str(PROFILES / name / "05_benchmarks.yaml")]


SPEC = Study(dataset="digits", methods=("ce", "forward", "seal"), family="idn", noise_rates=(0.2, 0.4), seeds=(0,),
                n_epochs=3, n_iterations=2, val_fraction=0.1, dmi_epochs=1)  # 8 runs: CE x2, Forward x2, SEAL x4
CLI = ["--profile", *chapter_05_profile("smoke"), "--dataset", "digits", "--family", "idn", "--methods", "ce", "forward",
       "seal", "--rates", "0.2", "0.4",
       "--set", "n_train=null", "--set", "n_test=null", "--set", "n_epochs=3", "--set", "n_iterations=2", "--set", "precision=fp32",
       "--set", "baseline_rates=null"]
N_RUNS = 8
COMPARED = ["dataset", "method", "labels", "seed", "last", "best", "best_epoch", "val_selected", "val_epoch"]


def count_fits(monkeypatch) -> list:
    """Runs trained by engine.fit in this process (one entry per run, stacked or not)."""
    trained, real = [], engine.fit
    monkeypatch.setattr(engine, "fit", lambda runs, *a, **k: trained.extend(r.key() for r in runs) or real(runs, *a, **k))
    return trained


def results(folder: Path) -> set:
    return {p.stem for p in folder.glob("*.pt")}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in this process and in the jobs, so results compare bit for bit (and
    digits' tiny runs do not wait on a second thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The reference: SPEC through the local executor, uninterrupted, in a cache of its own."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IDNHELPERS_CACHE", str(folder))
        g = build_grid(SPEC, device="cpu")
        before = results(folder)  # Algorithm 1's labelling run
        fits = count_fits(mp)
        p = grid.plan(g)
        table = run_grid(g, "local", device="cpu", progress=False)
        yield dict(cache=folder, grid=g, table=table, fits=list(fits), planned=p.runs, labels=before)


@pytest.fixture
def private_cache(trained, tmp_path, monkeypatch):
    """An empty cache but for the grid's labelling run (Algorithm 1 on digits), copied from the reference."""
    folder = tmp_path / "cache"
    folder.mkdir()
    for key in trained["labels"]:
        (folder / f"{key}.pt").write_bytes((trained["cache"] / f"{key}.pt").read_bytes())
    monkeypatch.setenv("IDNHELPERS_CACHE", str(folder))
    return folder


def test_a_grid_is_cells_with_the_runs_the_chapter_used_to_build(trained):
    g = trained["grid"]
    assert [(c.labels, c.seed, c.method) for c in g.cells] == [
        (r, 0, m) for r in ("0.2", "0.4") for m in ("ce", "forward", "seal")]
    cell = g.cells[0]
    # chapter 05 before the grid: run_method on the raw tensors of the same rows
    from idnhelpers.datasets import load_dataset, subset
    from idnhelpers.runs import make_run
    from idnhelpers.stats import validation_split
    X, y, idx = subset(*load_dataset("digits"), None, 0)
    X_test, y_test = load_dataset("digits", train=False)
    train, val = validation_split(len(y), 0.1, 0)
    y_noisy = experiments.generate_idn(sample("digits"), [0.2], precision="fp32").noisy[0.2]
    records = experiments.memorisation_records(sample("digits", val_fraction=0.1), y_noisy)  # CSR, tracked rows
    old = make_run(X[train], y_noisy[train], cell.run.protocol, dataset="digits", seed=0, y_true=y[train],
                   X_test=X_test, y_test=y_test, X_val=X[val], y_val=y_noisy[val], precision="fp32", **records)
    assert cell.run.key() == old.key()
    assert len(g.cells[0].run.data.__reduce__()[1][0]) == 5  # travels as a reference to the data set's rows
    assert "1260 training rows, 140 validation rows, 397 test rows, 6 grid cells" in g.description


def test_the_chapters_runs_are_the_grids_runs():
    """Chapters 01, 03 and 04 build their runs with experiments.noisy_runs, chapter 05 and idn-grid with
    build_grid: the same keys, so one run per (label set, seed) serves them all through the cache."""
    from idnhelpers.datasets import protocol

    spec = Study(dataset="digits", methods=["ce", "seal"], family="symmetric", noise_rates=[0.2, 0.4], seeds=[0, 1],
                    n_epochs=2, val_fraction=0.5, noise_seed=0)
    cells = build_grid(spec, device="cpu").cells
    data = sample("digits", val_fraction=0.5)
    labels = experiments.family_labels(data, "symmetric", [0.2, 0.4], noise_seed=0)
    runs = experiments.noisy_runs(data, labels, protocol("digits", n_epochs=2), [0, 1])
    assert [c.run.key() for c in cells if c.method == "ce"] == [run.key() for run in runs.values()]
    assert all(run.track is not None and len(run.track) == 20 for run in runs.values())  # Fig. 3's tracked rows


def test_bad_settings_are_refused_before_any_work():
    for kwargs, match in ((dict(methods=("ce", "nope")), "methods='nope'"), (dict(noise_rates=(1.5,)), "noise_rates"),
                          (dict(seeds=()), "seeds"), (dict(precision="fp16"), "precision='fp16'"),
                          (dict(dataset="clothing1m"), "clothing1m_weights")):
        with pytest.raises(ValueError, match=match):
            SPEC.replace(**kwargs)
    with pytest.raises(ValueError, match="partition='gpu'.*executor='local'"):
        grid.executor_options("local", partition="gpu")
    with pytest.raises(ValueError, match="parallel=99.*CPU cores"):
        grid.executor_options("submitit-local", parallel=99)
    with pytest.raises(ValueError, match="executor='pbs'"):
        run_grid([], "pbs")


def test_the_command_line_and_the_chapter_build_the_same_spec_from_a_profile():
    args = cli.parser().parse_args(CLI)
    assert cli.study_from_args(args) == SPEC.replace(device="cpu", profile="smoke")  # the profile's device and name
    # what book/build.py passes to chapter 05 (base profile, then its chapter override) over its parameters cell
    source = (ROOT / "notebooks" / "05_benchmarks.py").read_text()
    cell = source.split('# %% tags=["parameters"]\n')[1].split("\n# %%")[0]
    defaults = {}
    exec(cell, {}, defaults)
    for name in ("smoke", "cpu", "paper"):
        profile = yaml.safe_load((ROOT / "notebooks" / "profiles" / f"{name}.yaml").read_text())
        profile.update(yaml.safe_load((ROOT / "notebooks" / "profiles" / name / "05_benchmarks.yaml").read_text()))
        chapter = Study.load(**{k: v for k, v in {**defaults, **profile}.items() if k in Study.fields()})
        assert cli.study_from_args(cli.parser().parse_args(["--profile", *chapter_05_profile(name)])) == chapter, name
    for profile in ([], ["--profile", *chapter_05_profile("paper")]):  # no profile: the paper's protocol
        paper2 = cli.study_from_args(cli.parser().parse_args([*profile, "--table", "2"]))
        assert (paper2.dataset, paper2.epochs, paper2.options("seal")["n_iterations"], paper2.seeds, paper2.n_train) == (
            "cifar10", 150, 3, (0, 1, 2), None)
    bare, book = (cli.study_from_args(cli.parser().parse_args([*profile, "--table", "1"]))
                  for profile in ([], ["--profile", *chapter_05_profile("paper")]))
    assert (bare.epochs, bare.options("seal")) == (book.epochs, book.options("seal")) == (50, {"n_iterations": 10})
    # the paper's protocol: the book's paper profile leaves it to the defaults, but for the precision: the book
    # trains on the machine that runs it, in its fast precision ("auto"); a login node cannot decide "auto"
    assert (book.precision, bare.precision) == ("auto", "fp32")
    assert bare == book.replace(profile=None, precision="fp32")
    with pytest.raises(SystemExit):
        cli.main(["--profile", "nope.yaml"])


def test_the_local_executor_trains_each_run_once_and_loads_the_rest(trained, monkeypatch):
    assert len(trained["fits"]) == len(set(trained["fits"])) == trained["planned"] == N_RUNS
    table = trained["table"]
    assert len(table) == 6 and table.frame["last"].between(0, 100).all()
    monkeypatch.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
    fits = count_fits(monkeypatch)
    again = run_grid(trained["grid"], "local", progress=False)
    assert fits == [] and again.frame.equals(table.frame)
    assert grid.grid_status(trained["grid"])["status"].eq("done").all()


def test_collect_lists_the_missing_runs_and_trains_nothing(trained, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
    fits = count_fits(monkeypatch)
    wider = build_grid(SPEC.replace(seeds=(0, 5)), train_labels=False)
    with pytest.raises(grid.MissingRuns, match=r"6 of 12 cells are not in the cache") as error:
        collect(wider)
    assert "seal on digits, labels idn 0.4, seed 5: CE (run " in str(error.value) and len(error.value.cells) == 6
    assert collect(trained["grid"]).frame.equals(trained["table"].frame) and fits == []


def test_a_killed_job_resumes_training_only_the_missing_runs_with_identical_results(trained, private_cache,
                                                                                      monkeypatch, tmp_path):
    g = build_grid(SPEC, device="cpu")
    labels = results(private_cache)
    seal = next(job for job in make_jobs(g.cells) if job.method == "seal")  # 2 CE runs, then 4 SEAL iterations
    options = grid.executor_options("submitit-local", folder=tmp_path / "jobs", parallel=1)
    keys = tmp_path / "progress" / "seal.keys"  # a folder the job makes
    handle = grid.executors.make_executor("submitit-local", options, 1).submit(grid.run_job, seal, "cpu", None, 1,
                                                                              str(keys))
    deadline = time.time() + 120
    while not results(private_cache) - labels and time.time() < deadline:
        time.sleep(0.02)
    handle._process.kill()  # SIGKILL, a job killed midway (cancel()'s SIGINT can let a short job run to its end)
    while handle.state == "RUNNING":
        time.sleep(0.1)
    kept = results(private_cache) - labels
    assert 1 <= len(kept) < 6, "the job was not killed midway"
    assert kept <= set(keys.read_text().split())  # each stage's run keys reported before it trained
    stamps = {k: (private_cache / f"{k}.pt").stat().st_mtime_ns for k in kept}
    fits = count_fits(monkeypatch)
    table = run_grid(g, "debug", folder=tmp_path / "jobs", progress=False)
    assert fits and not kept & set(fits)  # training resumed, and no run the killed job stored trained again
    assert {k: (private_cache / f"{k}.pt").stat().st_mtime_ns for k in kept} == stamps  # nor rewritten elsewhere
    pd.testing.assert_frame_equal(table.frame[COMPARED], trained["table"].frame[COMPARED])
    assert results(private_cache) == results(trained["cache"])  # the same runs and T files
    for key in results(private_cache):
        here = cache.load(key)
        with monkeypatch.context() as mp:
            mp.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
            there = cache.load(key)
        assert torch.equal(here.get("S", here.get("T")), there.get("S", there.get("T"))), key


RACE = """
import sys
from idnhelpers import engine
from idnhelpers.grid import cli
engine.WAIT_SECONDS = 0.1  # poll another process's lock often: a short test
real = engine.fit
def fit(runs, *a, **k):
    print("trained", len(runs), flush=True)
    return real(runs, *a, **k)
engine.fit = fit
sys.exit(cli.main(sys.argv[1:]))
"""


def test_two_executors_racing_on_one_grid_train_each_run_once(trained, private_cache):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, *CLI, "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs, errs = zip(*[p.communicate(timeout=300) for p in procs])
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for err in errs]
    assert sum(int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("trained")) == N_RUNS
    tables = [out[out.index("digits, idn: last-epoch"):] for out in outs]
    assert tables[0] == tables[1]
    assert results(private_cache) == results(trained["cache"])


def test_dry_run_and_status_print_the_plan_and_each_cell(trained, monkeypatch, capsys):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
    wider = CLI + ["--seeds", "0", "1"]
    g = build_grid(SPEC.replace(seeds=(0, 1)))
    first_ce = grid.trace([g.cells[3]], progress=False)[0].missing[0]  # CE of 0.2, seed 1: first of three cells
    assert first_ce.label == "CE"
    with cache.Lock.acquire(first_ce.key()):  # as if another job were training it
        assert cli.main(wider + ["--status"]) == 0
        out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("12 cells: 6 done, 3 running, 3 missing")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert rows["CE"] == rows["Forward"] == rows["SEAL"] == ["done", "running", "done", "missing"]
    assert "idn 0.2 seed 0 idn 0.2 seed 1 idn 0.4 seed 0 idn 0.4 seed 1" in " ".join(out.splitlines()[1].split())
    assert cli.main(wider + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grid: 12 cells (6 done, 0 running, 6 missing)" in out
    assert "jobs: 3; runs to train: 8; run-epochs: 24; estimated CPU-hours:" in out
    table = [line.split() for line in out.splitlines() if line.split()[:2] in (["0", "digits"], ["1", "digits"],
                                                                                ["2", "digits"])]
    assert [row[2:6] for row in table] == [["ce", "2", "2", "6"], ["forward", "2", "2", "6"], ["seal", "2", "4", "12"]]
    assert all("this grid's runs, cpu" in line for line in out.splitlines()[-3:])
    assert cli.main(wider + ["--dry-run", "--executor", "slurm", "--partition", "gpu", "--array-parallelism", "2"]) == 0
    out = capsys.readouterr().out
    assert "executor: slurm (folder=" in out and "partition=gpu, gpus=1" in out and "array_parallelism=2" in out
    assert "estimated GPU-hours:" in out and "no GPU measurement yet" in out


def test_slurm_gets_one_job_array_with_the_options(trained, monkeypatch, tmp_path, capsys):
    """No Slurm here: fake srun and sbatch; sbatch keeps the script submitit wrote."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/script.sh\necho "Submitted batch job 4242"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
    assert cli.main(CLI + ["--seeds", "7", "--executor", "slurm", "--partition", "gpu", "--gpus", "1", "--cpus", "4",
                            "--time", "90", "--array-parallelism", "2", "--no-wait", "--folder",
                            str(tmp_path / "jobs")]) == 0
    script = (tmp_path / "script.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --array=0-2%2", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --time=90"):
        assert line in script
    assert len(list((tmp_path / "jobs").glob("4242_*_submitted.pkl"))) == 3  # one per method
    assert "submitted" in capsys.readouterr().out


def test_the_job_trainer_halves_k_until_it_fits_the_gpu(trained, monkeypatch):
    calls = []

    def train_many(runs, stack_size=None, **kw):
        calls.append(stack_size)
        if (stack_size or len(runs)) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return ["result"] * len(runs)

    monkeypatch.setattr(engine, "train_many", train_many)
    trainer = grid.executors.JobTrainer(device="cpu")
    runs = [c.run for c in trained["grid"].cells] * 2  # 12 runs
    assert trainer(runs[:5]) == ["result"] * 5 and calls == [None, 3, 2]
    assert trainer(runs) == ["result"] * 12 and calls[3:] == [2]  # the K that fitted is kept


def test_chapter_05_collect_only_renders_the_table_from_the_cache(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(trained["cache"]))
    notebook = tmp_path / "05.ipynb"
    nbformat.write(jupytext.read(ROOT / "notebooks" / "05_benchmarks.py"), notebook)
    before = results(trained["cache"])
    params = dict(dataset="digits", family="idn", methods=list(SPEC.methods), noise_rates=[0.2, 0.4], seeds=[0], n_epochs=3,
                  n_train=None, n_test=None, val_fraction=0.1, n_iterations=2, dmi_epochs=1, precision="fp32",
                  device="cpu", collect_only=True, profile="test")
    papermill.execute_notebook(str(notebook), str(notebook), parameters=params, cwd=str(ROOT), progress_bar=False,
                               kernel_name="python3")
    assert results(trained["cache"]) == before
    text = "".join(str(o) for c in nbformat.read(notebook, as_version=4).cells for o in c.get("outputs", []))
    ce = trained["table"].frame.query("method == 'ce' and labels == '0.4'")["last"].item()
    assert f"{ce:.2f}" in text and "read from the cache (collect_only)" in text


def test_table_3_cells_are_the_base_runs_with_the_papers_options(tmp_path):
    base = tmp_path / "clothing1m"
    base.mkdir()
    keys = {"noisy_train_key_list.txt": ["images/a.jpg", "images/b.jpg"], "clean_val_key_list.txt": ["images/c.jpg"],
            "clean_test_key_list.txt": ["images/d.jpg"]}
    for name, listed in keys.items():
        (base / name).write_text("\n".join(listed) + "\n")
    (base / "noisy_label_kv.txt").write_text("images/a.jpg 1\nimages/b.jpg 2\n")
    (base / "clean_label_kv.txt").write_text("images/c.jpg 3\nimages/d.jpg 4\n")
    (tmp_path / "w.pth").write_bytes(b"weights")
    spec = cli.study_from_args(cli.parser().parse_args(["--table", "3", "--data-root",
                                                         str(tmp_path), "--set", f"clothing1m_weights={tmp_path}/w.pth"]))
    cells = build_grid(spec).cells
    assert [c.method for c in cells] == list(paper.CLOTHING1M_METHODS)
    base = clothing1m.clothing1m_runs(tmp_path, tmp_path / "w.pth", clothing1m.PROTOCOL)
    for cell in cells:
        assert cell.run.key() == base.key() and cell.noise_rate == paper.CLOTHING1M_NOISE_RATE
        assert cell.options == paper.method_options("clothing1m", cell.method, n_epochs=10), cell.method
    assert cells[-1].options == dict(n_iterations=3, retrain=False, dmi_options=paper.CLOTHING1M_DMI)  # SEAL (DMI)


def test_a_grid_without_its_labelling_network_plans_it_and_collect_says_it_is_missing(trained, private_cache,
                                                                                        monkeypatch):
    for path in private_cache.glob("*.pt"):
        path.unlink()  # no Algorithm 1 run in the cache
    fits = count_fits(monkeypatch)
    g = build_grid(SPEC, train_labels=False)
    assert {run.key() for run in g.prerequisites} == trained["labels"]  # Algorithm 1's network on digits
    p = grid.plan(g)
    assert p.runs == N_RUNS + 1 and p.table["job"].tolist()[0] == "labels"
    with pytest.raises(grid.MissingRuns, match="labelling network"):
        collect(g)
    assert fits == []


def test_forwards_t_is_derived_once_when_two_workers_want_it(private_cache, monkeypatch):
    """Trainer.derive (Forward's T): under the key's lock, computed once and shared."""
    from concurrent.futures import ThreadPoolExecutor
    from idnhelpers.methods import Trainer
    monkeypatch.setattr(engine, "WAIT_SECONDS", 0.05)
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.3)
        return {"T": torch.eye(3) * len(calls)}

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: Trainer().derive("anchor-T-key", compute), range(2)))
    assert calls == [1] and all(torch.equal(out["T"], torch.eye(3)) for out in outs)
