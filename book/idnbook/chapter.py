"""What every chapter of the book does: set up (``setup``: check its parameters before any work
starts, resolve its precision, pick its rows) and report its checks of the paper's claims
(``claims``), which ``book/build.py`` collects into the book's reproduction summary.

The chapters share parameter names (``dataset``, ``noise_rates``, ``n_epochs``, ...); each name has
one check here, with the library's messages (parameter, value, what is allowed). Under papermill
a misspelt parameter (``-p noise_rate 0.3``) is an error too: papermill injects it in a cell of
its own, and ``check_parameters`` refuses a name assigned there that the chapter's ``parameters``
cell does not declare and no chapter uses (a shared profile's names for other chapters pass).
"""

from __future__ import annotations

import ast
import json

from idnhelpers.checks import (check_bool, check_choice, check_distinct, check_float, check_int, check_rates,
                               check_seed, check_seeds, fail)
from idnhelpers.csr import SEARCHES
from idnhelpers.datasets import get_dataset
from idnhelpers.experiments import CSR_PROBES
from idnhelpers.hardware import PRECISION_CHOICES, resolve_device
from idnhelpers.runs import DEVICE_TYPES

PAPERMILL_HEADER = "# Parameters"  # first line of the cell papermill injects


def _optional_int(minimum):
    return lambda v, name: check_int(v, name, minimum=minimum, none_ok=True)


def _int(minimum):
    return lambda v, name: check_int(v, name, minimum=minimum)


def _path_or_none(v, name):
    if v is not None and not isinstance(v, str):
        fail(name, v, "a folder or file path (a string), or null")


def _methods(v, name, empty_ok=False):
    from idnhelpers.methods import METHODS

    if not isinstance(v, (list, tuple)) or not (v or empty_ok):
        fail(name, v, f"a {'' if empty_ok else 'non-empty '}list of method names from {sorted(METHODS)}")
    for m in v:
        check_choice(m, name, sorted(METHODS))
    check_distinct(v, name, "method names")


def _families(v, name):
    from idnhelpers.noise import FAMILIES

    if not isinstance(v, (list, tuple)) or not v:
        fail(name, v, f"a non-empty list of noise families from {list(FAMILIES)}")
    for f in v:
        check_choice(f, name, FAMILIES)


def _features_dataset(v, name):
    if not get_dataset(v).is_features:
        fail(name, v, "a feature-vector data set, e.g. 'breast_cancer' or 'wine'")


def _noise_types(v, name):
    if not isinstance(v, (list, tuple)) or not v:
        fail(name, v, "a non-empty list from ['IDN', 'CCN']")
    for t in v:
        check_choice(t, name, ["IDN", "CCN"])


def _device(v, name):
    resolve_device(v)


def _number(low=None, high=None, low_open=False, high_open=False):
    return lambda v, name: check_float(v, name, low=low, high=high, low_open=low_open, high_open=high_open)


CHECKS = {
    "dataset": lambda v, name: get_dataset(v),
    "data_root": _path_or_none,
    "noise_rates": lambda v, name: check_rates(v, name),
    "noise_types": _noise_types,
    "methods": _methods,
    "baselines": lambda v, name: _methods(v, name, empty_ok=True),
    "beyond": lambda v, name: _methods(v, name, empty_ok=True),
    "beyond_rates": lambda v, name: None if v is None else check_rates(v, name),
    "baseline_rates": lambda v, name: None if v is None else check_rates(v, name),
    "families": _families,
    "tabular_dataset": _features_dataset,
    "tabular_epochs": _int(1),
    "noise_seed": lambda v, name: check_seed(v, name),
    "family": lambda v, name: _families([v], name),
    "family_settings": lambda v, name: v if isinstance(v, dict) else fail(name, v, "a dict of the family's settings"),
    "collect_only": check_bool,
    "n_epochs": _optional_int(1),
    "n_train": _optional_int(1),
    "n_test": _optional_int(1),
    "n_iterations": _int(0),
    "dmi_epochs": _optional_int(1),
    "val_fraction": _number(0.0, 1.0, high_open=True),
    "alpha": _number(0.0, 1.0, low_open=True, high_open=True),
    "csr_size": _int(1),
    "csr_every": _int(1),
    "csr_radius": _number(0.0),
    "csr_search": lambda v, name: check_choice(v, name, SEARCHES),
    "csr_probe": lambda v, name: check_choice(v, name, CSR_PROBES),
    "seed": lambda v, name: check_seed(v, name),
    "seeds": lambda v, name: check_seeds(v, name),
    "idn_seeds": lambda v, name: check_seeds(v, name),
    "device": _device,
    "trained_on": lambda v, name: check_choice(v, name, ("auto",) + DEVICE_TYPES),
    "precision": lambda v, name: check_choice(v, name, PRECISION_CHOICES),
    "clothing1m_weights": _path_or_none,
    "clothing1m_epochs": _int(1),
    "clothing1m_val_error": _number(0.0, 1.0),
    "profile": lambda v, name: v if isinstance(v, str) else fail(name, v, "the name of a parameter file (a string)"),
}


def assignments(source: str) -> dict:
    """``name: value`` of a cell's top-level assignments, in order of first binding; the value is
    the literal assigned, or its source text when it is not a literal."""
    values = {}
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Name) and node.value is not None:
                try:
                    values[t.id] = ast.literal_eval(node.value)
                except ValueError:
                    values[t.id] = ast.unparse(node.value)
    return values


