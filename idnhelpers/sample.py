"""The rows of one experiment as one value (labelled training rows, their train/validation split,
scored test rows): equal settings give equal rows, so chapters and the grid share their runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .checks import check_float, check_int, check_seed, fail
from .datasets import get_dataset, load_dataset, subset
from .runs import Labelled, Run, Tensors
from .stats import validation_split


@dataclass(frozen=True, eq=False)
class Sample:
    """``rows`` of the training split (sorted; true labels ``y``), ``train``/``val`` positions into
    ``rows`` (``val`` None: no validation split), ``test_rows`` of the test split (true labels
    ``y_test``) and the ``seed`` that drew them (a labelling network's default seed)."""

    dataset: str
    rows: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor | None
    test_rows: torch.Tensor
    y: torch.Tensor
    y_test: torch.Tensor
    seed: int = 0
    root: str | None = None
    verify: bool = True

    @property
    def n_classes(self) -> int:
        return get_dataset(self.dataset).n_classes

    @functools.cached_property
    def X(self) -> torch.Tensor:
        return self.data("rows").X

    @functools.cached_property
    def _parts(self) -> dict:
        X_train, _ = load_dataset(self.dataset, self.root, train=True, verify=self.verify)
        of = functools.partial(Tensors.from_dataset, self.dataset, root=self.root, verify=self.verify)
        parts = {"rows": of(self.rows, X_all=X_train), "train": of(self.rows[self.train], X_all=X_train),
                 "test": of(self.test_rows, train=False)}
        if self.val is not None:
            parts["val"] = of(self.rows[self.val], X_all=X_train)
        return parts

    def data(self, part: str) -> Tensors:
        """The instances of "rows" (all labelled rows), "train", "val" or "test" (``Tensors`` that
        pickle as a reference to the rows)."""
        if part not in self._parts:
            fail("part", part, f"one of {list(self._parts)}")
        return self._parts[part]

    def run(self, labels: torch.Tensor, protocol, **fields) -> Run:
        """The run on the training rows with their ``labels`` (one per row of ``rows``), scored on the
        validation rows' noisy labels and the test rows' true labels; other ``Run`` fields by name."""
        labels = torch.as_tensor(labels)
        if labels.shape != self.y.shape:
            fail("labels", f"a tensor of shape {tuple(labels.shape)}",
                 f"one label per row of the sample ({len(self.y)})")
        val = None if self.val is None else Labelled(self.data("val"), labels[self.val])
        fields = {"y_true": self.y[self.train], "val": val, "test": Labelled(self.data("test"), self.y_test),
                  **fields}
        return Run(self.data("train"), labels[self.train], protocol, **fields)


def sample(dataset: str, *, n_train: int | None = None, n_test: int | None = None, val_fraction: float = 0.0,
           seed: int = 0, root=None, verify: bool = True) -> Sample:
    """``n_train`` random training rows (None: all), ``val_fraction`` of them as noisy validation rows
    (0: none) and at most ``n_test`` test rows (None: all), all drawn from ``seed``."""
    check_float(val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True)
    check_seed(seed)
    _, y_all = load_dataset(dataset, root, train=True, verify=verify)
    _, y, rows = subset(y_all, y_all, n_train, seed)
    _, y_test_all = load_dataset(dataset, root, train=False, verify=verify)
    if check_int(n_test, "n_test", minimum=1, none_ok=True) is not None:
        n_test = min(n_test, len(y_test_all))  # a cap on scoring's cost: a profile's n_test serves any data set
    _, y_test, test_rows = subset(y_test_all, y_test_all, n_test, seed, name="n_test")
    train, val = validation_split(len(y), val_fraction, seed) if val_fraction else (torch.arange(len(y)), None)
    return Sample(dataset, rows, train, val, test_rows, y, y_test, seed, None if root is None else str(root), verify)
