"""Faithful to the paper and to the official code (issue 12): each test failed before its fix."""

import math

import numpy as np
import pytest
import torch

from idnhelpers import engine, losses
from idnhelpers.datasets import get_dataset, load_dataset, protocol
from idnhelpers.training import init_networks, record_softmax
from idnhelpers.experiments import network_run
from idnhelpers.sample import sample
from idnhelpers.methods import run_method
from idnhelpers.runs import Weights, make_run
from idnhelpers.steps import ModuleBank


def test_official_softmax_recording_is_in_eval_mode_and_leaves_batch_norm_alone():
    """The official scripts record the softmax right after test(), which calls model.eval()."""
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 10, 40)).long()
    run = make_run(X, y, protocol("cifar10", n_epochs=1, model="wrn16_2", batch_size=16), dataset="cifar10",
                   softmax_mode="official")
    device = torch.device("cpu")
    model = init_networks(run, device)[0]
    model.train()
    model(torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last))  # running stats away from init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bank = ModuleBank([model])
    probs = record_softmax(bank, run.data.source(device), run, [torch.Generator().manual_seed(0)], device)
    assert probs.shape == (1, 40, 10) and not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # running_mean, running_var, num_batches_tracked


def test_official_softmax_runs_are_not_served_from_the_old_train_mode_cache():
    X, y = load_dataset("digits")
    p = protocol("digits", n_epochs=1)
    official = make_run(X, y, p, dataset="digits", softmax_mode="official").config()["softmax_mode"]
    assert official == "official, eval mode" and make_run(X, y, p, dataset="digits").config()["softmax_mode"] == "eval"


def test_dac_alpha_reaches_its_final_value_at_the_last_epoch():
    spec = losses.DAC(warmup_epochs=5, alpha_final=1.0)
    loss = spec.make([spec], 10, 50)
    logits, y = torch.randn(1, 32, 11), torch.randint(0, 10, (1, 32))
    for epoch in range(50):
        loss(logits, y, epoch, None)
    assert float(loss.alpha) == pytest.approx(1.0)  # was 0.979 (1-based formula on 0-based epochs)


@pytest.mark.parametrize("dataset, epochs, milestones", [("mnist", 20, ()), ("cifar10", 150, (60, 120)),
                                                         ("cifar100", 150, (60, 120))])
def test_algorithm_1_uses_each_data_sets_own_generation_protocol(dataset, epochs, milestones):
    proto = get_dataset(dataset).generation_protocol
    assert (proto.n_epochs, proto.milestones) == (epochs, milestones)
    if milestones:
        assert proto.gamma == 0.2 and proto.lr_at(59) == 0.1 and proto.lr_at(60) == pytest.approx(0.02)


def test_the_labelling_network_trains_the_generation_protocol():
    run = network_run(sample("digits", n_train=100))
    assert run.protocol == get_dataset("digits").generation_protocol and run.keep == "none"
    assert network_run(sample("digits", n_train=100), n_epochs=3).protocol.n_epochs == 3


def test_seal_continuing_starts_each_iteration_from_the_previous_weights(monkeypatch):
    X, y = load_dataset("digits")
    inits, real_fit = [], engine.fit

    def spy(runs, device, stacked=False, **kwargs):
        inits.append(runs[0].init)
        return real_fit(runs, device, stacked, **kwargs)

    monkeypatch.setattr(engine, "fit", spy)
    result = run_method("seal", X[:300], y[:300], protocol("digits", n_epochs=1), n_iterations=2, retrain=False,
                        keep="none", dataset="digits", use_cache=False)
    assert inits[0] is None and all(isinstance(w, Weights) for w in inits[1:]) and len(inits) == 3
    assert result.final.weights is None  # keep="none" is honoured for what is returned
    assert inits[1].fingerprint != inits[2].fingerprint


def test_coteaching_keeps_round_of_the_keep_rate_as_the_official_code():
    from idnhelpers.steps import Peers, keep_rate

    step = Peers.make([Peers(0.3)])
    logits = torch.randn(1, 2, 56, 10, requires_grad=True)  # one run, two networks, 56 rows
    targets = torch.randint(0, 10, (1, 56))
    assert keep_rate(2, 0.3) * 56 == pytest.approx(52.64)
    total, logged = step(logits, targets, 2, None, None)
    # n_keep = round(52.64) = 53 (the official train_ct), not int() = 52
    total.backward()
    used = (logits.grad[0, 0].abs().sum(1) > 0).sum().item()
    assert used == 53


