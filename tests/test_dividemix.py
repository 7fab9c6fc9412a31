"""DivideMix equal to a re-implementation of its authors' training step (LiJunnan1992/DivideMix,
Train_cifar.py: ``train``, ``eval_train``, ``linear_rampup``) on small inputs, its settings by the
paper's Table 7, and runs that resume and beat chance on real data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from idnhelpers.datasets import get_dataset, load_dataset, protocol
from idnhelpers.dividemix import DivideMix, clean_probability, co_guess, co_refine, dividemix, mixmatch_loss
from idnhelpers.lossparts import rampup
from idnhelpers.engine import train_many
from idnhelpers.methods import run_method
from idnhelpers.noise import symmetric_noise
from idnhelpers.optim import SGD
from idnhelpers.runs import make_run


def authors_step(net, net2, x, x2, u, u2, labels_x, w_x, l, idx, T, lambda_u, n_class):
    """The body of the authors' ``train`` loop for one batch, their operations in their order."""
    with torch.no_grad():
        pu = (torch.softmax(net(u), 1) + torch.softmax(net(u2), 1) + torch.softmax(net2(u), 1)
              + torch.softmax(net2(u2), 1)) / 4
        ptu = pu ** (1 / T)
        targets_u = ptu / ptu.sum(dim=1, keepdim=True)
        px = (torch.softmax(net(x), 1) + torch.softmax(net(x2), 1)) / 2
        labels = torch.zeros(len(x), n_class).scatter_(1, labels_x.view(-1, 1), 1)
        px = w_x.view(-1, 1) * labels + (1 - w_x.view(-1, 1)) * px
        ptx = px ** (1 / T)
        targets_x = ptx / ptx.sum(dim=1, keepdim=True)
    l = max(l, 1 - l)
    all_inputs, all_targets = torch.cat([x, x2, u, u2]), torch.cat([targets_x, targets_x, targets_u, targets_u])
    mixed_input = l * all_inputs + (1 - l) * all_inputs[idx]
    mixed_target = l * all_targets + (1 - l) * all_targets[idx]
    logits = net(mixed_input)
    b = len(x)
    Lx = -torch.mean(torch.sum(F.log_softmax(logits[:b * 2], dim=1) * mixed_target[:b * 2], dim=1))
    Lu = torch.mean((torch.softmax(logits[b * 2:], dim=1) - mixed_target[b * 2:]) ** 2)
    prior = torch.ones(n_class) / n_class
    penalty = torch.sum(prior * torch.log(prior / torch.softmax(logits, dim=1).mean(0)))
    return Lx + lambda_u * Lu + penalty


def test_the_mixmatch_loss_equals_the_authors_step():
    torch.manual_seed(0)
    net, net2 = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    x, x2, u, u2 = (torch.randn(5, 6) for _ in range(4))
    labels, w = torch.randint(0, 4, (5,)), torch.rand(5)
    idx, l, T, lambda_u = torch.randperm(20), 0.3, 0.5, 25.0 * 0.4
    expected = authors_step(net, net2, x, x2, u, u2, labels, w, l, idx, T, lambda_u, 4)
    with torch.no_grad():
        targets_u = co_guess([net(u).softmax(1), net(u2).softmax(1), net2(u).softmax(1), net2(u2).softmax(1)], T)
        targets_x = co_refine(F.one_hot(labels, 4).float(), w, net(x).softmax(1), net(x2).softmax(1), T)
    lam = max(l, 1 - l)
    inputs, targets = torch.cat([x, x2, u, u2]), torch.cat([targets_x, targets_x, targets_u, targets_u])
    ours = mixmatch_loss(net(lam * inputs + (1 - lam) * inputs[idx]), lam * targets + (1 - lam) * targets[idx], 10,
                         lambda_u)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours.item() > 0


def test_lambda_u_ramps_up_as_the_authors_linear_rampup():
    authors = lambda current, warm_up, lambda_u: lambda_u * float(np.clip((current - warm_up) / 16, 0.0, 1.0))  # noqa
    for current in (0.0, 9.5, 10.0, 10.25, 17.0, 26.0, 40.0):
        assert 25.0 * rampup(current - 10, 16) == authors(current, 10, 25.0)  # as DivideMix's mixmatch calls it
    assert 25.0 * rampup(18.0 - 10, 16) == 12.5


