"""The CIFAR-10 and Clothing1M pipelines of the benchmarks, on tiny fakes in the real on-disk formats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50 as tv_resnet50

from idnhelpers import clothing1m
from idnhelpers.data import load_dataset
from idnhelpers.methods import METHODS, run_method, summarize
from idnhelpers.noise import generate_idn
from idnhelpers.train import protocol


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
    X, y = load_dataset("cifar10", cifar_root)
    X_test, y_test = load_dataset("cifar10", cifar_root, train=False)
    idn = generate_idn("cifar10", [0.2], root=cifar_root, n_epochs=1, model="wrn16_2", batch_size=16)
    y_noisy = idn.noisy[0.2]
    assert int((y_noisy != y).sum()) == 8  # exactly 20% of 40
    proto = protocol("cifar10", n_epochs=2, model="wrn16_2", batch_size=16)
    assert proto.augment and proto.weight_decay == 5e-4
    for name in METHODS:
        options = dict(n_iterations=1) if name.startswith("seal") else {}
        r = run_method(name, X, y_noisy, proto, noise_rate=0.2, dataset="cifar10", y_true=y, X_test=X_test,
                       y_test=y_test, X_val=X_test[:8], y_val=y_test[:8], **options)
        s = summarize(r)
        assert 0 <= s["last"] <= 100 and 1 <= s["val_epoch"] <= 2, name
        assert torch.allclose(r["S"].sum(1), torch.ones(40), atol=1e-4), name


def test_cifar10_pipeline_with_the_papers_wide_resnet(cifar_root):
    X, y = load_dataset("cifar10", cifar_root)
    r = run_method("seal", X[:16], y[:16], protocol("cifar10", n_epochs=1), n_iterations=1, dataset="cifar10",
                   use_cache=False)
    assert len(r["iterations"]) == 2 and r["S"].shape == (16, 10)


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


SMALL = clothing1m.Clothing1MProtocol(n_epochs=2, batch_size=8, lr_drop_epoch=1, resize=36, crop=32, n_iterations=1)


def test_clothing1m_files(clothing_root, tmp_path):
    splits = clothing1m.load_clothing1m(clothing_root)
    assert [len(splits[k][0]) for k in ("train", "val", "test")] == [28, 14, 14]
    assert splits["val"][1].tolist() == list(range(14))
    assert splits["train"][1][:5].tolist() == [1, 1, 2, 3, 5]  # every fourth noisy label shifted by one
    assert clothing1m.clothing1m_available(clothing_root) and not clothing1m.clothing1m_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="noisy_label_kv.txt"):
        clothing1m.load_clothing1m(tmp_path)


@pytest.mark.parametrize("method, n_stages", [("seal", 2), ("seal_dmi", 3), ("forward", 2), ("coteaching", 1)])
def test_clothing1m_pipeline(clothing_root, method, n_stages):
    r = clothing1m.run_clothing1m(method, clothing_root, clothing_root / "resnet50_imagenet.pth", SMALL, workers=0)
    assert len(r["stages"]) == n_stages and all(0 <= a <= 1 for a in r["stages"])
    assert r["test_acc"] == r["history"]["test_acc"][r["best_epoch"] - 1]  # the best-on-validation epoch
    assert r["history"]["val_acc"][r["best_epoch"] - 1] == max(r["history"]["val_acc"])
    if method.startswith("seal"):
        assert r["S"].shape == (28, 14) and torch.allclose(r["S"].sum(1), torch.ones(28), atol=1e-4)


def test_clothing1m_table_and_errors(clothing_root):
    weights = clothing_root / "resnet50_imagenet.pth"
    table = clothing1m.clothing1m_table(["ce", "coteaching", "seal"], clothing_root, weights, SMALL, workers=0)
    assert table["method"].tolist() == ["CE", "Co-teaching", "SEAL"]
    seal = clothing1m.run_clothing1m("seal", clothing_root, weights, SMALL, workers=0)
    assert table["ours"].tolist()[2] == pytest.approx(100 * seal["test_acc"])  # cached: the same run
    again = clothing1m.run_clothing1m("seal", clothing_root, weights, SMALL, workers=0, use_cache=False)
    assert torch.equal(again["S"], seal["S"])  # seeded: the same run again
    with pytest.raises(ValueError, match="forget_rate=1.2"):
        clothing1m.run_clothing1m("coteaching", clothing_root, weights, forget_rate=1.2)
    with pytest.raises(ValueError, match="choose one of"):
        clothing1m.run_clothing1m("mixup", clothing_root, weights)
    with pytest.raises(FileNotFoundError, match="weights"):
        clothing1m.run_clothing1m("ce", clothing_root, clothing_root / "missing.pth")
