"""Noise families and published label sets as registry entries (issue 21): a family registered from
this file runs through family_labels, the grid and idn-labels; PMD against the authors' loop;
CIFAR-N from fakes in the files' exact format; CAL's shipped labels; the grid's command line with
any family; no module branches on a family's name."""

import dataclasses
import io
import math
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from idnhelpers import families, labels, noise, published
from idnhelpers.experiments import family_labels
from idnhelpers.grid import build_grid, run_grid
from idnhelpers.study import Study
from idnhelpers.families import FAMILIES, NoiseFamily, register_family
from idnhelpers.sample import sample

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- a family registered here

def _every_third(inputs, rate, seed, shift):
    """A toy family: the first flip_count rows among every third row move ``shift`` classes on."""
    y = inputs.y.clone()
    rows = torch.arange(0, len(y), 3)[:noise.flip_count(rate, len(y))]
    y[rows] = (y[rows] + shift) % inputs.n_classes
    return y


@pytest.fixture
def toy_family():
    register_family("every_third", NoiseFamily("every third row", _every_third, seeded_by=(), instance_dependent=False,
                                               settings={"shift": 1}, checks={"shift": lambda v, n: v > 0 or
                                                                              noise.fail(n, v, "a positive shift")}))
    yield "every_third"
    del FAMILIES["every_third"]


def test_a_family_registered_from_a_test_file_runs_everywhere(toy_family, tmp_path):
    rows = sample("digits", n_train=300, val_fraction=0.2)
    sets = family_labels(rows, toy_family, [0.1, 0.2], shift=2)
    assert int((sets[0.2] != rows.y).sum()) == 60 and torch.equal(sets[0.2][1::3], rows.y[1::3])
    g = build_grid(Study(dataset="digits", methods=["ce"], family=toy_family, family_settings={"shift": 2},
                            noise_rates=[0.2], seeds=[0], n_epochs=1, n_train=300, val_fraction=0.2), device="cpu")
    assert torch.equal(g.cells[0].run.targets, sets[0.2][rows.train])
    table = run_grid(g, "local", device="cpu", progress=False)
    assert table.frame["family"].tolist() == [toy_family] and 0 <= table.frame["last"].item() <= 100
    manifest = labels.write_label_files("digits", toy_family, [0.2], tmp_path, settings={"shift": 2}, echo=lambda *a: 0)
    assert manifest["family"] == toy_family and manifest["settings"] == {"shift": 2} and manifest["labels"][0]["flips"] == 280
    assert "noise_seed" not in manifest and "network" not in manifest  # it uses neither
    assert labels.verify_label_files(tmp_path) == {name: [] for name in
                                                   [labels.MANIFEST, *labels.file_names("digits", toy_family, 0.2).values()]}
    with pytest.raises(ValueError, match="shift=0 is not allowed: a positive shift"):
        family_labels(rows, toy_family, [0.2], shift=0)
    with pytest.raises(ValueError, match="name='every_third' is not allowed: a noise family name not registered yet"):
        register_family(toy_family, FAMILIES[toy_family])
    with pytest.raises(ValueError, match="name='idn' is not allowed"):
        register_family("idn", FAMILIES["symmetric"])


def test_no_module_outside_noise_py_branches_on_a_family_name():
    found = [f"{path.relative_to(ROOT)}:{i}" for folder in ("idnhelpers", "notebooks") for path in (ROOT / folder).rglob("*.py")
             if path.name != "noise.py" for i, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"""== ["'](idn|idn_published|xia|xia_exact|pmd|pmd_exact|symmetric|pair)["']""", line)]
    assert found == []


# ---------------------------------------------------------------- PMD (Zhang et al. 2021)

def authors_label_noise(eta, noise_type, factor, seed):
    """``label_noise`` of pxiangwu/PLC (utils.py), re-implemented for more than two classes: the
    global numpy state seeded, one binomial draw per row in order, label u or s."""
    np.random.seed(seed)
    top = eta.topk(2)
    eta_u, eta_s = top[0][:, 0].numpy(), top[0][:, 1].numpy()
    u, s = top[1][:, 0].numpy(), top[1][:, 1].numpy()
    if noise_type == 1:
        f_us = -(1 / 2) * (eta_u - eta_s) ** 2 + 1 / 2
    elif noise_type == 2:
        f_us = 1 - np.abs(eta_u - eta_s) ** 3
    else:
        f_us = 1 - (1 / 3) * np.abs(eta_u - eta_s) ** 3 - (1 / 3) * np.abs(eta_u - eta_s) ** 2 - (1 / 3) * np.abs(
            eta_u - eta_s)
    y = np.zeros(len(eta), dtype=np.int64)
    for i in range(len(eta)):
        noise_level = np.maximum(1 - f_us, 0.5) if noise_type == 1 else 1 - f_us
        noise_ind = np.random.binomial(1, noise_level[i] / factor, 1)
        y[i] = (noise_ind * u[i] + (1 - noise_ind) * s[i])[0]
    return torch.from_numpy(y)


