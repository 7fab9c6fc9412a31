"""The surfaces around the library refuse bad input up front, as the functions do
(``test_errors.py``): the three command lines (exit code 2, one error line, nothing trained or
written), the registries, the label-file reader and the chapters' parameters; and label folders
survive killed and concurrent writers."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from idnbook import chapter
from idnhelpers import commands, engine, labels, noisy
from idnhelpers.datasets import DATASETS, DatasetSpec, load_dataset, protocol, register_arrays, register_dataset
from idnhelpers.grid import cli as grid_cli
from idnhelpers.methods import METHODS, loss_method, register_method
from idnhelpers.losses import CrossEntropy
from idnhelpers.families import FAMILIES, register_family
from idnhelpers.published import read_noisy_csv

ROOT = Path(__file__).resolve().parent.parent
X, Y = load_dataset("digits")


@pytest.fixture
def nothing_trains(monkeypatch):
    monkeypatch.setattr(engine, "fit", lambda *a, **k: pytest.fail("trained before refusing the input"))


# ---------------------------------------------------------------- the command lines

SMOKE_05 = [str(ROOT / "notebooks" / "profiles" / "smoke.yaml"), str(ROOT / "notebooks" / "profiles" / "smoke" /
                                                                     "05_benchmarks.yaml")]  # chapter 05's grid
GRID = ["--profile", *SMOKE_05, "--dataset", "digits", "--family", "symmetric", "--methods", "ce", "--rates", "0.2"]
LABELS = ["--dataset", "digits", "--family", "symmetric", "--rates", "0.2"]
CLI_CASES = [
    # idn-labels
    (labels.main, LABELS + ["--rates", "0.4", "--out", "{out}"], "--rates is given twice"),
    (labels.main, ["--dataset", "digits", "--family", "idn", "--rates", "0.2", "--out", "{file}/sub"], "--out"),
    (labels.main, LABELS + ["--out", "{file}"], "this path is a file"),
    (labels.main, ["--dataset", "digits", "--family", "symmetric", "--rates", "0.2", "0.2", "--out", "{out}"],
     "distinct"),
    (labels.main, LABELS + ["--train-seed", "3", "--out", "{out}"], "--train-seed"),
    (labels.main, LABELS + ["--device", "cuda", "--out", "{out}"], "--device"),
    (labels.main, LABELS + ["--setting", "norm_std=0.2", "--out", "{out}"], "--setting"),
    (labels.main, LABELS + ["--noise-seed", "-1", "--out", "{out}"], "--noise-seed"),
    (labels.main, ["--dataset", "digits", "--family", "symmetric", "--rates", "1.5", "--out", "{out}"], "rate"),
    (labels.main, ["--dataset", "nope", "--family", "symmetric", "--rates", "0.2", "--out", "{out}"], "dataset"),
    (labels.main, ["--from-npz", "{file}", "--family", "symmetric", "--rates", "0.2", "--out", "{out}"], "--from-npz"),
    (labels.main, ["--verify", "{out}", "--rates", "0.2"], "--verify"),
    (labels.main, ["--verify", "{file}"], "--verify"),
    (labels.main, ["--dataset", "digits", "--family", "xia", "--setting", "norm_std=[", "--rates", "0.2", "--out",
                   "{out}"], "--setting"),
    # idn-grid
    (grid_cli.main, GRID + ["--seeds", "0", "0"], "distinct seeds"),
    (grid_cli.main, GRID + ["--seeds", "0", "--seeds", "1"], "--seeds is given twice"),
    (grid_cli.main, GRID + ["--csv", "{file}/t.csv"], "--csv"),
    (grid_cli.main, GRID + ["--csv", "{tmp}"], "--csv"),
    (grid_cli.main, GRID + ["--set", "n_epochs=[1"], "--set"),
    (grid_cli.main, GRID + ["--set", "n_epochs=0"], "n_epochs"),
    (grid_cli.main, GRID + ["--set", "n_epoch=3"], "--set"),
    (grid_cli.main, GRID + ["--device", "gpu"], "device"),
    (grid_cli.main, GRID + ["--methods", "ce", "ce"], "--methods is given twice"),
    (grid_cli.main, ["--profile", *SMOKE_05, "--dataset", "digits", "--family", "symmetric", "--methods", "ce", "ce",
                     "--rates", "0.2"], "distinct method"),
    (grid_cli.main, GRID + ["--stack-size", "0"], "--stack-size"),
    (grid_cli.main, GRID + ["--no-wait"], "--no-wait"),
    (grid_cli.main, GRID + ["--folder", "{file}"], "--folder"),
    # idn-noisy
    (noisy.main, ["--dataset", "digits", "--method", "ce", "--epochs", "1", "--epochs", "2", "--out", "{out}"],
     "--epochs is given twice"),
    (noisy.main, ["--dataset", "digits", "--out", "{file}"], "--out"),
    (noisy.main, ["--dataset", "digits", "--out", "{file}/sub"], "--out"),
    (noisy.main, ["--dataset", "digits", "--method", "nope", "--out", "{out}"], "method"),
    (noisy.main, ["--dataset", "digits", "--method", "coteaching", "--out", "{out}"], "noise rate"),
    (noisy.main, ["--dataset", "digits", "--option", "n_iterations=1", "--option", "n_iterations=2", "--out", "{out}"],
     "--option"),
    (noisy.main, ["--dataset", "digits", "--method", "ce", "--option", "q=0.5", "--out", "{out}"], "--option"),
    (noisy.main, ["--dataset", "digits", "--epochs", "0", "--out", "{out}"], "--epochs"),
    (noisy.main, ["--dataset", "digits", "--seed", "-3", "--out", "{out}"], "--seed"),
    (noisy.main, ["--dataset", "digits", "--labels", "{file}", "--out", "{out}"], "--labels"),
    (noisy.main, ["--dataset", "digits", "--labels", "{tmp}/missing.csv", "--out", "{out}"], "path"),
    (noisy.main, ["--dataset", "digits", "--device", "gpu", "--out", "{out}"], "device"),
]


@pytest.mark.parametrize("main, argv, message", CLI_CASES,
                         ids=[f"{m.__module__.split('.')[-1]}: {' '.join(a[-4:])}" for m, a, _ in CLI_CASES])
def test_a_command_line_refuses_bad_input_with_one_line_and_exit_code_2(main, argv, message, tmp_path, capsys,
                                                                        nothing_trains):
    (tmp_path / "a_file").write_text("not a folder\n")
    fill = dict(out=tmp_path / "out", file=tmp_path / "a_file", tmp=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([a.format(**fill) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.split(":")[0] in ("idn-labels", "idn-grid", "idn-noisy"), err
    assert message in last, last
    assert not (tmp_path / "out").exists()  # nothing written either


def test_a_csv_in_a_folder_that_does_not_exist_yet_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "missing" / "dir" / "t.csv"
    assert grid_cli.main(GRID + ["--seeds", "0", "--set", "n_epochs=1", "--csv", str(target)]) == 0
    assert target.read_text().startswith("dataset,method")


def test_every_command_line_has_ten_cases():
    for main in (labels.main, grid_cli.main, noisy.main):
        assert sum(m is main for m, _, _ in CLI_CASES) >= 10


# ---------------------------------------------------------------- the registries

def spec(name):
    return DatasetSpec(name, ("a", "b"), (0.0,), (1.0,), (1,), protocol("breast_cancer"), lambda *a: None)


REGISTRY_CASES = [
    ("a built-in data set", lambda: register_arrays("digits", X.reshape(len(X), -1).float().numpy(), Y.numpy()),
     "name='digits'"),
    ("an empty array", lambda: register_arrays("mine", np.zeros((0, 3)), np.zeros(0, dtype=int)), "X="),
    ("a single class", lambda: register_arrays("mine", np.random.rand(20, 3), np.zeros(20, dtype=int)), "y="),
    ("no class 0", lambda: register_arrays("mine", np.random.rand(20, 3), np.arange(20) % 2 + 1), "never occur"),
    ("complex features", lambda: register_arrays("mine", np.ones((20, 3), dtype=complex), np.arange(20) % 2), "X="),
    ("boolean features", lambda: register_arrays("mine", np.ones((20, 3), dtype=bool), np.arange(20) % 2), "X="),
    ("NaN in X_test", lambda: register_arrays("mine", np.random.rand(20, 3), np.arange(20) % 2,
                                              np.full((4, 3), np.nan), np.arange(4) % 2), "X_test="),
    ("X_test without y_test", lambda: register_arrays("mine", np.random.rand(20, 3), np.arange(20) % 2,
                                                      np.random.rand(4, 3)), "X_test/y_test"),
    ("float image test set", lambda: register_arrays("mine", np.zeros((20, 1, 4, 4), dtype=np.uint8),
                                                     np.arange(20) % 2, np.zeros((4, 1, 4, 4)), np.arange(4) % 2,
                                                     protocol=protocol("digits")), "X_test="),
    ("a name with a space", lambda: register_arrays("my data", np.random.rand(20, 3), np.arange(20) % 2), "name="),
    ("a method under an integer", lambda: register_method(3, loss_method("CE", CrossEntropy)), "name=3"),
    ("a built-in method", lambda: register_method("ce", loss_method("CE", CrossEntropy)), "name='ce'"),
    ("a method that is not one", lambda: register_method("mine", "ce"), "method="),
    ("a method without a label", lambda: register_method("mine", loss_method("", CrossEntropy)), "method="),
    ("a built-in data set spec", lambda: register_dataset(spec("mnist")), "name='mnist'"),
    ("a spec that is not one", lambda: register_dataset("mnist"), "spec="),
    ("a built-in family", lambda: register_family("symmetric", FAMILIES["pair"]), "name='symmetric'"),
    ("a family name with a dash", lambda: register_family("my-family", FAMILIES["pair"]), "name='my-family'"),
    ("replace not a bool", lambda: register_family("mine", FAMILIES["pair"], replace="yes"), "replace"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in REGISTRY_CASES], ids=[c[0] for c in REGISTRY_CASES])
def test_a_registry_refuses_an_existing_name_or_a_bad_entry(call, message):
    before = (dict(DATASETS), dict(METHODS), dict(FAMILIES))
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        call()
    assert (DATASETS, METHODS, FAMILIES) == before  # nothing registered


def test_a_registry_replaces_only_when_asked():
    register_arrays("mine_replaced", np.random.rand(20, 3), np.arange(20) % 2)
    with pytest.raises(ValueError, match="replace=True"):
        register_arrays("mine_replaced", np.random.rand(20, 3), np.arange(20) % 3)
    register_arrays("mine_replaced", np.random.rand(20, 3), np.arange(20) % 3, replace=True)
    assert DATASETS["mine_replaced"].n_classes == 3
    del DATASETS["mine_replaced"]


# ---------------------------------------------------------------- the label-file reader

ROWS = "label,label_noisy\n3,5\n1,1\n"


@pytest.mark.parametrize("variant", [
    ROWS.encode("utf-8-sig"),  # a byte-order mark (spreadsheet programs)
    ROWS.replace("\n", "\r\n").encode(),  # CRLF
    ROWS.rstrip("\n").encode(),  # no trailing newline
    b"label, label_noisy\n 3 , 5\n1,1\n\n\n",  # spaces, blank lines at the end
    ("\ufeff" + ROWS.replace("\n", "\r\n")).encode("utf-8"),
])
def test_the_reader_accepts_what_users_tools_write(variant, tmp_path):
    (tmp_path / "l.csv").write_bytes(variant)
    y, y_noisy = read_noisy_csv(tmp_path / "l.csv")
    assert y.tolist() == [3, 1] and y_noisy.tolist() == [5, 1]


@pytest.mark.parametrize("content, where", [
    (b"label,label_noisy\n3,5\n\xff\xfe,1\n", "not UTF-8"),
    (b"label,label_noisy\n3,5\n99999999999999999999999,1\n", "line 3"),
    (b"label,label_noisy\n3,5\n-1,1\n", "line 3"),
    (b"label,label_noisy\n3,5,7\n", "line 2"),
    (b"label,label_noisy\n3.0,5\n", "line 2"),
    (b"label,label_noisy\n\xc2\xb2,5\n", "line 2"),  # a superscript two: a digit to str.isdigit
    (b"label;label_noisy\n3;5\n", "header"),
    (b"", "header"),
    (b"label,label_noisy\n", "at least one row"),
])
def test_the_reader_refuses_the_rest_with_the_path_and_line(content, where, tmp_path):
    (tmp_path / "l.csv").write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_noisy_csv(tmp_path / "l.csv")
    assert str(tmp_path / "l.csv") in str(error.value) and where in str(error.value)


# ---------------------------------------------------------------- the chapters' parameters

@pytest.mark.parametrize("name, value", [
    ("noise_rates", [0.2, 1.2]), ("noise_rates", [0.2, 0.2]), ("methods", ["ce", "nope"]), ("baselines", ["nope"]),
    ("baselines", "elr"), ("baseline_rates", [1.5]), ("seeds", []), ("seeds", [0, -1]), ("seeds", [1, 1]), ("csr_probe", "val"),
    ("csr_search", "fast"), ("n_epochs", 0), ("val_fraction", 1.0), ("precision", "fp16"), ("device", "gpu"),
    ("family", "nope"), ("collect_only", "yes"),
])
def test_a_chapter_parameter_is_refused_by_name(name, value):
    """A study setting by ``Study``, a chapter's own parameter by ``chapter.CHECKS``: both before any work."""
    with pytest.raises(ValueError, match=name):
        chapter.setup({"dataset": "mnist", name: value})


