import math

import pytest
import torch

from idnbook.verdicts import (CONTRADICTED, HOLDS, NOT_CHECKED, NOT_RESOLVED, VERDICTS, below_bound, every, fact, judge,
                              rejects_ccn)
from idnhelpers.noise import symmetric_matrix
from idnhelpers.experiments import ccn_experiment
from idnhelpers.stats import (ccn_bound, ccn_test, class_priors, estimate_transition_matrix, flip_agreement,
                              per_class_noise_rate)


def test_paper_clothing1m_arithmetic():
    # Section 2.2: eps = 0.2212 with m = 500k gives a probability below 10^-21250
    M = torch.tensor([[0.6, 0.4], [0.2, 0.8]])
    w = torch.tensor([0.5, 0.5])
    bound = ccn_bound(M, w)  # 1 - (0.5 * 0.6 + 0.5 * 0.8) = 0.3
    result = ccn_test(bound - 0.2212, M, w, m=500_000)
    assert result.epsilon == pytest.approx(0.2212)
    assert abs(result.log10_p - (-21250)) < 1
    assert result.reject


def test_bound_of_known_matrices():
    assert ccn_bound(symmetric_matrix(0.4, 10), torch.full((10,), 0.1)) == pytest.approx(0.4)
    M = torch.tensor([[0.3, 0.7, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    assert ccn_bound(M, torch.tensor([0.5, 0.25, 0.25])) == pytest.approx(1 - (0.35 + 0.25 + 0.125))
    assert ccn_bound(torch.eye(4), torch.full((4,), 0.25)) == 0.0


def test_no_rejection_when_error_reaches_the_bound():
    M, w = symmetric_matrix(0.3, 10), torch.full((10,), 0.1)
    for err in (0.3, 0.35, 0.9):
        r = ccn_test(err, M, w, m=10_000)
        assert not r.reject and r.epsilon <= 1e-12 and r.log10_p == 0.0
        assert "no rejection" in str(r)
    small = ccn_test(0.29, M, w, m=10)  # eps = 0.01 with m = 10: p bound ~ 0.998, no rejection
    assert 0 < small.epsilon and not small.reject
    assert small.m_to_reject == math.ceil(math.log(20) / (2 * small.epsilon ** 2))  # about 15k
    assert ccn_test(small.val_error, M, w, m=small.m_to_reject).reject
    assert not ccn_test(small.val_error, M, w, m=small.m_to_reject - 1).reject
    assert small.log10_p == pytest.approx(math.log10(math.exp(-2 * 10 * 0.01 ** 2)), rel=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_error=1.2), "val_error"), (dict(m=0), "m="), (dict(m=2.5), "m="), (dict(alpha=0), "alpha"),
    (dict(M=torch.tensor([[0.5, 0.6], [0.0, 1.0]])), "probability vectors"),
    (dict(M=torch.ones(2, 3) / 3), "square"), (dict(w=torch.tensor([0.2, 0.2])), "priors"),
    (dict(w=torch.ones(3) / 3), "one prior per class"),
])
def test_ccn_test_validation(kwargs, match):
    args = dict(val_error=0.1, M=torch.eye(2), w=torch.tensor([0.5, 0.5]), m=100)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ccn_test(**args)