@pytest.fixture(scope="module")
def eta():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 10, generator=g) * 3
    logits[torch.arange(400), torch.arange(400) % 10] += 10  # mostly confident on the true class
    return logits.softmax(1), torch.arange(400) % 10


@pytest.mark.parametrize("noise_type", [1, 2, 3])
def test_pmd_equals_the_authors_label_noise_and_keeps_to_the_top_two_classes(eta, noise_type):
    S, y = eta
    labels_ = noise.pmd_noise(y, S, 0.35, noise_type, seed=123)
    u, s, keep = noise.pmd_keep(S, noise_type)
    factor = noise.pmd_factor(y, u, s, keep, 0.35)
    assert factor >= 1 and torch.equal(labels_, authors_label_noise(S, noise_type, factor, 123))
    top2 = S.topk(2).indices
    assert bool(((labels_ == top2[:, 0]) | (labels_ == top2[:, 1])).all())


def test_pmd_rate_matches_its_expectation_and_the_exact_variant_is_exact(eta):
    S, y = eta
    realised = [float((noise.pmd_noise(y, S, 0.3, 2, seed=s) != y).float().mean()) for s in range(30)]
    mean, sd = families.expected_rate("pmd", 0.3, len(y))
    assert mean == 0.3 and abs(np.mean(realised) - 0.3) < 4 * sd / math.sqrt(30)  # the factor is solved for 0.3
    exact = noise.pmd_noise(y, S, 0.3, 2, seed=0, exact=True)
    flipped = exact != y
    assert int(flipped.sum()) == noise.flip_count(0.3, len(y))
    top2 = S.topk(2).indices
    assert bool(((exact == top2[:, 0]) | (exact == top2[:, 1]))[flipped].all())  # flips go to a top-two class
    with pytest.raises(ValueError, match="noise_rate=0.001 is not allowed: a rate that a factor >= 1 reaches"):
        noise.pmd_noise(y, S, 0.001, 1)


def test_pmd_on_a_sample_and_its_label_files_record_the_network(tmp_path):
    rows = sample("digits", n_train=400)
    authors = family_labels(rows, "pmd", [0.3])[0.3]
    exact = family_labels(rows, "pmd_exact", [0.3])[0.3]  # the same network, from the cache
    assert int((exact != rows.y).sum()) == noise.flip_count(0.3, 400) and not torch.equal(authors, exact)
    m = labels.write_label_files("digits", "pmd_exact", [0.3], tmp_path, echo=lambda *a: 0)
    assert m["network"]["softmax"] == "final" and m["train_seed"] == 0 and m["noise_seed"] == 0
    assert m["labels"][0]["flips"] == noise.flip_count(0.3, 1400)


# ---------------------------------------------------------------- CIFAR-N from fakes in the exact format

def fake_cifar_n(folder: Path, dataset: str, y: np.ndarray, rng) -> dict:
    """A file as the authors wrote theirs: torch's zip format holding a protocol-2 pickle of a dict of
    int64 numpy arrays, its globals spelt ``numpy.core.multiarray`` (numpy 1, as in the real files)."""
    spec = published.CIFAR_N[dataset]
    arrays = {key: y.astype(np.int64) if name == "clean" else np.where(rng.random(len(y)) < 0.4, rng.integers(0, 10, len(y)), y)
              for name, key in spec.keys.items()}
    buffer = io.BytesIO()
    torch.save(arrays, buffer)
    with zipfile.ZipFile(buffer) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    path = folder / published.CIFAR_N_FOLDER / spec.file
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if name.endswith(
                "data.pkl") else data)
    return arrays


