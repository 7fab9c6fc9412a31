"""A rate the authors did not publish, in every chapter (issue 35): a study of their labels takes
Algorithm 1's at that rate and says so; a family that cannot give a rate is a row, not a stop."""

import pytest
import torch

from idnbook.verdicts import NOT_CHECKED, every
from idnhelpers.experiments import family_labels
from idnhelpers.study import Study


def test_a_study_of_the_published_labels_completes_a_rate_they_lack_with_algorithm_1():
    study = Study(dataset="mnist", methods=["ce"], noise_rates=[0.25, 0.4], n_train=200, n_test=100, seeds=[0])
    assert [study.family_of(r) for r in study.noise_rates] == ["idn", "idn_published"]
    assert study.labels_used() == "IDN (Algorithm 1) at 25%; IDN (the authors' published labels) at 40%"
    data = study.sample()
    labels = study.labels(data)
    assert torch.equal(labels[0.4], family_labels(data, "idn_published", [0.4])[0.4])
    assert torch.equal(labels[0.25], family_labels(data, "idn", [0.25], device="cpu")[0.25])
    assert int((labels[0.25] != data.y).sum()) == int(0.25 * len(data.y))  # Algorithm 1: exact on the rows


def test_the_family_itself_still_refuses_a_rate_it_lacks_and_names_the_one_that_gives_it():
    data = Study(dataset="mnist", methods=["ce"], n_train=100, n_test=100).sample()
    with pytest.raises(ValueError, match=r"noise_rates=0.25 .*\[0.1, 0.2, 0.3, 0.4\].*family 'idn'"):
        family_labels(data, "idn_published", [0.25])


def test_a_seed_is_refused_only_where_no_rate_uses_it():
    Study(dataset="mnist", methods=["ce"], noise_rates=[0.25], train_seed=1)  # Algorithm 1's network
    with pytest.raises(ValueError, match="train_seed=1 is not allowed"):
        Study(dataset="mnist", methods=["ce"], noise_rates=[0.2], train_seed=1)


@pytest.mark.parametrize("chapter", ["01_ccn_hypothesis_test", "03_memorization_csr", "04_seal", "05_benchmarks"])
def test_a_chapter_passes_the_family_settings_papermill_gives_it_to_its_study(chapter):
    """Under papermill a chapter's study is made of the names its parameters cell declares: one that
    did not declare ``family_settings`` dropped ``-y "family_settings: {norm_std: -1}"`` without a word."""
    from pathlib import Path

    from idnbook.chapter import setup

    source = (Path(__file__).parent.parent / "notebooks" / f"{chapter}.py").read_text()
    params = source.split('# %% tags=["parameters"]\n')[1].split("\n# %%")[0]
    injected = '# Parameters\nfamily = "xia"\nfamily_settings = {"norm_std": -1.0}\n'
    namespace = {}
    exec(params, namespace)
    exec(injected, namespace)
    namespace["In"] = ["", params, injected]  # the cells as IPython records them
    with pytest.raises(ValueError, match="norm_std=-1.0 is not allowed"):
        setup(namespace)
    namespace["family_settings"] = {"norm_std": 0.2}
    assert setup(namespace).family_settings == {"norm_std": 0.2}


def test_a_family_that_cannot_give_a_rate_is_a_row_with_the_reason():
    from idnbook.families import label_sets, realised_rates

    studies = {f: Study(dataset="digits", methods=["ce"], family=f, noise_rates=[0.01, 0.3], n_train=300, n_test=100,
                        seeds=[0]) for f in ("pmd", "symmetric")}
    data = studies["pmd"].sample()
    labels, unreachable = label_sets(studies, data)
    assert set(labels) == {("pmd", 0.3), ("symmetric", 0.01), ("symmetric", 0.3)}
    assert list(unreachable) == [("pmd", 0.01)] and "noise_rate=0.01 is not allowed" in unreachable[("pmd", 0.01)]
    table = realised_rates(labels, data.y, unreachable).data
    assert table.loc[("1%", "pmd"), "expected (%)"].startswith("cannot give this rate: noise_rate=0.01")


def test_a_claim_with_nothing_to_compare_is_not_checked_and_says_why():
    verdict = every({}, none="one noise rate: the claim compares two or more")
    assert (verdict.verdict, verdict.reason) == (NOT_CHECKED, "one noise rate: the claim compares two or more")
    with pytest.raises(ValueError, match="parts"):
        every({})


def test_only_a_rate_a_family_cannot_give_becomes_a_row_any_other_error_stops(monkeypatch):
    from idnbook.families import label_sets

    study = Study(dataset="digits", methods=["ce"], family="symmetric", noise_rates=[0.2], n_train=300, n_test=100)

    def damaged(*args, **kwargs):
        raise ValueError("path='x.csv' is not allowed: a readable file")

    monkeypatch.setattr(Study, "labels", damaged)
    with pytest.raises(ValueError, match="a readable file"):
        label_sets({"symmetric": study}, study.sample())
