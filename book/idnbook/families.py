"""Chapter 06's comparisons of noise families, as tables: what each family is (``properties``), how
many labels each flips (``realised_rates``) and whether two families flip the same instances
(``flip_overlap``)."""

from __future__ import annotations

import pandas as pd

from idnhelpers.checks import UnreachableRate
from idnhelpers.families import FAMILIES, expected_rate

SEEDED_BY = {"train_seed": "the network's training (train_seed)", "noise_seed": "noise_seed"}


def properties(families) -> pd.DataFrame:
    """Each family's registry entry (``families.FAMILIES``): what decides a flip and what seeds it."""
    return pd.DataFrame([{"family": f, "name": FAMILIES[f].label, "uses the instance": FAMILIES[f].instance_dependent,
                          "exact count": FAMILIES[f].exact, "nested across rates": FAMILIES[f].nested,
                          "seeded by": ", ".join(SEEDED_BY[s] for s in FAMILIES[f].seeded_by)
                          or "nothing (a published file)"} for f in families]).set_index("family")


def _expected(family: str, rate: float, n: int) -> str:
    expected = expected_rate(family, rate, n)
    if expected is None:
        return "not known on a subset (exact on the whole set)"
    if expected[1] == 0:
        return f"{100 * expected[0]:.2f} exactly"
    return f"{100 * expected[0]:.2f} ± {100 * expected[1]:.2f}"


def label_sets(studies: dict, data) -> tuple[dict, dict]:
    """Each family's labels of ``data`` at each of its study's rates (``Study.labels``), and for a rate it
    cannot give (PMD's factor has a range on each network), the reason: ``{(family, rate): labels}``,
    ``{(family, rate): reason}``. Prints which labels a family uses where its files lack a rate."""
    labels, unreachable = {}, {}
    for f, study in studies.items():
        if any(study.family_of(r) != f for r in study.noise_rates):
            print(f"{f}: {study.labels_used()}")
        for r in study.noise_rates:
            try:
                labels[(f, r)] = study.labels(data, [r])[r]
            except UnreachableRate as error:  # any other error stops the chapter
                unreachable[(f, r)] = str(error)
    return labels, unreachable


def realised_rates(labels: dict, y, unreachable: dict | None = None):
    """Flips and realised rate of each ``labels[(family, rate)]`` against the true labels ``y``,
    beside the family's expected rate; a rate a family cannot give, with the reason."""
    rows = [{"family": f, "target rate": f"{r:.0%}", "flips": int((y_noisy != y).sum()),
             "realised rate (%)": 100 * float((y_noisy != y).float().mean()),
             "expected (%)": _expected(f, r, len(y))} for (f, r), y_noisy in labels.items()]
    rows += [{"family": f, "target rate": f"{r:.0%}", "expected (%)": f"cannot give this rate: {reason}"}
             for (f, r), reason in (unreachable or {}).items()]
    table = pd.DataFrame(rows).set_index(["target rate", "family"]).sort_index()
    return table.style.format({"realised rate (%)": "{:.2f}", "flips": "{:.0f}"}, na_rep="—")


def flip_overlap(labels: dict, y) -> pd.DataFrame:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of two families' flipped sets at each rate, beside what two
    independent random sets of the same sizes would share."""
    rows = []
    for (a, rate), labels_a in labels.items():
        for (b, rate_b), labels_b in labels.items():
            if rate_b != rate or not a < b:
                continue
            A, B = labels_a != y, labels_b != y
            pa, pb = float(A.float().mean()), float(B.float().mean())
            chance = pa * pb / (pa + pb - pa * pb) if pa + pb > 0 else float("nan")
            rows.append({"rate": f"{rate:.0%}", "families": f"{a} / {b}",
                         "jaccard": int((A & B).sum()) / max(int((A | B).sum()), 1), "chance": chance})
    return pd.DataFrame(rows).pivot(index="families", columns="rate", values=["jaccard", "chance"]).round(3)


def theorem_table(tests: dict, seed: int) -> pd.DataFrame:
    """Theorem 1's test of each ``tests[(family, rate, seed)]`` for one seed."""
    rows = [{"family": f, "rate": f"{r:.0%}", "CCN bound": t.bound, "validation error": t.val_error,
             "epsilon": t.epsilon, "log10 p": t.log10_p, "reject CCN": t.reject}
            for (f, r, s), t in tests.items() if s == seed]
    table = pd.DataFrame(rows).set_index(["rate", "family"]).sort_index()
    return table.style.format({"CCN bound": "{:.4f}", "validation error": "{:.4f}", "epsilon": "{:+.4f}",
                               "log10 p": "{:.1f}"})