def test_cifar_n_loads_from_a_fake_in_the_exact_format_and_refuses_what_it_must(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 50)
    arrays = fake_cifar_n(tmp_path, "cifar10", y, rng)
    path = tmp_path / published.CIFAR_N_FOLDER / published.CIFAR_N["cifar10"].file
    assert b"numpy.core.multiarray\n_reconstruct" in zipfile.ZipFile(path).read(
        [n for n in zipfile.ZipFile(path).namelist() if n.endswith("data.pkl")][0])
    with pytest.raises(ValueError, match="fails its checksum"):  # not the published bytes
        published.load_cifar_n("cifar10", tmp_path, "worst")
    clean, worst = published.load_cifar_n("cifar10", tmp_path, "worst", verify=False)
    assert torch.equal(clean, torch.from_numpy(y)) and torch.equal(worst, torch.from_numpy(arrays["worse_label"]))
    with pytest.raises(ValueError, match="labels='best' is not allowed"):
        published.load_cifar_n("cifar10", tmp_path, "best")
    # a planted file: a pickle that would run code is refused unexecuted, even unverified
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buffer = io.BytesIO()
    torch.save({"clean_label": Planted()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="cannot be read as a CIFAR-N label file"):
        published.load_cifar_n("cifar10", tmp_path, "worst", verify=False)
    assert not marker.exists()
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot be read as a CIFAR-N label file"):
        published.load_cifar_n("cifar10", tmp_path, "aggre", verify=False)


def test_cifar_n_family_reads_the_users_copy_for_the_sample_rows(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 60)
    arrays = fake_cifar_n(tmp_path, "cifar10", y, rng)
    inputs = families.LabelInputs(torch.from_numpy(y[[3, 7, 9]]), 10, dataset="cifar10", rows=torch.tensor([3, 7, 9]),
                               root=str(tmp_path))
    digest = published.hashlib.md5((tmp_path / "cifar-10-100n" / "CIFAR-10_human.pt").read_bytes()).hexdigest()
    monkeypatch.setitem(published.CIFAR_N, "cifar10", dataclasses.replace(published.CIFAR_N["cifar10"], md5=(digest,)))
    got = families.labels_of("cifar10n", inputs, None, labels="aggre")
    assert torch.equal(got, torch.from_numpy(arrays["aggre_label"][[3, 7, 9]]))
    with pytest.raises(ValueError, match="noise_rates=\\[0.2\\] is not allowed: None: family 'cifar10n' is one fixed"):
        families.labels_of("cifar10n", inputs, 0.2)
    wrong = families.LabelInputs(torch.from_numpy((y[[3, 7, 9]] + 1) % 10), 10, dataset="cifar10",
                              rows=torch.tensor([3, 7, 9]), root=str(tmp_path))
    with pytest.raises(ValueError, match="a file whose true labels are the data set's"):
        families.labels_of("cifar10n", wrong, None)


def test_cal_idn_labels_are_shipped_with_their_counts():
    provenance = (ROOT / "idnhelpers" / "published_labels" / "PROVENANCE.md").read_text()
    for dataset in ("cifar10", "cifar100"):
        for rate in (0.2, 0.4, 0.6):
            y, y_noisy = published.load_cal_idn(dataset, rate)
            flips = int((y != y_noisy).sum())
            assert len(y) == 50_000 and f"| {dataset} | {rate} | " in provenance and f"| {flips} (" in provenance
    assert "MIT License" in (ROOT / "idnhelpers" / "published_labels" / "LICENSE-CAL.txt").read_text()
    with pytest.raises(ValueError, match="noise_rate=0.3 is not allowed: one of the published rates"):
        published.load_cal_idn("cifar10", 0.3)


# ---------------------------------------------------------------- the grid's command line with any family

def test_idn_grid_plans_and_trains_any_family_from_a_fresh_cache(tmp_path):
    env = {**__import__("os").environ, "IDNHELPERS_CACHE": str(tmp_path / "cache")}
    profiles = ROOT / "notebooks" / "profiles"
    args = [sys.executable, "-m", "idnhelpers.grid", "--profile", str(profiles / "smoke.yaml"),
            str(profiles / "smoke" / "05_benchmarks.yaml"), "--dataset", "digits", "--family", "xia", "--methods", "ce", "seal"]
    plan = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    assert plan.returncode == 0, plan.stderr
    assert "jobs: 2; runs to train: 4" in plan.stdout  # chapter 05's 2 smoke rates: CE (SEAL's iteration 0), SEAL's 1 iteration
    done = subprocess.run([*args, "--rates", "0.2"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "digits, xia: last-epoch test accuracy (%)" in done.stdout and "SEAL" in done.stdout
    idn = subprocess.run([*["idn" if a == "xia" else a for a in args], "--rates", "0.2", "--dry-run"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert idn.returncode == 0 and "labelling network" in idn.stdout and "runs to train: 3" in idn.stdout


def authors_two_class_noise(eta, noise_type, seed):
    """``label_noise`` of pxiangwu/PLC for two classes, re-implemented: the global numpy state seeded,
    each class-1 row in order kept with probability 1 - f(eta_1) (no factor); class 0 untouched."""
    np.random.seed(seed)
    eta_u = eta[:, 1]
    if noise_type == 1:
        f_us = 2 * eta_u * (eta_u - 1 / 2) ** 2
    elif noise_type == 2:
        f_us = (eta_u >= 1 / 2) * (1 - eta_u) + (eta_u < 1 / 2) * eta_u
    else:
        f_us = -2 * (eta_u - 1 / 2) ** 2 + 1 / 2
    y = (torch.arange(len(eta)) % 2).numpy().copy()
    for i in range(len(y)):
        if y[i] == 1:
            y[i] = np.random.binomial(1, 1 - f_us[i], 1)[0]
    return torch.from_numpy(y)


@pytest.mark.parametrize("noise_type", [1, 2, 3])
def test_pmd_on_two_classes_is_the_authors_two_class_branch(noise_type):
    """Two classes: only class 1 flips, with the authors' f(eta_1) and no factor (pmd_factor, whatever its
    factor); at a rate, the factor is solved over the same rule and class 0 still never flips."""
    g = torch.Generator().manual_seed(1)
    eta = (torch.randn(400, 2, generator=g) * 2).softmax(1)
    y = torch.arange(400) % 2
    authors = authors_two_class_noise(eta, noise_type, 7)
    for factor in (1.0, 1.2):
        assert torch.equal(noise.pmd_noise(y, eta, None, noise_type, seed=7, factor=factor), authors)
    at_rate = noise.pmd_noise(y, eta, 0.05, noise_type, seed=7)
    assert bool((at_rate[y == 0] == 0).all()) and bool((at_rate[y == 1] != 1).any())
    exact = noise.pmd_noise(y, eta, 0.05, noise_type, seed=7, exact=True)
    assert int((exact != y).sum()) == 20 and bool((exact[y == 0] == 0).all())


@pytest.mark.parametrize("noise_type", [1, 2, 3])
def test_pmd_at_the_authors_hand_set_factor_equals_their_label_noise(eta, noise_type):
    """``pmd_factor`` (a fixed family: the rate is what the factor gives) is gen_noise_label.py's
    ``--noise_factor``, default 1.2; a factor below 1 or with a rate as well is refused."""
    S, y = eta
    expected = authors_label_noise(S, noise_type, 1.2, 123)
    assert torch.equal(noise.pmd_noise(y, S, None, noise_type, seed=123, factor=1.2), expected)
    inputs = families.LabelInputs(y, 10, None, S, "digits", None, None)
    assert torch.equal(families.labels_of("pmd_factor", inputs, None, noise_seed=123, type=noise_type), expected)
    with pytest.raises(ValueError, match="factor=0.5 is not allowed"):
        families.labels_of("pmd_factor", inputs, None, factor=0.5)
    with pytest.raises(ValueError, match="noise_rate/factor=.* exactly one"):
        noise.pmd_noise(y, S, 0.3, noise_type, factor=1.2)


def test_cifar_100n_gives_its_coarse_labels_and_the_authors_names_get_ours(tmp_path):
    """CIFAR-100N's 2023 file also holds the 20 superclasses, clean and noisy; the authors' --noise_type
    names (rand1, noisy100) are refused with ours named, in the loader and in the family's setting."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 40)
    arrays = fake_cifar_n(tmp_path, "cifar100", y, rng)
    clean, noisy = published.load_cifar_n("cifar100", tmp_path, "noisy_coarse", verify=False)
    assert torch.equal(clean, torch.from_numpy(arrays["clean_coarse_label"]))
    assert torch.equal(noisy, torch.from_numpy(arrays["noisy_coarse_label"]))
    assert torch.equal(published.load_cifar_n("cifar100", tmp_path, "noisy", verify=False)[0], torch.from_numpy(y))
    with pytest.raises(ValueError, match="labels='noisy100' is not allowed: 'noisy': the authors' --noise_type"):
        published.load_cifar_n("cifar100", tmp_path, "noisy100", verify=False)
    with pytest.raises(ValueError, match="labels='rand1' is not allowed: 'random1': the authors' --noise_type"):
        FAMILIES["cifar10n"].with_defaults("cifar10n", {"labels": "rand1"})
    arrays = {key: np.full(40, 25) for key in published.CIFAR_N["cifar100"].keys.values()}  # 25: no superclass
    torch.save(arrays, tmp_path / published.CIFAR_N_FOLDER / published.CIFAR_N["cifar100"].file)
    with pytest.raises(ValueError, match="cannot be read as a CIFAR-N label file.*clean_coarse_label"):
        published.load_cifar_n("cifar100", tmp_path, "noisy_coarse", verify=False)