def test_clothing1m_coteaching_reaches_its_forget_rate_within_the_epochs_run():
    from idnhelpers.clothing1m import PROTOCOL
    from idnhelpers.paper import CLOTHING1M_NOISE_RATE as NOISE_RATE, method_options
    from idnhelpers.steps import keep_rate

    t_k = method_options("clothing1m", "coteaching", n_epochs=PROTOCOL.n_epochs)["t_k"]
    assert keep_rate(PROTOCOL.n_epochs - 1, NOISE_RATE, t_k) == pytest.approx(1 - NOISE_RATE)
    assert keep_rate(PROTOCOL.n_epochs - 1, NOISE_RATE, 10) > 1 - NOISE_RATE  # the paper's T_k never gets there


def test_clothing1m_evaluation_squashes_the_whole_image_as_the_official_code(tmp_path):
    from PIL import Image

    from idnhelpers.clothing1m import ImageFiles, StreamSource

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :4] = 255  # a white stripe at the left edge, lost by a centre crop
    (tmp_path / "clothing1m").mkdir()
    Image.fromarray(pixels).save(tmp_path / "clothing1m" / "a.png")
    for squash, stripe_kept in ((True, True), (False, False)):
        files = ImageFiles(("a.png",), str(tmp_path), squash=squash, workers=0)
        x = next(StreamSource(files, torch.device("cpu")).eval_batches())
        assert x.shape == (1, 3, 224, 224)
        assert (x[0, :, :, 0].mean() > 1.0) == stripe_kept  # normalised white is about 2.2


def test_the_official_wide_resnet_variant():
    from idnhelpers.models import build_model

    official = build_model("wrn28_10_official", 10, (3, 32, 32))
    ours = build_model("wrn28_10", 10, (3, 32, 32))
    convs = [m for m in official.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs) and all(
        c.bias is None for c in ours.modules() if isinstance(c, torch.nn.Conv2d))
    assert official.features[-3].momentum == 0.9 and ours.features[-3].momentum == 0.1
    block = official.features[5]  # first block of stage 2: 160 -> 320 channels, stride 2
    assert (block.conv1.stride, block.conv2.stride, block.shortcut.stride) == ((1, 1), (2, 2), (2, 2))
    # parameters of the official network: ours plus one bias per convolution (its BatchNorms are the same)
    assert sum(p.numel() for p in official.parameters()) == sum(p.numel() for p in ours.parameters()) + sum(
        c.out_channels for c in convs)
    x = torch.randn(2, 3, 32, 32)
    assert official(x).shape == (2, 10)


def test_fresh_optimizer_each_epoch_resets_momentum_only():
    X, y = load_dataset("digits")
    base = protocol("digits", n_epochs=3)

    def S(**changes):
        run = make_run(X[:400], y[:400], base.replace(**changes), dataset="digits")
        return engine.train(run, use_cache=False).S

    assert not torch.equal(S(), S(fresh_optimizer=True))  # momentum 0.5 restarts each epoch
    assert torch.equal(S(momentum=0.0), S(momentum=0.0, fresh_optimizer=True))  # nothing else changes


@pytest.fixture(scope="module")
def noisy_digits():
    from idnhelpers.noise import symmetric_noise

    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return X, symmetric_noise(y, 0.4, 10, seed=0), dict(dataset="digits", X_test=Xt, y_test=yt, X_val=Xt[:150],
                                                       y_val=yt[:150], use_cache=False)


def spy_fit(monkeypatch):
    calls, real_fit = [], engine.fit

    def spy(runs, device, stacked=False, **kwargs):
        results = real_fit(runs, device, stacked, **kwargs)
        calls.append((runs[0], results[0]))
        return results

    monkeypatch.setattr(engine, "fit", spy)
    return calls


def test_forward_and_dmi_start_from_the_validation_selected_ce_model(noisy_digits, monkeypatch):
    X, y_noisy, cell = noisy_digits
    calls = spy_fit(monkeypatch)
    proto = protocol("digits", n_epochs=6)
    forward = run_method("forward", X, y_noisy, proto, **cell)
    ce = forward.stages[0]
    chosen = 1 + max(range(6), key=ce.history["val_acc"].__getitem__)
    assert ce.best_epoch == chosen  # T comes from this model, not the last epoch's
    dmi = run_method("dmi", X, y_noisy, proto, lr=0.01, n_epochs=1, **cell)
    dmi_run = next(run for run, _ in calls if run.label == "DMI")
    assert dmi_run.init.fingerprint == Weights(dmi.stages[0].weights).fingerprint
    assert dmi.stages[0].best_epoch == chosen


