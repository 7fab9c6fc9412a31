"""``Results``, what a study's runs give (``grid.run_study``, ``grid.collect``), and ``mean_std``,
the one way a number measured over seeds is shown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import paper
from .methods import method_label, summarize
from .runs import MethodResult, RunResult
from .stats import estimate_transition_matrix


def mean_std(values, digits: int = 2) -> str:
    """``values`` (one per seed) as "mean ± std" (the mean alone for one value; a dash for none)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "—"
    mean = f"{values.mean():.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {values.std(ddof=1):.{digits}f}"


def T_error(cell, T: torch.Tensor | None) -> float:
    """Mean absolute difference between ``T`` (Forward's) and the cell's true transition matrix (or NaN)."""
    run = cell.run
    if T is None or run.y_true is None:
        return float("nan")
    true = estimate_transition_matrix(run.y_true, run.targets, run.n_classes)
    return float((T.double() - true).abs().mean())


def _row(cell, result: MethodResult) -> dict:
    """A finished cell's numbers: ``methods.summarize``'s accuracies (%), DAC's abstained (%) and
    kept accuracy, Forward's ``T_error`` and the identity's (NaN for other methods), seconds, device."""
    nan = [float("nan")]
    identity = torch.eye(cell.run.n_classes) if result.T is not None else None
    return dict(dataset=cell.dataset, method=cell.method, label=method_label(cell.method), family=cell.family,
                labels=cell.labels, noise_rate=cell.noise_rate, seed=cell.seed, **summarize(result),
                abstained=100 * result.history.get("test_abstained", nan)[-1],
                kept_acc=100 * result.history.get("test_kept_acc", nan)[-1],
                T_error=T_error(cell, result.T), T_error_identity=T_error(cell, identity),
                seconds=sum(s.seconds for s in result.stages), device=result.final.device)


class Results:
    """The finished cells of a study: ``frame`` (a row per cell, ``_row``'s columns), one cell's
    ``result``/``stages``, a measure's ``values`` over seeds and its ``table`` of mean ± std."""

    def __init__(self, cells_and_results, description: str = ""):
        self.description = description  # the data, labels and protocol (``grid.Grid.description``)
        self._cells = {(cell.family, cell.method, cell.noise_rate, cell.seed): (cell, result, _row(cell, result))
                       for cell, result in cells_and_results}
        self.frame = pd.DataFrame([row for *_, row in self._cells.values()])

    def __add__(self, other: "Results") -> "Results":
        """Both results' cells (``other``'s where both have one), each row computed once."""
        merged = Results([], self.description)
        merged._cells = {**self._cells, **other._cells}
        merged.frame = pd.DataFrame([row for *_, row in merged._cells.values()])
        return merged

    def __len__(self) -> int:
        return len(self._cells)

    def _family(self, family: str | None) -> str:
        families = list(dict.fromkeys(f for f, *_ in self._cells))
        if family is None and len(families) == 1:
            return families[0]
        if family not in families:
            raise KeyError(f"family={family!r}: these results have {families}")
        return family

    def result(self, method: str, rate, seed: int, family: str | None = None) -> MethodResult:
        """The method's result on one cell (``KeyError`` naming what is there when it did not run)."""
        key = (self._family(family), method, rate, seed)
        if key not in self._cells:
            raise KeyError(f"no cell {key} (family, method, rate, seed) in these results: "
                           f"{sorted(self._cells, key=str)}")
        return self._cells[key][1]

    def stages(self, method: str, rate, seed: int, family: str | None = None) -> list[RunResult]:
        """The cell's stages in order (CE, then e.g. SEAL's iterations)."""
        return list(self.result(method, rate, seed, family).stages)

    def _by_seed(self, method: str, rate, key: str, family: str | None) -> dict:
        """``{seed: key's value}`` of the method at ``rate`` (a ``frame`` column), by seed."""
        family = self._family(family)
        rows = {s: row for (f, m, r, s), (*_, row) in self._cells.items() if (f, m, r) == (family, method, rate)}
        return {s: rows[s][key] for s in sorted(rows)}

    def seeds(self, method: str, rate, family: str | None = None) -> list[int]:
        return list(self._by_seed(method, rate, "seed", family))

    def values(self, method: str, rate, key: str = "last", family: str | None = None) -> np.ndarray:
        """``key`` (a ``frame`` column, e.g. "last" or "best") of the method at ``rate``, by seed."""
        return np.array(list(self._by_seed(method, rate, key, family).values()))

    def gain(self, method: str, rate, key: str = "last", *, over: str = "ce",
             family: str | None = None) -> np.ndarray:
        """``method``'s ``key`` minus ``over``'s last-epoch accuracy on the seeds both ran: SEAL's gain
        over CE, or with ``method=over`` and ``key="best"`` the memorisation gap."""
        ours, theirs = self._by_seed(method, rate, key, family), self._by_seed(over, rate, "last", family)
        return np.array([ours[s] - theirs[s] for s in ours if s in theirs])

    def table(self, key="last", *, family: str | None = None, methods=None,
              with_paper: bool = False) -> pd.DataFrame:
        """``key`` (a ``frame`` column, or ``{label: column}``) as mean ± std, a row per method and
        a column per rate; ``with_paper``: beside it Tables 1-2's last-epoch accuracy and ours minus it."""
        family = self._family(family)
        keys = {"ours": key} if isinstance(key, str) else dict(key)
        cells = [cell for cell, *_ in self._cells.values() if cell.family == family]
        if methods is None:
            methods = list(dict.fromkeys(cell.method for cell in cells))
        # a label set's column: its noise rate, or the name of a fixed set (its measured rate is no target)
        columns = {c.noise_rate: f"{c.noise_rate:.0%}" if c.labels == f"{c.noise_rate:g}" else c.labels
                   for c in cells if c.method in methods}
        dataset, table = cells[0].dataset, {}
        for method in methods:
            row = table[method_label(method)] = {}
            for rate in sorted(columns):
                for label, k in keys.items():
                    row[(columns[rate], label)] = mean_std(self.values(method, rate, k, family))
                if with_paper:
                    ours, theirs = self.values(method, rate, "last", family), paper.paper_value(dataset, method, rate)
                    row[(columns[rate], "paper")] = f"{theirs[0]:.2f} ± {theirs[1]:.2f}" if theirs else "—"
                    row[(columns[rate], "Δ")] = f"{ours.mean() - theirs[0]:+.2f}" if theirs and len(ours) else "—"
        table = pd.DataFrame(table).T
        table.columns = pd.MultiIndex.from_tuples(table.columns, names=["noise rate", ""])
        return table.droplevel(1, axis=1) if isinstance(key, str) and not with_paper else table
