"""The methods compared in the paper's benchmarks (Section 4.3, Tables 1-3), selected by name.

``METHODS[name](X, y_noisy, proto, **options)`` trains one run with the shared engine and
returns the engine's dict (``S``, ``history`` with ``test_acc`` and, given a validation split,
``val_acc``, ...). ``run_method`` checks the options first; ``summarize`` turns a result into the
numbers of the tables. Every stage is cached, and stages that coincide are shared: the CE run
is the first stage of Forward and DMI and SEAL's iteration 0.

Engine options every method takes: ``ENGINE_OPTIONS`` (see ``train.train``).
"""

from __future__ import annotations

import dataclasses
import inspect

import torch

from . import coteaching as _coteaching
from .losses import DAC, DMI, GCE, Forward
from .seal import seal as _seal
from .stats import anchor_transition_matrix
from .train import Normalizer, init_model, predict_proba, resolve_device, train

ENGINE_OPTIONS = ("dataset", "seed", "n_classes", "y_true", "X_test", "y_test", "X_val", "y_val", "device",
                  "precision", "use_cache")


def ce(X, y_noisy, proto, **engine) -> dict:
    """Cross-entropy on the noisy labels (the engine's default)."""
    return train(X, y_noisy, proto, desc="CE", **engine)


def final_softmax(result: dict, proto, X, *, dataset, n_classes=10, device=None, precision="fp32", **_) -> torch.Tensor:
    """Softmax (eval mode) of a finished run's final weights on ``X``."""
    device = resolve_device(device)
    model = init_model(proto, n_classes, 0, result["state_dict"]).to(device)
    return predict_proba(model, X, Normalizer(dataset, device), precision).cpu()


def forward(X, y_noisy, proto, *, anchor_percentile: float | None = 97.0, **engine) -> dict:
    """Forward correction (Patrini et al. 2017): T estimated from the CE run's final softmax on the
    training set by the anchor-point estimator (``stats.anchor_transition_matrix``; the authors'
    97th percentile, ``None`` for the plain argmax), then a fresh network trained with the
    forward-corrected loss. The result carries ``T``."""
    if anchor_percentile is not None and not 0 < anchor_percentile <= 100:
        raise ValueError(f"anchor_percentile={anchor_percentile!r} must be in (0, 100], or None for the argmax")
    probs = final_softmax(ce(X, y_noisy, proto, **engine), proto, X, **engine)
    T = anchor_transition_matrix(probs, anchor_percentile)
    result = train(X, y_noisy, proto, objective=Forward(tuple(map(tuple, T.tolist()))), desc="Forward", **engine)
    return {**result, "T": T}


def coteaching(X, y_noisy, proto, *, noise_rate: float, t_k: int = 10, **engine) -> dict:
    """Co-teaching (Han et al. 2018) with forget rate tau = ``noise_rate`` reached after ``t_k`` epochs."""
    return _coteaching.coteaching(X, y_noisy, proto, forget_rate=noise_rate, t_k=t_k, desc="Co-teaching", **engine)


def gce(X, y_noisy, proto, *, q: float = 0.7, **engine) -> dict:
    """Generalized cross-entropy, the L_q loss (Zhang and Sabuncu 2018), q = 0.7."""
    return train(X, y_noisy, proto, objective=GCE(q), desc="GCE", **engine)


def dac(X, y_noisy, proto, *, warmup_epochs: int | None = None, alpha_final: float = 1.0, **engine) -> dict:
    """Deep abstaining classifier (Thulasidasan et al. 2019); see ``losses.DAC``. Accuracy and the
    recorded softmax use the k real classes."""
    return train(X, y_noisy, proto, objective=DAC(warmup_epochs, alpha_final), desc="DAC", **engine)


