# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Beyond the paper: methods under every noise family
#
# Chapter 05 ranks the methods on the paper's instance-dependent noise (IDN); chapter 06 puts the noise
# families side by side with CE and SEAL. This chapter crosses the two: every method of the library's
# registry (`idnhelpers.methods.METHODS`) trained under each noise family at one noise rate, on the same
# rows, with the same network and protocol. The families: symmetric noise, the class-conditional
# (CCN) control (`symmetric`); the authors' published IDN labels (`idn_published`); this paper's Algorithm 1
# on these rows (`idn`); Xia et al.'s part-dependent noise {cite}`xia2020part` (`xia`); and PMD noise
# {cite}`zhang2021learning` (`pmd`). Most of these methods were designed against class-conditional noise
# (Forward's transition matrix, DMI's determinant, Co-teaching's small-loss instances); the question is
# whether a method's standing among the others survives when the noise depends on the instance.
#
# **Which methods.** `methods: null` runs every registered method, in the registry's order, so a method
# registered later (`methods.register_method`) joins the table by itself; a list runs those only. A
# profile restricts the list for time (below). A family that cannot label this data set at a rate (a
# fixed label set, published labels for other data sets) or cannot give the rate (PMD's factor reaches a
# range of rates on each network) is left out with the reason.
#
# **How the `cpu` profile is sized.** Rows, epochs and protocol are the book's (chapters 03-06), so this
# chapter's runs are theirs wherever they coincide: a run's cache key is its full configuration, and an
# identical run is loaded, not trained again. At 40% with the authors' labels, chapter 05 has trained every
# method of Table 1 on three seeds; under symmetric noise at 40%, chapter 03 has trained CE on the same
# three seeds and chapter 04 SEAL (its detection section). So the `cpu` profile
# (`notebooks/profiles/cpu/07_method_families.yaml`) runs the two families the claims below compare,
# `symmetric` and `idn_published`, at that one rate and on those three seeds, with three methods: CE (the
# reference), SEAL (the paper's) and DMI (robust to class-conditional noise by construction). What the
# chapter trains itself is DMI's short stage on symmetric noise. Each further method adds three runs under
# `symmetric` (Co-teaching's: about two minutes on two cores, the book's whole margin within its 30 minutes),
# each further family up to one per method and seed. The `smoke` profile (CI) runs every registered method
# under all five families on a few rows; the `paper` profile runs them at the paper's protocol on three seeds
# (a GPU's work, or a cluster's: the last section).

# %% tags=["parameters"]
dataset = "mnist"  # a registered image data set ("idn_published" has labels for mnist and cifar10)
data_root = None  # folder with the data sets; None: $IDNHELPERS_DATA or ~/.cache/idnhelpers/data
methods = ["ce", "dmi", "seal"]  # None: every registered method (methods.METHODS); a list: those
families = ["symmetric", "idn_published"]  # noise families (families.FAMILIES); also "idn", "xia", "pmd"
noise_rates = [0.4]  # one rate, for every family (the paper's highest)
n_epochs = 75  # epochs per run: CE's training accuracy converges (NOTES, scale study)
n_train = 2000  # labelled rows (random, seeded), split into training and noisy validation rows; None: all
n_test = 2000  # clean test rows (random, seeded); None: the whole test set
val_fraction = 0.5  # share of the labelled rows held out as noisy validation rows; 0: none (the paper)
n_iterations = 1  # SEAL iterations after the first run (the paper: 10 on MNIST)
dmi_epochs = 5  # epochs of DMI's own stage after CE; None: n_epochs (the paper)
seeds = [0, 1, 2]  # one run per seed, method and family; the claims are judged over them, paired by seed
seed = 0  # seed of the rows and of the validation split
collect_only = False  # True: train nothing, read every run from the cache (trained by idn-grid, last section)
trained_on = "auto"  # where the runs were trained, part of their keys: "cpu", "cuda", or "auto" (this machine's)
device = "auto"  # "cpu", "cuda" or "auto"
precision = "auto"  # "auto" (bf16 where the device has it natively, else fp32), "fp32" or "bf16"
profile = "cpu"  # name of the parameter file used, shown in the book

# %%
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from idnbook import plots
from idnbook.chapter import claims, glue_tally, setup
from idnbook.method_families import from_ccn, grid_commands, loss_table, not_applicable, one_rate, rank_table, sentence
from idnbook.verdicts import NOT_CHECKED, Verdict, every, rank_bounds
from idnhelpers.checks import UnreachableRate
from idnhelpers.grid import run_study
from idnhelpers.methods import METHODS, method_label
from idnhelpers.results import Results

study = setup(globals(), family="symmetric")  # every parameter checked before any work; methods=None: the registry's
rate, device_type = one_rate(study), None if trained_on == "auto" else trained_on
print("Registered methods not run in this build: " + (", ".join(f"{method_label(m)} (`{m}`)" for m in METHODS
                                                             if m not in study.methods) or "none"))

# %% [markdown]
# ## The grid: one study per family
#
# Each family is the chapter's study with another `family` (`study.replace(family=...)`), trained by
# `idnhelpers.grid.run_study`, the grid `idn-grid --family` runs; the results of all families are one
# `Results` value, from which every table below is read. The line per family gives its labels, rows
# and protocol.

# %% tags=["remove-stderr"]
skipped = {f: why for f in families if (why := not_applicable(f, dataset))}
studies, results = {f: study.replace(family=f) for f in families if f not in skipped}, Results([])
for f, s in list(studies.items()):
    try:
        part = run_study(s, collect_only=collect_only, device_type=device_type)
    except UnreachableRate as error:  # PMD's factor reaches a range of rates on each network
        skipped[f] = str(error)
        del studies[f]
        continue
    results += part
    print(f"{f}: {part.description}")
for f, why in skipped.items():
    print(f"{f}: not run ({why})")
ran = list(studies)

# %% [markdown]
# ## The table
#
# Test accuracy (%) at the last epoch (the paper's measure), mean ± std over the seeds, a row per method
# and a column per family. A column heading gives the rate and, where a family's files lack it, the
# family that labelled it instead.

# %%
pd.concat({f: results.table(family=f, methods=study.methods) for f in ran}, axis=1)

# %% [markdown]
# ## Each method's rank per family
#
# 1 = the best mean accuracy in the family. Ranks by the mean can turn on a fraction of a point, so each
# rank comes with the ranks the seeds leave open, in parentheses where there is more than one: the book's
# rule (`idnbook.verdicts.judge`, paired by seed) decides each pair of methods, and a pair within twice
# its standard error could go either way.

# %%
acc = {f: {m: results.values(m, rate, family=f) for m in study.methods} for f in ran}
bounds = {f: rank_bounds(a) for f, a in acc.items()}
rank_table(bounds)

# %% tags=["hide-input"]
means = pd.DataFrame({f: {method_label(m): v.mean() for m, v in a.items()} for f, a in acc.items()})
plots.method_family_heatmap(means, pd.DataFrame({f: {method_label(m): r for m, (r, _, _) in b.items()}
                                                 for f, b in bounds.items()}));

# %% [markdown]
# ## From class-conditional to instance-dependent noise
#
# For each IDN family of the paper (its published labels, Algorithm 1 on these rows): what each method
# loses from symmetric noise of the same rate (symmetric's accuracy minus the IDN family's, paired by
# seed: the same seed gives the same initial weights and batch order under both), and whether it keeps its
# rank. A method keeps its rank if the ranks the seeds leave open are one and the same in both families;
# it changes it if the two sets of open ranks do not overlap; otherwise the seeds do not decide.

# %%
found = [from_ccn(acc, bounds, "symmetric", f) for f in ("idn_published", "idn") if f in ran and "symmetric" in ran]
loss_table(found) if found else print("Needs `symmetric` and an IDN family (idn_published, idn) among `families`.")

# %% [markdown]
# ## The claims, checked on this run
#
# Each claim is decided by the book's one rule over the seeds (the [reproduction
# summary](../book/summary.md) states it). "Every method keeps its rank" holds if each method's does,
# and is contradicted if any method's rank changes; the method named in the second claim of each pair is
# the one this run measured to lose the most.

# %%
checks = [row for x in found for row in (
    ("beyond the paper", f"every method keeps its rank from symmetric CCN to {x['idn']} (last-epoch test accuracy "
     f"at {rate:.0%})", every({method_label(m): v for m, v in x["keeps"].items()})),
    ("beyond the paper", f"{method_label(x['most'])} loses the most accuracy from symmetric CCN to {x['idn']} "
     f"(at {rate:.0%}, of the {len(x['loss'])} methods run)", x["most_verdict"]))]
rank_checks = claims(checks or [("beyond the paper", "the methods' ranks from CCN to IDN", Verdict(
    NOT_CHECKED, "not run", "needs symmetric and idn_published or idn among the families"))], "method_families")
rank_checks

# %% tags=["remove-cell"]
glue_tally(rank_checks, "method_families")
glue("method_families_words", Markdown(" ".join(map(sentence, found)) or "Not run in this build."), display=False)

# %% [markdown]
# In words: {glue:md}`method_families_words` In this build {glue:text}`method_families_held` of
# {glue:text}`method_families_checked` claims hold; the others, with their verdicts:
# {glue:md}`method_families_failed`.
#
# ## At the paper's scale: collecting a cluster's runs
#
# The `paper` profile's grid (every registered method under five families, the whole training and test
# sets, 50 epochs, 10 SEAL iterations, three seeds) is a GPU's work, or a cluster's. As for chapter 05,
# the grid of each family is one `idn-grid` command: the same cells, the same cache keys, one Slurm job
# array per family, every job writing to the shared run cache, a lock per run keeping two jobs from
# training the same one. Then this chapter, run with `collect_only: true`, trains nothing: it reads every
# number from a copy of that cache (`trained_on: cuda`: the GPU runs are keyed apart from a CPU's, and the
# same `precision` as the jobs'), or stops with the list of the runs still missing. The commands for
# this build's settings (in bf16, what `auto` picks on an A100 or H100; give the same `-p precision bf16`
# to the chapter):

# %%
print(grid_commands(studies, "bf16"))
