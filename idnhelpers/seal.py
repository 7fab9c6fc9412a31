"""SEAL, self-evolution average label (Section 4, Algorithm 2), and its label-correction analysis
(Eq. 9-10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .many import train_many
from .noise import check_labels, check_softmax, mislabel_scores
from .train import train


def seal(X: torch.Tensor, y_noisy: torch.Tensor, n_iterations: int, proto, *, dataset: str, seed: int = 0,
         n_classes: int = 10, S_init: torch.Tensor | None = None, retrain: bool = True, **train_kwargs) -> list[dict]:
    """Run SEAL for ``n_iterations`` iterations after the initial one; returns one result per
    iteration (index m = iteration m), each the engine's dict (``S``, ``history``, ...).

    Iteration 0 trains with cross-entropy on the one-hot noisy labels (Algorithm 2 without soft
    labels: plain CE training) and outputs the epoch-averaged softmax S^[0]. Iteration m >= 1
    trains on the soft labels S^[m-1] with L_SEAL = -sum_k S_k log f_k and outputs S^[m].

    - ``retrain=True`` (the paper's MNIST/CIFAR-10 setting): every iteration starts from a fresh
      network with the same seed, hence the same initial weights and batch order, as the
      official code (one process per iteration, ``torch.manual_seed(seed)``) does.
      ``retrain=False`` (the paper's Clothing1M setting) continues from the previous iteration's
      final weights (the paper takes the best model on a clean validation set; here the last).
    - ``S_init``: start from another method's averaged softmax (SEAL on top of DMI, Table 3):
      it becomes S^[0] and iteration 0 is not trained.
    Each iteration is cached by its inputs, so asking for more iterations resumes.
    """
    if int(n_iterations) != n_iterations or n_iterations < 0:
        raise ValueError(f"n_iterations={n_iterations!r} must be a non-negative integer")
    y_noisy = check_labels(y_noisy, n_classes, "y_noisy")
    if S_init is not None:
        check_softmax(S_init, len(y_noisy), "S_init")
        if not retrain:
            raise ValueError("retrain=False needs the weights of iteration 0: give S_init only with retrain=True")
    results = []
    for m in range(n_iterations + 1):
        if m == 0 and S_init is not None:
            results.append(dict(S=S_init.float(), history=None, state_dict=None))
            continue
        targets = y_noisy if m == 0 else results[-1]["S"]
        init = None if retrain or m == 0 else results[-1]["state_dict"]
        results.append(train(X, targets, proto, dataset=dataset, seed=seed, n_classes=n_classes, init_state=init,
                             desc=f"SEAL iteration {m}" if m else "SEAL iteration 0 (CE)", **train_kwargs))
    return results


def seal_many(X: torch.Tensor, y_noisy_sets: list, n_iterations: int, proto, *, seeds: list[int], dataset: str,
              n_classes: int = 10, **train_many_kwargs) -> list[list[dict]]:
    """``seal`` (retraining from scratch) for several noisy label sets at once: run j uses
    ``y_noisy_sets[j]`` and ``seeds[j]``, and iteration m of all runs is one ``train_many`` call
    (one stacked network per step on a GPU). ``result[j][m]`` equals
    ``seal(X, y_noisy_sets[j], n_iterations, proto, seed=seeds[j])[m]`` and shares its cache."""
    if int(n_iterations) != n_iterations or n_iterations < 0:
        raise ValueError(f"n_iterations={n_iterations!r} must be a non-negative integer")
    sets = [check_labels(y, n_classes, "y_noisy_sets") for y in y_noisy_sets]
    runs = [[] for _ in sets]
    for m in range(n_iterations + 1):
        targets = [y if m == 0 else r[-1]["S"] for y, r in zip(sets, runs)]
        for r, result in zip(runs, train_many(X, targets, proto, seeds=seeds, dataset=dataset, n_classes=n_classes,
                                              **train_many_kwargs)):
            r.append(result)
    return runs


def label_distance(S: torch.Tensor, y: torch.Tensor, y_noisy: torch.Tensor) -> torch.Tensor:
    """Eq. (9) on the corrupted instances (y != y_noisy): d = ||S_i - e_y||_1 / ||e_y_noisy - e_y||_1,
    in [0, 1]; 1 for the given noisy one-hot label, 0 for the true one."""
    S = check_softmax(S)
    y, y_noisy = check_labels(y, S.shape[1]), check_labels(y_noisy, S.shape[1], "y_noisy")
    check_softmax(S, len(y))
    corrupted = y != y_noisy
    e_y = F.one_hot(y[corrupted], S.shape[1]).to(S.dtype)
    e_noisy = F.one_hot(y_noisy[corrupted], S.shape[1]).to(S.dtype)
    return (S[corrupted] - e_y).abs().sum(1) / (e_noisy - e_y).abs().sum(1)


def correction_scores(S: torch.Tensor, y_noisy: torch.Tensor):
    """Eq. (10): N-bar(x) = max_{k != y_noisy} S_k, the confidence that a label needs correction,
    and the corrected label argmax_{k != y_noisy} S_k (Eq. 3 with the noisy label in place of y)."""
    return mislabel_scores(S, y_noisy)


def correction_metrics(S: torch.Tensor, y: torch.Tensor, y_noisy: torch.Tensor) -> dict:
    """How well SEAL's soft labels find and fix the corrupted instances (beyond the paper).

    - ``precision`` / ``recall``: of the k instances with the highest N-bar(x), k = the true number
      of corrupted instances (so the two coincide), how many are corrupted;
    - ``auroc``: N-bar(x) as a detector of corrupted instances;
    - ``acc_noisy``, ``acc_argmax``, ``acc_corrected``: accuracy against the true labels of the
      noisy labels, of argmax S, and of the noisy labels with the top-k relabelled to ỹ (Eq. 10);
    - ``mean_distance``: mean Eq. (9) distance over the corrupted instances.
    """
    score, corrected = correction_scores(S, y_noisy)
    y, y_noisy = check_labels(y, S.shape[1]), check_labels(y_noisy, S.shape[1], "y_noisy")
    corrupted = y != y_noisy
    k = int(corrupted.sum())
    top = torch.sort(score, descending=True, stable=True).indices[:k]
    hits = int(corrupted[top].sum())
    relabelled = y_noisy.clone()
    relabelled[top] = corrected[top]
    both_classes = 0 < k < len(y)
    return dict(precision=hits / k if k else float("nan"), recall=hits / k if k else float("nan"),
                auroc=float(roc_auc_score(corrupted.numpy(), score.double().numpy())) if both_classes else float("nan"),
                acc_noisy=float((y_noisy == y).float().mean()), acc_argmax=float((S.argmax(1) == y).float().mean()),
                acc_corrected=float((relabelled == y).float().mean()),
                mean_distance=float(label_distance(S, y, y_noisy).mean()) if k else float("nan"))