def harm_table(results, keys, baselines, top: float) -> pd.DataFrame:
    """Per (family, rate) of ``keys``: CE's best and last test accuracy, their gap (what memorising the
    noise costs), SEAL's last-epoch gain over CE and, at the rate ``top``, the strongest baseline's."""
    from idnhelpers.methods import method_label
    from idnhelpers.results import mean_std

    rows = []
    for f, r in keys:
        gain = {m: results.gain(m, r, family=f) for m in ["seal", *(baselines if r == top else [])]}
        best = max(baselines, key=lambda b: gain[b].mean()) if r == top and baselines else None
        rows.append({"family": f, "rate": f"{r:.0%}", "CE best": mean_std(results.values("ce", r, "best", f)),
                     "CE last": mean_std(results.values("ce", r, "last", f)),
                     "memorisation gap": mean_std(results.gain("ce", r, "best", family=f)),
                     "SEAL gain": mean_std(gain["seal"]),
                     "strongest baseline": method_label(best) if best else "(not run)",
                     "baseline gain": mean_std(gain[best]) if best else "—"})
    return pd.DataFrame(rows).set_index(["rate", "family"]).sort_index()


def theorem1(results, labels: dict, data, alpha: float) -> dict:
    """Theorem 1's test (``stats.ccn_test``) per (family, rate, seed): the CE network's noisy validation
    error at the last epoch against the CCN bound of the family's labels' M and the class priors."""
    from idnhelpers.stats import ccn_test, class_priors, estimate_transition_matrix

    w, tests = class_priors(data.y, data.n_classes), {}
    for (f, r), y_noisy in labels.items():
        M = estimate_transition_matrix(data.y, y_noisy, data.n_classes)
        for s in results.seeds("ce", r, f):
            error = 1 - results.result("ce", r, s, f).final.history["val_acc"][-1]
            tests[(f, r, s)] = ccn_test(error, M, w, len(data.val), alpha)
    return tests


def tabular(studies: dict, alpha: float):
    """Chapter 06's feature-vector section: each ``studies[family]`` run (``grid.run_study``), Theorem 1
    per (family, rate), and a row per (rate, family): flips, CE's training accuracy, the test, CE's and
    SEAL's last-epoch test accuracy. Returns the table, the tests and the majority class's accuracy (%)."""
    from idnhelpers.grid import run_study
    from idnhelpers.results import Results

    labels, results = {}, Results([])
    for f, study in studies.items():
        data, results = study.sample(), results + run_study(study, progress=False)
        labels.update({(f, r): y for r, y in study.labels(data).items()})
    tests = theorem1(results, labels, data, alpha)
    rows = [{"rate": f"{r:.0%}", "family": f, "flips": int((labels[(f, r)] != data.y).sum()),
             "CE train acc. (last epoch)": results.values("ce", r, "train", f)[0], "CCN bound": t.bound,
             "validation error": t.val_error, "reject CCN": t.reject, "CE last": results.values("ce", r, "last", f)[0],
             "SEAL last": results.values("seal", r, "last", f)[0]} for (f, r, s), t in tests.items()]
    majority = 100 * float(data.y_test.bincount().max()) / len(data.y_test)
    return pd.DataFrame(rows).set_index(["rate", "family"]), tests, majority
