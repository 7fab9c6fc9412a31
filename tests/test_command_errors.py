"""Issue 35, part B: every command line's whole ``main`` refuses with one line (bad cache folders, a bad
environment variable), label files are checked against the rows they claim to describe, and ``idn-noisy``
writes its folder like ``idn-labels`` (lock, manifest last with the checksum of the bytes written, leftovers
removed, another tool's folder refused)."""

import json
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from idnhelpers import cache, commands, engine, labels, noisy, published
from idnhelpers.datasets import load_dataset
from idnhelpers.grid import cli as grid_cli

ROOT = Path(__file__).resolve().parent.parent
SMOKE_05 = [str(ROOT / "notebooks" / "profiles" / "smoke.yaml"),
            str(ROOT / "notebooks" / "profiles" / "smoke" / "05_benchmarks.yaml")]
GRID = ["--profile", *SMOKE_05, "--dataset", "digits", "--methods", "ce", "--seeds", "0", "--set", "n_epochs=1"]
_, Y = load_dataset("digits")  # 1,400 training rows, 10 classes


@pytest.fixture
def nothing_trains(monkeypatch):
    monkeypatch.setattr(engine, "fit", lambda *a, **k: pytest.fail("trained before refusing the input"))


def refused(main, argv, capsys) -> str:
    """The one error line of a command that exits with code 2, no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.split(":")[0] in ("idn-labels", "idn-grid", "idn-noisy"), err
    return last


def csv(path: Path, y, y_noisy) -> Path:
    path.write_text("label,label_noisy\n" + "".join(f"{a},{b}\n" for a, b in zip(y, y_noisy)))
    return path


# ---------------------------------------------------------------- the whole main in the error handling

def bad_caches(tmp_path):
    (tmp_path / "a_file").write_text("not a folder\n")
    return {"a file": tmp_path / "a_file", "below a file": tmp_path / "a_file" / "runs",
            "not creatable": Path("/proc/idnhelpers-no-cache")}  # no user, root included, creates this


COMMANDS = {
    "idn-grid": (grid_cli.main, GRID + ["--family", "symmetric", "--rates", "0.2"]),
    "idn-grid --dry-run": (grid_cli.main, GRID + ["--family", "idn", "--rates", "0.2", "--dry-run"]),
    "idn-grid --status": (grid_cli.main, GRID + ["--family", "symmetric", "--rates", "0.2", "--status"]),
    "idn-labels": (labels.main, ["--dataset", "digits", "--family", "idn", "--rates", "0.2", "--out", "{out}"]),
    "idn-noisy": (noisy.main, ["--dataset", "digits", "--method", "ce", "--epochs", "1", "--out", "{out}"]),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("cache_kind", ["a file", "below a file", "not creatable"])
def test_a_cache_folder_that_cannot_be_one_ends_in_one_line(command, cache_kind, tmp_path, monkeypatch, capsys,
                                                           nothing_trains):
    path = bad_caches(tmp_path)[cache_kind]
    monkeypatch.setenv("IDNHELPERS_CACHE", str(path))
    main, argv = COMMANDS[command]
    argv = [a.format(out=tmp_path / "out") for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if code != 0:  # a plan or status that reads no result file may finish
        assert code == 2 and ("idnhelpers-no-cache" in err or "a_file" in err), err


@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["--status"]])
def test_idn_grid_with_a_bad_progress_variable_ends_in_one_line(extra, monkeypatch, capsys, nothing_trains):
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "foo")
    line = refused(grid_cli.main, GRID + ["--family", "symmetric", "--rates", "0.2", *extra], capsys)
    assert "IDNHELPERS_PROGRESS" in line and "foo" in line


def test_idn_labels_verify_of_an_unreadable_manifest_ends_in_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").mkdir()  # reading it is an OSError
    assert "manifest.json" in refused(labels.main, ["--verify", tmp_path], capsys)


# ---------------------------------------------------------------- label files against the rows

def shuffled(n=len(Y)):
    return np.random.default_rng(0).permutation(n)


def test_idn_noisy_refuses_a_label_file_whose_rows_are_in_another_order(tmp_path, capsys, nothing_trains):
    order = shuffled()
    path = csv(tmp_path / "shuffled.csv", Y[order].tolist(), Y[order].tolist())
    line = refused(noisy.main, ["--dataset", "digits", "--labels", path, "--out", tmp_path / "out"], capsys)
    assert "shuffled.csv" in line and "another order" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows", [len(Y) - 1, len(Y) + 1])
def test_idn_noisy_refuses_a_label_file_one_row_short_or_long_naming_it_and_both_counts(rows, tmp_path, capsys,
                                                                                       nothing_trains):
    y = Y.tolist() + Y[:1].tolist()
    path = csv(tmp_path / "labels.csv", y[:rows], y[:rows])
    np.save(tmp_path / "labels.npy", np.array(y[:rows]))
    for name in ("labels.csv", "labels.npy"):
        line = refused(noisy.main, ["--dataset", "digits", "--labels", path.with_name(name), "--out",
                                    tmp_path / "out"], capsys)
        assert name in line and str(rows) in line and str(len(Y)) in line, line


@pytest.mark.parametrize("rows", [len(Y) - 1, len(Y) + 1])
def test_idn_grid_refuses_a_label_file_one_row_short_or_long(rows, tmp_path, capsys, nothing_trains):
    y = (Y.tolist() + Y[:1].tolist())[:rows]
    path = csv(tmp_path / "labels.csv", y, y)
    line = refused(grid_cli.main, GRID + ["--labels", path, "--dry-run"], capsys)
    assert "labels.csv" in line and str(rows) in line and str(len(Y)) in line, line


def test_idn_grid_refuses_a_label_file_in_another_order_or_with_a_class_the_data_set_lacks(tmp_path, capsys,
                                                                                       nothing_trains):
    order = shuffled()
    path = csv(tmp_path / "shuffled.csv", Y[order].tolist(), Y[order].tolist())
    assert "shuffled.csv" in refused(grid_cli.main, GRID + ["--labels", path, "--dry-run"], capsys)
    y_noisy = Y.clone()
    y_noisy[5] = 10  # digits has classes 0-9
    path = csv(tmp_path / "class10.csv", Y.tolist(), y_noisy.tolist())
    line = refused(grid_cli.main, GRID + ["--labels", path, "--dry-run"], capsys)
    assert "class10.csv" in line and "label_noisy" in line


def fake_cifar_n(root: Path, dataset: str, clean, noisy_labels) -> None:
    spec = published.CIFAR_N[dataset]
    path = root / published.CIFAR_N_FOLDER / spec.file
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy_key = spec.keys["worst" if dataset == "cifar10" else "noisy"]
    torch.save({spec.keys["clean"]: np.asarray(clean), noisy_key: np.asarray(noisy_labels)}, path)


@pytest.mark.parametrize("dataset, n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_an_unverified_cifar_n_file_with_a_class_the_data_set_lacks_is_refused(dataset, n_classes, tmp_path):
    variant = "worst" if dataset == "cifar10" else "noisy"
    fake_cifar_n(tmp_path, dataset, np.arange(20) % n_classes, np.arange(20) % n_classes)
    assert len(published.load_cifar_n(dataset, tmp_path, variant, verify=False)[0]) == 20
    fake_cifar_n(tmp_path, dataset, np.arange(20) % n_classes, np.full(20, n_classes))
    with pytest.raises(ValueError, match=f"{published.CIFAR_N[dataset].file}.*not allowed.*\\[0, {n_classes}\\)"):
        published.load_cifar_n(dataset, tmp_path, variant, verify=False)


def test_a_file_family_refuses_rows_the_file_does_not_have(tmp_path, monkeypatch):
    from idnhelpers import families

    fake_cifar_n(tmp_path, "cifar10", np.arange(20) % 10, np.arange(20) % 10)
    monkeypatch.setattr(published.hashlib, "md5", lambda *a, **k: types.SimpleNamespace(
        hexdigest=lambda: published.CIFAR_N["cifar10"].md5[0]))
    inputs = families.LabelInputs(torch.tensor([3, 5]), 10, dataset="cifar10", rows=torch.tensor([3, 25]),
                                  root=str(tmp_path))
    with pytest.raises(ValueError, match="a file whose true labels are the data set's"):
        families.labels_of("cifar10n", inputs, None)


# ---------------------------------------------------------------- idn-noisy's folder

@pytest.fixture
def fake_training(monkeypatch):
    """idn-noisy's writing without its training: a fixed softmax stands in for the method's."""
    S = torch.softmax(torch.randn(len(Y), 10, generator=torch.Generator().manual_seed(0)), 1)
    monkeypatch.setattr(noisy, "run_stages", lambda *a, **k: [types.SimpleNamespace(S=S)])


def noisy_main(out, *extra):
    return noisy.main(["--dataset", "digits", "--method", "ce", "--out", str(out), *map(str, extra)])


def test_idn_noisy_refuses_a_folder_idn_labels_wrote_before_training(tmp_path, capsys, nothing_trains):
    out = tmp_path / "labels"
    assert labels.main(["--dataset", "digits", "--family", "symmetric", "--rates", "0.2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = refused(noisy.main, ["--dataset", "digits", "--method", "ce", "--out", out], capsys)
    assert "--out" in line and "idnhelpers-labels/1" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not any(labels.verify_label_files(out).values())


def test_idn_labels_refuses_a_folder_holding_only_another_tools_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "idnhelpers-noisy/1"}))
    line = refused(labels.main, ["--dataset", "digits", "--family", "symmetric", "--rates", "0.2", "--out",
                                 tmp_path], capsys)
    assert "idnhelpers-noisy/1" in line
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"format": "idnhelpers-noisy/1"}


def test_idn_noisy_removes_a_killed_writers_temporary_files_and_rewrites_its_own_folder(tmp_path, fake_training):
    out = tmp_path / "noisy"
    assert noisy_main(out) == 0
    (out / ".noisy.csv.0123456789ab.tmp").write_text("partial")
    assert noisy_main(out, "--seed", 1) == 0
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.lock"))
    assert noisy.read_ranking(out)["manifest"]["seed"] == 1


def test_the_manifest_names_the_checksum_of_the_bytes_written_not_of_the_file_found_later(
        tmp_path, monkeypatch, fake_training):
    replace = cache.os.replace

    def another_writer_renames_after_us(src, dst):
        replace(src, dst)
        if Path(dst).name == "noisy.csv":
            Path(dst).write_text("index,score,suggested_label,flagged\n0,0.5,1,0\n")

    monkeypatch.setattr(cache.os, "replace", another_writer_renames_after_us)
    out = tmp_path / "noisy"
    assert noisy_main(out) == 0
    monkeypatch.undo()
    with pytest.raises(ValueError, match="SHA-256"):
        noisy.read_ranking(out)  # the mismatch is found, not accepted


def test_a_second_idn_noisy_writer_waits_for_the_folders_lock(tmp_path, capsys, fake_training):
    out = tmp_path / "noisy"
    assert noisy_main(out) == 0
    held = cache.Lock.acquire("folder", out / commands.LOCK)  # another live writer
    timer = threading.Timer(0.5, held.release)
    timer.start()
    assert noisy_main(out, "--seed", 1) == 0
    timer.join()
    assert "waiting for another process writing" in capsys.readouterr().out
    assert noisy.read_ranking(out)["manifest"]["seed"] == 1


def test_make_datas_command_refuses_an_unknown_data_set_in_one_line():
    """``python -m idnhelpers.datasets`` (``make data``) is a command line too: no traceback."""
    out = subprocess.run([sys.executable, "-m", "idnhelpers.datasets", "nosuch"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "dataset='nosuch' is not allowed: one of [" in out.stderr


def test_a_refusal_names_the_option_typed_and_a_profiles_setting_by_its_own_name(tmp_path, capsys, nothing_trains):
    line = refused(labels.main, ["--dataset", "digits", "--family", "symmetric", "--rates", "1.5", "--out",
                                 tmp_path / "out"], capsys)
    assert "--rates=1.5 is not allowed" in line, line  # Study's noise_rates, as typed
    profile = tmp_path / "p.yaml"
    profile.write_text("dataset: nope\n")
    line = refused(grid_cli.main, ["--profile", profile, "--dry-run"], capsys)
    assert "dataset='nope' is not allowed" in line and "--dataset" not in line, line  # from the file, not typed