def test_dmi_offers_the_ldmi_authors_mnist_setting(noisy_digits, monkeypatch):
    from idnhelpers.methods import LDMI_MNIST

    X, y_noisy, cell = noisy_digits
    calls = spy_fit(monkeypatch)
    run_method("dmi", X[:300], y_noisy[:300], protocol("digits", n_epochs=1), **{**LDMI_MNIST, "n_epochs": 1}, **cell)
    dmi_run = next(run for run, _ in calls if run.label == "DMI")
    assert (dmi_run.protocol.optimizer, dmi_run.protocol.lr) == ("adam", 1e-4)
    assert LDMI_MNIST["n_epochs"] == 20


def test_dac_second_stage_retrains_without_the_abstained_instances(noisy_digits, monkeypatch):
    from idnhelpers.engine import predict

    X, y_noisy, cell = noisy_digits
    calls = spy_fit(monkeypatch)
    result = run_method("dac", X, y_noisy, protocol("digits", n_epochs=8), warmup_epochs=1,
                        retrain_without_abstained=True, **cell)
    dac_run, dac_result = calls[0]
    abstained = predict(dac_run, dac_result.weights, all_outputs=True).argmax(1) == 10
    assert 0 < int(abstained.sum()) < len(X)  # some instances are dropped, not all
    assert len(result.stages) == 2 and result.final.S.shape == (len(X) - int(abstained.sum()), 10)
    assert calls[1][0].objective == losses.CrossEntropy()
    assert len(run_method("dac", X[:300], y_noisy[:300], protocol("digits", n_epochs=2), warmup_epochs=1,
                          **cell).stages) == 1  # Table 1's protocol: the single DAC stage


def test_fit_accuracy_is_the_running_accuracy_of_the_batches_as_trained():
    X, y = load_dataset("digits")
    frozen = protocol("digits", n_epochs=1, lr=1e-12)  # the weights do not move: running = after-epoch accuracy
    h = engine.train(make_run(X, y, frozen, dataset="digits"), use_cache=False).history
    assert h["fit_acc"][0] == pytest.approx(h["train_acc"][0], abs=1 / len(y))
    h = engine.train(make_run(X, y, protocol("digits", n_epochs=3), dataset="digits"), use_cache=False).history
    assert all(0 < a < 1 for a in h["fit_acc"]) and h["fit_acc"][0] < h["train_acc"][0]  # it lags while learning


def test_average_epochs_averages_only_the_first_epochs():
    X, y = load_dataset("digits")
    p = protocol("digits", n_epochs=3)
    full = engine.train(make_run(X[:300], y[:300], p, dataset="digits"), use_cache=False)
    first = engine.train(make_run(X[:300], y[:300], p, dataset="digits", average_epochs=1), use_cache=False)
    one = engine.train(make_run(X[:300], y[:300], p.replace(n_epochs=1), dataset="digits"), use_cache=False)
    assert torch.equal(first.S, one.S) and not torch.equal(first.S, full.S)
    from idnhelpers.paper import CLOTHING1M_DMI

    assert CLOTHING1M_DMI["average_epochs"] == 5  # Clothing1M's SEAL (DMI) starts from DMI's first 5 epochs


def test_forwards_T_error_against_the_true_transition_matrix():
    from idnhelpers.grid import Cell
    from idnhelpers.results import T_error
    from idnhelpers.noise import symmetric_matrix, symmetric_noise

    X, y = load_dataset("digits")
    y_noisy = symmetric_noise(y, 0.4, 10, seed=0)
    cell = Cell("digits", "forward", "symmetric", "0.4", 0.4, 0, make_run(X, y_noisy, protocol("digits"), dataset="digits",
                                                             y_true=y))
    assert T_error(cell, symmetric_matrix(0.4, 10)) < 0.02  # exact-rate CCN: its M up to per-class rounding
    assert T_error(cell, torch.eye(10)) == pytest.approx(2 * 0.4 / 10, abs=0.01)
    assert math.isnan(T_error(cell, None))


def test_test_sets_are_scored_in_eval_mode_even_without_softmax_recording():
    """Clothing1M's runs record no S; their test and validation passes must not move BatchNorm."""
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.integers(0, 256, (32, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 10, 32)).long()
    p = protocol("cifar10", n_epochs=1, model="wrn16_2", batch_size=16)
    a, b = (engine.train(make_run(X, y, p, dataset="cifar10", X_test=X[:16], y_test=y[:16], record_softmax=r),
                         use_cache=False) for r in (True, False))
    assert a.history["test_acc"] == b.history["test_acc"]
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name


