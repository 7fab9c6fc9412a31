import importlib
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from idnhelpers import losses, methods
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.training import init_networks
from idnhelpers.noise import symmetric_noise
from idnhelpers.runs import make_run
from idnhelpers.sources import Normalizer
from idnhelpers.stats import anchor_transition_matrix
from idnhelpers.steps import keep_rate, small_loss_exchange


@pytest.fixture(scope="module")
def digits():
    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return X, symmetric_noise(y, 0.3, 10, seed=0), y, Xt, yt


def engine(digits, **kw):
    X, y_noisy, y, Xt, yt = digits
    return dict(dataset="digits", seed=0, y_true=y, X_test=Xt, y_test=yt, X_val=Xt[:100], y_val=yt[:100], **kw)


def init_model(proto, n_outputs, seed, state=None):
    """The network a digits run of ``proto`` starts from (or with ``state`` loaded)."""
    X, y = load_dataset("digits")
    objective = losses.DAC(warmup_epochs=0) if n_outputs == 11 else losses.CrossEntropy()
    run = make_run(X, y, proto, dataset="digits", seed=seed, objective=objective, init=state)
    return init_networks(run, torch.device("cpu"))[0]


def logits_of(state, X, n_outputs, proto):
    model = init_model(proto, n_outputs, 0, state).eval()
    with torch.no_grad():
        return model(Normalizer("digits", torch.device("cpu"))(X)).float()


ONE_EPOCH = protocol("digits", n_epochs=1)


def one_run_loss(objective, n_classes, n_epochs):
    """The objective's loss of a single run, on b x c logits (its K axis of stacked runs added and removed)."""
    loss = objective.make([objective], n_classes, n_epochs)
    return lambda logits, y, epoch: loss(logits[None], y[None], epoch, torch.arange(len(y))[None])[0]


@pytest.mark.parametrize("name, objective, options, min_acc", [
    ("ce", losses.CrossEntropy(), {}, 0.5),
    ("gce", losses.GCE(0.7), {}, 0.25),  # bounded, so slow to start, as GCE is known to be
    ("dac", losses.DAC(warmup_epochs=0), {"warmup_epochs": 0}, 0.25),
])
def test_loss_methods_lower_their_own_loss_in_one_epoch(digits, name, objective, options, min_acc):
    X, y_noisy = digits[:2]
    r = methods.run_method(name, X, y_noisy, ONE_EPOCH, **engine(digits), **options)
    n_out = 10 + objective.extra_outputs
    before = one_run_loss(objective, 10, 1)(logits_of(init_model(ONE_EPOCH, n_out, 0).state_dict(), X, n_out, ONE_EPOCH),
                                           y_noisy, 0)
    after = one_run_loss(objective, 10, 1)(logits_of(r.final.weights, X, n_out, ONE_EPOCH), y_noisy, 0)
    assert after < before - 0.02
    Xt, yt = digits[3:]
    # the real classes have learned (DAC may still abstain on every test instance after one epoch: an
    # abstention is an error in its test_acc, so its real classes are scored here directly)
    real_class = logits_of(r.final.weights, Xt, n_out, ONE_EPOCH)[:, :10].argmax(1)
    assert (real_class == yt).float().mean() > min_acc  # chance is 0.1
    if name != "dac":
        assert r.history["test_acc"][-1] == pytest.approx(float((real_class == yt).float().mean()), abs=0.003)


def test_forward_estimates_T_and_lowers_the_forward_loss(digits):
    X, y_noisy = digits[:2]
    r = methods.run_method("forward", X, y_noisy, ONE_EPOCH, **engine(digits))
    T = r.T
    assert T.shape == (10, 10) and torch.allclose(T.sum(1), torch.ones(10), atol=1e-4)
    loss = one_run_loss(losses.Forward(tuple(map(tuple, T.tolist()))), 10, 1)
    before = loss(logits_of(init_model(ONE_EPOCH, 10, 0).state_dict(), X, 10, ONE_EPOCH), y_noisy, 0)
    assert loss(logits_of(r.final.weights, X, 10, ONE_EPOCH), y_noisy, 0) < before - 0.05


