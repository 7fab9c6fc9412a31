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
# # Benchmarks: SEAL against six baselines (Section 4.3, Tables 1-3)
#
# The paper compares SEAL with six methods for learning with noisy labels, all trained with the
# same network and optimiser (Appendix A), at IDN rates of 10-40%, three runs each, reporting the
# test accuracy **at the last epoch**:
#
# | name | method | what it does |
# |---|---|---|
# | `ce` | cross-entropy | the plain baseline |
# | `forward` | Forward {cite}`patrini2017making` | estimates a class-conditional transition matrix $T$ from a CE network (anchor points), then trains with the loss of $T^\top f(x)$ |
# | `coteaching` | Co-teaching {cite}`han2018coteaching` | two networks; each trains on the other's small-loss instances, keeping $1-\min(t/T_k\,\tau, \tau)$ of each batch ($T_k = 10$, $\tau$ the noise rate) |
# | `gce` | GCE {cite}`zhang2018generalized` | the bounded loss $(1 - f_{\bar y}(x)^q)/q$, $q = 0.7$ |
# | `dac` | DAC {cite}`thulasidasan2019combating` | an extra *abstain* output, warm-up epochs, then an abstention penalty $\alpha$ ramped up |
# | `dmi` | DMI {cite}`xu2019ldmi` | $-\log\lvert\det\rvert$ of the joint distribution of prediction and label, started from the CE network with a tiny learning rate |
# | `seal` | SEAL (Algorithm 2) | retrains on the epoch-averaged softmax, iteratively |
# | `seal_dmi` | SEAL (DMI) | SEAL iterations started from DMI's averaged softmax (Table 3) |
#
# Beyond the paper, in a block of their own below its table: `elr`, ELR {cite}`liu2020early`
# (a moving average $t_i$ of each instance's predictions and the regulariser
# $\lambda \log(1 - \langle t_i, f(x_i)\rangle)$ added to CE), and `plc`, PLC's progressive
# label correction {cite}`zhang2021learning` (after a warm-up, relabel the instances whose
# likelihood ratio $f_{\bar y}(x) / \max_k f_k(x)$ is below a threshold that rises when few
# change), two baselines that later IDN papers compare against.
#
# **How the methods are scored.** DAC's network has an eleventh, *abstain* output; an instance on
# which it abstains (arg-max = abstain) counts as an error, as its authors score it
# (`test_dac` in the official code), and the abstention rate and the accuracy on the kept instances
# are reported beside it. (Before, the best real class scored it: an upper bound on this measure.)
# Forward's $T$ and DMI's starting point come from a CE model: the one picked on the noisy
# validation split where there is one (`val_fraction` > 0: the `cpu` and `smoke` profiles), else
# the last epoch's, which may have memorised part of the noise (the `paper` profile, which has no
# validation split, as the paper).
#
# Every method is `idnhelpers.methods.run_method(name, X, y_noisy, protocol, ...)`; the grid of
# methods x noise rates x seeds is `idnhelpers.grid` (the same runs as the command line `idn-grid`,
# which runs it on a cluster). Each run is cached on disk, so an interrupted grid resumes and a
# larger one only trains what is new. Runs that coincide are trained once: the CE run is also
# Forward's and DMI's first stage and SEAL's iteration 0. With `collect_only: true` this chapter
# trains nothing: it reads the table from runs `idn-grid` trained (README: "Run the paper's grid
# on a cluster"), or stops with the list of the runs still missing.

