"""The rules that judge the paper's claims over seeds, with three honest verdicts (holds, contradicted,
not resolved) and "not checked" where a build could not run a claim: ``judge`` on measured differences,
``fact`` on a test's own decision, ``every`` across places, Theorem 1's ``below_bound`` and
``rejects_ccn``, and a method's rank among others (``rank_bounds``) kept or not from one setting to another
(``same_rank``). The chapters' claim tables (``chapter.claims``) and the summary page read them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from idnhelpers.checks import check_float, fail
from idnhelpers.stats import CCNTest, binomial_se, m_to_reject


HOLDS, CONTRADICTED, NOT_RESOLVED, NOT_CHECKED = "holds", "contradicted", "not resolved", "not checked"
VERDICTS = (HOLDS, CONTRADICTED, NOT_RESOLVED, NOT_CHECKED)


@dataclass(frozen=True)
class Verdict:
    """A claim's ``verdict`` (one of ``VERDICTS``), its ``evidence`` and why it is not resolved or checked."""

    verdict: str
    evidence: str
    reason: str = ""


def judge(differences, *, se: float | None = None, measured_on: int | None = None, unit: str = " points",
          digits: int = 2) -> Verdict:
    """A claim on ``differences`` (per seed, positive where it holds) with mean d and standard error se
    (over >= 2 seeds, or given with the ``measured_on`` instances it comes from): it holds if d > 2 se,
    is contradicted if d < -2 se, else not resolved, with the count that would resolve it."""
    d = torch.as_tensor(differences, dtype=torch.float64).flatten()
    if not len(d) or not torch.isfinite(d).all():
        fail("differences", d.tolist(), "one finite difference per seed, at least one")
    k, mean = len(d), float(d.mean())
    if se is None:
        if k < 2:
            return Verdict(NOT_RESOLVED, f"{mean:+.{digits}f}{unit} (one seed)",
                           "one seed: the rule needs the spread of at least two")
        se, count, counted = float(d.std(unbiased=True)) / math.sqrt(k), k, "seeds"
    else:
        se, count, counted = check_float(se, "se", low=0.0), measured_on, "instances"
    seeds = f", {k} seeds" if k > 1 else ""
    evidence = f"{mean:+.{digits}f} ± {se:.{digits}f}{unit} (mean ± s.e.{seeds})"
    if mean > 2 * se:
        return Verdict(HOLDS, evidence)
    if mean < -2 * se:
        return Verdict(CONTRADICTED, evidence)
    reason = "the margin is within twice its standard error"
    if mean and count:
        reason += (f"; about {math.floor(count * (2 * se / abs(mean)) ** 2) + 1} {counted} (here {count}) would "
                   "resolve a margin this size if the spread stays")
    return Verdict(NOT_RESOLVED, evidence, reason)


def fact(holds: bool, evidence: str) -> Verdict:
    """The verdict of a claim decided by a fact (arithmetic, a test's own decision)."""
    return Verdict(HOLDS if holds else CONTRADICTED, evidence)


def every(parts: dict, none: str | None = None) -> Verdict:
    """A claim at each place of ``{place: Verdict}``: contradicted if any is, holds if all do; with no
    place, "not checked" for the reason ``none`` (without one, an error)."""
    if not parts and none:
        return Verdict(NOT_CHECKED, "not run", none)
    if not parts:
        fail("parts", parts, "at least one {place: Verdict}")
    verdicts = [v.verdict for v in parts.values()]
    verdict = CONTRADICTED if CONTRADICTED in verdicts else HOLDS if set(verdicts) == {HOLDS} else NOT_RESOLVED
    evidence = "; ".join(f"{place}: {v.evidence}" for place, v in parts.items())
    reasons = "; ".join(f"{place}: {v.reason}" for place, v in parts.items() if v.verdict == NOT_RESOLVED and v.reason)
    return Verdict(verdict, evidence, reasons if verdict == NOT_RESOLVED else "")


def below_bound(tests: list) -> Verdict:
    """Whether the validation error lies below the CCN bound: ``judge`` on one ``CCNTest`` per seed
    with the binomial se of the mean error (seeds share their validation rows)."""
    if not tests or not all(isinstance(t, CCNTest) for t in tests):
        fail("tests", tests, "a non-empty list of stats.CCNTest, one per seed")
    error = sum(t.val_error for t in tests) / len(tests)
    return judge([t.epsilon for t in tests], se=binomial_se(error, tests[0].m), measured_on=tests[0].m, unit="",
                 digits=4)


def rejects_ccn(tests: list) -> Verdict:
    """Theorem 1's verdict on the tests of ``below_bound``: holds if every test rejects CCN, is
    contradicted if the error lies above the bound."""
    below = below_bound(tests)
    m, alpha, k = tests[0].m, tests[0].alpha, len(tests)
    if all(t.reject for t in tests):
        return fact(True, f"log10 p <= {max(t.log10_p for t in tests):.1f} on each of {k} seed(s), m = {m}")
    evidence = f"rejected on {sum(t.reject for t in tests)} of {k} seed(s); bound minus error {below.evidence}"
    if below.verdict == CONTRADICTED:
        return Verdict(CONTRADICTED, evidence)
    eps = sum(t.epsilon for t in tests) / k
    reason = (f"the test lacks the power at m = {m}: m >= {m_to_reject(eps, alpha)} would reject at this epsilon"
              if eps > 0 else "the validation error does not fall below the bound")
    return Verdict(NOT_RESOLVED, evidence, reason)


def rank_bounds(values: dict) -> dict:
    """Each method's rank among ``values`` (``{method: accuracy per seed}``, the same seeds in the same
    order for every method; 1 = best): ``(rank, lowest, highest)``, the rank by the mean and the ranks the
    seeds leave open, ``judge`` deciding each pair (paired by seed). A method ``judge`` finds above this one
    counts against it, one it cannot order leaves either place open."""
    means = {m: float(torch.as_tensor(v, dtype=torch.float64).mean()) for m, v in values.items()}
    bounds = {}
    for m, v in values.items():
        others = [o for o in values if o != m]
        verdicts = [judge(torch.as_tensor(values[o], dtype=torch.float64) - torch.as_tensor(v, dtype=torch.float64))
                    .verdict for o in others]
        bounds[m] = (1 + sum(means[o] > means[m] for o in others), 1 + verdicts.count(HOLDS),
                     len(values) - verdicts.count(CONTRADICTED))
    return bounds


def same_rank(before: tuple, after: tuple) -> Verdict:
    """Whether a method keeps its rank from one setting to another, on ``rank_bounds``' ``(rank, lowest,
    highest)`` in each: holds if both are decided and equal, is contradicted if the ranks the seeds leave
    open do not overlap, else not resolved."""
    def shown(rank, low, high):
        return f"{rank}" + (f" ({low}-{high} open)" if low != high else "")

    evidence = f"rank {shown(*before)} -> {shown(*after)}"
    if before[1] == before[2] == after[1] == after[2]:
        return Verdict(HOLDS, evidence)
    if before[2] < after[1] or after[2] < before[1]:
        return Verdict(CONTRADICTED, evidence)
    return Verdict(NOT_RESOLVED, evidence, "some orderings against the other methods lie within twice their "
                   "standard error (more seeds would decide them)")
