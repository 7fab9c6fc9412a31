"""DAC scored as its authors score it; ELR and PLC equal to re-implementations of their authors' code."""

import math

import pytest
import torch
import torch.nn.functional as F

from idnhelpers import engine, training
from idnhelpers.datasets import protocol
from idnhelpers.losses import ELR, PLC, elr_loss, elr_update, lrt_correction
from idnhelpers.methods import run_method
from idnhelpers.runs import make_run


# ---------------------------------------------------------------- DAC

def test_a_dac_model_that_always_abstains_scores_zero(digits, monkeypatch):
    X, y, y_noisy, Xt, yt = digits
    real = training.init_networks

    def abstaining(run, device):  # every network outputs the abstention class, whatever it learns
        models = real(run, device)
        for m in models:
            last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
            last.register_forward_hook(lambda mod, inp, out: 0 * out + F.one_hot(
                torch.tensor(out.shape[1] - 1), out.shape[1]).to(out))
        return models

    monkeypatch.setattr(training, "init_networks", abstaining)
    r = run_method("dac", X, y_noisy, protocol("digits", n_epochs=2), dataset="digits", X_test=Xt, y_test=yt,
                   X_val=Xt[:100], y_val=yt[:100], warmup_epochs=1, use_cache=False)
    h = r.history
    assert h["test_acc"] == [0.0, 0.0] and h["val_acc"] == [0.0, 0.0]
    assert h["test_abstained"] == [1.0, 1.0] and h["val_abstained"] == [1.0, 1.0]
    assert all(math.isnan(a) for a in h["test_kept_acc"])


def test_dac_accuracy_is_the_kept_share_times_the_kept_accuracy(digits):
    X, y, y_noisy, Xt, yt = digits
    r = run_method("dac", X, y_noisy, protocol("digits", n_epochs=6), dataset="digits", X_test=Xt, y_test=yt,
                   warmup_epochs=1, use_cache=False)
    h = r.history
    for acc, abstained, kept in zip(h["test_acc"], h["test_abstained"], h["test_kept_acc"]):
        assert 0 <= abstained <= 1
        assert acc == pytest.approx((1 - abstained) * kept, abs=1e-6) if abstained < 1 else acc == 0
    assert h["test_abstained"][:2] == [0.0, 0.0]  # warm-up: cross-entropy over the 11 outputs never abstains here
    assert any(0 < a < 1 for a in h["test_abstained"])  # then alpha's ramp: it abstains on some, less as alpha rises
    assert h["test_abstained"][-1] < max(h["test_abstained"])
    assert h["test_acc"][-1] > 0.5  # beats chance (0.1) by far on the digits
    ce_run = make_run(X, y_noisy, protocol("digits", n_epochs=1), dataset="digits", X_test=Xt, y_test=yt)
    assert "test_abstained" not in engine.train(ce_run, use_cache=False).history  # only abstaining objectives


# ---------------------------------------------------------------- ELR

class AuthorsELR:
    """shengliu66/ELR ``ELR/model/loss.py`` ``elr_loss``, re-implemented (CPU, lambda passed in)."""

    def __init__(self, num_examp, num_classes, beta, lam):
        self.target = torch.zeros(num_examp, num_classes)
        self.beta, self.lam = beta, lam

    def forward(self, index, output, label):
        y_pred = F.softmax(output, dim=1)
        y_pred = torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)
        y_pred_ = y_pred.data.detach()
        self.target[index] = self.beta * self.target[index] + (1 - self.beta) * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))
        ce_loss = F.cross_entropy(output, label)
        elr_reg = ((1 - (self.target[index] * y_pred).sum(dim=1)).log()).mean()
        return ce_loss + self.lam * elr_reg


