"""Figures of the book, as functions returning matplotlib figures, sized for the page.

Every figure is at most ``PAGE_WIDTH`` inches wide at 100 dpi, about the width of the book's
content column, so the browser shows it unscaled and ``BOOK_STYLE``'s fonts (no text under
9 pt) stay legible. Chapters call ``use_book_style()`` once.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.ticker import MaxNLocator

PAGE_WIDTH = 6.8  # inches: 680 px at 100 dpi, inside the theme's 688 px content column
BOOK_STYLE = {"figure.dpi": 100, "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
              "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11}


def use_book_style() -> None:
    """Fonts and resolution of the book's figures (``BOOK_STYLE``); tables show whole cells."""
    import pandas as pd

    plt.rcParams.update(BOOK_STYLE)
    pd.set_option("display.max_colwidth", None)


def epoch_axis(ax) -> None:
    """Label ``ax``'s x axis as epochs, with integer ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def image_array(x: torch.Tensor) -> np.ndarray:
    """A C x H x W tensor as an array for ``imshow`` (H x W for one channel, H x W x C otherwise)."""
    x = x.cpu().numpy()
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def image_grid(X, titles, ncols: int = 6):
    """Show uint8 images ``X`` (N x C x H x W) with a title each, ``ncols`` per row across the page."""
    n = len(X)
    nrows = max(1, -(-n // ncols))
    size = PAGE_WIDTH / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, nrows * (size + 0.3)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(image_array(X[i]), cmap="gray_r" if X.shape[1] == 1 else None)
            ax.set_title(titles[i])
    fig.tight_layout()
    return fig


def transition_heatmaps(matrices: dict, class_names=None, vmax: float | None = None):
    """Side-by-side heatmaps of noise transition matrices M_pq = P(noisy q | true p), in %."""
    fig, axes = plt.subplots(len(matrices), 1, figsize=(PAGE_WIDTH, 5.6 * len(matrices)), squeeze=False)
    for ax, (title, M) in zip(axes.flat, matrices.items()):
        M = 100 * torch.as_tensor(M).double().numpy()
        sns.heatmap(M, ax=ax, annot=True, fmt=".0f", cmap="rocket_r", vmin=0, vmax=vmax or 100, cbar=False,
                    xticklabels=class_names or "auto", yticklabels=class_names or "auto", annot_kws={"size": 9})
        ax.set(title=title, xlabel="noisy label", ylabel="true label")
    fig.tight_layout()
    return fig


def per_class_rates(rates: dict, class_names):
    """Grouped bars: per-class noise rate (rows of ``rates``: label -> vector over classes)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.4))
    width = 0.8 / len(rates)
    for i, (label, r) in enumerate(rates.items()):
        ax.bar(np.arange(len(class_names)) + i * width - 0.4 + width / 2, 100 * np.asarray(r), width, label=label)
    ax.set(xticks=range(len(class_names)), xticklabels=class_names, ylabel="labels flipped (%)",
           xlabel="true class")
    ax.legend(ncols=len(rates))
    fig.tight_layout()
    return fig


def score_histogram(score, thresholds: dict):
    """Distribution of the mislabeling score N(x) with each rate's flip threshold."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.2))
    ax.hist(torch.as_tensor(score).numpy(), bins=100, log=True, color="0.5")
    for label, t in thresholds.items():
        ax.axvline(t, ls="--", lw=1, color=plt.cm.viridis(list(thresholds).index(label) / max(1, len(thresholds) - 1)),
                   label=f"{label}: flip N(x) ≥ {t:.3g}")
    ax.set(xlabel="N(x) = max over k ≠ y of averaged softmax S_k", ylabel="instances (log)")
    ax.legend()
    fig.tight_layout()
    return fig


def accuracy_by_rate(results, methods, dataset: str):
    """Test accuracy at the last epoch against the noise rate, mean ± std over seeds per method
    (solid), beside the paper's Tables 1-2 (dashed) where it has the method at every rate shown."""
    from idnhelpers import paper
    from idnhelpers.methods import method_label

    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.2))
    all_rates = sorted(results.frame["noise_rate"].unique())
    for i, name in enumerate(methods):
        rates = [r for r in all_rates if len(results.values(name, r))]
        values = [results.values(name, r) for r in rates]
        spread = [v.std(ddof=1) for v in values] if min(map(len, values)) > 1 else None
        ax.errorbar([100 * r for r in rates], [v.mean() for v in values], yerr=spread, capsize=3, marker="o",
                    color=f"C{i}", label=method_label(name))
        theirs = [paper.paper_value(dataset, name, r) for r in all_rates]
        if all(theirs):
            ax.plot([100 * r for r in all_rates], [p[0] for p in theirs], color=f"C{i}", ls="--", lw=1, alpha=0.7)
    ax.set(xlabel="noise rate (%)", ylabel="test accuracy at the last epoch (%)", xticks=[100 * r for r in all_rates],
           title=f"{dataset}: ours (solid) and the paper (dashed)")
    ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: the image keeps the page width
    fig.tight_layout()
    return fig