def test_dmi_starts_from_ce_and_raises_the_determinant(digits):
    X, y_noisy = digits[:2]
    ce = methods.run_method("ce", X, y_noisy, ONE_EPOCH, **engine(digits)).final
    r = methods.run_method("dmi", X, y_noisy, ONE_EPOCH, lr=0.01, **engine(digits))
    assert torch.equal(r.stages[0].S, ce.S)  # DMI's first stage is the CE run
    loss = lambda state: losses.dmi_loss(logits_of(state, X, 10, ONE_EPOCH), y_noisy, 10, official=False)
    assert loss(r.final.weights) < loss(ce.weights) - 0.1
    # with the authors' tiny learning rate the CE weights barely move
    tiny = methods.run_method("dmi", X, y_noisy, ONE_EPOCH, **engine(digits))
    assert abs(float(loss(tiny.final.weights) - loss(ce.weights))) < 0.05


def test_coteaching_lowers_cross_entropy_of_both_networks(digits):
    X, y_noisy = digits[:2]
    proto = protocol("digits", n_epochs=2)
    r = methods.run_method("coteaching", X, y_noisy, proto, noise_rate=0.3, **engine(digits))
    before = F.cross_entropy(logits_of(init_model(proto, 10, 0).state_dict(), X, 10, proto), y_noisy)
    assert F.cross_entropy(logits_of(r.final.weights, X, 10, proto), y_noisy) < 0.8 * before
    assert r.history["test_acc"][-1] > 0.5


@pytest.mark.parametrize("name", ["seal", "seal_dmi"])
def test_seal_methods_fit_the_previous_average_softmax(digits, name):
    X, y_noisy = digits[:2]
    r = methods.run_method(name, X, y_noisy, ONE_EPOCH, n_iterations=1, **engine(digits))
    assert len(r.stages) == (2 if name == "seal" else 3) and r.history["test_acc"][-1] > 0.5
    prev = methods.run_method("ce" if name == "seal" else "dmi", X, y_noisy, ONE_EPOCH, **engine(digits)).S
    soft = lambda state: losses.soft_cross_entropy(logits_of(state, X, 10, ONE_EPOCH), prev)
    assert soft(r.final.weights) < soft(init_model(ONE_EPOCH, 10, 0).state_dict()) - 0.05