def assigned_names(source: str) -> list[str]:
    """The names a cell's top-level assignments bind, in order."""
    return list(assignments(source))


def _papermill_cells(namespace: dict) -> tuple[str | None, list[str] | None]:
    """Under papermill, the source of its injected cell and the names the chapter's parameters cell
    (the one before it) declares; (None, None) otherwise."""
    history = namespace.get("In", [])
    injected = next((i for i, cell in enumerate(history) if cell.startswith(PAPERMILL_HEADER)), None)
    if injected is None or injected == 0:
        return None, None
    return history[injected], assigned_names(history[injected - 1])


def check_parameters(namespace: dict) -> None:
    """Check the parameters of the chapter whose globals are ``namespace``: each value with the
    check of its name (``CHECKS``), and, under papermill, that every injected name is one the
    chapter declares. Raises ``ValueError`` naming the parameter, its value and what is allowed."""
    injected, declared = _papermill_cells(namespace)
    if injected is not None:
        unknown = [n for n in assigned_names(injected) if n not in declared and n not in CHECKS]
        if unknown:
            fail("parameter", ", ".join(unknown), f"a parameter this chapter declares: {declared}")
    for name, check in CHECKS.items():
        if name not in namespace:
            continue
        value = namespace[name]
        try:
            check(value, name)
        except ValueError as error:
            if isinstance(value, str) and (value.lstrip().startswith("[") or value in ("null", "None")):
                raise ValueError(f"{error}. papermill's -p passes {value!r} as a string: give lists and null "
                                 f"with -y, e.g. -y '{name}: {value}'") from None
            raise


def setup(namespace: dict):
    """A chapter's first step, on its globals: check every parameter (``check_parameters``), replace
    ``precision="auto"`` by what this machine's ``device`` runs fast (``hardware.resolve_precision``),
    apply the book's figure style, and return the ``sample.Sample`` its ``dataset``, ``n_train``,
    ``n_test``, ``val_fraction``, ``seed`` and ``data_root`` choose, those it declares (None for a chapter without a
    ``dataset``). Chapters with the same settings get the same rows, and so share their runs."""
    from idnhelpers.hardware import resolve_precision
    from idnhelpers.sample import sample

    from . import plots

    check_parameters(namespace)
    if "precision" in namespace:
        namespace["precision"] = resolve_precision(namespace["precision"], namespace.get("device", "auto"))
    plots.use_book_style()
    if "dataset" not in namespace:
        return None
    _, declared = _papermill_cells(namespace)
    # a shared profile injects every chapter's names: a chapter's rows come from the ones it declares
    given = {name: namespace[name] for name in ("n_train", "n_test", "val_fraction", "seed", "data_root")
             if name in namespace and (declared is None or name in declared)}
    return sample(namespace["dataset"], n_train=given.get("n_train"), n_test=given.get("n_test"),
                  val_fraction=given.get("val_fraction", 0.0), seed=given.get("seed", 0), root=given.get("data_root"))


def mean_std(values, digits: int = 2) -> str:
    """``values`` (one per seed) as "mean ± standard deviation" (the mean alone for one value): how
    every chapter shows a number measured over seeds."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


PAPER_SCALE = "book/paper_scale.yaml"  # results at the paper's protocol, run outside the book's build


def paper_scale(name: str, path: str = PAPER_SCALE):
    """The measurement ``name`` of ``book/paper_scale.yaml`` (read from the repository root, where the
    chapters run): results of runs at the paper's protocol that no ``cpu`` build can afford, shown
    beside a chapter's own numbers. Returns its rows as a DataFrame and one line of provenance
    (what, command, commit, precision, hardware, date, cost), which says that this build did not
    produce them."""
    import pandas as pd
    import yaml

    with open(path) as f:
        entry = (yaml.safe_load(f) or {}).get(name)
    if entry is None:
        fail("name", name, f"a measurement of {path}")
    p = entry["provenance"]
    line = (f"Not produced by this build: {entry['what']}. Run with `{p['command']}` at commit {p['commit']}, "
            f"{p['precision']}, on {p['hardware']}, {p['date']} ({p['cost']}).")
    return pd.DataFrame(entry["rows"]), line


CLAIMS_GLUE = "claims:"  # glue-name prefix of a chapter's claim tables (book/build.py reads them)
CLAIM_COLUMNS = ["paper", "claim", "verdict", "evidence"]


def claims(rows, name: str):
    """A chapter's checks of the paper's claims as a table: ``rows`` of (where in the paper, claim,
    ``stats.Verdict``); a verdict that is not resolved (or not checked) shows its reason beside the
    evidence. Shown in the chapter, and glued (myst-nb) as ``claims:<name>`` for the reproduction
    summary page."""
    import pandas as pd

    from idnhelpers.stats import Verdict

    for row in rows:
        if len(row) != 3 or not isinstance(row[2], Verdict):
            fail("rows", row, "(where in the paper, claim, stats.Verdict)")
    table = pd.DataFrame([(ref, claim, v.verdict, v.evidence + (f". {v.reason[0].upper()}{v.reason[1:]}" if v.reason
                                                                else "")) for ref, claim, v in rows],
                         columns=CLAIM_COLUMNS)
    try:
        from myst_nb import glue
    except ImportError:  # outside the book (no myst-nb installed): the table alone
        return table
    glue(CLAIMS_GLUE + name, json.dumps(table.to_dict("records")), display=False)
    return table