def transition_grid(matrices: dict, families, rates):
    """The off-diagonal part of each ``matrices[(family, rate)]``: a row of panels per rate, a column
    per family, one colour scale for all (an empty panel where a family cannot give the rate)."""
    fig, axes = plt.subplots(len(rates), len(families), figsize=(PAGE_WIDTH, 1.35 * len(rates) + 0.5), squeeze=False,
                             sharex=True, sharey=True)
    vmax = max(float(M.clone().fill_diagonal_(0).max()) for M in matrices.values())
    for i, r in enumerate(rates):
        for j, f in enumerate(families):
            ax = axes[i, j]
            ax.set_title(f if i == 0 else "")
            ax.set_ylabel(f"{r:.0%} noise\ntrue class" if j == 0 else "")
            ax.set_xlabel("noisy label" if i == len(rates) - 1 else "")
            if (f, r) not in matrices:
                ax.text(0.5, 0.5, "cannot give\nthis rate", ha="center", va="center", transform=ax.transAxes)
                continue
            M = matrices[(f, r)]
            im = ax.imshow(M.clone().fill_diagonal_(float("nan")), vmin=0, vmax=vmax, cmap="magma")
            ax.set_xticks(range(0, len(M), 3))
            ax.set_yticks(range(0, len(M), 3))
    fig.colorbar(im, ax=axes, shrink=0.8, label="M_pq (off-diagonal)")
    return fig


def curves_by_family(results, families, rates, seed: int):
    """CE's test accuracy per epoch under each family, a panel per noise rate (one seed)."""
    fig, axes = plt.subplots(1, len(rates), figsize=(PAGE_WIDTH, 3.4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], rates):
        for f in (f for f in families if seed in results.seeds("ce", r, f)):
            acc = results.result("ce", r, seed, family=f).final.history["test_acc"]
            ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], label=f)
        ax.set(title=f"CE test accuracy, {r:.0%} noise (seed {seed})")
        epoch_axis(ax)
    axes[0, 0].set_ylabel("test accuracy (%)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), title="family", loc="lower center", ncols=len(families))
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def method_family_heatmap(means, ranks, reference: str = "CE"):
    """Test accuracy (%) of each method (rows of ``means``) under each noise family (columns), written in
    each cell with the method's rank in that family (``ranks``, 1 = best); the colour is the accuracy
    minus ``reference``'s in the same family (a row label; without that row, minus the family's mean),
    so it shows what a method adds under each family rather than how hard the family is."""
    if reference not in means.index:
        reference, base = "the mean", means.mean()
    else:
        base = means.loc[reference]
    gain = means - base
    limit = max(float(np.nanmax(np.abs(gain.to_numpy()))), 0.5)
    notes = means.map(lambda v: f"{v:.1f}") + ranks.map(lambda r: f" ({r})")
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.42 * len(means) + 1.5))
    sns.heatmap(gain, ax=ax, annot=notes, fmt="", cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                annot_kws={"size": 9}, cbar_kws={"label": f"points above {reference}"})
    ax.set(xlabel="noise family", ylabel="", title="test accuracy (%) at the last epoch (rank in the family)")
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig
