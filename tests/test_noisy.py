"""Noisy instances ranked (cleanlab's conventions) and the idn-noisy command line."""

import json

import numpy as np
import pytest
import torch

from idnhelpers import noisy
from idnhelpers.datasets import load_dataset
from idnhelpers.labels import main as labels_main
from idnhelpers.noisy import (detector_metrics, find_noisy, label_quality, noisy_metrics, read_ranking,
                               suggested_labels)

S = torch.tensor([[0.7, 0.2, 0.1],   # label 0: kept
                  [0.6, 0.3, 0.1],   # label 1: arg-max 0, flagged
                  [0.1, 0.1, 0.8],   # label 2: kept
                  [0.2, 0.5, 0.3]])  # label 2: arg-max 1, flagged
LABELS = torch.tensor([0, 1, 2, 2])


def test_label_quality_scores_by_hand():
    assert torch.allclose(label_quality(LABELS, S, "self_confidence"), torch.tensor([0.7, 0.3, 0.8, 0.3]))
    assert torch.allclose(label_quality(LABELS, S, "normalized_margin"),
                          torch.tensor([(0.5 + 1) / 2, (-0.3 + 1) / 2, (0.7 + 1) / 2, (-0.2 + 1) / 2]))
    assert torch.allclose(label_quality(LABELS, S, "mislabel"), 1 - torch.tensor([0.2, 0.6, 0.1, 0.5]))  # 1 - Eq. 10
    assert suggested_labels(LABELS, S).tolist() == [1, 0, 0, 1]  # Eq. 10's ỹ: best class other than the label


def test_find_noisy_mask_and_ranked_indices():
    argmax = dict(filter_by="predicted_neq_given")  # flagged where the arg-max is not the label
    assert find_noisy(LABELS, S, **argmax).tolist() == [False, True, False, True]
    # ranked by self-confidence: rows 1 and 3 tie at 0.3, the lower index first
    assert find_noisy(LABELS, S, return_indices_ranked_by="self_confidence", **argmax).tolist() == [1, 3]
    assert find_noisy(LABELS, S, return_indices_ranked_by="normalized_margin", **argmax).tolist() == [1, 3]
    assert find_noisy(LABELS, S, return_indices_ranked_by="mislabel", **argmax).tolist() == [1, 3]
    assert find_noisy(LABELS, S, n=3, return_indices_ranked_by="self_confidence").tolist() == [1, 3, 0]
    assert find_noisy(LABELS, S, n=1).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="return_indices_ranked_by"):
        find_noisy(LABELS, S, return_indices_ranked_by="confidence")
    with pytest.raises(ValueError, match="pred_probs"):
        find_noisy(LABELS, S[:, :2])
    with pytest.raises(ValueError, match="labels"):
        find_noisy(LABELS[:3], S)
    with pytest.raises(ValueError, match="n=5"):
        find_noisy(LABELS, S, n=5)
    # the n flagged by another score: row 0 has the lower self-confidence, row 1 the larger N-bar (Eq. 10)
    S2, Y2 = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.45, 0.1]]), torch.tensor([0, 0])
    assert find_noisy(Y2, S2, n=1).tolist() == [True, False]
    assert find_noisy(Y2, S2, n=1, rank_by="mislabel").tolist() == [False, True]
    with pytest.raises(ValueError, match="rank_by='margin'"):
        find_noisy(Y2, S2, n=1, rank_by="margin")
    with pytest.raises(ValueError, match="filter_by='cl' is not allowed"):
        find_noisy(LABELS, S, filter_by="cl")


