"""Softmaxes, features, labels and arrays are checked against the rows and classes they describe."""

import numpy as np
import pytest
import torch

from idnhelpers.datasets import protocol, register_arrays
from idnhelpers.families import LabelInputs, labels_of, noisy_labels
from idnhelpers.noise import ccn_labels, pmd_noise, symmetric_matrix, xia_noise

G = torch.Generator().manual_seed(0)
Y = torch.arange(100) % 10
S = torch.softmax(4 * torch.nn.functional.one_hot(Y, 10) + torch.randn(100, 10, generator=G), 1)
S12 = torch.softmax(torch.randn(100, 12, generator=G), 1)
X = torch.randn(100, 5, generator=G)
NOTHING = torch.zeros(0, dtype=torch.long)


@pytest.mark.parametrize("family", ["idn", "pmd", "pmd_exact"])
def test_a_softmax_must_have_one_column_per_class(family):
    with pytest.raises(ValueError, match=r"^S=.*\(100, 12\).*10 columns, one per class"):
        noisy_labels(family, Y, 0.3, 10, S=S12)
    assert int(noisy_labels(family, Y, 0.3, 10, S=S).max()) < 10


@pytest.mark.parametrize("make", [
    lambda: pmd_noise(Y, S[:50], 0.3), lambda: pmd_noise(Y, S[:50], 0.3, 2, exact=True),
    lambda: noisy_labels("pmd", Y, 0.3, 10, S=S[:50]), lambda: noisy_labels("idn", Y, 0.3, 10, S=S[:50])])
def test_a_softmax_must_have_one_row_per_label(make):
    with pytest.raises(ValueError, match=r"^S=.*\(50, 10\).*100 rows, one per label"):
        make()


@pytest.mark.parametrize("make", [lambda: pmd_noise(torch.full((100,), 11), S, 0.3),
                                  lambda: pmd_noise(Y + 1, S, 0.3, exact=True)])
def test_pmd_refuses_labels_outside_the_softmax_classes(make):
    with pytest.raises(ValueError, match=r"^y=.*outside \[0, 10\)"):
        make()


@pytest.mark.parametrize("family", ["xia", "symmetric", "pmd"])
def test_no_labels_are_refused(family):
    with pytest.raises(ValueError, match="^y='no labels'"):
        noisy_labels(family, NOTHING, 0.3, 10, X=torch.zeros(0, 5), S=torch.zeros(0, 10))


@pytest.mark.parametrize("features", [torch.zeros(100, 0), np.zeros((100, 3, 0, 2)), torch.zeros(0, 5)])
def test_xia_refuses_instances_without_values(features):
    with pytest.raises(ValueError, match=r"^X=.*at least one value per row"):
        xia_noise(features, Y[:len(features)], 0.3, 10)


@pytest.mark.parametrize("n_flips", [-1, 101, 2.5])
def test_ccn_flips_at_most_the_labels_it_has(n_flips):
    with pytest.raises(ValueError, match="^n_flips="):
        ccn_labels(Y, symmetric_matrix(0.2, 10), n_flips=n_flips)


def test_a_file_family_needs_one_row_index_per_label():
    inputs = LabelInputs(Y[:4], 10, dataset="mnist", rows=torch.arange(3))
    with pytest.raises(ValueError, match=r"^rows='3 rows'.*y \(4\)"):
        labels_of("idn_published", inputs, 0.2)


FEATURES, LABELS = np.random.RandomState(0).rand(20, 3), np.arange(20) % 2


@pytest.mark.parametrize("kwargs, name", [
    (dict(X=np.zeros((20, 0))), "X"),
    (dict(X=np.zeros((20, 0, 4, 4), np.uint8), protocol=protocol("mnist")), "X"),
    (dict(X_test=np.float64(3), y_test=np.array([0])), "X_test"),
    (dict(X_test="abc", y_test=np.array([0])), "X_test"),
    (dict(X_test=np.zeros((4, 0)), y_test=np.zeros(4, dtype=int)), "X_test"),
    (dict(X_test=FEATURES[:4], y_test=np.array([0, 1, 2, 0])), "y_test"),
    (dict(classes=["a", "b", "c"]), "classes"),
    (dict(classes="ab"), "classes"),
])
def test_register_arrays_checks_every_shape(kwargs, name):
    arrays = {"X": FEATURES, "y": LABELS, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}="):
        register_arrays("shapes", **arrays, replace=True)
