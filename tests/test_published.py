import hashlib
import re
from importlib import resources

import pytest
import torch

from idnhelpers.published import PUBLISHED, PUBLISHED_RATES, load_published_idn, read_noisy_csv, write_noisy_csv


def provenance_digests():
    text = resources.files("idnhelpers").joinpath("published_labels/PROVENANCE.md").read_text()
    return {(d, float(r)): h for d, r, h in re.findall(r"\| (\w+)/dependent([\d.]+)\.csv \| \d+ \| \d+ \| (\w{64}) \|", text)}


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_published_labels_have_exact_nested_flips(dataset):
    previous = None
    for rate in PUBLISHED_RATES:
        y, y_noisy = load_published_idn(dataset, rate)
        assert len(y) == PUBLISHED[dataset]
        flipped = y_noisy != y
        assert int(flipped.sum()) == round(rate * len(y))
        if previous is not None:
            assert (previous & ~flipped).sum() == 0
        previous = flipped


def test_packed_labels_rebuild_the_original_files(tmp_path):
    digests = provenance_digests()
    assert len(digests) == 8
    for (dataset, rate), expected in digests.items():
        path = tmp_path / f"{dataset}{rate}.csv"
        write_noisy_csv(path, *load_published_idn(dataset, rate))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


def test_csv_round_trip(tmp_path):
    y = torch.tensor([3, 1, 4, 1, 5])
    y_noisy = torch.tensor([3, 7, 4, 2, 5])
    write_noisy_csv(tmp_path / "a.csv", y, y_noisy)
    assert (tmp_path / "a.csv").read_text().splitlines()[:2] == ["label,label_noisy", "3,3"]
    y2, y_noisy2 = read_noisy_csv(tmp_path / "a.csv")
    assert torch.equal(y2, y) and torch.equal(y_noisy2, y_noisy)


def test_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("y,noisy\n1,2\n")
    with pytest.raises(ValueError, match="label,label_noisy"):
        read_noisy_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="y_noisy=.*one row per instance"):
        write_noisy_csv(tmp_path / "c.csv", [1, 2], [1])


def test_published_argument_errors():
    with pytest.raises(ValueError, match="published rates"):
        load_published_idn("mnist", 0.25)
    with pytest.raises(ValueError, match="cifar10"):
        load_published_idn("svhn", 0.1)