# ---------------------------------------------------------------- label folders

def write(out, family="symmetric", rates=("0.1", "0.2")):
    return labels.main(["--dataset", "digits", "--family", family, "--rates", *rates, "--out", str(out)])


def test_verify_checks_the_format_and_that_every_label_file_is_listed(tmp_path, capsys):
    out = tmp_path / "labels"
    assert write(out) == 0
    assert labels.main(["--verify", str(out)]) == 0
    extra = out / "mine.npy"
    np.save(extra, np.zeros(3, dtype=np.int64))
    assert labels.verify_label_files(out)["mine.npy"] == ["a label file the manifest does not list"]
    assert labels.main(["--verify", str(out)]) == 1
    extra.unlink()
    manifest = json.loads((out / labels.MANIFEST).read_text())
    (out / labels.MANIFEST).write_text(json.dumps({**manifest, "labels": []}))
    assert labels.verify_label_files(out)[labels.MANIFEST] == ["lists no label files"]
    (out / labels.MANIFEST).write_text(json.dumps({**manifest, "format": "idnhelpers-noisy/1"}))
    assert "not a manifest written by idn-labels" in labels.verify_label_files(out)[labels.MANIFEST][0]
    (out / labels.MANIFEST).write_text("[1, 2]")
    assert "format 'list', not 'idnhelpers-labels/1'" in labels.verify_label_files(out)[labels.MANIFEST][0]


