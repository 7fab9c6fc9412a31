"""idn-labels (``idnhelpers.labels``): label files, their manifest, --verify, and errors before work."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from idnhelpers import labels
from idnhelpers.cache import file_digest
from idnhelpers.datasets import load_dataset
from idnhelpers.experiments import family_labels
from idnhelpers.noise import flip_count
from idnhelpers.published import read_noisy_csv
from idnhelpers.sample import sample


def run(*argv) -> int:
    return labels.main([str(a) for a in argv])


def manifest(folder):
    return json.loads((folder / labels.MANIFEST).read_text())


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def small_npz(tmp_path):
    """120 rows of float features, three classes."""
    rng = np.random.RandomState(0)
    X = rng.randn(120, 5)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    path = tmp_path / "small.npz"
    np.savez(path, X=X, y=y)
    return path


def check_folder(folder, dataset, family, rates, **settings):
    """Every rate's CSV, npy and mask against each other, family_labels and the data set; the
    manifest's checksums and flip counts against the files."""
    m = manifest(folder)
    X, y = load_dataset(dataset)
    trained = {"precision": m["network"]["precision"]} if "network" in m else {}  # what Algorithm 1 trained in
    expected = family_labels(sample(dataset), family, rates, **settings, **trained)
    assert m["dataset"]["n"] == len(y) and m["rates"] == sorted(rates) and m["family"] == family
    assert m["dataset"]["y"] == labels.array_info(y) and m["dataset"]["X"] == labels.array_info(X)
    for entry, rate in zip(m["labels"], sorted(rates)):
        names = labels.file_names(dataset.replace(":", "-"), family, rate)
        assert {kind: f["name"] for kind, f in entry["files"].items()} == names
        for f in entry["files"].values():
            assert file_digest(folder / f["name"]) == f["sha256"]
        y_csv, noisy_csv = read_noisy_csv(folder / names["csv"])
        noisy = np.load(folder / names["noisy"])
        corrupted = np.load(folder / names["corrupted"])
        assert noisy.dtype == np.int64 and corrupted.dtype == np.bool_
        assert torch.equal(y_csv, y) and torch.equal(noisy_csv, expected[rate])
        assert np.array_equal(noisy, noisy_csv.numpy()) and np.array_equal(corrupted, (y != noisy_csv).numpy())
        assert entry["flips"] == int(corrupted.sum()) and entry["realised_rate"] == round(entry["flips"] / len(y), 6)
        if m["exact"]:
            assert entry["flips"] == flip_count(rate, len(y))
    return m


@pytest.mark.parametrize("family", ["symmetric", "pair", "xia", "xia_exact"])
def test_round_trip(tmp_path, family):
    assert run("--dataset", "breast_cancer", "--family", family, "--rates", 0.3, 0.1, "--noise-seed", 3,
               "--out", tmp_path / "out") == 0
    m = check_folder(tmp_path / "out", "breast_cancer", family, [0.1, 0.3], noise_seed=3)
    assert m["noise_seed"] == 3 and m["settings"] == ({"norm_std": 0.1} if family.startswith("xia") else {})
    assert m["idnhelpers"] == labels.__version__ and "npz" not in m["dataset"]


def test_rerun_is_byte_identical(tmp_path, capsys):
    args = ["--dataset", "breast_cancer", "--family", "xia", "--setting", "norm_std=0.2", "--rates", 0.1, 0.25]
    assert run(*args, "--out", tmp_path / "a") == 0
    first = folder_bytes(tmp_path / "a")
    assert run(*args, "--out", tmp_path / "a") == 0 and run(*args, "--out", tmp_path / "b") == 0
    assert folder_bytes(tmp_path / "a") == first == folder_bytes(tmp_path / "b")
    assert set(first) == {labels.MANIFEST} | {n for r in (0.1, 0.25) for n in
                                              labels.file_names("breast_cancer", "xia", r).values()}
    assert manifest(tmp_path / "a")["settings"] == {"norm_std": 0.2}
    assert "rate 0.25: " in capsys.readouterr().out