def test_find_noisy_is_cleanlabs_confident_learning_and_its_scores():
    """The mask is cleanlab's find_label_issues for every filter_by (default prune_by_noise_rate), the
    scores its get_label_quality_scores, which equal their definitions."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 10
    logits = torch.randn(300, 10, generator=g) * 2
    logits[torch.arange(300), y] += 2.5
    S = logits.softmax(1)
    labels = torch.where(torch.rand(300, generator=g) < 0.3, torch.randint(0, 10, (300,), generator=g), y)
    for filter_by in noisy.FILTERS:
        expected = find_label_issues(labels.numpy(), S.numpy(), filter_by=filter_by, n_jobs=1)
        assert find_noisy(labels, S, filter_by=filter_by).tolist() == expected.tolist(), filter_by
    assert find_noisy(labels, S).tolist() == find_label_issues(labels.numpy(), S.numpy(), n_jobs=1).tolist()
    for method in ("self_confidence", "normalized_margin"):
        assert np.array_equal(label_quality(labels, S, method).numpy(),
                              get_label_quality_scores(labels.numpy(), S.numpy(), method=method))
    own = S.gather(1, labels[:, None]).squeeze(1)
    assert torch.equal(label_quality(labels, S, "self_confidence"), own)
    confident = find_noisy(labels, S)
    argmax = find_noisy(labels, S, filter_by="predicted_neq_given")
    assert 0 < int(confident.sum()) <= int(argmax.sum())  # confident learning flags a subset here


def test_detector_metrics_by_hand():
    """AUROC 1 for a score that puts every corrupted row first, 0 reversed, 0.5 constant; precision and
    recall of a given mask, or of the k highest scores (k corrupted: precision = recall)."""
    corrupted = torch.tensor([True, False, True, False, False])
    perfect = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3])
    m = detector_metrics(perfect, corrupted)
    assert (m["auroc"], m["precision"], m["recall"], m["flagged"], m["corrupted"], m["n"]) == (1.0, 1.0, 1.0, 2, 2, 5)
    assert detector_metrics(-perfect, corrupted)["auroc"] == 0.0
    assert detector_metrics(torch.zeros(5), corrupted)["auroc"] == 0.5  # ties count one half
    # flagged rows 0, 1, 3: one of three is corrupted (precision 1/3), one of the two corrupted found (recall 1/2)
    m = detector_metrics(perfect, corrupted, torch.tensor([True, True, False, True, False]))
    assert (m["precision"], m["recall"], m["flagged"]) == (pytest.approx(1 / 3), 0.5, 3)
    # the top k = 2 by a score ranking rows 0 and 1 first: one hit, precision = recall = 1/2; AUROC 5/6
    m = detector_metrics(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]), corrupted)
    assert (m["precision"], m["recall"]) == (0.5, 0.5) and m["auroc"] == pytest.approx(5 / 6)
    # ties at the cut go to the lower index: rows 0 and 1 (not 2)
    assert detector_metrics(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]), corrupted)["precision"] == 0.5
    none = detector_metrics(perfect, torch.zeros(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))
    assert all(np.isnan(none[k]) for k in ("precision", "recall", "auroc"))
    with pytest.raises(ValueError, match="boolean mask"):
        detector_metrics(perfect, torch.tensor([1, 0, 1, 0, 0]))
    with pytest.raises(ValueError, match="flagged"):
        detector_metrics(perfect, corrupted, torch.tensor([1, 0, 1, 0, 0]))
    with pytest.raises(ValueError, match="corrupted"):
        detector_metrics(perfect, corrupted[:4])


def test_noisy_metrics_by_hand():
    y_true = torch.tensor([0, 0, 2, 1])  # rows 1 and 3 are corrupted: both flagged, nothing else
    m = noisy_metrics(LABELS, S, y_true, filter_by="predicted_neq_given")
    assert (m["precision"], m["recall"], m["precision_at_k"], m["auroc"]) == (1.0, 1.0, 1.0, 1.0)
    assert (m["corrupted"], m["flagged"], m["n"]) == (2, 2, 4)
    m = noisy_metrics(LABELS, S, torch.tensor([1, 1, 2, 2]), filter_by="predicted_neq_given")  # row 0 corrupted
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["auroc"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def digits_ranking(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    assert labels_main(["--dataset", "digits", "--family", "symmetric", "--rates", "0.3", "--out",
                        str(root / "labels")]) == 0
    out = root / "ranked"
    assert noisy.main(["--dataset", "digits", "--labels", str(root / "labels" / "digits_symmetric_0.3.csv"),
                       "--method", "ce", "--epochs", "8", "--out", str(out)]) == 0
    return root, out


def test_idn_noisy_round_trip_on_the_digits(digits_ranking):
    root, out = digits_ranking
    ranking = read_ranking(out)
    manifest = ranking["manifest"]
    _, y = load_dataset("digits")
    y_noisy = torch.as_tensor(np.load(root / "labels" / "digits_symmetric_0.3.npy"))
    assert sorted(ranking["index"].tolist()) == list(range(len(y)))  # every training row once
    assert (ranking["score"].diff() >= 0).all()  # lowest quality first
    corrupted = (y_noisy != y)[ranking["index"]]
    k = int(corrupted.sum())
    assert k == manifest["metrics"]["corrupted"] == round(0.3 * len(y))
    assert corrupted[:k].float().mean() == pytest.approx(manifest["metrics"]["precision_at_k"])
    assert manifest["metrics"]["auroc"] > 0.9 and manifest["metrics"]["precision"] > 0.7  # chance: 0.5 and 0.3
    assert int(ranking["flagged"].sum()) == manifest["flagged"]
    flagged = ranking["index"][ranking["flagged"]]
    # the suggested label of a flagged corrupted row is often its true one
    hits = (ranking["suggested_label"][ranking["flagged"]] == y[flagged])[(y_noisy != y)[flagged]]
    assert hits.float().mean() > 0.7
    assert manifest["format"] == "idnhelpers-noisy/1" and manifest["method"] == "ce"
    assert manifest["labels"]["file"] == "digits_symmetric_0.3.csv"


def test_read_ranking_refuses_an_edited_file(digits_ranking, tmp_path):
    _, out = digits_ranking
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("noisy.csv", "manifest.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    with open(copy / "noisy.csv", "a") as f:
        f.write("0,0.5,1,0\n")
    with pytest.raises(ValueError, match="SHA-256"):
        read_ranking(copy)
    manifest = json.loads((out / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "idnhelpers-labels/1"}))
    with pytest.raises(ValueError, match="format"):
        read_ranking(copy)


@pytest.mark.parametrize("argv, message", [
    (["--method", "nope"], "method"),
    (["--method", "coteaching"], "no noise rate"),
    (["--method", "seal", "--option", "n_iteration=2"], "--option"),
    (["--epochs", "0"], "--epochs"),
    (["--cv", "1"], "--cv"),
    (["--filter-by", "cl"], "--filter-by"),
    (["--labels", "missing.npy"], "--labels"),
    (["--labels", "labels.txt"], "--labels"),
])
def test_idn_noisy_refuses_bad_options_before_training(argv, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "labels.txt").write_text("1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(noisy, "output_folder", lambda *a: pytest.fail("trained and wrote despite a bad option"))
    with pytest.raises(SystemExit) as exit_:
        noisy.main(["--dataset", "digits", "--out", str(tmp_path / "out"), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("idn-noisy: error: ")
    assert any(m in err for m in message.split("|")), err


def test_idn_noisy_refuses_labels_of_the_wrong_length(tmp_path, capsys):
    np.save(tmp_path / "short.npy", np.zeros(10, dtype=np.int64))
    with pytest.raises(SystemExit):
        noisy.main(["--dataset", "digits", "--labels", str(tmp_path / "short.npy"), "--out", str(tmp_path / "o")])
    assert "--labels" in capsys.readouterr().err


def test_cross_validated_probabilities_are_each_folds_held_out_prediction(tmp_path, monkeypatch):
    """Each row's probabilities come from the network trained on the other folds (cleanlab's out-of-sample
    convention): fold by fold equal to that network's prediction, rows summing to 1, and on the digits with
    30% symmetric noise they rank the corrupted labels first (AUROC > 0.9; chance 0.5)."""
    from idnhelpers import engine
    from idnhelpers.datasets import protocol
    from idnhelpers.methods import run_stages
    from idnhelpers.noise import symmetric_noise
    from idnhelpers.runs import Tensors
    from idnhelpers.sample import sample

    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path))
    data = sample("digits")
    labels = symmetric_noise(data.y, 0.3, 10, seed=0)
    run = data.run(labels, protocol("digits", n_epochs=8), seed=3, test=None, keep="none")
    probs = noisy.cross_validated_probs(run, folds=3)
    assert probs.shape == (len(labels), 10) and torch.allclose(probs.sum(1), torch.ones(len(labels)))
    held = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)).chunk(3)[1]
    kept = torch.ones(len(labels), dtype=torch.bool)
    kept[held] = False
    fold = run.replace(data=Tensors(run.data.X[kept], "digits"), targets=labels[kept], y_true=None, test=None,
                       keep="last")
    weights = run_stages("ce", [fold])[0].final.weights
    assert torch.equal(probs[held], engine.predict(fold.replace(data=Tensors(run.data.X[held], "digits"),
                                                                  targets=labels[held]), weights))
    assert noisy_metrics(labels, probs, data.y)["auroc"] > 0.9
    with pytest.raises(ValueError, match="folds=1 is not allowed"):
        noisy.cross_validated_probs(run, folds=1)


def test_idn_noisy_ranks_by_cross_validated_probabilities_with_cv(tmp_path, digits_ranking, capsys):
    root, _ = digits_ranking
    out = tmp_path / "cv"
    assert noisy.main(["--dataset", "digits", "--labels", str(root / "labels" / "digits_symmetric_0.3.csv"),
                       "--method", "ce", "--epochs", "8", "--cv", "3", "--filter-by", "both",
                       "--out", str(out)]) == 0
    manifest = read_ranking(out)["manifest"]
    assert (manifest["folds"], manifest["filter_by"]) == (3, "both") and manifest["metrics"]["auroc"] > 0.9
    assert "3-fold cross-validated probabilities" in capsys.readouterr().out


def test_idn_noisy_has_cv_and_no_folds_option(capsys):
    """The issue's `idn-noisy --cv 5`: one spelling, no alias; the old --folds is refused."""
    help_text = noisy.parser().format_help()
    assert "--cv K" in help_text and "--folds" not in help_text
    with pytest.raises(SystemExit) as exit_:
        noisy.main(["--dataset", "digits", "--folds", "3", "--out", "x"])
    assert exit_.value.code == 2 and "--folds" in capsys.readouterr().err
