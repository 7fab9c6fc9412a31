"""SOP and SOP+ (idnhelpers.sop): the loss and the u, v updates equal a re-implementation of the
authors' code, short runs learn the digits and grow u on the corrupted rows, stacked runs equal runs
one by one, and stopped runs resume to the uninterrupted result."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_resume import digits_run, private_cache, stop_and_resume  # noqa: F401 (a fixture)

from idnhelpers import checkpoint, engine
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.methods import run_method, run_methods
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import make_run
from idnhelpers.sop import SOP, TwoViews, consistency, cutout


class AuthorsSOP(torch.nn.Module):
    """shengliu66/SOP ``model/loss.py`` ``overparametrization_loss``, re-implemented (CPU, its
    init_param's N(0, std^2) drawn from a generator), with ``train.py``'s SGD on u and v."""

    def __init__(self, num_examp, num_classes, ratio_consistency, ratio_balance, std, seed, lr_u, lr_v):
        super().__init__()
        self.num_classes, self.ratio_consistency, self.ratio_balance = num_classes, ratio_consistency, ratio_balance
        self.u = torch.nn.Parameter(torch.empty(num_examp, 1))
        self.v = torch.nn.Parameter(torch.empty(num_examp, num_classes))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.u.normal_(0.0, std, generator=g)
            self.v.normal_(0.0, std, generator=g)
        self.optimizer = torch.optim.SGD([{"params": self.u, "lr": lr_u, "weight_decay": 0},
                                          {"params": self.v, "lr": lr_v, "weight_decay": 0}], lr=1, momentum=0)

    def forward(self, index, outputs, label):
        output, output2 = torch.chunk(outputs, 2) if len(outputs) > len(index) else (outputs, None)
        eps = 1e-4
        U_square = torch.clamp(self.u[index] ** 2 * label, 0, 1)
        V_square = torch.clamp(self.v[index] ** 2 * (1 - label), 0, 1)
        prediction = torch.clamp(F.softmax(output, dim=1) + U_square - V_square.detach(), min=eps)
        prediction = torch.clamp(F.normalize(prediction, p=1, eps=eps), min=eps, max=1.0)
        label_one_hot = torch.zeros(len(output), self.num_classes).scatter_(1, output.detach().argmax(1).view(-1, 1), 1)
        MSE_loss = F.mse_loss(label_one_hot + U_square - V_square, label, reduction="sum") / len(label)
        loss = torch.mean(-torch.sum(label * torch.log(prediction), dim=-1)) + MSE_loss
        if self.ratio_balance > 0:
            avg_prediction = torch.clamp(torch.mean(prediction, dim=0), min=eps, max=1.0)
            prior = 1.0 / self.num_classes * torch.ones_like(avg_prediction)
            loss += self.ratio_balance * torch.mean(-(prior * torch.log(avg_prediction)).sum(dim=0))
        if output2 is not None and self.ratio_consistency > 0:
            kl = F.kl_div(F.log_softmax(output2, dim=1), F.softmax(output, dim=1).detach(), reduction="none")
            loss += self.ratio_consistency * torch.mean(torch.sum(kl, dim=1))
        return loss


@pytest.mark.parametrize("ratio_consistency, ratio_balance", [(0.0, 0.0), (0.9, 0.1)])
def test_sop_equals_the_authors_loss_and_updates_over_several_batches(ratio_consistency, ratio_balance):
    g = torch.Generator().manual_seed(0)
    n, c, b = 12, 4, 5
    spec = SOP(lr_u=3.0, lr_v=2.0, init_std=0.7, ratio_balance=ratio_balance, init_seed=5)  # std 0.7: clamps bite
    ours = SOP.make([spec], c, 5)
    theirs = AuthorsSOP(n, c, ratio_consistency, ratio_balance, 0.7, 5, 3.0, 2.0)
    labels = torch.randint(0, c, (n,), generator=g)
    ours.before_epoch(0, None, labels[None])  # one run: its K axis of stacked runs has length 1
    assert torch.equal(ours.u[0], theirs.u.detach()) and torch.equal(ours.v[0], theirs.v.detach())
    for step in range(6):
        rows = torch.randperm(n, generator=g)[:b]
        logits = (2 * torch.randn(2 * b, c, generator=g)).requires_grad_()
        a = ours(logits[None, :b], labels[rows][None], step // 2, rows[None])
        if ratio_consistency:
            a = a + ratio_consistency * consistency(logits[None, :b], logits[None, b:])
        (a,) = a
        out = logits if ratio_consistency else logits[:b]
        theirs.optimizer.zero_grad()
        t = theirs(rows, out, F.one_hot(labels[rows], c).float())
        assert a.item() == pytest.approx(t.item() - ratio_balance * math.log(c), abs=1e-6)  # KL = their CE - log c
        (ga,) = torch.autograd.grad(a, logits, retain_graph=True)
        (gb,) = torch.autograd.grad(t, logits, retain_graph=True)
        assert torch.allclose(ga, gb, atol=1e-6)
        a.backward()
        ours.after_step()
        t.backward()
        theirs.optimizer.step()
        assert torch.allclose(ours.u[0], theirs.u.detach(), atol=1e-6)
        assert torch.allclose(ours.v[0], theirs.v.detach(), atol=1e-6)
    assert (ours.u[0] ** 2 > 1).any() and (ours.v[0] ** 2 < 1).any()  # both sides of the clamp were reached


def test_sop_loss_worked_example():
    # one row, 2 classes, label 0, logits 0: f = (0.5, 0.5); u = 0.5, v = (0, 1): U = (0.25, 0), V = (0, 1)
    loss = SOP.make([SOP()], 2, 1)
    loss.u, loss.v = torch.tensor([[[0.5]]]), torch.tensor([[[0.0, 1.0]]])
    (value,) = loss(torch.zeros(1, 1, 2), torch.tensor([[0]]), 0, torch.tensor([[0]]))
    # prediction (0.75, max(-0.5, 1e-4)) / (0.75 + 1e-4); argmax of f: class 0, so the MSE is 0.25^2 + 1
    expected = -math.log(0.75 / (0.75 + 1e-4)) + 0.25 ** 2 + 1.0
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_cutout_zeroes_the_clipped_square():
    x = torch.ones(2, 1, 8, 8)
    out = cutout(x, torch.tensor([[1, 4], [6, 4]]), 4)  # centres (1, 6) and (4, 4), half 2
    assert out[0, 0, :3, 4:].eq(0).all() and out[0].sum() == 64 - 3 * 4
    assert out[1, 0, 2:6, 2:6].eq(0).all() and out[1].sum() == 64 - 16


def test_u_grows_on_the_corrupted_rows(digits, monkeypatch):
    X, y, y_noisy, Xt, yt = digits
    made = []
    real_make = SOP.make
    monkeypatch.setattr(SOP, "make", classmethod(
        lambda cls, specs, c, e: made.append(real_make(specs, c, e)) or made[-1]))
    run = make_run(X, y_noisy, protocol("digits", n_epochs=8), dataset="digits",
                   objective=SOP(lr_u=100.0, lr_v=100.0), step=TwoViews())
    engine.train(run, use_cache=False)
    s = made[0].u[0, :, 0].cpu() ** 2
    corrupted = y_noisy != y
    grown = (s[corrupted] > 0.5).float().mean().item(), (s[~corrupted] > 0.5).float().mean().item()
    assert grown[0] > 0.9 and grown[1] < 0.15, grown  # measured: 0.99 of the corrupted rows, 0.06 of the clean
    assert s[corrupted].median() > 1 and s[~corrupted].median() < 1e-6  # from u^2 ~ 1e-16 at the start


@pytest.mark.parametrize("name", ["sop", "sop_plus"])
def test_stacked_runs_equal_runs_one_by_one(digits, name, monkeypatch):
    X, y, y_noisy, Xt, yt = digits
    label_sets = [y_noisy, symmetric_noise(y, 0.4, 10, seed=1)]
    cell = dict(dataset="digits", X_test=Xt, y_test=yt, use_cache=False, lr_u=30.0, lr_v=30.0)
    proto = protocol("digits", n_epochs=3)
    calls, real_fit = [], engine.fit
    monkeypatch.setattr(engine, "fit", lambda runs, device, stacked=False, **k: calls.append(
        (len(runs), stacked)) or real_fit(runs, device, stacked, **k))
    stacked = run_methods(name, X, label_sets, proto, seeds=[0, 1], backend="stacked", **cell)
    assert calls == [(2, True)]  # the two runs (their own u, v seeds) in one call
    for k, result in enumerate(stacked):
        alone = run_method(name, X, label_sets[k], proto, seed=k, **cell)
        assert (result.S - alone.S).abs().max() < 0.02
        assert result.history["test_acc"] == pytest.approx(alone.history["test_acc"], abs=0.01)
        assert result.history["loss"] == pytest.approx(alone.history["loss"], rel=0.01)
    assert not torch.allclose(stacked[0].S, stacked[1].S, atol=0.05)


CASES = {"sop": lambda: [digits_run(objective=SOP(lr_u=30.0, lr_v=30.0, init_std=1e-3))],
         "sop+ stacked": lambda: [digits_run(objective=SOP(30.0, 30.0, 1e-3, 0.1, seed), step=TwoViews(), seed=seed)
                                  for seed in (0, 1)]}


@pytest.mark.parametrize("name", list(CASES))
def test_a_stopped_run_resumes_to_the_uninterrupted_result(name, private_cache, monkeypatch, capsys):  # noqa: F811
    stop_and_resume(CASES[name](), 2, monkeypatch, capsys)


def test_a_run_stopped_within_an_epoch_resumes_to_the_uninterrupted_result(private_cache, monkeypatch,  # noqa: F811
                                                                          capsys):
    monkeypatch.setattr(checkpoint, "WITHIN_EPOCH_SECONDS", 0.0)
    stop_and_resume(CASES["sop"](), 6, monkeypatch, capsys, within=True)


def test_bad_options_name_the_parameter(digits):
    X, y, y_noisy, Xt, yt = digits
    with pytest.raises(ValueError, match="lr_u=0.0"):
        SOP(lr_u=0.0)
    with pytest.raises(ValueError, match="view='crop'"):
        TwoViews(view="crop")
    with pytest.raises(ValueError, match="ratio_consistency=-1"):
        TwoViews(ratio_consistency=-1.0)
    Xf, yf = load_dataset("wine")
    with pytest.raises(ValueError, match="view='shift'.*feature data set"):
        run_method("sop_plus", Xf, yf, protocol("wine", n_epochs=1), dataset="wine", view="shift", use_cache=False)


def test_second_views_are_shifted_copies_and_cifar_gets_cutout():
    from types import SimpleNamespace

    from idnhelpers.sop import second_view
    from idnhelpers.sources import TensorSource

    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    source = TensorSource(SimpleNamespace(X=X, dataset="cifar10"), torch.device("cpu"))
    training = SimpleNamespace(source=source, generators=[torch.Generator().manual_seed(1)])
    rows = torch.arange(6)[None]
    assert torch.equal(second_view(training, rows, "same"), source.normalized[rows])
    shifted = second_view(training, rows, "shift")[0]
    padded = F.pad(X.float(), (4, 4, 4, 4))
    for i in range(6):  # each view is the image moved by at most 4 pixels each way (crop of the padded image)
        crops = [source.normalize(padded[i:i + 1, :, dy:dy + 32, dx:dx + 32]) for dy in range(9) for dx in range(9)]
        assert any(torch.allclose(shifted[i:i + 1], c) for c in crops)
    cut = second_view(training, rows, "shift_flip_cutout")[0]
    zeros = (cut == 0).all(1).flatten(1).sum(1)  # pixels cut out: 8-16 rows by 8-16 columns (clipped)
    assert ((zeros >= 64) & (zeros <= 256)).all(), zeros