def test_transition_matrix_and_priors():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    y_noisy = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2])
    M = estimate_transition_matrix(y, y_noisy, 3)
    assert torch.allclose(M, torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=M.dtype))
    assert torch.allclose(class_priors(y, 3), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert torch.allclose(per_class_noise_rate(y, y_noisy, 3), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="y_noisy"):
        estimate_transition_matrix(y, y_noisy[:5], 3)


def test_flip_agreement():
    y = torch.zeros(10, dtype=torch.long)
    ours = torch.tensor([1, 1, 2, 0, 0, 0, 0, 0, 0, 0])
    ref = torch.tensor([1, 2, 0, 3, 0, 0, 0, 0, 0, 0])
    a = flip_agreement(y, ours, ref)
    assert a["recovered"] == pytest.approx(2 / 3) and a["target_agreement"] == pytest.approx(0.5)
    assert a["chance_recovered"] == pytest.approx(0.3)


def test_ccn_experiment_rejects_idn_but_not_ccn_with_the_same_matrix():
    from idnhelpers.datasets import protocol
    from idnhelpers.sample import sample
    from idnhelpers.noise import ccn_labels
    from idnhelpers.published import load_published_idn

    s = sample("mnist", n_train=3000, n_test=500, val_fraction=0.3)
    y, y_idn = s.y, load_published_idn("mnist", 0.4)[1][s.rows]
    M, w = estimate_transition_matrix(y, y_idn, 10), class_priors(y, 10)
    y_ccn = ccn_labels(y, M, seed=0, n_flips=int((y_idn != y).sum()))
    assert torch.allclose(estimate_transition_matrix(y, y_ccn, 10), M, atol=0.01)
    proto = protocol("mnist", n_epochs=8)
    idn = ccn_experiment(s, y_idn, M, w, proto)["test"]
    ccn = ccn_experiment(s, y_ccn, M, w, proto)["test"]
    assert idn.m == ccn.m == 900 and idn.bound == pytest.approx(ccn.bound)
    assert not ccn.reject
    assert idn.val_error < ccn.val_error - 0.05
    assert idn.reject and idn.log10_p < -3


def test_judge_decides_by_twice_the_standard_error():
    # three seeds: mean 2.0, sd 1.0, se 0.577: 2.0 > 1.155 holds
    v = judge([1.0, 2.0, 3.0])
    assert v.verdict == HOLDS and "+2.00 ± 0.58" in v.evidence and "3 seeds" in v.evidence
    assert judge([-1.0, -2.0, -3.0]).verdict == CONTRADICTED
    # mean 0.5, se 0.5: within twice the s.e., with the seeds that would resolve it: 3 * (2 * 0.5 / 0.5)^2 + 1 = 13
    unresolved = judge([0.0, 0.0, 1.5])
    assert unresolved.verdict == NOT_RESOLVED and "13 seeds (here 3)" in unresolved.reason
    assert judge([0.4]).verdict == NOT_RESOLVED and "one seed" in judge([0.4]).reason
    # a single proportion with its binomial standard error
    assert judge([0.03], se=0.01, unit="").verdict == HOLDS
    # a binomial se measured on 1000 instances: 1000 * (2 * 0.01 / 0.015)^2 = 1777.8
    binomial = judge([0.015], se=0.01, measured_on=1000, unit="")
    assert binomial.verdict == NOT_RESOLVED and "1778 instances (here 1000)" in binomial.reason
    assert judge([2.0, 2.0]).verdict == HOLDS  # no spread at all: any positive margin holds
    with pytest.raises(ValueError, match="differences"):
        judge([])
    with pytest.raises(ValueError, match="differences"):
        judge([1.0, float("nan")])


def test_every_needs_each_part_and_fact_has_no_spread():
    held, against, open_ = judge([1.0, 2.0, 3.0]), judge([-1.0, -2.0, -3.0]), judge([0.0, 0.0, 1.5])
    assert every({"10%": held, "20%": held}).verdict == HOLDS
    assert every({"10%": held, "20%": open_}).verdict == NOT_RESOLVED
    assert every({"10%": held, "20%": open_, "40%": against}).verdict == CONTRADICTED
    combined = every({"10%": held, "20%": open_})
    assert combined.evidence.startswith("10%: +2.00") and combined.reason.startswith("20%: the margin")
    assert "13 seeds" in combined.reason
    assert fact(True, "x").verdict == HOLDS and fact(False, "x").verdict == CONTRADICTED
    assert set(VERDICTS) == {HOLDS, CONTRADICTED, NOT_RESOLVED, NOT_CHECKED}


def test_rejects_ccn_holds_contradicts_or_names_the_m_that_would_decide():
    M, w = torch.eye(2) * 0.6 + 0.2, torch.tensor([0.5, 0.5])  # bound 1 - 0.8 = 0.2
    rejecting = [ccn_test(0.10, M, w, m=1000) for _ in range(3)]
    assert rejects_ccn(rejecting).verdict == HOLDS
    above = [ccn_test(0.30, M, w, m=1000)]  # 0.1 above the bound, se 0.0145
    assert rejects_ccn(above).verdict == CONTRADICTED
    assert below_bound(rejecting).verdict == HOLDS and below_bound(above).verdict == CONTRADICTED
    assert rejecting[0].se == pytest.approx(math.sqrt(0.1 * 0.9 / 1000))
    weak = rejects_ccn([ccn_test(0.19, M, w, m=100)])  # eps 0.01: log10 p = -0.009, far from alpha
    assert weak.verdict == NOT_RESOLVED and "m >= 14979" in weak.reason  # ln(20) / (2 * 0.01^2)
    with pytest.raises(ValueError, match="tests"):
        rejects_ccn([])


def test_chapter_claims_show_the_verdict_with_its_reason():
    from idnbook.chapter import claims

    table = claims([("Table 1", "SEAL beats CE", judge([1.0, 2.0, 3.0])),
                    ("Fig. 4", "CSR is lower", judge([0.0, 0.0, 1.5]))], "test")
    assert table["verdict"].tolist() == [HOLDS, NOT_RESOLVED]
    assert table["evidence"][1].endswith("13 seeds (here 3) would resolve a margin this size if the spread stays")
    assert ". The margin is within twice its standard error" in table["evidence"][1]
    with pytest.raises(ValueError, match="verdicts.Verdict"):
        claims([("Table 1", "SEAL beats CE", True, "+1.0")], "test")
