"""The CIFAR-10 and Clothing1M pipelines of the benchmarks, on tiny fakes in the real on-disk formats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50 as tv_resnet50

from idnhelpers import clothing1m, paper
from idnhelpers.datasets import get_dataset, load_dataset, protocol
from idnhelpers.experiments import generate_idn
from idnhelpers.methods import Trainer, run_method, run_methods, run_stages, summarize
from idnhelpers.sample import sample


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """cifar-10-batches-py with 5 x 8 training and 16 test images; class c images are brighter with c."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 16)]:
        labels = rng.integers(0, 10, n)
        data = np.clip(rng.normal(20 * labels[:, None] + 30, 20, (n, 3072)), 0, 255).astype(np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels.tolist()}))
    return root


def test_cifar10_pipeline_every_method(cifar_root):
    X, y = load_dataset("cifar10", cifar_root, verify=False)
    X_test, y_test = load_dataset("cifar10", cifar_root, train=False, verify=False)
    idn = generate_idn(sample("cifar10", root=cifar_root, verify=False), [0.2], n_epochs=1, model="wrn16_2",
                       batch_size=16)
    y_noisy = idn.noisy[0.2]
    assert int((y_noisy != y).sum()) == 8  # exactly 20% of 40
    proto = protocol("cifar10", n_epochs=2, model="wrn16_2", batch_size=16)
    assert proto.augment and proto.weight_decay == 5e-4
    for name in ("ce", "forward", "coteaching", "gce", "dac", "dmi", "seal", "seal_dmi", "dividemix", "elr_plus", "sop", "sop_plus"):
        options = dict(n_iterations=1) if name.startswith("seal") else {}
        r = run_method(name, X, y_noisy, proto, noise_rate=0.2, dataset="cifar10", y_true=y, X_test=X_test,
                       y_test=y_test, X_val=X_test[:8], y_val=y_test[:8], **options)
        s = summarize(r)
        assert 0 <= s["last"] <= 100 and 1 <= s["val_epoch"] <= 2, name
        assert torch.allclose(r.S.sum(1), torch.ones(40), atol=1e-4), name


def test_cifar10_pipeline_with_the_papers_wide_resnet(cifar_root):
    X, y = load_dataset("cifar10", cifar_root, verify=False)
    r = run_method("seal", X[:16], y[:16], protocol("cifar10", n_epochs=1), n_iterations=1, dataset="cifar10",
                   use_cache=False)
    assert len(r.stages) == 2 and r.S.shape == (16, 10)


def test_cifar100_is_a_registry_entry(tmp_path):
    """torchvision's cifar-100-python layout (train, test, meta pickles), 100 fine labels, CIFAR protocol."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 30), ("test", 10)):
        fine = rng.integers(0, 100, n)
        data = np.clip(rng.normal(2 * fine[:, None] + 30, 20, (n, 3072)), 0, 255).astype(np.uint8)
        batch = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
                 "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": data}
        (folder / name).write_bytes(pickle.dumps(batch))
    spec = get_dataset("cifar100")
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": list(spec.classes),
                                                "coarse_label_names": [f"super{i}" for i in range(20)]}))
    X, y = load_dataset("cifar100", tmp_path, verify=False)
    X_test, y_test = load_dataset("cifar100", tmp_path, train=False, verify=False)
    assert spec.n_classes == 100 and spec.classes[:3] == ("apple", "aquarium_fish", "baby")
    assert X.shape == (30, 3, 32, 32) and y.max() < 100 and len(y_test) == 10
    assert spec.protocol == get_dataset("cifar10").protocol  # the CIFAR protocol of Appendix A
    proto = protocol("cifar100", n_epochs=1, model="wrn16_2", batch_size=10)
    results = run_methods("seal", X, [y, y.roll(1)], proto, seeds=[0, 1], n_iterations=1, dataset="cifar100",
                          X_test=X_test, y_test=y_test, use_cache=False, backend="stacked")
    assert all(r.S.shape == (30, 100) and len(r.stages) == 2 for r in results)
    assert results[0].final.weights["fc.weight"].shape == (100, 128)


@pytest.fixture(scope="module")
def clothing_root(tmp_path_factory):
    """Clothing1M's layout: key lists, label kv files and JPEG images (14 classes, colour = class)."""
    root = tmp_path_factory.mktemp("data")
    base = root / "clothing1m"
    rng = np.random.default_rng(0)
    lists = {"noisy_train_key_list.txt": 28, "clean_val_key_list.txt": 14, "clean_test_key_list.txt": 14}
    noisy_kv, clean_kv = [], []
    for list_name, n in lists.items():
        keys = []
        for i in range(n):
            key = f"images/{i % 3}/{list_name[:5]}_{i}.jpg"
            label = i % 14
            (base / key).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.full((40, 48, 3), 18 * label, np.uint8) + rng.integers(0, 10, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / key)
            keys.append(key)
            (noisy_kv if list_name.startswith("noisy") else clean_kv).append(
                f"{key} {(label + (i % 4 == 0)) % 14 if list_name.startswith('noisy') else label}")
        (base / list_name).write_text("\n".join(keys) + "\n")
    (base / "noisy_label_kv.txt").write_text("\n".join(noisy_kv) + "\n")
    (base / "clean_label_kv.txt").write_text("\n".join(clean_kv) + "\n")
    torch.save(tv_resnet50(weights=None).state_dict(), root / "resnet50_imagenet.pth")
    return root