def test_elr_equals_the_authors_loss_over_several_batches():
    g = torch.Generator().manual_seed(0)
    n, c = 12, 4
    ours, theirs = ELR.make([ELR(beta=0.7, lam=3.0)], c, 5), AuthorsELR(n, c, 0.7, 3.0)
    labels = torch.randint(0, c, (n,), generator=g)
    ours.before_epoch(0, None, labels[None])  # one run: its K axis of stacked runs has length 1
    for step in range(6):
        rows = torch.randperm(n, generator=g)[:5]
        logits = torch.randn(5, c, generator=g, requires_grad=True)
        (a,) = ours(logits[None], labels[rows][None], step // 2, rows[None])
        b = theirs.forward(rows, logits, labels[rows])
        assert a.item() == pytest.approx(b.item(), abs=1e-6)
        (ga,) = torch.autograd.grad(a, logits)
        (gb,) = torch.autograd.grad(b, logits)
        assert torch.allclose(ga, gb, atol=1e-6)
    assert torch.allclose(ours.targets[0], theirs.target, atol=1e-7)


def test_elr_worked_example():
    # one instance, 2 classes, logits (0, log 3): p = (0.25, 0.75); t = 0.3 p (from zero); <t, p> = 0.3 * 0.625
    logits = torch.tensor([[0.0, math.log(3)]])
    t = elr_update(torch.zeros(1, 2), F.softmax(logits, 1), 0.7)
    assert torch.allclose(t, torch.tensor([[0.075, 0.225]]))
    expected = -math.log(0.25) + 3 * math.log(1 - 0.3 * 0.625)
    assert float(elr_loss(logits, torch.tensor([0]), t, 3.0)) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- PLC

def authors_lrt_correction(y_tilde, f_x, current_delta=0.3, delta_increment=0.1):
    """pxiangwu/PLC ``utils.py`` ``lrt_correction``, re-implemented (no printing)."""
    corrected_count = 0
    y_noise = torch.tensor(y_tilde).clone()
    n = len(y_noise)
    f_m = f_x.max(1)[0]
    y_mle = f_x.argmax(1)
    LR = [float(f_x[i][int(y_noise[i])] / f_m[i]) for i in range(n)]
    for i in range(n):
        if LR[i] < current_delta:
            y_noise[i] = y_mle[i]
            corrected_count += 1
    if corrected_count < 0.001 * n:
        current_delta = min(current_delta + delta_increment, 0.9)
    return y_noise, current_delta


@pytest.mark.parametrize("delta", [0.05, 0.3, 0.85])
def test_lrt_correction_equals_the_authors(delta):
    g = torch.Generator().manual_seed(1)
    f = F.softmax(3 * torch.randn(500, 6, generator=g), 1)
    y = torch.randint(0, 6, (500,), generator=g)
    ours, ours_delta = lrt_correction(y, f, delta, 0.1)
    theirs, theirs_delta = authors_lrt_correction(y.numpy().copy(), f, delta, 0.1)
    assert torch.equal(ours, theirs.long()) and ours_delta == pytest.approx(theirs_delta)


def test_lrt_correction_hand_example():
    f = torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    y = torch.tensor([1, 0, 2])  # ratios 0.8, 0.2857, 1
    corrected, delta = lrt_correction(y, f, 0.3, 0.1)
    assert corrected.tolist() == [1, 1, 2] and delta == 0.3  # one of 3 relabelled: >= 0.1%, delta stays
    corrected, delta = lrt_correction(y, f, 0.25, 0.1)
    assert corrected.tolist() == [1, 0, 2] and delta == pytest.approx(0.35)  # none: delta rises
    assert lrt_correction(f.argmax(1), f, 0.85, 0.1)[1] == 0.9  # none relabelled: 0.95, capped at 0.9


def test_plc_corrects_after_the_warm_up_with_the_window_mean():
    n, c = 6, 3
    loss = PLC.make([PLC(delta=0.5, warmup_epochs=1, window=2)], c, 4)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])  # one run: its K axis of stacked runs has length 1
    loss.before_epoch(0, None, labels)
    rows = torch.arange(n)[None]
    # epochs 0 and 1 both predict class 2 for rows 0-1 with a ratio of f_0 / f_2 < 0.5
    logits = torch.log(torch.tensor([[[0.1, 0.1, 0.8]] * 2 + [[0.1, 0.8, 0.1]] * 2 + [[0.1, 0.1, 0.8]] * 2]))
    for epoch in (0, 1):
        loss.before_epoch(epoch, None, labels)
        assert torch.equal(loss.labels, labels)  # no correction after epoch 0 (0 < warm-up 1)
        loss(logits, labels, epoch, rows)
    loss.before_epoch(2, None, labels)  # after epoch 1 >= warm-up: corrected
    assert loss.labels.tolist() == [[2, 2, 1, 1, 2, 2]] and loss.corrected_at == [1]
    expected = F.cross_entropy(logits[0], torch.tensor([2, 2, 1, 1, 2, 2]))
    assert float(loss(logits, labels, 2, rows)) == pytest.approx(float(expected))


def test_plc_schedule_and_checks():
    assert PLC().warmup(180) == 8 and PLC().warmup(50) == 8 and PLC().warmup(5) == 2 and PLC().warmup(2) == 0
    with pytest.raises(ValueError, match="warmup_epochs"):
        PLC(warmup_epochs=4).check(10, 5)
    with pytest.raises(ValueError, match="delta"):
        PLC(delta=0.0)
    with pytest.raises(ValueError, match="beta"):
        ELR(beta=1.0)


@pytest.mark.parametrize("name", ["elr", "plc", "sop", "sop_plus"])
def test_later_methods_learn_the_digits(digits, name):
    X, y, y_noisy, Xt, yt = digits
    r = run_method(name, X, y_noisy, protocol("digits", n_epochs=6), dataset="digits", X_test=Xt, y_test=yt,
                   use_cache=False)
    assert r.history["test_acc"][-1] > 0.8  # chance: 0.1; 30% of the labels wrong
    assert r.history["loss"][-1] < r.history["loss"][0]


def test_plc_relabels_towards_the_truth_on_the_digits(digits, monkeypatch):
    X, y, y_noisy, Xt, yt = digits
    run = make_run(X, y_noisy, protocol("digits", n_epochs=6), dataset="digits", objective=PLC(warmup_epochs=2))
    made = []
    real_make = PLC.make
    monkeypatch.setattr(PLC, "make", classmethod(lambda cls, specs, c, e: made.append(real_make(specs, c, e)) or made[-1]))
    engine.train(run, use_cache=False)
    plc = made[0]
    assert plc.corrected_at == [2, 3, 4]  # after epochs 2, 3 and 4 (the one after the last would change nothing)
    before, after = float((y_noisy == y).float().mean()), float((plc.labels[0].cpu() == y).float().mean())
    assert after > before + 0.1, (before, after)
    assert 0.3 <= float(plc.delta) <= 0.9
