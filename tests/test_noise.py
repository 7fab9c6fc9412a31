import pytest
import torch

from idnhelpers.noise import (ccn_labels, flip_count, idn_labels, mislabel_scores, pair_matrix, pair_noise,
                              symmetric_noise)
from idnhelpers.stats import estimate_transition_matrix


def random_softmax(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(n, c, generator=g), 1)


@pytest.fixture
def labels_and_softmax():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (1000,), generator=g)
    return y, random_softmax(1000, 10)


@pytest.mark.parametrize("rate, n, expected", [(0.2, 1000, 200), (0.29, 100, 29), (0.0, 50, 0), (0.35, 997, 348),
                                               (0.1, 60000, 6000), (0.999, 10, 9)])
def test_flip_count_is_exact(rate, n, expected):
    assert flip_count(rate, n) == expected


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.4, 0.73])
def test_idn_flips_exactly_int_rate_n(labels_and_softmax, rate):
    y, S = labels_and_softmax
    assert int((idn_labels(y, S, rate) != y).sum()) == int(rate * len(y) + 1e-9)


def test_idn_flips_to_argmax_non_true_class(labels_and_softmax):
    y, S = labels_and_softmax
    y_noisy = idn_labels(y, S, 0.4)
    flipped = (y_noisy != y).nonzero().squeeze(1)
    for i in flipped.tolist():
        others = S[i].clone()
        others[y[i]] = -1
        assert y_noisy[i] == others.argmax()


def test_idn_flips_the_highest_scores(labels_and_softmax):
    y, S = labels_and_softmax
    score, _ = mislabel_scores(S, y)
    flipped = idn_labels(y, S, 0.3) != y
    assert score[flipped].min() >= score[~flipped].max()


def test_idn_sets_are_nested_across_rates(labels_and_softmax):
    y, S = labels_and_softmax
    sets = [idn_labels(y, S, r) != y for r in (0.05, 0.1, 0.2, 0.3, 0.4)]
    for small, large in zip(sets, sets[1:]):
        assert (small & ~large).sum() == 0
        assert small.sum() < large.sum()


def test_idn_ties_broken_by_lower_index():
    y = torch.zeros(10, dtype=torch.long)
    S = torch.tensor([[0.6, 0.4]] * 10)
    y_noisy = idn_labels(y, S, 0.3)
    assert (y_noisy != y).nonzero().squeeze(1).tolist() == [0, 1, 2]


def test_mislabel_scores_hand_made():
    S = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.45, 0.05]])
    y = torch.tensor([0, 2, 1])
    score, cand = mislabel_scores(S, y)
    assert torch.allclose(score, torch.tensor([0.2, 0.3, 0.5]))
    assert cand.tolist() == [1, 1, 0]


@pytest.mark.parametrize("bad, match", [
    (dict(noise_rate=1.0), "noise_rate"), (dict(noise_rate=-0.1), "noise_rate"), (dict(noise_rate="0.2"), "noise_rate"),
    (dict(y=torch.tensor([0, 1, 12])), "outside"), (dict(S=torch.full((3, 3), 0.5)), "probability"),
    (dict(S=torch.full((4, 3), 1 / 3)), "rows"),
])
def test_idn_input_validation(bad, match):
    args = dict(y=torch.tensor([0, 1, 2]), S=torch.full((3, 3), 1 / 3), noise_rate=0.3)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        idn_labels(**args)


@pytest.mark.parametrize("make", [symmetric_noise, pair_noise])
@pytest.mark.parametrize("rate", [0.2, 0.37, 0.45])
def test_ccn_exact_rate_and_reproducible(make, rate):
    y = torch.arange(1000) % 10
    y_noisy = make(y, rate, 10, seed=3)
    assert int((y_noisy != y).sum()) == flip_count(rate, 1000)
    assert torch.equal(y_noisy, make(y, rate, 10, seed=3))
    assert not torch.equal(y_noisy, make(y, rate, 10, seed=4))
    per_class = 1 - estimate_transition_matrix(y, y_noisy, 10).diagonal()
    assert (per_class - rate).abs().max() <= 0.011  # 100 instances per class: within one flip


def test_pair_noise_goes_to_next_class():
    y = torch.arange(500) % 5
    y_noisy = pair_noise(y, 0.3, 5, seed=0)
    flipped = y_noisy != y
    assert torch.equal(y_noisy[flipped], (y[flipped] + 1) % 5)


def test_symmetric_noise_spreads_over_other_classes():
    y = torch.arange(9000) % 10
    M = estimate_transition_matrix(y, symmetric_noise(y, 0.45, 10, seed=0), 10)
    off = M[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.05), atol=0.002)


def test_ccn_labels_follow_given_matrix():
    y = torch.arange(2000) % 4
    M = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0], [0.05, 0.05, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    M_hat = estimate_transition_matrix(y, ccn_labels(y, M, seed=0), 4)
    assert torch.allclose(M_hat, M.double(), atol=1 / 500 + 1e-9)


def test_ccn_rejects_non_stochastic_matrix():
    with pytest.raises(ValueError, match="row-stochastic"):
        ccn_labels(torch.tensor([0, 1]), torch.tensor([[0.5, 0.6], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="noise_rate"):
        pair_matrix(1.2, 10)