def dmi(X, y_noisy, proto, *, lr: float = 1e-6, momentum: float = 0.9, weight_decay: float = 1e-4,
        n_epochs: int | None = None, official_loss: bool = True, **engine) -> dict:
    """DMI (Xu et al. 2019): the CE run's final weights trained further with L_DMI for ``n_epochs``
    (default: the protocol's) at the authors' constant small learning rate (their CIFAR-10 code:
    SGD lr 1e-6, momentum 0.9, weight decay 1e-4). ``official_loss``: see ``losses.dmi_loss``."""
    if lr <= 0:
        raise ValueError(f"lr={lr!r} must be positive")
    if n_epochs is not None and (int(n_epochs) != n_epochs or n_epochs < 1):
        raise ValueError(f"n_epochs={n_epochs!r} must be a positive integer, or None for the protocol's")
    base = ce(X, y_noisy, proto, **engine)
    stage = dataclasses.replace(proto, lr=lr, momentum=momentum, weight_decay=weight_decay, milestones=(),
                                n_epochs=n_epochs or proto.n_epochs)
    return train(X, y_noisy, stage, objective=DMI(official_loss), init_state=base["state_dict"], desc="DMI", **engine)


def seal(X, y_noisy, proto, *, n_iterations: int = 10, retrain: bool = True, **engine) -> dict:
    """SEAL (Algorithm 2): the result of the last iteration, with ``iterations`` (each one's history)."""
    runs = _seal(X, y_noisy, n_iterations, proto, retrain=retrain, **engine)
    return {**runs[-1], "iterations": [r["history"] for r in runs]}


def seal_dmi(X, y_noisy, proto, *, n_iterations: int = 10, dmi_options: dict | None = None, **engine) -> dict:
    """SEAL started from DMI's averaged softmax (Table 3, "SEAL (DMI)"): DMI's S is S^[0]."""
    start = dmi(X, y_noisy, proto, **(dmi_options or {}), **engine)
    runs = _seal(X, y_noisy, n_iterations, proto, S_init=start["S"], **engine)
    return {**runs[-1], "iterations": [start["history"]] + [r["history"] for r in runs[1:]]}


METHODS = {"ce": ce, "forward": forward, "coteaching": coteaching, "gce": gce, "dac": dac, "dmi": dmi,
           "seal": seal, "seal_dmi": seal_dmi}
LABELS = {"ce": "CE", "forward": "Forward", "coteaching": "Co-teaching", "gce": "GCE", "dac": "DAC", "dmi": "DMI",
          "seal": "SEAL", "seal_dmi": "SEAL (DMI)"}


def get_method(name: str):
    """The method called ``name``; a ValueError lists the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def method_options(name: str) -> tuple[str, ...]:
    """The options of method ``name`` beyond ``ENGINE_OPTIONS``."""
    params = inspect.signature(get_method(name)).parameters.values()
    return tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY)


def run_method(name: str, X, y_noisy, proto, *, noise_rate: float | None = None, **options) -> dict:
    """Run method ``name`` after checking its options (its own and ``ENGINE_OPTIONS``);
    ``noise_rate`` goes to the methods that use it (Co-teaching's forget rate)."""
    own = method_options(name)
    unknown = set(options) - set(own) - set(ENGINE_OPTIONS)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; allowed: {sorted(own)} and {list(ENGINE_OPTIONS)}")
    if "noise_rate" in own:
        if noise_rate is None:
            raise ValueError(f"{name} needs noise_rate (its forget rate)")
        options["noise_rate"] = noise_rate
    return METHODS[name](X, y_noisy, proto, **options)


def summarize(result: dict) -> dict:
    """Test accuracy (%) at the last epoch (the paper's headline), at the best epoch, and at the
    epoch with the best accuracy on the noisy validation split (NaN without one); epochs 1-based."""
    test = result["history"]["test_acc"]
    val = result["history"].get("val_acc")
    best = max(range(len(test)), key=test.__getitem__)
    chosen = max(range(len(val)), key=val.__getitem__) if val else None
    nan = float("nan")
    return dict(last=100 * test[-1], best=100 * test[best], best_epoch=best + 1,
                val_selected=100 * test[chosen] if val else nan, val_epoch=chosen + 1 if val else nan)