def test_the_clean_probability_is_the_authors_gmm_posterior_of_the_low_loss_component():
    g = torch.Generator().manual_seed(0)
    losses = torch.cat([0.1 * torch.rand(80, generator=g), 2 + torch.rand(20, generator=g)])
    normalised = (losses - losses.min()) / (losses.max() - losses.min())  # as eval_train
    w = clean_probability(normalised, seed=3)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=3)
    gmm.fit(normalised.double().reshape(-1, 1).numpy())
    expected = gmm.predict_proba(normalised.double().reshape(-1, 1).numpy())[:, gmm.means_.argmin()]
    assert torch.allclose(w, torch.from_numpy(expected).float())
    assert (w[:80] > 0.99).all() and (w[80:] < 0.01).all()


def dividemix_step(dataset, n_epochs, noise_rate, **options):
    """DivideMix's step for a run of ``dataset`` of ``n_epochs`` epochs (on two placeholder rows)."""
    X = torch.zeros(2, *get_dataset(dataset).input_shape, dtype=torch.uint8)
    run = make_run(X, torch.tensor([0, 1]), protocol(dataset, n_epochs=n_epochs), dataset=dataset)
    return dividemix(run, noise_rate, **options)["step"]


def test_settings_follow_the_papers_table_7():
    assert dividemix_step("cifar10", 300, 0.2).lambda_u == 0.0
    assert dividemix_step("cifar10", 300, 0.4).lambda_u == 25.0  # nearest listed rate: 50%
    assert dividemix_step("mnist", 300, 0.9).lambda_u == 50.0  # other data sets: CIFAR-10's
    assert dividemix_step("cifar100", 300, 0.5).lambda_u == 150.0
    assert dividemix_step("cifar10", 300, 0.9).p_threshold == 0.6
    assert dividemix_step("cifar10", 300, 0.5).p_threshold == 0.5
    assert dividemix_step("cifar10", 300, 0.5).warmup_epochs == 10
    assert dividemix_step("cifar100", 300, 0.5).warmup_epochs == 30
    assert dividemix_step("mnist", 75, 0.5).warmup_epochs == 25  # none published: a third (NOTES.md)
    assert dividemix_step("cifar10", 300, 0.9).loss_epochs == 5 and dividemix_step("cifar10", 300, 0.8).loss_epochs == 1
    assert dividemix_step("mnist", 30, None, lambda_u=5.0, p_threshold=0.5, loss_epochs=1).lambda_u == 5.0
    with pytest.raises(ValueError, match="noise_rate"):
        dividemix_step("mnist", 30, None)
    with pytest.raises(ValueError, match="lambda_u"):
        DivideMix(1, -1.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        dividemix_step("mnist", 5, 0.4, warmup_epochs=5)
    with pytest.raises(ValueError, match="warmup_epochs"):
        dividemix_step("mnist", 1, 0.4)  # at least one warm-up epoch: none left for MixMatch



def test_sgd_leaves_a_parameter_without_gradient_as_torch_does():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a2, b2 = (torch.nn.Linear(3, 2) for _ in range(2))
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    ours = SGD([*a.parameters(), *b.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    theirs = torch.optim.SGD([*a2.parameters(), *b2.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(4, 3)
    for trained, trained2 in [(a, a2), (a, a2), (b, b2), (a, a2), (b, b2)]:  # one network a step, as DivideMix
        for net, opt in [(trained, ours), (trained2, theirs)]:
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip([*a.parameters(), *b.parameters()], [*a2.parameters(), *b2.parameters()]):
        assert torch.equal(p, q)


@pytest.fixture(scope="module")
def digits():
    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return X, y, symmetric_noise(y, 0.4, 10, seed=0), Xt, yt


def test_dividemix_beats_chance_and_trains_both_networks(digits):
    X, y, y_noisy, Xt, yt = digits
    r = run_method("dividemix", X, y_noisy, protocol("digits", n_epochs=6), dataset="digits", X_test=Xt, y_test=yt,
                   noise_rate=0.4, use_cache=False, warmup_epochs=2)
    h = r.history
    assert h["test_acc"][-1] > 0.6  # chance: 0.1
    assert h["loss"][2] != pytest.approx(h["loss"][1], rel=0.05)  # the MixMatch epochs' loss, not the warm-up's


def test_dividemix_runs_do_not_stack_and_equal_their_runs_alone(digits):
    X, y, y_noisy, Xt, yt = digits
    step = DivideMix(warmup_epochs=1, lambda_u=25.0, loss_epochs=2)
    runs = [make_run(X, y_noisy, protocol("digits", n_epochs=3), dataset="digits", seed=s, step=step, X_test=Xt,
                     y_test=yt) for s in (0, 1)]
    stacked, alone = train_many(runs, backend="stacked", use_cache=False), train_many(runs, use_cache=False)
    for a, b in zip(stacked, alone):
        assert torch.equal(a.S, b.S) and a.history == b.history
        assert a.hardware["stacked_runs"] == 1