# %% tags=["parameters"]
dataset = "mnist"  # mnist (Table 1) or cifar10 (Table 2; needs cifar-10-batches-py under data_root)
data_root = None  # folder with the data sets; None: $IDNHELPERS_DATA or ~/.cache/idnhelpers/data
noise_rates = [0.2, 0.4]  # IDN rates of CE and SEAL (the paper: 0.1, 0.2, 0.3, 0.4)
baseline_rates = [0.4]  # rates of the other methods; None: noise_rates (here the highest only, for time)
methods = ["ce", "forward", "coteaching", "gce", "dac", "dmi", "seal"]  # Table 1-2's; add "seal_dmi" (Table 3)
beyond = []  # methods beyond the paper ("elr", "plc"), in their own block below its table; [] for none
beyond_rates = None  # noise rates of that block; None: noise_rates
family = "idn_published"  # the authors' IDN labels (fair comparison); "idn": Algorithm 1 on the same rows; any of noise.FAMILIES
n_epochs = 75  # epochs per run: CE's training accuracy converges (the paper: 50 on 60k MNIST rows, 150 on CIFAR-10)
n_train = 2000  # labelled rows (random, seeded), split into training and validation rows; None: all
n_test = 2000  # test subset size (random, seeded), scored every epoch; None for the whole test set
val_fraction = 0.5  # share of the labelled rows held out, noisy labels and all, to pick an epoch; 0: none (the paper)
n_iterations = 1  # SEAL iterations after the first run (the paper: 10 on MNIST, 3 on CIFAR-10)
dmi_epochs = 5  # epochs of DMI's own stage after CE; None: n_epochs (the paper)
seeds = [0, 1, 2]  # one run per seed and cell; tables show mean ± std over seeds, the claims are judged over them
seed = 0  # seed of the training subset and of the validation split
device = "auto"  # "cpu", "cuda" or "auto"
precision = "auto"  # "auto" (bf16 where the device has it natively, else fp32), "fp32" or "bf16"
clothing1m_weights = None  # ImageNet ResNet-50 weights (torchvision state_dict file) for Table 3
clothing1m_epochs = 10  # epochs per Clothing1M run (the paper: 10)
collect_only = False  # True: train nothing, read every run from the cache (trained by idn-grid)
trained_on = "auto"  # where the runs were trained, part of their cache keys: "cpu", "cuda", or "auto" (this machine's device)
profile = "cpu"  # name of the parameter file used, shown in the book

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from idnbook import plots
from idnbook.chapter import claims, mean_std, paper_scale, setup
from idnhelpers import paper
from idnhelpers.clothing1m import clothing1m_available
from idnhelpers.grid import GridSpec, MissingRuns, T_error, build_grid, collect, run_grid
from idnhelpers.methods import METHODS, method_label
from idnhelpers.stats import NOT_CHECKED, Verdict, every, judge

setup(globals())  # every parameter checked (an unknown method, a bad rate) before any work starts; precision resolved
spec = GridSpec(dataset=dataset, methods=methods, family=family, noise_rates=noise_rates, seeds=seeds,
                n_epochs=n_epochs, n_train=n_train, n_test=n_test, val_fraction=val_fraction,
                n_iterations=n_iterations, dmi_epochs=dmi_epochs, seed=seed, precision=precision, data_root=data_root)
if spec.noise_rates is None:
    raise ValueError(f"family={family!r} is one fixed set of labels: this chapter compares the methods across noise "
                     "rates; benchmark a fixed set with idn-grid --labels (README)")
noise_rates = list(spec.noise_rates)
baselines = [m for m in methods if m not in ("ce", "seal")]
rates_of = {m: noise_rates if m in ("ce", "seal") or baseline_rates is None else sorted(baseline_rates)
            for m in methods}  # CE and SEAL at every rate, the other methods at theirs
device_type = None if trained_on == "auto" else trained_on  # collect_only on a laptop: "cuda" for a cluster's runs

# %% [markdown]
# ## Data, labels and the grid

# %% tags=["remove-stderr"]
grids = [build_grid(spec.replace(methods=[m for m in methods if rates_of[m] == rates], noise_rates=rates),
                    device=device, train_labels=not collect_only, device_type=device_type)
         for rates in map(list, sorted({tuple(r) for r in rates_of.values()}))]
cells = [cell for g in grids for cell in g.cells]
table = collect(cells) if collect_only else run_grid(cells, "local", device=device)
results = {(row["noise_rate"], row["seed"], row["method"]): row for row in table.to_dict("records")}
print(grids[0].description.split("grid cells")[0].rsplit(",", 1)[0] + f", {len(cells)} grid cells" +
      ("; read from the cache (collect_only)" if collect_only else ""))
print("Forward's T and DMI's start: the CE model " + (
    f"picked on the noisy validation split ({val_fraction:.0%} of the labelled rows)" if val_fraction
    else "of the last epoch (no validation split)"))
if "ce" in methods:  # the paper's criterion for its epochs: training accuracy converged, as high as possible
    ce_fit = {r: [results[(r, s, "ce")]["train"] for s in seeds] for r in noise_rates}
    print("CE's training accuracy on the noisy labels at the last epoch: " +
          ", ".join(f"{r:.0%}: {mean_std(v, 1)}%" for r, v in ce_fit.items()))

