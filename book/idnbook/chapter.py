"""What every chapter of the book does: set up (``setup``: its ``Study``, checked before any work
starts) and report its checks of the paper's claims (``claims``), which ``book/build.py`` collects
into the book's reproduction summary.

A chapter's experiment settings (``dataset``, ``noise_rates``, ``n_epochs``, ...) are
``idnhelpers.study.Study`` fields, checked there; its own parameters (``alpha``, ``csr_size``, ...)
have one check each here (``CHECKS``). Under papermill a misspelt parameter (``-p noise_rate 0.3``)
is an error too: papermill injects it in a cell of its own, and ``check_parameters`` refuses a name
assigned there that the chapter does not declare and that is no study setting or chapter parameter.
"""

from __future__ import annotations

import ast
import json

from idnbook.verdicts import Verdict
from idnhelpers.checks import check_bool, check_choice, check_distinct, check_float, check_int, check_seeds, fail
from idnhelpers.csr import SEARCHES
from idnhelpers.datasets import get_dataset
from idnhelpers.experiments import CSR_PROBES
from idnhelpers.runs import DEVICE_TYPES
from idnhelpers.study import Study

PAPERMILL_HEADER = "# Parameters"  # first line of the cell papermill injects


def _int(minimum):
    return lambda v, name: check_int(v, name, minimum=minimum)


def _baselines(v, name):
    """Chapter 06's baselines: methods run beside CE and SEAL, which it always runs."""
    from idnhelpers.methods import METHODS

    others = sorted(set(METHODS) - {"ce", "seal"})
    if not isinstance(v, (list, tuple)):
        fail(name, v, f"a list of method names from {others}")
    for m in v:
        check_choice(m, name, others)
    check_distinct(v, name, "method names")


def _families(v, name):
    from idnhelpers.families import FAMILIES

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


def _number(low=None, high=None, low_open=False, high_open=False):
    return lambda v, name: check_float(v, name, low=low, high=high, low_open=low_open, high_open=high_open)