def test_idn_from_npz_exact_and_identical_in_a_subprocess(tmp_path, small_npz):
    """Algorithm 1 on an npz (its MLP); the same command in a new process gives the same bytes."""
    args = ["--from-npz", small_npz, "--family", "idn", "--rates", 0.1, 0.3]
    assert run(*args, "--out", tmp_path / "a") == 0
    m = check_folder(tmp_path / "a", "npz:small", "idn", [0.1, 0.3])
    assert m["dataset"]["npz"] == {"file": "small.npz", "sha256": file_digest(small_npz)}
    assert [e["flips"] for e in m["labels"]] == [12, 36]
    done = subprocess.run([sys.executable, "-m", "idnhelpers.labels", *map(str, args), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rate 0.3: 36 of 120 labels flipped" in done.stdout
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")


def test_from_npz_features(tmp_path, small_npz):
    assert run("--from-npz", small_npz, "--family", "xia_exact", "--rates", 0.2, "--out", tmp_path / "out") == 0
    check_folder(tmp_path / "out", "npz:small", "xia_exact", [0.2])
    assert (tmp_path / "out" / "npz-small_xia_exact_0.2.csv").is_file()


def test_killed_run_leaves_no_half_written_file_nor_a_stale_manifest(tmp_path, monkeypatch):
    args = ["--dataset", "breast_cancer", "--family", "symmetric", "--rates", 0.2, "--out", tmp_path]
    assert run(*args) == 0  # then the same rate, another seed: killed while writing its first .npy
    before = folder_bytes(tmp_path)

    def killed(f, *a, **k):
        f.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(labels.np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run(*args, "--noise-seed", 1)
    after = folder_bytes(tmp_path)
    assert labels.MANIFEST not in after and not [name for name in after if name.endswith(".tmp")]
    assert after["breast_cancer_symmetric_0.2.npy"] == before["breast_cancer_symmetric_0.2.npy"]


@pytest.fixture
def written(tmp_path):
    out = tmp_path / "out"
    assert run("--dataset", "breast_cancer", "--family", "symmetric", "--rates", 0.2, 0.4, "--out", out) == 0
    return out


def test_verify_untouched(written, capsys):
    capsys.readouterr()
    assert run("--verify", written) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 7 and "MISMATCH" not in out and "all 7 files OK" in out


def test_verify_tampered_npy(written, capsys):
    path = written / "breast_cancer_symmetric_0.2.npy"
    noisy = np.load(path)
    noisy[5] = 1 - noisy[5]
    np.save(path, noisy)
    capsys.readouterr()
    assert run("--verify", written) == 1
    captured = capsys.readouterr()
    assert "MISMATCH breast_cancer_symmetric_0.2.npy: SHA-256" in captured.out
    assert "differs from the CSV's label_noisy in 1 rows (first: row 5)" in captured.out
    assert "OK       breast_cancer_symmetric_0.2.csv" in captured.out
    assert "fails verification: breast_cancer_symmetric_0.2.npy" in captured.err


def test_verify_tampered_csv(written, capsys):
    path = written / "breast_cancer_symmetric_0.4.csv"
    lines = path.read_text().splitlines()
    label, noisy = map(int, lines[1].split(","))
    lines[1] = f"{label},{label if noisy != label else 1 - label}"  # one flip more or fewer (two classes)
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert run("--verify", written) == 1
    out = capsys.readouterr().out
    assert "MISMATCH breast_cancer_symmetric_0.4.csv: SHA-256" in out and "flipped labels, the manifest says 182" in out
    assert "MISMATCH breast_cancer_symmetric_0.4.npy" in out and "MISMATCH breast_cancer_symmetric_0.4_corrupted.npy" in out


def test_verify_missing_file_and_bad_manifest(written, capsys):
    (written / "breast_cancer_symmetric_0.2_corrupted.npy").unlink()
    capsys.readouterr()
    assert run("--verify", written) == 1
    captured = capsys.readouterr()
    assert "MISSING  breast_cancer_symmetric_0.2_corrupted.npy" in captured.out
    assert "breast_cancer_symmetric_0.2_corrupted.npy" in captured.err
    (written / labels.MANIFEST).write_text("{not json")
    assert run("--verify", written) == 1
    assert "MISMATCH manifest.json: not a manifest written by idn-labels" in capsys.readouterr().out
    (written / labels.MANIFEST).unlink()
    assert run("--verify", written) == 1
    assert "MISSING  manifest.json" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "breast_cancer", "--family", "symmetric", "--rates", "1.5"],
     "--rates=1.5 is not allowed: a finite number in [0.0, 1.0)"),
    (["--dataset", "breast_cancer", "--family", "gaussian", "--rates", "0.2"],
     "argument --family: invalid choice: 'gaussian' (choose from 'idn', 'idn_published', 'xia', "),
    (["--dataset", "breast_cancer", "--family", "symmetric", "--setting", "norm_std=0.2", "--rates", "0.2"],
     "--setting='norm_std' is not allowed: nothing: there are no settings to give here"),
    (["--dataset", "breast_cancer", "--family", "xia", "--setting", "norm_std=0", "--rates", "0.2"],
     "norm_std=0 is not allowed: a finite number in (0.0, inf]"),
    (["--dataset", "breast_cancer", "--family", "xia", "--setting", "norm_sd=0.2", "--rates", "0.2"],
     "--setting='norm_sd' is not allowed: one of ['norm_std']"),
    (["--dataset", "breast_cancer", "--family", "xia", "--train-seed", "3", "--rates", "0.2"],
     "--train-seed=3 is not allowed: None: the labels of family 'xia' at rates [0.2] are seeded by ['noise_seed']"),
    (["--dataset", "breast_cancer", "--family", "symmetric", "--precision", "bf16", "--rates", "0.2"],
     "--precision='bf16' is not allowed: nothing: family 'symmetric' trains no network"),
    (["--dataset", "breast_cancer", "--family", "idn", "--noise-seed", "1", "--rates", "0.2"],
     "--noise-seed=1 is not allowed: None: the labels of family 'idn' at rates [0.2] are seeded by ['train_seed']"),
    (["--dataset", "breast_cancer", "--family", "symmetric"],
     "--rates=None is not allowed: one or more noise rates for family 'symmetric'"),
    (["--dataset", "breast_cancer", "--family", "idn_published", "--rates", "0.2"],
     "dataset='breast_cancer' is not allowed: one of ['mnist', 'cifar10']"),
    (["--dataset", "breast_cancer", "--family", "xia", "--rates", "0.2", "0.2"], "--rates=[0.2, 0.2] is not allowed"),
    (["--dataset", "svhn", "--family", "symmetric", "--rates", "0.2"], "dataset='svhn' is not allowed: one of"),
    (["--dataset", "breast_cancer", "--family", "symmetric", "--rates", "0.2", "--noise-seed", "-1"],
     "--noise-seed=-1 is not allowed"),
    (["--dataset", "breast_cancer", "--family", "xia", "--rates", "0.2", "--noise-seed", str(2 ** 32)],
     "--noise-seed=4294967296 is not allowed"),
    (["--family", "symmetric", "--rates", "0.2"], "writing labels (--out) also needs --dataset or --from-npz"),
    (["--dataset", "breast_cancer", "--from-npz", "x.npz", "--family", "symmetric", "--rates", "0.2"],
     "argument --from-npz: not allowed with argument --dataset"),
    (["--from-npz", "nothere.npz", "--family", "symmetric", "--rates", "0.2"],
     "--from-npz='nothere.npz' is not allowed: an existing .npz file"),
])
def test_bad_inputs_fail_before_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(labels.Study, "labels", lambda *a, **k: pytest.fail("labels were made"))
    with pytest.raises(SystemExit) as exit_:
        run(*argv, "--out", tmp_path / "out")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_npz_without_y_and_out_that_is_a_file(tmp_path, capsys):
    np.savez(tmp_path / "noy.npz", X=np.zeros((10, 3)))
    (tmp_path / "file").write_text("")
    for argv, message in ((["--from-npz", tmp_path / "noy.npz", "--out", tmp_path / "out"],
                           "an .npz holding arrays 'X' and 'y' (this one holds ['X'])"),
                          (["--dataset", "breast_cancer", "--out", tmp_path / "file"],
                           "is not allowed: a folder (this path is a file)")):
        with pytest.raises(SystemExit) as exit_:
            run(*argv, "--family", "symmetric", "--rates", 0.2)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_verify_takes_no_generation_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run("--verify", tmp_path, "--family", "idn")
    assert exit_.value.code == 2 and "it takes none of --family" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("--verify", tmp_path / "nothere")
    assert "an existing folder holding manifest.json" in capsys.readouterr().err
