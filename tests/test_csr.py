import pytest
import torch

from idnhelpers.csr import CSR_ALPHA, CSR_BETA, CSR_RADIUS, critical_sample_ratio, critical_samples, step_sizes
from idnhelpers.datasets import load_dataset, protocol, subset
from idnhelpers.engine import train
from idnhelpers.training import init_networks
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


def test_csr_count_grows_with_the_radius_at_the_default_step_sizes(trained):
    # Ma et al.'s a, b and r are 0.25, 0.2 and 0.3 over one scale factor: the step sizes scale with r.
    # With Arpit et al.'s fixed 0.25/255 and 0.2/255 the "< 20 new" stop ended the search before a
    # larger ball was reached, so r = 3/255 and 30/255 found about as many as 0.3/255.
    model, X = trained
    counts = [int(critical_samples(model, X, dataset="mnist", radius=r / 255, seed=0).sum()) for r in (0.3, 3, 30)]
    assert counts[0] < counts[1] < counts[2], counts  # measured: 1, 13, 165 of 300
    assert counts[2] > 100 and counts[2] > 5 * counts[1], counts
    fixed = int(critical_samples(model, X, dataset="mnist", radius=30 / 255, alpha=CSR_ALPHA, beta=CSR_BETA).sum())
    assert fixed < counts[2] / 5, (fixed, counts)  # the old fixed steps: the radius did (almost) nothing
    assert step_sizes(CSR_RADIUS) == (CSR_ALPHA, CSR_BETA)
    assert step_sizes(10 * CSR_RADIUS) == pytest.approx((10 * CSR_ALPHA, 10 * CSR_BETA))


def test_csr_probe_on_test_rows_redrawn_every_epoch():
    X, y, _ = subset(*load_dataset("mnist"), 600, seed=0)
    Xt, yt = load_dataset("mnist", train=False)
    probe = CSRProbe(test_draw=100, every=1, radius=8 / 255)
    draws = [probe.test_rows(1000, seed=3, epoch=e) for e in range(3)]
    assert all(len(d) == 100 and len(set(d.tolist())) == 100 for d in draws)
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], probe.test_rows(1000, seed=3, epoch=0))
    run = make_run(X, y, protocol("mnist", n_epochs=2), dataset="mnist", X_test=Xt[:1000], y_test=yt[:1000], csr=probe)
    csr = train(run, use_cache=False).history["csr"]
    assert all(0 <= c <= 1 for c in csr) and len(csr) == 2
    assert run.key() != run.replace(csr=CSRProbe(torch.arange(100), every=1, radius=8 / 255)).key()
    with pytest.raises(ValueError, match="test_draw"):
        make_run(X, y, protocol("mnist", n_epochs=1), dataset="mnist", X_test=Xt[:50], y_test=yt[:50], csr=probe)
    with pytest.raises(ValueError, match="test_draw"):
        make_run(X, y, protocol("mnist", n_epochs=1), dataset="mnist", csr=probe)
    with pytest.raises(ValueError, match="exactly one"):
        CSRProbe(torch.arange(5), test_draw=5)
    with pytest.raises(ValueError, match="exactly one"):
        CSRProbe()