def test_forward_loss_is_cross_entropy_when_T_is_identity():
    logits, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    assert torch.allclose(losses.forward_loss(logits, y, torch.eye(10)), F.cross_entropy(logits, y), atol=1e-6)
    T = torch.full((10, 10), 0.1)  # all information destroyed: the loss no longer depends on the logits
    assert torch.allclose(losses.forward_loss(logits, y, T), torch.tensor(math.log(10)), atol=1e-5)


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero():
    logits, y = torch.randn(64, 10) * 3, torch.randint(0, 10, (64,))
    ce = F.cross_entropy(logits, y)
    gaps = [abs(float(losses.gce_loss(logits, y, q) - ce)) for q in (0.1, 0.01, 1e-4)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-2
    p_y = F.softmax(logits, 1)[torch.arange(64), y]
    assert torch.allclose(losses.gce_loss(logits, y, 1.0), (1 - p_y).mean())  # q = 1: MAE / 2
    with pytest.raises(ValueError, match="q=0"):
        losses.GCE(0.0)


def test_dmi_loss_is_finite_with_every_class_and_matches_the_official_form():
    torch.manual_seed(0)
    y = torch.arange(64) % 10
    logits = 3 * F.one_hot(y, 10) + torch.randn(64, 10)  # a network that has learnt something: det >> 0.001
    paper, official = losses.dmi_loss(logits, y, 10, official=False), losses.dmi_loss(logits, y, 10)
    assert math.isfinite(paper) and math.isfinite(official)
    # -log|det(O^T Y / N)| = -log|det(O^T Y)| + c log N, up to the official offset of 0.001
    assert float(paper) == pytest.approx(float(official) + 10 * math.log(64), abs=1e-3)
    missing = torch.where(y == 9, 0, y)  # a class absent from the batch: det = 0
    assert math.isinf(losses.dmi_loss(logits, missing, 10, official=False)) and math.isfinite(
        losses.dmi_loss(logits, missing, 10))


def test_dac_warm_up_then_ramps_alpha():
    spec = losses.DAC(warmup_epochs=2, alpha_final=1.0)
    loss = spec.make([spec], 10, 5)
    logits, y = torch.randn(1, 32, 11), torch.randint(0, 10, (1, 32))
    assert torch.allclose(loss(logits, y, 0, None), F.cross_entropy(logits[0], y[0]))  # warm-up: CE over k + 1 outputs
    loss(logits, y, 2, None)
    alpha_start = float(loss.alpha)
    assert alpha_start == pytest.approx(float(loss.thresh_ewma) / 64)
    loss(logits, y, 3, None), loss(logits, y, 4, None)
    assert float(loss.alpha) == pytest.approx(1.0)  # alpha_final at the last epoch (issue 12; was 0.979-like)
    with pytest.raises(ValueError, match="warmup_epochs=5"):
        losses.DAC(warmup_epochs=5).check(10, 5)


def test_coteaching_keep_rate_schedule_and_exchange():
    assert [keep_rate(t, 0.4) for t in (0, 5, 10, 30)] == pytest.approx([1.0, 0.8, 0.6, 0.6])
    assert keep_rate(2, 0.2, t_k=4) == pytest.approx(0.9)
    logits1, logits2 = torch.zeros(4, 3), torch.zeros(4, 3)
    logits1[[0, 1], 0] = 5.0  # network 1 fits instances 0 and 1
    logits2[[2, 3], 0] = 5.0
    loss1, loss2 = small_loss_exchange(logits1, logits2, torch.zeros(4, dtype=torch.long), 2)
    # network 1 learns from network 2's small-loss pair (2, 3), where network 1 is still uncertain
    assert float(loss1) == pytest.approx(math.log(3)) and float(loss2) == pytest.approx(math.log(3))


def test_anchor_estimator_recovers_T_from_exact_posteriors():
    T = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    clean = torch.eye(3).repeat_interleave(50, 0)  # anchors: instances certainly of one class
    mixed = torch.softmax(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), 1)
    probs = torch.cat([clean, mixed]) @ T
    assert torch.allclose(anchor_transition_matrix(probs, None), T, atol=1e-6)
    assert torch.allclose(anchor_transition_matrix(probs, 97.0), T, atol=0.1)
    with pytest.raises(ValueError, match="percentile"):
        anchor_transition_matrix(probs, 150)


def test_methods_by_name_and_clear_errors(digits):
    assert {"ce", "forward", "coteaching", "gce", "dac", "dmi", "seal", "seal_dmi"} <= set(methods.METHODS)
    with pytest.raises(ValueError, match="method='mixup'.*coteaching.*seal_dmi"):
        methods.get_method("mixup")
    X, y_noisy = digits[:2]
    with pytest.raises(ValueError, match=r"option=\['qq'\].*options of gce: \['q'\]"):
        methods.run_method("gce", X, y_noisy, ONE_EPOCH, qq=0.5, **engine(digits))
    with pytest.raises(ValueError, match=r"option=\['presicion'\].*options of ce: \[\], or run options.*'precision'"):
        methods.run_method("ce", X, y_noisy, ONE_EPOCH, presicion="fp32", **engine(digits))
    with pytest.raises(ValueError, match="noise_rate=None.*forget rate"):
        methods.run_method("coteaching", X, y_noisy, ONE_EPOCH, **engine(digits))
    with pytest.raises(ValueError, match="anchor_percentile=0"):
        methods.run_method("forward", X, y_noisy, ONE_EPOCH, anchor_percentile=0, **engine(digits))
    with pytest.raises(ValueError, match="n_epochs=-1"):
        methods.run_method("dmi", X, y_noisy, ONE_EPOCH, n_epochs=-1, **engine(digits))
    with pytest.raises(ValueError, match="noise_rate=1.5"):
        methods.run_method("coteaching", X, y_noisy, ONE_EPOCH, noise_rate=1.5, **engine(digits))


def test_summarize_reads_last_best_and_validation_selected_epochs():
    history = {"test_acc": [0.5, 0.9, 0.7], "val_acc": [0.6, 0.5, 0.8], "fit_acc": [0.4, 0.6, 0.75]}
    result = SimpleNamespace(history=history)
    assert methods.summarize(result) == dict(last=70.0, best=90.0, best_epoch=2, train=75.0, val_selected=70.0,
                                             val_epoch=3)
    assert math.isnan(methods.summarize(SimpleNamespace(history={"test_acc": [0.5], "fit_acc": [0.5]}))["val_selected"])


