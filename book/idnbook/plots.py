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