# %% [markdown]
# ## The table (Table 1 on MNIST, Table 2 on CIFAR-10)
#
# Test accuracy (%) at the last epoch, mean ± std over seeds, next to the paper's value and our
# difference from it. **Read the protocol line above first**: the paper's numbers come from its
# full protocol (whole training set, 50 epochs on MNIST, 10 SEAL iterations, 3 seeds); a reduced
# protocol changes every number, so compare the *ordering* of the methods, not the values.

# %%
def column(key):
    """``{(method, rate): [value per seed]}`` of one ``summarize`` field, for the cells that ran."""
    return {(name, rate): [results[(rate, s, name)][key] for s in seeds] for name in methods for rate in rates_of[name]}


def cell(values):
    return mean_std(values) if values else "—"


last = column("last")
table = {}
for name in methods:
    row = table[method_label(name)] = {}
    for rate in noise_rates:
        theirs = paper.paper_value(dataset, name, rate)
        ours = last.get((name, rate), [])
        row[(f"{rate:.0%}", "ours")] = cell(ours)
        row[(f"{rate:.0%}", "paper")] = f"{theirs[0]:.2f} ± {theirs[1]:.2f}" if theirs else "—"
        row[(f"{rate:.0%}", "Δ")] = f"{np.mean(ours) - theirs[0]:+.2f}" if theirs and ours else "—"
table = pd.DataFrame(table).T
table.columns = pd.MultiIndex.from_tuples(table.columns, names=["noise rate", ""])
table

# %% [markdown]
# **At the paper's scale.** Some of these methods on the paper's own protocol (all 60,000 rows, no
# validation split, 50 epochs, the whole test set), run by us outside this build, one seed; SEAL
# for 3 of the paper's 10 iterations. Test accuracy (%) at the last epoch:

# %%
if dataset == "mnist" and n_train is not None:  # a build on every row is itself at the paper's scale
    at_scale = []
    for name in ("table1_20", "table1_40"):
        rows, provenance = paper_scale(name)
        last_stage = rows.groupby("method").iteration.transform("max") == rows.iteration
        at_scale.append(rows[last_stage])
        print(provenance)
    at_scale = pd.concat(at_scale)
    seal_iterations = int(at_scale[at_scale.method == "seal"].iteration.max())
    at_scale = at_scale.pivot_table(index="method", columns="rate", values="last")
    display(at_scale.rename(index=method_label, columns=lambda r: f"{r:.0%}"))
    for r in [r for r in rates_of.get("coteaching", []) if r in at_scale.columns]:  # the paper's strongest baseline
        theirs = at_scale[r].get("seal", np.nan) - at_scale[r].get("coteaching", np.nan)
        if not np.isnan(theirs):
            ours = np.mean(last[("seal", r)]) - np.mean(last[("coteaching", r)])
            print(f"SEAL minus Co-teaching at {r:.0%}: {ours:+.2f} points in this build, {theirs:+.2f} at the paper's "
                  f"scale (one seed; SEAL after {seal_iterations} of the paper's {paper.seal_iterations(dataset)} "
                  "iterations)")

# %% [markdown]
# DAC's accuracy above counts abstentions as errors. How often it abstains at the last epoch, and
# its accuracy on the instances it keeps:

# %%
if "dac" in methods:
    abstained = column("abstained")
    display(pd.DataFrame({f"{r:.0%}": {
        "abstained (%)": cell(abstained[("dac", r)]),
        "accuracy on the kept instances (%)": cell([100 * a / (100 - b) if b < 100 else float("nan")
                                                     for a, b in zip(last[("dac", r)], abstained[("dac", r)])])}
        for r in rates_of["dac"]}))

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plots.PAGE_WIDTH, 4.2))
for i, name in enumerate(methods):
    color, rates = f"C{i}", rates_of[name]
    ax.errorbar([100 * r for r in rates], [np.mean(last[(name, r)]) for r in rates], color=color, marker="o",
                yerr=[np.std(last[(name, r)], ddof=1) for r in rates] if len(seeds) > 1 else None, capsize=3,
                label=method_label(name))
    theirs = [paper.paper_value(dataset, name, r) for r in noise_rates]
    if all(theirs):
        ax.plot([100 * r for r in noise_rates], [p[0] for p in theirs], color=color, ls="--", lw=1, alpha=0.7)
ax.set(xlabel="IDN rate (%)", ylabel="test accuracy at the last epoch (%)",
       title=f"{dataset}: ours (solid) and the paper (dashed)", xticks=[100 * r for r in noise_rates])
ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: the image keeps the page width
fig.tight_layout()

# %% [markdown]
# ## Forward's estimated transition matrix
#
# Forward is only as good as its $T$. Below: the mean absolute difference between the anchor-point
# estimate (from the CE model picked on the noisy validation split, else the last epoch's) and the
# true transition matrix of the training labels, next to that of the identity matrix (no noise
# assumed), which a CE model that has memorised its labels tends to give.

# %%
if "forward" in methods:
    n_classes = cells[0].run.n_classes
    identity = {(c.noise_rate, c.seed): T_error(c, torch.eye(n_classes)) for c in cells if c.method == "forward"}
    display(pd.DataFrame({f"{r:.0%}": {"Forward's T": cell(column("T_error")[("forward", r)]),
                                       "identity": cell([identity[(r, s)] for s in seeds])}
                          for r in rates_of["forward"]}))

# %% [markdown]
# ## Beyond the last epoch: best epoch and an epoch picked on noisy validation data
#
# The last epoch is the paper's headline because, without clean data, there is no principled
# way to stop early. The *best* epoch is an oracle (it looks at the test set); the
# *validation-selected* epoch is what a practitioner can do: hold out part of the noisy training
# set (`val_fraction`) and keep the epoch whose predictions agree most with its noisy labels.

# %%
best, selected = column("best"), column("val_selected")
extra = pd.DataFrame({(f"{r:.0%}", kind): {method_label(n): cell(values.get((n, r), [])) for n in methods}
                      for r in noise_rates for kind, values in (("last", last), ("best", best),
                                                                 ("val.-selected", selected))})
extra.columns.names = ["noise rate", "epoch"]
if not val_fraction:
    extra = extra.drop(columns="val.-selected", level=1)
    print("val_fraction = 0 (the paper's setting): no validation split, so no validation-selected column.")
extra

# %% [markdown]
# ## The paper's claims, checked on this run
#
# Each claim is decided over the seeds by the book's one rule (the [reproduction
# summary](../book/summary.md) states it): the claimed difference per seed (paired: the same seed,
# hence the same initial weights and batch order, for every method), its mean against twice its
# standard error. "SEAL is the best" holds at a rate where SEAL beats each other method run there.

# %%
table_ref = {"mnist": "Table 1", "cifar10": "Table 2"}.get(dataset, f"Tables 1-2 ({dataset})")


def beats(a, b, r):
    return judge(np.subtract(last[(a, r)], last[(b, r)]))


checks = []
if {"seal", "ce"} <= set(methods):
    checks.append((table_ref, "SEAL beats CE at every noise rate (accuracy points)",
                   every({f"{r:.0%}": beats("seal", "ce", r) for r in noise_rates})))
if "seal" in methods and baselines:
    judged = rates_of[baselines[0]]
    checks.append((table_ref, "SEAL is the best method at every rate" + (
        f" (judged at {', '.join(f'{r:.0%}' for r in judged)}, where this build runs every method)"
        if judged != noise_rates else ""),
        every({f"{r:.0%} vs {method_label(m)}": beats("seal", m, r) for r in judged for m in methods if m != "seal"})))
if {"seal_dmi", "dmi"} <= set(methods):
    checks.append(("Table 3 (here on IDN: beyond the paper)", "SEAL (DMI) improves DMI (accuracy points)",
                   every({f"{r:.0%}": beats("seal_dmi", "dmi", r) for r in rates_of["dmi"]})))
claims(checks, "benchmarks")

# %% [markdown]
# The methods exist to stop a network from memorising wrong labels. Where CE's last epoch is
# close to its best, CE has not memorised much noise in this protocol, so there is little to
# repair and the methods cannot separate; the paper's 50 epochs on 60k rows memorise far more.

# %%
if "ce" in methods:
    for r in noise_rates:
        gap = np.mean(best[("ce", r)]) - np.mean(last[("ce", r)])
        print(f"{r:.0%}: CE best epoch - last epoch = {gap:.2f} points"
              + (" (little memorised: expect the methods to tie)" if gap < 3 else ""))

# %% [markdown]
# ## Beyond the paper: ELR and PLC
#
# Each with its authors' CIFAR-10 setting (they publish none for MNIST): ELR with momentum
# $\beta = 0.7$ and $\lambda = 3$; PLC with threshold $\delta = 0.3$ rising by 0.1, softmax averaged
# over the last 5 epochs and 8 warm-up epochs (fewer in a run too short for them: half the epochs).
# Both train with this chapter's protocol, the one every method above shares, not their papers'
# ResNets and schedules. CE and SEAL from the table above are repeated for reference.