def test_a_writer_removes_leftover_partial_files_and_refuses_another_label_set(tmp_path, capsys):
    out = tmp_path / "labels"
    assert write(out) == 0
    (out / ".digits_symmetric_0.1.csv.0123456789ab.tmp").write_text("partial")
    assert write(out, rates=("0.1",)) == 0  # fewer rates: the old 0.2 files, listed by the old manifest, go
    assert not list(out.glob(".*.tmp")) and labels.verify_label_files(out) == {
        name: [] for name in [labels.MANIFEST, *labels.file_names("digits", "symmetric", 0.1).values()]}
    with pytest.raises(SystemExit):
        write(out, family="pair")  # another family's files would sit beside these, unlisted
    assert "not list" in capsys.readouterr().err and all(not p for p in labels.verify_label_files(out).values())


def _writer(out, family="symmetric"):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "idnhelpers.labels", "--dataset", "mnist", "--family", family,
                             "--rates", "0.1", "0.2", "0.3", "0.4", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _consistent(out) -> bool:
    """The folder verifies, or has no manifest (a killed run's state before its last step)."""
    report = labels.verify_label_files(out)
    return report == {labels.MANIFEST: ["missing"]} or not any(report.values())


def test_sigkill_of_the_writer_at_random_moments_never_leaves_a_lying_folder(tmp_path):
    out = tmp_path / "labels"
    start = time.perf_counter()
    assert _writer(out).wait(timeout=120) == 0
    full = time.perf_counter() - start
    rng = random.Random(0)
    for _ in range(5):
        writer = _writer(out)
        time.sleep(rng.uniform(0.6, 1.0) * full)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        assert _consistent(out)
    assert _writer(out).wait(timeout=120) == 0  # the next run cleans up and completes
    assert not list(out.glob(".*.tmp")) and not any(labels.verify_label_files(out).values())


