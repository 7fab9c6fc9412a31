"""What the objectives (``losses``) and the engine's steps are built from: per-row cross-entropies,
the index of a batch's rows into per-run, per-row state, the hash of a user's objective code, and
the forward pass, optimiser step, mixup and ramps of the steps that run their own epochs (DivideMix, ELR+, SOP+)."""

from __future__ import annotations

import hashlib
import inspect
import marshal
import math
import types

import torch
import torch.nn.functional as F

from .hardware import autocast


def row_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log f_y(x) of each row (... x b x c logits, ... x b labels -> ... x b)."""
    return -F.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard labels, or Algorithm 2's -sum_k S_k log f_k against soft labels;
    the mean over the rows (the last axis but one)."""
    if targets.dim() < logits.dim():
        return row_cross_entropy(logits, targets).mean(-1)
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean(-1)


def run_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The index of a batch's K x b ``rows`` into per-row state of the K runs (K x n x ...)."""
    return torch.arange(len(rows), device=rows.device)[:, None], rows


def rows_of(state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-row state (K x n x ...) at a batch's K x b ``rows``: K x b x ..."""
    return state[run_rows(rows)]


def train_logits(training, model, x: torch.Tensor) -> torch.Tensor:
    """``model``'s fp32 logits of ``x`` under the run's precision (``training``: a ``training.Training``)."""
    with autocast(training.device, training.run0.precision):
        return model(x).float()


def sgd_step(training, loss: torch.Tensor) -> None:
    """One optimiser step; parameters without a gradient (the other network's) stay as they are."""
    training.optimizer.zero_grad()
    loss.backward()
    training.optimizer.step()


def mix(t: torch.Tensor, lam: float, perm: torch.Tensor | None) -> torch.Tensor:
    """Mixup (Zhang et al. 2018): lam t + (1 - lam) t[perm] (rows on the first axis); ``t`` itself without a
    permutation."""
    return t if perm is None else lam * t + (1 - lam) * t[perm]


def rampup(current: float, length: float, sigmoid: bool = False) -> float:
    """A ramp from 0 to 1 over ``length`` epochs or steps (1 if ``length`` is 0), ``current`` clipped to [0, length]:
    linear (DivideMix's ``linear_rampup``) or ``sigmoid``: exp(-5 (1 - current / length)^2), the ELR+ authors'
    ``sigmoid_rampup`` (Laine and Aila's)."""
    if length == 0:
        return 1.0
    if not sigmoid:
        return min(max(current / length, 0.0), 1.0)
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def code_hash(cls: type) -> str:
    """A hash of a class's code and of the module-level functions it calls by name."""
    functions = _functions(cls)
    namespace = functions[0].__globals__ if functions else {}  # no functions: no names to look up
    names = {name for f in functions for name in _names(f.__code__)}
    helpers = [namespace[n] for n in sorted(names) if isinstance(namespace.get(n), types.FunctionType)]
    return hashlib.sha256(b"".join(_code_text(part) for part in [cls] + helpers)).hexdigest()[:16]


def _code_text(obj) -> bytes:
    try:
        return inspect.getsource(obj).encode()
    except (OSError, TypeError):  # typed into a REPL: the compiled code instead
        functions = [obj] if isinstance(obj, types.FunctionType) else _functions(obj)
        return b"".join(marshal.dumps(f.__code__) for f in functions)


def _functions(cls: type) -> list[types.FunctionType]:
    """The functions a class defines, its class and static methods' included."""
    functions = [getattr(v, "__func__", v) for v in vars(cls).values()]
    return [f for f in functions if isinstance(f, types.FunctionType)]


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names