# %% tags=["remove-stderr"]
table_beyond = None
if beyond:
    spec_beyond = spec.replace(methods=beyond, noise_rates=beyond_rates or noise_rates)
    grid_beyond = build_grid(spec_beyond, device=device, train_labels=not collect_only, device_type=device_type)
    try:
        table_beyond = collect(grid_beyond) if collect_only else run_grid(grid_beyond, "local", device=device)
    except MissingRuns as missing:  # collect_only: idn-grid trained the paper's methods only
        print(f"{', '.join(beyond)}: {len(missing.cells)} cells not in the cache; train them with idn-grid "
              f"--methods {' '.join(beyond)} (same settings) to show them here")
if table_beyond is not None:
    rows_beyond = {(row["noise_rate"], row["seed"], row["method"]): row for row in table_beyond.to_dict("records")}
    shown = [m for m in ("ce", "seal") if m in methods] + list(beyond)
    source = {m: rows_beyond if m in beyond else results for m in shown}
    display(pd.DataFrame({f"{r:.0%}": {method_label(m) + ("" if m in beyond else " (above)"): cell(
        [source[m][(r, s, m)]["last"] for s in seeds]) if (r, seeds[0], m) in source[m] else "—" for m in shown}
        for r in spec_beyond.noise_rates}))
elif not beyond:
    print("beyond = []: no methods beyond the paper's in this build (the cpu profile leaves them out for time; the "
          "smoke and paper profiles run ELR and PLC). At the paper's scale, see the table above.")

# %% [markdown]
# ## Clothing1M (Table 3)
#
# Real-world noise: 1M images with labels from their shopping-site text, 14 classes; a clean
# 14k validation set picks the model, a clean 10k test set scores it. Protocol (Appendix A):
# ResNet-50 from ImageNet weights, 10 epochs, batch 256, SGD momentum 0.9, weight decay $10^{-3}$,
# learning rate $10^{-3}$ then $10^{-4}$ after 5 epochs ($10^{-6}$ and $0.5\times10^{-6}$ for
# DMI), random flip and 224 crop; SEAL continues from the best model of the previous iteration
# (3 iterations); Co-teaching forgets tau = 38.46%, Clothing1M's estimated noise rate. It runs when `data_root/clothing1m` holds the data set and
# `clothing1m_weights` the ImageNet weights (both distributed by their owners, never downloaded
# here); otherwise the paper's table is shown alone. * = number published by the method's authors.

# %%
paper3 = pd.DataFrame([((method_label(n) if n in METHODS else "Joint Optimization") + ("*" if star else ""), acc)
                       for n, acc, star in paper.CLOTHING1M], columns=["method", "paper"])
if clothing1m_available(data_root) and clothing1m_weights:
    grid3 = build_grid(spec.replace(dataset="clothing1m", methods=[m for m in methods if m in paper.CLOTHING1M_METHODS],
                                    seeds=(0,), n_epochs=clothing1m_epochs, n_iterations=None,
                                    clothing1m_weights=clothing1m_weights), device=device, device_type=device_type)
    table3 = collect(grid3) if collect_only else run_grid(grid3, "local", device=device)
    # the model kept is the best on the clean validation set: its test accuracy is val_selected
    ours = pd.DataFrame({"method": table3["label"], "ours": table3["val_selected"]})
    paper3 = paper3.merge(ours, on="method", how="outer")
    seal_ce = float(ours.set_index("method").loc["SEAL", "ours"] - ours.set_index("method").loc["CE", "ours"]) if {
        "SEAL", "CE"} <= set(ours["method"]) else None
    table3_claim = ("Table 3", "SEAL beats CE on Clothing1M", Verdict(NOT_CHECKED, "needs CE and SEAL in methods")
                    if seal_ce is None else judge([seal_ce]))  # one seed, as the paper's Table 3
else:
    print("Clothing1M or the ImageNet weights not found: showing the paper's Table 3 only.")
    table3_claim = ("Table 3", "SEAL beats CE on Clothing1M", Verdict(NOT_CHECKED, "not run",
                                                                      "needs the Clothing1M data set"))
display(claims([table3_claim], "clothing1m"))
paper3.set_index("method")