def test_two_concurrent_writers_never_mix_their_files(tmp_path):
    same = tmp_path / "same"
    a, b = _writer(same), _writer(same)
    assert (a.wait(timeout=180), b.wait(timeout=180)) == (0, 0)  # the second waits for the first's lock
    assert not any(labels.verify_label_files(same).values())
    other = tmp_path / "other"
    a, b = _writer(other, "symmetric"), _writer(other, "pair")
    codes = sorted((a.wait(timeout=180), b.wait(timeout=180)))
    assert codes == [0, 2]  # whichever comes second finds the other's label set and refuses
    assert not any(labels.verify_label_files(other).values())
    assert not (other / commands.LOCK).exists()
    family = json.loads((other / labels.MANIFEST).read_text())["family"]
    assert all(name.startswith(f"mnist_{family}_") for name in labels.label_files_in(other))  # one writer's files


def test_uint8_images_from_an_npz_label_with_algorithm_1(tmp_path):
    # registered images had float64 channel statistics, so their network's first layer got float64 input
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", X=rng.integers(0, 256, (120, 1, 8, 8), dtype=np.uint8), y=np.arange(120) % 3)
    assert labels.main(["--from-npz", str(tmp_path / "img.npz"), "--family", "idn", "--rates", "0.2",
                        "--precision", "fp32", "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / labels.MANIFEST).read_text())
    assert manifest["labels"][0]["flips"] == 24 and not any(labels.verify_label_files(tmp_path / "out").values())
    DATASETS.pop("npz:img")
