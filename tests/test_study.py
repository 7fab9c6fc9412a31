"""A study's settings as one value (``study.Study``) and its runs' results as another (``results.Results``)."""

import numpy as np
import pytest

from idnhelpers.grid import build_grid, run_study
from idnhelpers.results import mean_std
from idnhelpers.study import Study

TINY = dict(dataset="digits", family="symmetric", noise_seed=0, seeds=[0, 1], n_epochs=1, n_iterations=1,
            val_fraction=0.2, device="cpu", precision="fp32")


def test_files_are_read_in_order_then_the_names_and_an_unknown_name_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("dataset: digits\nfamily: symmetric\nseeds: [0, 1]\nn_epochs: 3\n")
    (tmp_path / "b.yaml").write_text("n_epochs: 5\nnoise_rates: [0.4, 0.2]\n")
    study = Study.load([tmp_path / "a.yaml", tmp_path / "b.yaml"], seeds=[7])
    assert (study.n_epochs, study.noise_rates, study.seeds, study.family) == (5, (0.2, 0.4), (7,), "symmetric")
    (tmp_path / "c.yaml").write_text("n_epoch: 5\n")
    with pytest.raises(ValueError, match=r"setting='n_epoch' is not allowed: a study setting: \['dataset'"):
        Study.load(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="baseline_rates=0.25 is not allowed"):
        Study(dataset="cifar10", family="cal_idn", noise_rates=[0.2], baseline_rates=[0.25])  # CAL's: 20, 40, 60%
    assert Study(dataset="mnist", baseline_rates=[0.25]).family_of(0.25) == "idn"  # the authors' 10-40%, completed


def test_each_method_runs_at_its_rates():
    study = Study(**{**TINY, "methods": ["ce", "gce", "seal"], "noise_rates": [0.2, 0.4], "baseline_rates": [0.4]})
    cells = build_grid(study).cells
    assert sorted((c.method, c.noise_rate) for c in cells if c.seed == 0) == [
        ("ce", 0.2), ("ce", 0.4), ("gce", 0.4), ("seal", 0.2), ("seal", 0.4)]
    assert study.rates_of("gce") == (0.4,) and study.rates_of("seal") == (0.2, 0.4)


def test_results_give_each_cells_numbers_per_seed_and_as_a_table():
    results = run_study(Study(**{**TINY, "methods": ["ce", "seal"], "noise_rates": [0.3]}), progress=False)
    frame = results.frame
    ce = frame[frame.method == "ce"].sort_values("seed")["last"].to_numpy()
    assert np.array_equal(results.values("ce", 0.3), ce) and len(ce) == 2
    assert results.table().loc["CE", "30%"] == mean_std(ce) == f"{ce.mean():.2f} ± {ce.std(ddof=1):.2f}"
    assert len(results.stages("seal", 0.3, 1)) == 2  # CE, then one SEAL iteration
    both = results.table({"last": "last", "best": "best"}, with_paper=True)
    assert list(both.columns) == [("30%", "last"), ("30%", "best"), ("30%", "paper"), ("30%", "Δ")]
    assert both.loc["SEAL", ("30%", "paper")] == "—"  # the paper has no digits table
    with pytest.raises(KeyError, match="no cell"):
        results.result("gce", 0.3, 0)


def test_the_command_lines_rates_are_every_methods_and_a_fixed_label_set_takes_none():
    from pathlib import Path

    from idnhelpers.grid import cli

    profiles = Path(__file__).resolve().parent.parent / "notebooks" / "profiles"
    chapter_05 = ["--profile", str(profiles / "cpu.yaml"), str(profiles / "cpu" / "05_benchmarks.yaml")]
    assert cli.study_from_args(cli.parser().parse_args(chapter_05)).baseline_rates == (0.4,)
    given = cli.study_from_args(cli.parser().parse_args([*chapter_05, "--rates", "0.2"]))
    assert (given.noise_rates, given.baseline_rates) == ((0.2,), None)
    fixed = cli.study_from_args(cli.parser().parse_args([*chapter_05, "--dataset", "cifar10", "--labels", "cifar10n"]))
    assert (fixed.family, fixed.noise_rates, fixed.baseline_rates) == ("cifar10n", None, None)
    with pytest.raises(ValueError, match="seed=None"):
        Study(seed=None)


def test_a_study_without_a_family_brings_its_own_labels_and_refuses_a_familys_settings():
    own = Study(dataset="digits", family=None, noise_rates=None)
    assert own.all_rates == [None] and own.noise_rates is None
    for ask in (lambda: own.noise_family, own.labels_used, lambda: own.labels(None)):  # no KeyError
        with pytest.raises(ValueError, match="family=None is not allowed: a noise family for labels of its own"):
            ask()
    for setting in (dict(noise_seed=0), dict(train_seed=1), dict(family_settings={"norm_std": 0.2})):
        with pytest.raises(ValueError, match="none with family=None"):
            Study(dataset="digits", family=None, **setting)
    with pytest.raises(ValueError, match="noise_rates=None is not allowed: one or more noise rates for family 'xia'"):
        Study(dataset="digits", family="xia", noise_rates=None)
