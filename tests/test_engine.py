import pytest
import torch
import torch.nn.functional as F

from idnhelpers import cache, engine
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.engine import train
from idnhelpers.experiments import generate_idn
from idnhelpers.runs import make_run
from idnhelpers.sample import sample
from idnhelpers.sources import augment_batch, augmentation_draws


@pytest.fixture(scope="module")
def digits():
    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return X, y, Xt, yt


def fit(digits, targets=None, proto=None, use_cache=True, device=None, **kw):
    X, y, Xt, yt = digits
    run = make_run(X, y if targets is None else targets, proto or protocol("digits", n_epochs=5), dataset="digits",
                   y_true=y, X_test=Xt, y_test=yt, **kw)
    return train(run, use_cache=use_cache, device=device)


def test_training_on_digits_beats_chance_and_records_softmax(digits):
    r = fit(digits, track=torch.tensor([0, 5]))
    h = r.history
    assert h["test_acc"][-1] > 0.85  # chance is 0.10
    assert h["loss"][-1] < h["loss"][0]
    assert len(h["train_acc"]) == 5 and h["true_acc"] == h["train_acc"]
    assert torch.allclose(r.S.sum(1), torch.ones(len(r.S)), atol=1e-5) and (r.S >= 0).all()
    assert r.snapshots.shape == (5, 2, 10)
    assert torch.allclose(r.snapshots.mean(0), r.S[[0, 5]], atol=1e-6)  # S is the mean of the epochs
    assert r.precision == "fp32" and r.device == "cpu" and r.threads == torch.get_num_threads()


def test_training_is_deterministic(digits):
    a = fit(digits, use_cache=False, seed=3)
    b = fit(digits, use_cache=False, seed=3)
    c = fit(digits, use_cache=False, seed=4)
    assert torch.equal(a.S, b.S)
    assert not torch.equal(a.S, c.S)


def test_one_hot_soft_targets_equal_hard_labels(digits):
    X, y, *_ = digits
    hard = fit(digits, use_cache=False)
    soft = fit(digits, targets=torch.nn.functional.one_hot(y, 10).float(), use_cache=False)
    assert torch.allclose(hard.S, soft.S, atol=1e-5)


def test_cached_result_is_reused_and_written_atomically(digits, monkeypatch, tmp_path):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    first = fit(digits)
    monkeypatch.setattr(engine, "fit", lambda *a, **k: pytest.fail("should have been loaded from the cache"))
    assert torch.equal(fit(digits).S, first.S)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(digits, seed=99)
    assert len(list(tmp_path.rglob("*.pt"))) == 1 and not list(tmp_path.rglob("*.tmp"))
    assert not list(tmp_path.rglob("*.lock"))  # the interrupted run's lock is released


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(tmp_path / "x.pt", broken)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_rejected_before_training(digits):
    X, y, *_ = digits
    with pytest.raises(ValueError, match="precision"):
        fit(digits, precision="fp8")
    with pytest.raises(ValueError, match="targets"):
        make_run(X[:10], y, protocol("digits"), dataset="digits")
    with pytest.raises(ValueError, match="targets"):
        make_run(X, torch.full((len(y), 10), 0.2), protocol("digits"), dataset="digits")
    with pytest.raises(ValueError, match="protocol field"):
        protocol("mnist", learning_rate=0.1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(digits, device="cuda")


def test_paper_protocols():
    mnist, cifar = protocol("mnist"), protocol("cifar10")
    assert (mnist.model, mnist.n_epochs, mnist.batch_size, mnist.lr, mnist.momentum) == ("mnist_cnn", 50, 64, 0.01, 0.5)
    assert [cifar.lr_at(e) for e in (0, 59, 60, 119, 120)] == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004])
    assert cifar.weight_decay == 5e-4 and cifar.augment


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    out = augment_batch(x, augmentation_draws([torch.Generator().manual_seed(0)], [2], torch.device("cpu"))[0])
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every output is a shifted (possibly mirrored) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(2):
        windows = [padded[b, :, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(2)) for w in windows)


def test_generate_idn_on_digits():
    idn = generate_idn(sample("digits", n_train=600), [0.1, 0.3], n_epochs=3)
    assert len(idn.y) == 600 and idn.S.shape == (600, 10)
    for r in (0.1, 0.3):
        flipped = idn.noisy[r] != idn.y
        assert int(flipped.sum()) == int(r * 600)
        assert torch.equal(idn.noisy[r][flipped], idn.candidate[flipped])
    with pytest.raises(ValueError, match="noise_rates"):
        generate_idn(sample("digits", n_train=600), [0.1, 1.5])


def test_official_softmax_mode_equals_eval_without_batchnorm_or_augmentation(digits):
    eval_mode = fit(digits, use_cache=False)
    official = fit(digits, use_cache=False, softmax_mode="official")
    assert torch.allclose(eval_mode.S, official.S, atol=1e-6)
    with pytest.raises(ValueError, match="softmax_mode"):
        fit(digits, softmax_mode="train")