@dataclass(frozen=True)
class SymmetricCE(losses.Objective):
    """Symmetric cross-entropy (Wang et al. 2019): alpha CE + beta reverse CE, log 0 clipped to -4."""

    alpha: float = 0.1
    beta: float = 1.0

    @classmethod
    def make(cls, specs, n_classes, n_epochs):
        return lambda logits, y, epoch, rows: sce_loss(logits, y, n_classes, specs[0].alpha, specs[0].beta)


def sce_loss(logits, y, n_classes, alpha, beta):
    """Per run (leading axes), the batch mean over the rows (the last axis but one)."""
    p = F.softmax(logits, -1).clamp(min=1e-7)
    reverse = -(p * F.one_hot(y, n_classes).float().clamp(min=math.exp(-4)).log()).sum(-1).mean(-1)
    return alpha * losses.soft_cross_entropy(logits, y) + beta * reverse


def test_a_new_loss_is_one_registry_entry(digits):
    methods.register_method("sce", methods.loss_method("SCE", SymmetricCE))
    try:
        X, y_noisy, y, Xt, yt = digits
        assert methods.method_options("sce") == ("alpha", "beta") and methods.method_label("sce") == "SCE"
        r = methods.run_method("sce", X, y_noisy, ONE_EPOCH, alpha=0.5, **engine(digits))
        loss = one_run_loss(SymmetricCE(alpha=0.5), 10, 1)
        assert loss(logits_of(r.final.weights, X, 10, ONE_EPOCH), y_noisy, 0) < loss(
            logits_of(init_model(ONE_EPOCH, 10, 0).state_dict(), X, 10, ONE_EPOCH), y_noisy, 0) - 0.05
        assert r.history["test_acc"][-1] > 0.3
        stacked = methods.run_methods("sce", X, [y_noisy, y], ONE_EPOCH, seeds=[0, 1], alpha=0.5, backend="stacked",
                                      **{k: v for k, v in engine(digits).items() if k != "seed"})
        assert (stacked[0].S - r.S).abs().max() < 0.02
        with pytest.raises(ValueError, match="options of sce"):
            methods.run_method("sce", X, y_noisy, ONE_EPOCH, gamma=1, **engine(digits))
    finally:
        del methods.METHODS["sce"]


MY_LOSS = """
from dataclasses import dataclass

import torch.nn.functional as F

from idnhelpers.losses import Objective


def helper(logits, y):
    return F.cross_entropy(logits, y)


@dataclass(frozen=True)
class Mine(Objective):
    @classmethod
    def make(cls, specs, n_classes, n_epochs):
        return lambda logits, y, epoch, rows: helper(logits, y)
"""


def test_editing_a_user_objective_changes_its_cache_key(digits, tmp_path, monkeypatch):
    X, y_noisy = digits[:2]
    (tmp_path / "my_loss.py").write_text(MY_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_loss

    def key():
        return make_run(X, y_noisy, ONE_EPOCH, dataset="digits", objective=my_loss.Mine()).key()

    before = key()
    assert key() == before
    (tmp_path / "my_loss.py").write_text(MY_LOSS.replace("return F.cross_entropy", "return 2 * F.cross_entropy"))
    importlib.reload(my_loss)  # the helper the objective calls was edited: its runs get a new key
    assert key() != before
    typed = {}  # a class typed into a REPL has no source file: its compiled code is hashed instead
    for factor in (1, 2):
        exec(compile(MY_LOSS.replace("return F.cross_entropy", f"return {factor} * F.cross_entropy"),
                     "<stdin>", "exec"), namespace := {"__name__": "__main__"})
        typed[factor] = losses.code_hash(namespace["Mine"])
    assert typed[1] != typed[2]


def test_an_objective_with_the_one_run_make_of_before_0_4_is_refused_where_it_is_defined():
    with pytest.raises(TypeError, match=r"Old.make must be a @classmethod make\(cls, specs, n_classes, n_epochs\)"):
        @dataclass(frozen=True)
        class Old(losses.Objective):
            def make(self, n_classes, n_epochs):
                return lambda logits, y, epoch: F.cross_entropy(logits, y)
