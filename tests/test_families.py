"""Noise families side by side (issue 16): exact counts and nesting where a family guarantees
them, Xia et al.'s realised rate against its distribution, separate noise and training seeds,
and the feature-vector (tabular) path through Algorithm 1, SEAL and Theorem 1."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idnhelpers import families, noise
from idnhelpers.datasets import get_dataset, load_dataset, protocol, register_arrays
from idnhelpers.experiments import ccn_experiment, family_labels, generate_idn
from idnhelpers.methods import run_method
from idnhelpers.sample import sample
from idnhelpers.stats import class_priors, estimate_transition_matrix


@pytest.fixture(scope="module")
def digits():
    X, y = load_dataset("digits")
    return X, y


@pytest.mark.parametrize("family", ["xia_exact", "symmetric", "pair"])
def test_exact_families_flip_exactly_flip_count(digits, family):
    X, y = digits
    for rate in (0.0, 0.1, 0.29, 0.45):
        y_noisy = families.noisy_labels(family, y, rate, 10, noise_seed=3, X=X)
        assert int((y_noisy != y).sum()) == noise.flip_count(rate, len(y))
        assert families.FAMILIES[family].exact


def test_idn_family_is_exact_and_nested():
    S = torch.softmax(torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 3, 1)
    y = S.argmax(1)
    flipped = [families.noisy_labels("idn", y, r, 10, S=S) != y for r in (0.1, 0.2, 0.4)]
    assert [int(f.sum()) for f in flipped] == [50, 100, 200]
    assert all(bool((a <= b).all()) for a, b in zip(flipped, flipped[1:]))  # nested across rates
    assert families.FAMILIES["idn"].nested and not families.FAMILIES["xia"].nested


def test_xia_realised_rate_follows_its_binomial_distribution():
    X, y = load_dataset("mnist")
    X, y = X[:20000], y[:20000]
    for rate in (0.2, 0.4):
        mean = noise.xia_rate_distribution(rate).mean()
        sd = math.sqrt(mean * (1 - mean) / len(y))
        realised = [float((noise.xia_noise(X, y, rate, 10, seed=s) != y).float().mean()) for s in range(3)]
        assert all(abs(r - mean) < 4 * sd for r in realised), (rate, mean, realised)
        assert len(set(realised)) == 3  # the count varies from seed to seed: not exact
    assert noise.xia_rate_distribution(0.1).mean() > 0.1  # truncation at 0 lifts the mean of low rates


def test_xia_matches_the_authors_loop(digits):
    """The authors' get_instance_noisy_label, written as their loop (numpy's global-style stream:
    truncnorm rates, randn projections, one choice per instance)."""
    from scipy import stats

    X, y = digits
    rate, seed, c = 0.3, 5, 10
    rng = np.random.RandomState(seed)
    q = stats.truncnorm((0 - rate) / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1).rvs(len(y), random_state=rng)
    W = torch.FloatTensor(rng.randn(c, 64, c))
    expected = []
    for i in range(len(y)):
        A = X[i].float().view(1, -1).mm(W[y[i]]).squeeze(0)
        A[y[i]] = -math.inf
        A = float(q[i]) * F.softmax(A, dim=0)
        A[y[i]] += 1 - float(q[i])
        expected.append(rng.choice(list(range(c)), p=A.double().numpy() / A.double().sum().item()))
    got = noise.xia_noise(X, y, rate, c, seed=seed)
    assert (got.numpy() == np.array(expected)).mean() == 1.0


def test_xia_targets_depend_on_the_instance(digits):
    """Same class, different features: different flip targets (CCN would not care)."""
    X, y = digits
    y_noisy = noise.xia_noise(X, y, 0.4, 10, seed=0, exact=True)
    M = estimate_transition_matrix(y, y_noisy, 10)
    assert ((M.fill_diagonal_(0) > 0).sum(1) >= 2).sum() >= 7  # most classes flip to several targets
    with pytest.raises(ValueError, match="X="):
        families.noisy_labels("xia", y, 0.2, 10, X=X[:5])
    with pytest.raises(ValueError, match="family='xiaa'"):
        families.noisy_labels("xiaa", y, 0.2, 10)
    with pytest.raises(ValueError, match="norm_std"):
        families.noisy_labels("symmetric", y, 0.2, 10, norm_std=0.2)


def test_noise_and_training_seeds_are_independent():
    rows = sample("breast_cancer")
    base = family_labels(rows, "xia", [0.3], noise_seed=1)[0.3]
    assert not torch.equal(base, family_labels(rows, "xia", [0.3], noise_seed=2)[0.3])
    assert torch.equal(base, family_labels(rows, "xia", [0.3], noise_seed=1)[0.3])  # deterministic
    idn = family_labels(rows, "idn", [0.3], train_seed=0, n_epochs=5)[0.3]
    other = family_labels(rows, "idn", [0.3], train_seed=1, n_epochs=5)[0.3]
    assert not torch.equal(idn, other) and int((other != rows.y).sum()) == int((idn != rows.y).sum())
    # a seed the family does not use is refused, not silently recorded
    with pytest.raises(ValueError, match="train_seed=9 is not allowed: None: family 'xia' is seeded by \\['noise_seed'\\]"):
        family_labels(rows, "xia", [0.3], train_seed=9)
    with pytest.raises(ValueError, match="noise_seed=7 is not allowed: None: family 'idn' is seeded by \\['train_seed'\\]"):
        family_labels(rows, "idn", [0.3], noise_seed=7, n_epochs=5)


def test_tabular_features_run_algorithm_1_seal_and_theorem_1_above_chance():
    X, y = load_dataset("breast_cancer")
    X_test, y_test = load_dataset("breast_cancer", train=False)
    assert X.dtype == torch.float32 and X.shape[1] == 30 and get_dataset("breast_cancer").is_features
    gen = generate_idn(sample("breast_cancer"), [0.2])
    y_noisy = gen.noisy[0.2]
    assert int((y_noisy != y).sum()) == noise.flip_count(0.2, len(y))
    seal = run_method("seal", X, y_noisy, protocol("breast_cancer"), dataset="breast_cancer", X_test=X_test,
                      y_test=y_test, n_iterations=1)
    majority = float(torch.bincount(y_test).max()) / len(y_test)
    assert seal.final.history["test_acc"][-1] > majority + 0.1  # well above always predicting "benign"
    M, w = estimate_transition_matrix(y, y_noisy, 2), class_priors(y, 2)
    out = ccn_experiment(sample("breast_cancer", val_fraction=0.3), y_noisy, M, w, protocol("breast_cancer"))
    assert 0 < out["val_error"][-1] < 0.5


def test_register_arrays_trains_user_features_and_refuses_bad_ones():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)) * 10 + 3
    y = (X[:, 0] + X[:, 1] > 6).astype(int)
    register_arrays("toy_features", X, y)
    Xt, yt = load_dataset("toy_features")
    r = run_method("ce", Xt, yt, protocol("toy_features", n_epochs=10), dataset="toy_features", X_test=Xt, y_test=yt,
                   use_cache=False)
    assert r.final.history["test_acc"][-1] > 0.9
    with pytest.raises(ValueError, match="y="):
        register_arrays("bad", X, y.astype(float))
    with pytest.raises(ValueError, match="X="):
        register_arrays("bad", np.array(["a"] * 300)[:, None], y)