def test_paper_networks_shapes():
    from idnhelpers.models import MnistCNN, WideResNet, build_model

    assert MnistCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    wrn = build_model("wrn28_10", 10, (3, 32, 32))
    assert sum(p.numel() for p in wrn.parameters()) == pytest.approx(36.5e6, rel=0.01)  # WRN-28-10's size
    assert WideResNet(depth=10, widen=1)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("resnet50", 14, (3, 64, 64)).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 14)
    with pytest.raises(ValueError, match="mnist_cnn"):
        build_model("vgg", 10, (1, 28, 28))


def test_pooling_without_gradients_equals_atens_max_pool_and_the_official_network(monkeypatch):
    """models.max_pool_2x2's no-gradient path gives max_pool2d's values bit for bit (ties, NaN, odd
    sizes, both layouts), and the engine's MnistCNN the official forward's (bench.OfficialMnistCNN)."""
    from idnhelpers import models
    from benchmarks.speed import OfficialMnistCNN
    from idnhelpers.models import MnistCNN, max_pool_2x2

    g = torch.Generator().manual_seed(0)
    for shape in [(3, 20, 24, 24), (2, 5, 9, 7)]:
        x = torch.randn(shape, generator=g).mul(2).round()  # integers: many ties within a window
        x[0, 0, 0, 0] = float("nan")
        for layout in (torch.contiguous_format, torch.channels_last):
            x = x.contiguous(memory_format=layout)
            pooled = max_pool_2x2(x)
            assert torch.allclose(pooled, F.max_pool2d(x, 2), rtol=0, atol=0, equal_nan=True)  # exactly, NaN = NaN
            assert pooled.is_contiguous(memory_format=layout) and torch.isnan(pooled[0, 0, 0, 0])
    x = torch.randn(2, 3, 8, 8, requires_grad=True)  # with gradients: ATen's pooling and its backward
    assert max_pool_2x2(x).grad_fn.name() == F.max_pool2d(x, 2).grad_fn.name()
    aten_calls = []
    monkeypatch.setattr(models.F, "max_pool2d", lambda x, k: aten_calls.append(k) or F.avg_pool2d(x, k))
    nets = [MnistCNN() for _ in range(2)]  # stacked training (steps.StackedBank): vmap hides requires_grad
    params, buffers = torch.func.stack_module_state(nets)
    stacked = torch.func.vmap(lambda p, b, x: torch.func.functional_call(nets[0], (p, b), (x,)), in_dims=(0, 0, None))
    stacked(params, buffers, torch.randn(4, 1, 28, 28))
    assert aten_calls == [2, 2]
    monkeypatch.undo()
    torch.manual_seed(0)
    engine_net = MnistCNN().eval()
    torch.manual_seed(0)
    official = OfficialMnistCNN().eval()
    images = torch.randn(64, 1, 28, 28, generator=g)
    with torch.no_grad():
        assert torch.equal(engine_net(images), official(images))


def test_published_or_generated_idn_labels_for_a_sample():
    from idnhelpers.experiments import family_labels
    from idnhelpers.published import load_published_idn

    rows = sample("mnist", n_train=30, seed=4)
    sets = family_labels(rows, "idn_published", [0.1, 0.4])
    assert torch.equal(sets[0.4], load_published_idn("mnist", 0.4)[1][rows.rows])
    digits = sample("digits", n_train=500, seed=2)
    sets = family_labels(digits, "idn", [0.2], n_epochs=2)
    assert int((sets[0.2] != digits.y).sum()) == 100
    generated = generate_idn(digits, [0.2], n_epochs=2)  # the same network: Algorithm 1's run, from the cache
    assert torch.equal(generated.noisy[0.2], sets[0.2]) and torch.equal(generated.sample.rows, digits.rows)
    with pytest.raises(ValueError, match="dataset='digits' is not allowed: one of \\['mnist', 'cifar10'\\]"):
        family_labels(digits, "idn_published", [0.2])


def test_augmentation_costs_three_host_to_device_copies_per_epoch_whatever_the_runs_and_steps(monkeypatch):
    # per step, a copy from the CPU generator's draws to a GPU makes the GPU wait on the host; on a
    # CPU the same calls are counted (each would be a copy on CUDA)
    from idnhelpers.runs import Tensors
    from idnhelpers.sources import TensorSource

    source = TensorSource(Tensors(torch.zeros(640, 3, 32, 32, dtype=torch.uint8), "cifar10"), torch.device("cpu"))
    copies = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: copies.append(1) or real_to(self, *a, **k))
    for batch_size in (64, 16):  # 10 and 40 steps
        copies.clear()
        for _ in source.train_batches([torch.Generator().manual_seed(s) for s in range(3)], batch_size, True, False):
            pass
        assert len(copies) == 3  # the runs' permutations, offsets and flips, whatever the runs and steps