SMALL = clothing1m.PROTOCOL.replace(n_epochs=2, batch_size=8, milestones=(1,))
FILES = dict(workers=0, resize=36, crop=32)


def test_clothing1m_files(clothing_root, tmp_path):
    splits = clothing1m.load_clothing1m(clothing_root)
    assert [len(splits[k][0]) for k in ("train", "val", "test")] == [28, 14, 14]
    assert splits["val"][1].tolist() == list(range(14))
    assert splits["train"][1][:5].tolist() == [1, 1, 2, 3, 5]  # every fourth noisy label shifted by one
    assert clothing1m.clothing1m_available(clothing_root) and not clothing1m.clothing1m_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="noisy_label_kv.txt"):
        clothing1m.load_clothing1m(tmp_path)


def table3(method, clothing_root, use_cache=True):
    """One Table 3 cell as a grid job trains it (``run_stages`` on the base run with the paper's
    options), on the small images and protocol of these fakes."""
    base = clothing1m.clothing1m_runs(clothing_root, clothing_root / "resnet50_imagenet.pth", SMALL, **FILES)
    options = paper.method_options("clothing1m", method, n_epochs=SMALL.n_epochs, n_iterations=1)
    return run_stages(method, [base], [paper.CLOTHING1M_NOISE_RATE], Trainer("loop", use_cache=use_cache),
                      **options)[0]


@pytest.mark.parametrize("method, n_stages", [("seal", 2), ("seal_dmi", 3), ("forward", 2), ("coteaching", 1)])
def test_clothing1m_pipeline(clothing_root, method, n_stages):
    r = table3(method, clothing_root)
    assert len(r.stages) == n_stages and all(0 <= a <= 1 for stage in r.stages for a in stage.history["test_acc"])
    h = r.final.history
    assert h["val_acc"][r.final.best_epoch - 1] == max(h["val_acc"])  # the kept model is the best on validation
    assert summarize(r)["val_selected"] == pytest.approx(100 * h["test_acc"][r.final.best_epoch - 1])
    if method.startswith("seal"):
        assert r.S.shape == (28, 14) and torch.allclose(r.S.sum(1), torch.ones(28), atol=1e-4)


def test_clothing1m_runs_repeat_and_errors(clothing_root):
    seal = table3("seal", clothing_root)
    again = table3("seal", clothing_root, use_cache=False)
    assert torch.equal(again.S, seal.S)  # seeded: the same run again
    with pytest.raises(ValueError, match="noise_rate=1.2"):
        run_stages("coteaching", [clothing1m.clothing1m_runs(clothing_root, clothing_root / "resnet50_imagenet.pth",
                                                             SMALL, **FILES)], [1.2], Trainer("loop"))
    with pytest.raises(FileNotFoundError, match="weights"):
        clothing1m.clothing1m_runs(clothing_root, clothing_root / "missing.pth")


def test_clothing1m_loaders_persist_pin_and_give_the_same_batches_with_any_workers(clothing_root, monkeypatch):
    from idnhelpers.clothing1m import ImageFiles, StreamSource

    keys = clothing1m.load_clothing1m(clothing_root)["train"][0][:12]

    def two_epochs(workers):
        source = StreamSource(ImageFiles(keys, str(clothing_root), resize=36, crop=32, workers=workers), torch.device("cpu"))
        generator = torch.Generator().manual_seed(0)
        epochs = [[(rows[0], x[0]) for rows, x in source.train_batches([generator], 4, True, False)] for _ in range(2)]
        return source, epochs

    rng = torch.get_rng_state()
    inline, (in_workers, epochs) = two_epochs(0)[1], two_epochs(2)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG untouched
    for a, b in zip(inline, epochs):  # each image's crop and flip come from its seed, not from its worker
        assert all(torch.equal(ra, rb) and torch.equal(xa, xb) for (ra, xa), (rb, xb) in zip(a, b))
    assert not torch.equal(torch.cat([r for r, _ in epochs[0]]), torch.cat([r for r, _ in epochs[1]]))  # reshuffled
    (loader,) = in_workers.loaders.values()  # one loader for both epochs, its workers kept
    assert loader.persistent_workers and loader.num_workers == 2 and not loader.pin_memory
    monkeypatch.setattr(clothing1m, "cpu_cores", lambda: 3)
    on_gpu = StreamSource(ImageFiles(keys, str(clothing_root), resize=36, crop=32), torch.device("cuda"))
    assert on_gpu.workers == 2  # the cores Slurm gave the job, less the training loop's
    assert on_gpu._loader("eval", on_gpu.eval_transform, batch_size=4).pin_memory