# The chapters' own parameters; the settings of their experiment are ``Study`` fields, checked there.
CHECKS = {
    "noise_types": _noise_types,
    "baselines": _baselines,
    "families": _families,
    "tabular_dataset": _features_dataset,
    "tabular_epochs": _int(1),
    "collect_only": check_bool,
    "alpha": _number(0.0, 1.0, low_open=True, high_open=True),
    "cv_folds": _int(2),
    "csr_size": _int(1),
    "csr_every": _int(1),
    "csr_radius": _number(0.0),
    "csr_search": lambda v, name: check_choice(v, name, SEARCHES),
    "csr_probe": lambda v, name: check_choice(v, name, CSR_PROBES),
    "idn_seeds": lambda v, name: check_seeds(v, name),
    "trained_on": lambda v, name: check_choice(v, name, ("auto",) + DEVICE_TYPES),
    "clothing1m_epochs": _int(1),
    "clothing1m_val_error": _number(0.0, 1.0),
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


def _papermill_hint(error: ValueError, name: str, value):
    """``error``, with how to give a list or null to papermill where ``-p`` passed one as a string."""
    if isinstance(value, str) and (value.lstrip().startswith("[") or value in ("null", "None")):
        return ValueError(f"{error}. papermill's -p passes {value!r} as a string: give lists and null "
                          f"with -y, e.g. -y '{name}: {value}'")
    return error


def check_parameters(namespace: dict) -> None:
    """Check the chapter's own parameters (``CHECKS``) and, under papermill, that every injected
    name is one the chapter declares or a study setting. Raises ``ValueError`` naming the
    parameter, its value and what is allowed."""
    injected, declared = _papermill_cells(namespace)
    if injected is not None:
        known = set(declared) | set(CHECKS) | set(Study.fields())
        unknown = [n for n in assigned_names(injected) if n not in known]
        if unknown:
            fail("parameter", ", ".join(unknown), f"a parameter this chapter declares: {declared}")
    for name, check in CHECKS.items():
        if name in namespace:
            try:
                check(namespace[name], name)
            except ValueError as error:
                raise _papermill_hint(error, name, namespace[name]) from None


def setup(namespace: dict, **defaults) -> Study | None:
    """A chapter's first step, on its globals: check its own parameters (``check_parameters``),
    apply the book's figure style, and return its ``Study``: the study settings it declares
    (``defaults`` for those it does not, e.g. the family of labels it makes), checked once, with
    ``precision="auto"`` decided for its ``device`` and ``methods=None`` read as every registered
    method, in the registry's order (None for a chapter without a ``dataset``)."""
    from . import plots

    check_parameters(namespace)
    plots.use_book_style()
    if "dataset" not in namespace:
        return None
    _, declared = _papermill_cells(namespace)
    # a shared profile injects every chapter's names: a chapter's study is made of the ones it declares
    names = [n for n in Study.fields() if n in namespace and (declared is None or n in declared)]
    given = {name: namespace[name] for name in names}
    if "methods" in given and given["methods"] is None:  # every registered method, one registered later too
        from idnhelpers.methods import METHODS

        given["methods"] = list(METHODS)
    try:
        return Study.load(**{**defaults, **given}).resolved()
    except ValueError as error:
        name = next((n for n in given if f"{n}=" in str(error)), None)
        raise _papermill_hint(error, name, given.get(name)) from None


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
    ``verdicts.Verdict``); a verdict that is not resolved (or not checked) shows its reason beside the
    evidence. Shown in the chapter, and glued (myst-nb) as ``claims:<name>`` for the reproduction
    summary page."""
    import pandas as pd

    for row in rows:
        if len(row) != 3 or not isinstance(row[2], Verdict):
            fail("rows", row, "(where in the paper, claim, verdicts.Verdict)")
    table = pd.DataFrame([(ref, claim, v.verdict, v.evidence + (f". {v.reason[0].upper()}{v.reason[1:]}" if v.reason
                                                                else "")) for ref, claim, v in rows],
                         columns=CLAIM_COLUMNS)
    try:
        from myst_nb import glue
    except ImportError:  # outside the book (no myst-nb installed): the table alone
        return table
    glue(CLAIMS_GLUE + name, json.dumps(table.to_dict("records")), display=False)
    return table


def paper_scale_accuracy(names):
    """The last-epoch test accuracy of measurements ``names`` of ``book/paper_scale.yaml`` (Table 1 at
    the paper's protocol), each method at its last stage: a method x rate table, the provenance
    lines, and the SEAL iterations run there."""
    import pandas as pd

    parts, lines = [], []
    for name in names:
        rows, provenance = paper_scale(name)
        parts.append(rows[rows.groupby("method").iteration.transform("max") == rows.iteration])
        lines.append(provenance)
    rows = pd.concat(parts)
    iterations = int(rows[rows.method == "seal"].iteration.max())
    return rows.pivot_table(index="method", columns="rate", values="last"), lines, iterations


def paper_table3():
    """The paper's Table 3 (Clothing1M, ``paper.CLOTHING1M``): test accuracy (%) per method, a star
    where the number was published by the method's own authors."""
    import pandas as pd

    from idnhelpers import paper
    from idnhelpers.methods import method_label

    rows = [(("Joint Optimization" if n == "joint_optimization" else method_label(n)) + "*" * star, accuracy)
            for n, accuracy, star in paper.CLOTHING1M]
    return pd.DataFrame(rows, columns=["method", "paper"]).set_index("method")


def glue_tally(table, name: str) -> None:
    """Glue (myst-nb) how many of a claims table's checks hold (``<name>_held``), how many there are
    (``<name>_checked``) and the others with their verdicts (``<name>_failed``), for the prose."""
    from IPython.display import Markdown
    from myst_nb import glue

    verdicts = table.set_index("claim")["verdict"]
    glue(f"{name}_held", int((verdicts == "holds").sum()), display=False)
    glue(f"{name}_checked", len(verdicts), display=False)
    glue(f"{name}_failed", Markdown("; ".join(f"{c} ({v})" for c, v in verdicts.items() if v != "holds") or "none"),
         display=False)


def compare_at_scale(results, at_scale, a: str, b: str, iterations: int) -> str:
    """``a`` minus ``b`` (last-epoch test accuracy) in this build and at the paper's scale
    (``paper_scale_accuracy``'s table, SEAL after ``iterations``), at each rate where both ran in both."""
    from idnhelpers import paper
    from idnhelpers.methods import method_label

    dataset, lines = results.frame["dataset"].iloc[0], []
    for r in at_scale.columns:
        theirs = at_scale[r].get(a, float("nan")) - at_scale[r].get(b, float("nan"))
        if theirs == theirs and len(results.values(a, r)) and len(results.values(b, r)):  # both ran in both
            ours = results.values(a, r).mean() - results.values(b, r).mean()
            lines.append(f"{method_label(a)} minus {method_label(b)} at {r:.0%}: {ours:+.2f} points in this build, "
                         f"{theirs:+.2f} at the paper's scale (one seed; SEAL after {iterations} of the paper's "
                         f"{paper.seal_iterations(dataset)} iterations)")
    return "\n".join(lines)


def run_beyond(study, collect_only: bool, device_type):
    """The runs of the methods a chapter shows beyond the paper's (``grid.run_study``); with
    ``collect_only``, none where the cache lacks some (``idn-grid --table`` trains the paper's
    methods only), with a line naming the command that trains them."""
    from idnhelpers.grid import MissingRuns, run_study
    from idnhelpers.results import Results

    try:
        return run_study(study, collect_only=collect_only, device_type=device_type)
    except MissingRuns as missing:
        print(f"{', '.join(study.methods)}: {len(missing.cells)} cells not in the cache; train them with idn-grid "
              f"--methods {' '.join(study.methods)} (same settings) to show them here")
        return Results([])