class _MeanLogit(torch.nn.Module):
    """Two classes, logits (mean of the input, 0): every LASS step lowers the mean by alpha."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.steps = 0

    def forward(self, x):
        self.steps += int(x.requires_grad)  # one gradient pass per LASS iteration and batch
        s = x.flatten(1).mean(1) + 0 * self.anchor
        return torch.stack([s, torch.zeros_like(s)], 1)


def _flip_at_steps(steps_and_counts, std):
    """uint8 MNIST-shaped images whose mean-logit model flips at the given 1-based LASS step (alpha =
    1/255 in pixel units, no noise): pixel value 33 + j sits (j - 1/3)/255 above MNIST's mean."""
    values = [33 + j for j, count in steps_and_counts for _ in range(count)]
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()


def test_lass_stops_when_an_iteration_finds_fewer_than_20_new_critical_samples():
    from idnhelpers.csr import critical_samples

    X = _flip_at_steps([(j, 25) for j in range(1, 9)] + [(12, 25)], get_dataset("mnist").std[0])
    model = _MeanLogit()
    found = critical_samples(model, X, dataset="mnist", radius=50 / 255, alpha=1 / 255, beta=0.0, batch_size=10_000)
    assert model.steps == 9  # iterations 1-8 find 25 each, the 9th finds none: converged
    assert int(found.sum()) == 200 and not found[-25:].any()  # the step-12 group is never reached


def test_lass_runs_at_most_100_iterations_and_the_official_search_exactly_10():
    from idnhelpers.csr import critical_samples

    X = _flip_at_steps([(j, 21) for j in range(1, 106)], get_dataset("mnist").std[0])
    model = _MeanLogit()
    found = critical_samples(model, X, dataset="mnist", radius=200 / 255, alpha=1 / 255, beta=0.0, batch_size=10_000)
    assert model.steps == 100 and int(found.sum()) == 100 * 21
    model.steps = 0
    critical_samples(model, X[:21], dataset="mnist", radius=200 / 255, alpha=1e-6, beta=0.0, search="official")
    assert model.steps == 10  # nothing found, no convergence stop: all 10 official iterations
    with pytest.raises(ValueError, match="search"):
        critical_samples(model, X, dataset="mnist", search="arpit")


def test_truncated_gce_prunes_the_instances_below_k_on_its_schedule():
    spec = losses.TruncatedGCE(prune_start=3, prune_every=2)
    loss = spec.make([spec], 3, 10)  # one run: its K axis of stacked runs has length 1
    labels = torch.tensor([[0, 1, 2, 0]])
    softmax = torch.tensor([[[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]])
    for epoch in range(6):
        loss.before_epoch(epoch, lambda: softmax, labels)
    assert loss.pruned_at == [3, 5]  # before 1-based epochs 4 and 6
    assert loss.weights.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # f_y > k = 0.5 only (0.5 itself is pruned)
    logits = torch.log(softmax)
    expected = (1 - 0.9 ** 0.7) / 0.7 - (1 - 0.5 ** 0.7) / 0.7 + (1 - 0.6 ** 0.7) / 0.7 - (1 - 0.5 ** 0.7) / 0.7
    assert float(loss(logits, labels, 6, torch.arange(4)[None])) == pytest.approx(expected / 4)
    with pytest.raises(ValueError, match="k="):
        losses.TruncatedGCE(k=1.0)


def test_truncated_gce_trains_as_gce_until_it_prunes_then_departs():
    X, y = load_dataset("digits")
    p = protocol("digits", n_epochs=4)
    gce = run_method("gce", X, y, p, dataset="digits", X_test=X, y_test=y, use_cache=False).final
    late = run_method("gce_truncated", X, y, p, dataset="digits", X_test=X, y_test=y, use_cache=False,
                      prune_start=4).final  # prunes once, before the last epoch
    early = run_method("gce_truncated", X, y, p, dataset="digits", X_test=X, y_test=y, use_cache=False,
                       prune_start=2, prune_every=1).final
    assert late.history["test_acc"][:3] == gce.history["test_acc"][:3]  # L_q - L_q(k): same gradients as L_q
    with pytest.raises(ValueError, match="prune_start=5"):
        run_method("gce_truncated", X, y, p, dataset="digits", prune_start=5)
    assert early.history["test_acc"][:1] == gce.history["test_acc"][:1]  # first pruning: before epoch 2
    assert early.history["test_acc"][1:] != gce.history["test_acc"][1:]
