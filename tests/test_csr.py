import pytest
import torch

from idnhelpers.csr import critical_sample_ratio, critical_samples
from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.engine import init_networks, train
from idnhelpers.models import MnistCNN
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import CSRProbe, make_run


@pytest.fixture(scope="module")
def trained():
    X, y, _ = subset(*load_dataset("mnist"), 2000, seed=0)
    proto = protocol("mnist", n_epochs=2)
    run = make_run(X, y, proto, dataset="mnist")
    result = train(run, use_cache=False)
    model = init_networks(run.replace(init=result.weights), torch.device("cpu"))[0]
    return model, X[:300]


def test_csr_is_zero_at_radius_zero(trained):
    model, X = trained
    assert critical_sample_ratio(model, X, dataset="mnist", radius=0.0, alpha=0.1, beta=0.1) == 0.0


def test_csr_grows_with_the_radius_and_is_a_fraction(trained):
    model, X = trained
    radii = [0.3 / 255, 4 / 255, 16 / 255, 64 / 255]
    csr = [critical_sample_ratio(model, X, dataset="mnist", radius=r, alpha=r / 4, beta=r / 5, seed=1) for r in radii]
    assert all(0 <= c <= 1 for c in csr)
    assert csr == sorted(csr)
    assert csr[-1] > 0.3


def test_csr_is_deterministic_and_keeps_the_model_mode(trained):
    model, X = trained
    model.train()
    a = critical_samples(model, X, dataset="mnist", radius=16 / 255, alpha=4 / 255, beta=3 / 255, seed=5)
    b = critical_samples(model, X, dataset="mnist", radius=16 / 255, alpha=4 / 255, beta=3 / 255, seed=5)
    assert torch.equal(a, b) and a.dtype == torch.bool and model.training
    with pytest.raises(ValueError, match="radius"):
        critical_samples(MnistCNN(), X, dataset="mnist", radius=-1.0)


def test_engine_records_csr_and_the_memorisation_split():
    X, y, _ = subset(*load_dataset("mnist"), 1500, seed=0)
    y_noisy = symmetric_noise(y, 0.4, 10, seed=0)
    run = train(make_run(X, y_noisy, protocol("mnist", n_epochs=3), dataset="mnist", y_true=y,
                         csr=CSRProbe(torch.arange(200), every=2, radius=16 / 255)), use_cache=False)
    h = run.history
    assert h["csr"][0] is None and h["csr"][2] is None and 0 <= h["csr"][1] <= 1
    for epoch in range(3):
        assert h["mem_noisy"][epoch] + h["mem_true"][epoch] + h["mem_other"][epoch] == pytest.approx(1.0)
        assert 0 <= h["clean_correct"][epoch] <= 1
    assert h["mem_true"][-1] > h["mem_noisy"][-1]  # early in training, uniform noise is not memorised
    with pytest.raises(ValueError, match="csr_every"):
        make_run(X, y_noisy, protocol("mnist", n_epochs=1), dataset="mnist", csr=CSRProbe(torch.arange(5), every=0))
