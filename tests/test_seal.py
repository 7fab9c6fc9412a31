import pytest
import torch
import torch.nn.functional as F

from idnhelpers import engine
from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.engine import train
from idnhelpers.methods import run_method, run_methods
from idnhelpers.published import load_published_idn
from idnhelpers.runs import make_run
from idnhelpers.stats import correction_metrics, correction_scores, label_distance


@pytest.fixture(scope="module")
def digits_noisy():
    from idnhelpers.noise import symmetric_noise

    X, y = load_dataset("digits")
    return X, y, symmetric_noise(y, 0.3, 10, seed=0)


def seal(X, y_noisy, n_iterations, proto, **kw):
    return run_method("seal", X, y_noisy, proto, n_iterations=n_iterations, dataset="digits", **kw).stages


def test_iteration_zero_is_plain_cross_entropy_and_soft_labels_are_distributions(digits_noisy):
    X, y, y_noisy = digits_noisy
    proto = protocol("digits", n_epochs=3)
    runs = seal(X, y_noisy, 2, proto, use_cache=False)
    plain = train(make_run(X, y_noisy, proto, dataset="digits"), use_cache=False)
    assert len(runs) == 3
    assert torch.equal(runs[0].S, plain.S)
    for r in runs:
        assert (r.S >= 0).all() and torch.allclose(r.S.sum(1), torch.ones(len(y)), atol=1e-5)
    assert not torch.allclose(runs[1].S, runs[0].S)


def test_more_iterations_resume_from_the_cache(digits_noisy, monkeypatch, tmp_path):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    X, y, y_noisy = digits_noisy
    proto = protocol("digits", n_epochs=2)
    first = seal(X, y_noisy, 1, proto)
    calls = []
    real = engine.fit
    monkeypatch.setattr(engine, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    more = seal(X, y_noisy, 2, proto)
    assert len(calls) == 1 and torch.equal(more[1].S, first[1].S)


def test_continue_and_start_from_another_softmax(digits_noisy):
    X, y, y_noisy = digits_noisy
    proto = protocol("digits", n_epochs=2)
    fresh = seal(X, y_noisy, 1, proto)
    continued = seal(X, y_noisy, 1, proto, retrain=False)
    assert torch.equal(continued[0].S, fresh[0].S) and not torch.allclose(continued[1].S, fresh[1].S)
    # SEAL (DMI): DMI's averaged softmax is S^[0], the soft labels of SEAL's first iteration
    from_dmi = run_method("seal_dmi", X, y_noisy, proto, n_iterations=1, dataset="digits").stages
    by_hand = train(make_run(X, from_dmi[1].S, proto, dataset="digits"))
    assert len(from_dmi) == 3 and torch.equal(from_dmi[2].S, by_hand.S)
    with pytest.raises(ValueError, match="n_iterations"):
        seal(X, y_noisy, -1, proto)


def test_seal_over_a_grid_equals_seal_run_by_run(digits_noisy):
    X, y, y_noisy = digits_noisy
    proto = protocol("digits", n_epochs=2)
    many = run_methods("seal", X, [y_noisy, y], proto, seeds=[3, 4], n_iterations=1, dataset="digits",
                       use_cache=False, backend="loop")
    for result, labels, seed in zip(many, [y_noisy, y], [3, 4]):
        single = seal(X, labels, 1, proto, seed=seed, use_cache=False)
        assert len(result.stages) == 2 and all(torch.equal(a.S, b.S) for a, b in zip(result.stages, single))


def test_label_distance_eq9():
    y = torch.tensor([0, 1, 2, 3])
    y_noisy = torch.tensor([1, 1, 0, 2])
    assert torch.allclose(label_distance(F.one_hot(y_noisy, 4).float(), y, y_noisy), torch.ones(3))
    assert torch.allclose(label_distance(F.one_hot(y, 4).float(), y, y_noisy), torch.zeros(3))
    S = torch.tensor([[0.5, 0.5, 0, 0], [0, 1.0, 0, 0], [0.2, 0.2, 0.6, 0], [0.1, 0.1, 0.1, 0.7]])
    d = label_distance(S, y, y_noisy)
    assert torch.allclose(d, torch.tensor([0.5, 0.4, 0.3]))  # = 1 - S_{i, y_i}
    S_rand = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), 1)
    d = label_distance(S_rand, torch.arange(50) % 4, (torch.arange(50) + 1) % 4)
    assert ((d >= 0) & (d <= 1)).all()


def test_correction_scores_eq10():
    S = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.05, 0.9, 0.05]])
    score, corrected = correction_scores(S, torch.tensor([0, 2, 0]))
    assert torch.allclose(score, torch.tensor([0.3, 0.2, 0.9])) and corrected.tolist() == [1, 0, 1]


def test_correction_metrics_hand_made():
    y = torch.tensor([0, 1, 2, 0])
    y_noisy = torch.tensor([1, 1, 2, 0])  # instance 0 corrupted
    S = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7], [0.9, 0.0, 0.1]])
    m = correction_metrics(S, y, y_noisy)
    assert m["precision"] == m["recall"] == 1.0 and m["auroc"] == 1.0
    assert m["acc_noisy"] == 0.75 and m["acc_argmax"] == 1.0 and m["acc_corrected"] == 1.0
    assert m["mean_distance"] == pytest.approx(0.2)


def test_seal_corrects_idn_on_real_mnist():
    X, y, idx = subset(*load_dataset("mnist"), 2000, seed=0)
    y_noisy = load_published_idn("mnist", 0.4)[1][idx]
    runs = run_method("seal", X, y_noisy, protocol("mnist", n_epochs=6), n_iterations=1, dataset="mnist",
                      y_true=y).stages
    m0, m1 = (correction_metrics(r.S, y, y_noisy) for r in runs)
    assert m0["acc_noisy"] == pytest.approx(float((y_noisy == y).float().mean()))
    assert m1["acc_argmax"] > m1["acc_noisy"] + 0.05  # SEAL's labels are more accurate than the noisy ones
    assert m1["auroc"] > 0.75
