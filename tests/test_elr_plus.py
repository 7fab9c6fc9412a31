"""ELR+ (idnhelpers.elr_plus): its loss, targets, ramps and weight averaging equal re-implementations of
the authors' ELR_plus code; whole epochs equal their one-process training loop; it learns the digits
and resumes bit for bit."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idnhelpers import cache, checkpoint, methods, training
from idnhelpers.datasets import protocol
from idnhelpers.elr_plus import ELRPlus, ema_momentum, ema_update_, scaled_ramp
from idnhelpers.engine import train_many
from idnhelpers.losses import elr_loss, elr_update
from idnhelpers.lossparts import mix, rampup
from idnhelpers.runs import Tensors, make_run


# ---------------------------------------------------------------- the authors' code, re-implemented

def authors_sigmoid_rampup(current, rampup_length):
    """ELR_plus ``utils/util.py`` ``sigmoid_rampup``."""
    if rampup_length == 0:
        return 1.0
    current = np.clip(current, 0.0, rampup_length)
    phase = 1.0 - current / rampup_length
    return float(np.exp(-5.0 * phase * phase))


class AuthorsLoss:
    """ELR_plus ``model/loss.py`` ``elr_plus_loss`` (config values passed in; ``correct``: its
    ``num_classes == 100`` branch)."""

    def __init__(self, num_examp, num_classes, beta, lam, coef_step, correct=False):
        self.pred_hist = torch.zeros(num_examp, num_classes)
        self.q, self.beta, self.lam, self.coef_step, self.correct = 0, beta, lam, coef_step, correct

    def forward(self, iteration, output, y_labeled):
        y_pred = torch.clamp(F.softmax(output, dim=1), 1e-4, 1.0 - 1e-4)
        if self.correct:
            y_labeled = y_labeled * self.q
            y_labeled = y_labeled / y_labeled.sum(dim=1, keepdim=True)
        ce_loss = torch.mean(-torch.sum(y_labeled * F.log_softmax(output, dim=1), dim=-1))
        reg = (1 - (self.q * y_pred).sum(dim=1)).log().mean()
        return ce_loss + authors_sigmoid_rampup(iteration, self.coef_step) * (self.lam * reg)

    def update_hist(self, out, index, mix_index, mixup_l):
        y_pred_ = F.softmax(out, dim=1)
        self.pred_hist[index] = self.beta * self.pred_hist[index] + (1 - self.beta) * y_pred_ / y_pred_.sum(
            dim=1, keepdim=True)
        self.q = mixup_l * self.pred_hist[index] + (1 - mixup_l) * self.pred_hist[index][mix_index]


def authors_update_ema(model, model_ema, global_step, alpha_, ema_step):
    """ELR_plus ``trainer/trainer.py`` ``update_ema_variables`` (``ema_step`` None: ``ema_update`` false)."""
    if ema_step is not None:
        alpha = authors_sigmoid_rampup(global_step + 1, ema_step) * alpha_
    else:
        alpha = min(1 - 1 / (global_step + 1), alpha_)
    for ema_param, param in zip(model_ema.parameters(), model.parameters()):
        ema_param.data.mul_(alpha).add_(param.data, alpha=1 - alpha)


# ---------------------------------------------------------------- parts

@pytest.mark.parametrize("correct", [False, True])
def test_loss_and_targets_equal_the_authors_over_several_batches(correct):
    g = torch.Generator().manual_seed(0)
    n, c, beta, lam, coef_step = 20, 5, 0.7, 3.0, 6
    theirs, ours = AuthorsLoss(n, c, beta, lam, coef_step, correct), torch.zeros(n, c)
    labels = torch.randint(0, c, (n,), generator=g)
    for it in range(1, 9):
        rows, mix_l = torch.randperm(n, generator=g)[:6], 0.5 + 0.5 * float(torch.rand(1, generator=g))
        perm, teacher = torch.randperm(6, generator=g), torch.randn(6, c, generator=g)
        logits = torch.randn(6, c, generator=g, requires_grad=True)
        y_mixed = mix(F.one_hot(labels[rows], c).float(), mix_l, perm)
        theirs.update_hist(teacher, rows, perm, mix_l)
        b = theirs.forward(it, logits, y_mixed)
        ours[rows] = elr_update(ours[rows], F.softmax(teacher, 1), beta)
        q = mix(ours[rows], mix_l, perm)
        targets = y_mixed * q / (y_mixed * q).sum(-1, keepdim=True) if correct else y_mixed
        a = elr_loss(logits, targets, q, lam * rampup(it, coef_step, sigmoid=True))  # ELR+'s: on mixed labels
        assert a.item() == pytest.approx(b.item(), abs=1e-6)
        assert torch.allclose(torch.autograd.grad(a, logits)[0], torch.autograd.grad(b, logits)[0], atol=1e-6)
    assert torch.allclose(ours, theirs.pred_hist, atol=1e-7)


def test_with_one_hot_targets_the_loss_is_elr():
    g = torch.Generator().manual_seed(3)
    logits, t = torch.randn(7, 4, generator=g), F.softmax(torch.randn(7, 4, generator=g), 1)
    y = torch.randint(0, 4, (7,), generator=g)
    assert float(elr_loss(logits, F.one_hot(y, 4).float(), t, 3.0)) == pytest.approx(
        float(elr_loss(logits, y, t, 3.0)), abs=1e-6)


def test_ramps_and_weight_averaging_equal_the_authors():
    for t in (0, 1, 7, 39, 40, 41, 1000):
        for length in (0, 40, 40000):
            assert rampup(t, length, sigmoid=True) == pytest.approx(authors_sigmoid_rampup(t, length), rel=1e-12)
    assert rampup(0, 40, sigmoid=True) == pytest.approx(np.exp(-5)) and rampup(40, 40, sigmoid=True) == 1.0
    torch.manual_seed(0)
    for ema_step in (40, None):
        net, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        ours = [p.detach().clone() for p in ema.parameters()]
        for t in (1, 2, 30, 100):
            authors_update_ema(net, ema, t, 0.997, ema_step)
            ema_update_(ours, [p.detach() for p in net.parameters()], ema_momentum(t, 0.997, ema_step))
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(ours, ema.parameters()))
    assert ema_momentum(5, 0.997, None) == pytest.approx(5 / 6) and ema_momentum(10 ** 6, 0.997, None) == 0.997
    assert scaled_ramp(45000, 128, 200) == 40000 and scaled_ramp(4000, 64, 50) == 1790  # theirs; MNIST's 4,000 rows


# ---------------------------------------------------------------- whole epochs against the authors' loop

def authors_one_process(run, spec, X, Xt):
    """ELR_plus's one-process ``BaseTrainer.train`` (warm-up 0) with ``Trainer._train_epoch`` and
    ``_test_epoch``, on the engine's two initial networks, with every draw from the run's generator in
    the engine's order: per network epoch a batch order, then per batch the Beta seed and mixup's permutation."""
    proto, c = run.protocol, run.n_classes
    nets = training.init_networks(run, torch.device("cpu"))
    emas = [copy.deepcopy(m).requires_grad_(False) for m in nets]
    losses = [AuthorsLoss(len(X), c, spec.beta, spec.lam, spec.coef_step, spec.label_correction) for _ in nets]
    opts = [torch.optim.SGD(m.parameters(), lr=proto.lr, momentum=proto.momentum) for m in nets]
    g, y, global_step, test_acc = torch.Generator().manual_seed(run.seed), run.targets, 0, []
    for epoch in range(proto.n_epochs):
        for k in (0, 1):
            model, model_ema, other_ema = nets[k], emas[k], emas[1 - k]
            model.train(), model_ema.train()
            local_step = 0
            for idx in torch.randperm(len(X), generator=g).split(proto.batch_size):
                data, target = X[idx], F.one_hot(y[idx], c).float()
                lam = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=g))).beta(
                    spec.mixup_alpha, spec.mixup_alpha)
                lam = max(lam, 1 - lam)
                mix_index = torch.randperm(len(idx), generator=g)
                output = model(lam * data + (1 - lam) * data[mix_index])
                losses[k].update_hist(other_ema(data).detach(), idx, mix_index, lam)
                local_step += 1
                loss = losses[k].forward(global_step + local_step, output, lam * target + (1 - lam) * target[mix_index])
                opts[k].zero_grad()
                loss.backward()
                opts[k].step()
                authors_update_ema(model, model_ema, global_step + local_step, spec.ema_alpha, spec.ema_step)
        global_step += local_step
        with torch.no_grad():
            nets[0].eval(), nets[1].eval()
            test_acc.append((0.5 * (nets[0](Xt) + nets[1](Xt))).argmax(1))
    return nets[0], test_acc


@pytest.mark.parametrize("spec", [ELRPlus(ema_step=50), ELRPlus(beta=0.9, lam=7.0, mixup_alpha=0.5, ema_alpha=0.99,
                                                                  ema_step=None, coef_step=40, label_correction=True)])
def test_epochs_equal_the_authors_one_process_loop(digits, spec):
    X, y, y_noisy, Xt, yt = digits
    run = make_run(X, y_noisy, protocol("digits", n_epochs=3), dataset="digits", X_test=Xt, y_test=yt, step=spec,
                   seed=4)
    (result,) = train_many([run], use_cache=False)
    source = run.data.source(torch.device("cpu"))
    net1, predictions = authors_one_process(run, spec, source.normalized, Tensors(Xt, "digits").source(
        torch.device("cpu")).normalized)
    for name, value in net1.state_dict().items():
        assert torch.allclose(result.weights[name], value, atol=1e-6), name  # equal up to exp's last bit
    theirs = [float((p == yt).float().mean()) for p in predictions]
    assert result.history["test_acc"] == pytest.approx(theirs, abs=1.5 / len(yt))  # at most one row apart


# ---------------------------------------------------------------- on the digits, through the engine

def test_elr_plus_learns_the_digits_and_its_targets_find_the_true_labels(digits, monkeypatch):
    X, y, y_noisy, Xt, yt = digits
    made = []
    real_make = ELRPlus.make
    monkeypatch.setattr(ELRPlus, "make", classmethod(lambda cls, specs: made.append(real_make(specs)) or made[-1]))
    r = methods.run_method("elr_plus", X, y_noisy, protocol("digits", n_epochs=6), dataset="digits", X_test=Xt,
                           y_test=yt, y_true=y, use_cache=False, ema_step=100).final
    assert r.history["test_acc"][-1] > 0.8  # chance: 0.1; 30% of the labels wrong
    assert r.history["loss"][-1] < r.history["loss"][0]
    wrong = y_noisy != y
    t = made[0].targets.argmax(-1)[:, wrong]  # each network's targets on the rows with a wrong label
    assert ((t == y[wrong]).float().mean(1) > 0.7).all()  # mostly the true label,
    assert ((t == y_noisy[wrong]).float().mean(1) < 0.2).all()  # rarely the wrong one
    assert made[0].steps == 6 * -(-len(X) // 64)  # one network's steps: 6 epochs of 64-row batches


def test_bad_options_are_refused_by_name():
    for option, value in (("beta", 1.0), ("lam", -1.0), ("mixup_alpha", -0.5), ("ema_alpha", 1.0),
                          ("ema_step", 2.5), ("coef_step", -1), ("label_correction", 1)):
        with pytest.raises(ValueError, match=f"{option}="):
            ELRPlus(**{option: value})
    with pytest.raises(ValueError, match="n_rows=0"):
        scaled_ramp(0, 64, 50)
    assert methods.METHODS["elr_plus"].options == dict(beta=0.7, lam=3.0, mixup_alpha=1.0, ema_alpha=0.997,
                                                       ema_step=40000, coef_step=0, label_correction=False)


def test_a_stopped_run_resumes_to_the_uninterrupted_result(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IDNHELPERS_CHECKPOINT_SECONDS", "0")  # a checkpoint after every epoch
    X, y, y_noisy, Xt, yt = digits
    run = make_run(X, y_noisy, protocol("digits", n_epochs=4), dataset="digits", y_true=y, X_test=Xt, y_test=yt,
                   step=ELRPlus(ema_step=30, coef_step=30))
    (uninterrupted,) = train_many([run], use_cache=False)
    key, real_save = checkpoint.checkpoint_key([run], False), cache.save

    def save_then_die(k, payload, *suffix):
        real_save(k, payload, *suffix)
        if k == key and payload["epoch"] == 2:
            raise KeyboardInterrupt("killed")  # as a process dies: after its checkpoint

    monkeypatch.setattr(cache, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_many([run])
    monkeypatch.setattr(cache, "save", real_save)
    stored = cache.load(key, checkpoint.SUFFIX)
    assert stored["epoch"] == 2 and stored["step_state"]["steps"] == 2 * -(-len(X) // 64)
    capsys.readouterr()
    (resumed,) = train_many([run])
    assert "resuming after epoch 2 of 4" in capsys.readouterr().err  # not trained again from epoch 0
    assert json.dumps(resumed.history) == json.dumps(uninterrupted.history) and torch.equal(resumed.S, uninterrupted.S)
    assert all(torch.equal(resumed.weights[k], uninterrupted.weights[k]) for k in resumed.weights)
