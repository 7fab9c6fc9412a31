import ast
import gzip
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch

from idnhelpers import datasets as data
from idnhelpers.datasets import load_dataset
from idnhelpers.published import load_published_idn


def test_mnist_matches_torchvision_order_and_published_labels():
    X, y = load_dataset("mnist")
    assert X.shape == (60000, 1, 28, 28) and X.dtype == torch.uint8 and y.dtype == torch.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # torchvision's first ten training labels
    assert abs(X.float().mean().item() / 255 - 0.1307) < 1e-3  # torchvision's MNIST mean
    assert torch.equal(y, load_published_idn("mnist", 0.1)[0])
    Xt, yt = load_dataset("mnist", train=False)
    assert Xt.shape == (10000, 1, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]


def fake_mnist_wheel(path, blob):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(data.MNIST_PICKLE, blob)


def test_mnist_wheel_checksum_is_verified(tmp_path):
    arrays = tuple((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)) for _ in range(3))
    fake_mnist_wheel(tmp_path / data.MNIST_WHEEL, gzip.compress(pickle.dumps(arrays)))
    with pytest.raises(ValueError, match="SHA-256"):
        load_dataset("mnist", tmp_path)
    assert not (tmp_path / "mnist.npz").exists()  # nothing half-written


def test_mnist_from_torchvision_raw_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_pair(raw, "t10k", n=3)
    X, y = load_dataset("mnist", tmp_path, train=False, verify=False)
    assert X.shape == (3, 1, 28, 28) and y.tolist() == [0, 1, 2]


def write_idx_pair(folder, prefix, n, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 784, dtype=np.uint32).astype(np.uint8).reshape(n, 28, 28)
    labels = np.arange(n, dtype=np.uint8)
    for name, arr, code in ((f"{prefix}-images-idx3-ubyte", images, 3), (f"{prefix}-labels-idx1-ubyte", labels, 1)):
        header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        blob = header + arr.tobytes()
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(blob) if gz else blob)
    return images, labels


def test_fashion_mnist_idx_files(tmp_path):
    images, labels = write_idx_pair(tmp_path / "FashionMNIST" / "raw", "train", n=5, gz=False)
    X, y = load_dataset("fashion_mnist", tmp_path)
    assert np.array_equal(X[:, 0].numpy(), images) and y.tolist() == labels.tolist()


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 4))}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    X, y = load_dataset("cifar10", tmp_path, verify=False)
    assert X.shape == (20, 3, 32, 32)
    assert np.array_equal(X[4].numpy().reshape(-1), batches["data_batch_2"]["data"][0])  # channel-major rows
    assert y[:4].tolist() == batches["data_batch_1"]["labels"]
    assert load_dataset("cifar10", tmp_path, train=False, verify=False)[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("name, hint", [("cifar10", "cifar-10-batches-py"), ("fashion_mnist", "dataset-fashion-mnist")])
def test_missing_data_set_says_where_to_put_it(tmp_path, name, hint, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=hint):
        load_dataset(name, tmp_path)


def test_unknown_dataset():
    """The error lists every registered data set, sorted (other tests may have registered more)."""
    with pytest.raises(ValueError, match=r"dataset='svhn' is not allowed: one of (\[.*?\])") as error:
        load_dataset("svhn")
    listed = ast.literal_eval(re.search(r"one of (\[.*?\])", str(error.value)).group(1))
    assert listed == sorted(listed)
    assert {"breast_cancer", "cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "wine"} <= set(listed)


def test_digits_and_subset():
    X, y = load_dataset("digits")
    assert X.shape == (data.DIGITS_N_TRAIN, 1, 8, 8) and X.dtype == torch.uint8 and int(X.max()) == 255
    Xs, ys, idx = data.subset(X, y, 100, seed=1)
    assert len(ys) == 100 and torch.equal(ys, y[idx]) and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, data.subset(X, y, 100, seed=1)[2])
    with pytest.raises(ValueError, match="n_train"):
        data.subset(X, y, 0)
