import pytest
import torch

from idnhelpers.data import load_dataset, subset
from idnhelpers.many import train_many
from idnhelpers.noise import symmetric_noise
from idnhelpers.train import protocol, train


@pytest.fixture(scope="module")
def mnist_small():
    X, y, _ = subset(*load_dataset("mnist"), 1200, seed=0)
    Xt, yt = load_dataset("mnist", train=False)
    return X, [y, symmetric_noise(y, 0.3, 10, seed=1)], Xt[:1000], yt[:1000]


@pytest.fixture(scope="module")
def sequential(mnist_small):
    X, targets, Xt, yt = mnist_small
    proto = protocol("mnist", n_epochs=2)
    return [train(X, t, proto, dataset="mnist", seed=s, X_test=Xt, y_test=yt, use_cache=False)
            for t, s in zip(targets, [0, 1])]


@pytest.mark.parametrize("backend", ["vmap", "processes", "loop"])
def test_batched_runs_match_sequential_runs(mnist_small, sequential, backend):
    X, targets, Xt, yt = mnist_small
    runs = train_many(X, targets, protocol("mnist", n_epochs=2), seeds=[0, 1], dataset="mnist", X_test=Xt,
                      y_test=yt, use_cache=False, backend=backend, workers=2)
    for run, ref in zip(runs, sequential):
        # same seed: same initial weights and batch order; only float summation order differs
        assert (run["S"] - ref["S"]).abs().max() < 0.02
        assert run["history"]["test_acc"] == pytest.approx(ref["history"]["test_acc"], abs=0.01)
        assert run["history"]["loss"] == pytest.approx(ref["history"]["loss"], rel=0.01)
    assert not torch.allclose(runs[0]["S"], runs[1]["S"], atol=0.05)  # the runs are distinct


def test_train_many_shares_the_cache_with_train(mnist_small, monkeypatch, tmp_path):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    X, targets, *_ = mnist_small
    proto = protocol("mnist", n_epochs=1)
    single = train(X, targets[1], proto, dataset="mnist", seed=1)
    from idnhelpers import many

    trained = []
    real = many._train_vmap
    monkeypatch.setattr(many, "_train_vmap", lambda X, t, *a, **k: trained.append(len(t)) or real(X, t, *a, **k))
    runs = train_many(X, targets, proto, seeds=[0, 1], dataset="mnist", backend="vmap")
    assert trained == [1] and torch.equal(runs[1]["S"], single["S"])
    assert torch.equal(train(X, targets[0], proto, dataset="mnist", seed=0)["S"], runs[0]["S"])


def test_train_many_argument_errors(mnist_small):
    X, targets, *_ = mnist_small
    with pytest.raises(ValueError, match="one seed per target set"):
        train_many(X, targets, protocol("mnist"), seeds=[0], dataset="mnist")
    with pytest.raises(ValueError, match="backend"):
        train_many(X, targets, protocol("mnist"), seeds=[0, 1], dataset="mnist", backend="gpu")
    with pytest.raises(ValueError, match="batch norm"):
        Xc = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
        yc = torch.arange(8) % 10
        train_many(Xc, [yc, yc], protocol("cifar10", n_epochs=1, model="wrn28_10"), seeds=[0, 1], dataset="cifar10",
                   backend="vmap", use_cache=False)


def test_benchmark_script_runs_and_reports_a_speedup(capsys):
    from idnhelpers.bench import main

    assert main(["--epochs", "1", "--n-train", "300", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "reference:" in out and "engine (fp32, auto):" in out
    speedup = float(out.strip().splitlines()[-1].removeprefix("speedup: "))
    assert speedup > 0
