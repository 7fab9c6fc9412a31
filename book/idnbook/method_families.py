"""Chapter 07's benchmark of every method under every noise family at one rate (``one_rate``): which
families apply (``not_applicable``), each method's rank per family with the ranks its seeds leave open (``rank_table``),
what each method loses from class-conditional to instance-dependent noise and whether it keeps its rank
(``from_ccn``, ``sentence``), and the ``idn-grid`` commands that train the same cells on a cluster
(``grid_commands``)."""

from __future__ import annotations

import pandas as pd

from idnhelpers.checks import fail
from idnhelpers.families import FAMILIES
from idnhelpers.methods import method_label
from idnhelpers.results import mean_std

from .verdicts import CONTRADICTED, HOLDS, NOT_RESOLVED, every, judge, same_rank


def one_rate(study) -> float:
    """The one noise rate of ``study`` (the chapter compares methods and families at one rate)."""
    if len(study.noise_rates) != 1:
        fail("noise_rates", list(study.noise_rates), "one rate, e.g. [0.4]: the chapter compares the methods and "
             "families at one rate")
    return study.noise_rates[0]


def not_applicable(family: str, dataset: str) -> str | None:
    """Why ``family`` cannot label ``dataset`` at a noise rate (None where it can)."""
    spec = FAMILIES[family]
    if spec.fixed:
        return "one fixed set of labels, with no noise rate to set"
    if spec.datasets is not None and dataset not in spec.datasets:
        return f"it has labels for {', '.join(spec.datasets)} only"
    return None


def rank_table(bounds: dict) -> pd.DataFrame:
    """``{family: verdicts.rank_bounds(...)}`` as a method x family table: the rank by the mean (1 = best),
    with the ranks the seeds leave open where they leave more than one."""
    return pd.DataFrame({f: {method_label(m): f"{r}" + (f" ({lo}-{hi})" if lo != hi else "")
                             for m, (r, lo, hi) in b.items()} for f, b in bounds.items()})


def from_ccn(acc: dict, bounds: dict, ccn: str, idn: str) -> dict:
    """Each method from family ``ccn`` to family ``idn`` (``acc[family][method]``: accuracy per seed, the
    same seeds in both): its ``loss`` (ccn's accuracy minus idn's, paired by seed), whether it ``keeps`` its
    rank (``verdicts.same_rank`` on ``bounds``), the method that loses the ``most`` and the verdict that it
    loses more than each other method (``judge`` on the paired differences of the losses: ``most_verdict``)."""
    loss = {m: acc[ccn][m] - acc[idn][m] for m in acc[ccn]}
    most = max(loss, key=lambda m: loss[m].mean())
    return dict(ccn=ccn, idn=idn, loss=loss, most=most,
                keeps={m: same_rank(bounds[ccn][m], bounds[idn][m]) for m in loss},
                most_verdict=every({f"vs {method_label(o)}": judge(loss[most] - loss[o]) for o in loss if o != most},
                                   none="only one method ran"))


def loss_table(found: list) -> pd.DataFrame:
    """``from_ccn``'s results as a method x (IDN family, measure) table: the loss (points, mean ± std over
    seeds) and the verdict on keeping the rank."""
    return pd.DataFrame({(f"{x['ccn']} -> {x['idn']}", col): {
        method_label(m): mean_std(x["loss"][m]) if col == "loss (points)" else x["keeps"][m].verdict
        for m in x["loss"]} for x in found for col in ("loss (points)", "keeps its rank")})


def sentence(x: dict) -> str:
    """One ``from_ccn`` result in words, every name and number read from it."""
    def names(verdict):
        return ", ".join(method_label(m) for m, v in x["keeps"].items() if v.verdict == verdict) or "none"

    loss = x["loss"][x["most"]]
    return (f"From `{x['ccn']}` to `{x['idn']}`, the methods that keep their rank: {names(HOLDS)}; that change it: "
            f"{names(CONTRADICTED)}; not resolved at this scale: {names(NOT_RESOLVED)}. {method_label(x['most'])} "
            f"loses the most, {mean_std(loss)} points (that it loses more than every other method: "
            f"{x['most_verdict'].verdict}).")


def grid_commands(studies: dict, precision: str) -> str:
    """The ``idn-grid`` command per family that trains the cells of ``studies`` (``{family: Study}``) on a
    Slurm cluster's GPUs in ``precision``, every setting spelt out."""
    lines = []
    for f, s in studies.items():
        sets = " ".join(f"--set {k}={'null' if getattr(s, k) is None else getattr(s, k)}" for k in
                        ("n_epochs", "n_train", "n_test", "val_fraction", "n_iterations", "dmi_epochs", "seed"))
        root = f" --data-root {s.data_root}" if s.data_root else ""
        lines.append(f"idn-grid --dataset {s.dataset}{root} --family {f} --rates {' '.join(map(str, s.noise_rates))} "
                     f"--methods {' '.join(s.methods)} --seeds {' '.join(map(str, s.seeds))} {sets} "
                     f"--set precision={precision} --executor slurm --partition gpu")
    return "\n".join(lines)
