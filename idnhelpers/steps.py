"""Training steps, ``Single()`` or ``Peers(forget_rate, t_k)`` (Co-teaching): the class method
``make(specs)`` gives K runs' ``step(logits, targets, epoch, rows, loss) -> (loss to minimise, K
losses to log)``, logits K x n x b x c (n networks a run), targets and ``rows`` K x b. The networks
are a bank: ``ModuleBank`` (one run's modules) or ``StackedBank`` (K runs' networks in one ``vmap``
call; SGD is element-wise, so one optimiser over the stacked weights is K independent ones).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import MISSING, dataclass
from typing import ClassVar

import torch
from torch.func import functional_call, stack_module_state, vmap

from .checks import check_fields, check_float, check_int, checked
from .lossparts import row_cross_entropy


class Step:
    """Base class of the steps (see the module docstring)."""

    n_networks: ClassVar[int] = 1
    per_run: ClassVar[tuple[str, ...]] = ()  # fields that may differ between the K runs
    stackable: ClassVar[bool] = True  # False: each run trains in its own call (DivideMix's per-run data division)
    ensemble: ClassVar[bool] = False  # predictions (test, S) from the summed logits of the run's networks

    @classmethod
    def make(cls, specs: list[Step]):
        raise NotImplementedError

    def __post_init__(self):  # a dataclass subclass's ``checks.checked`` fields
        check_fields(self)

    def config(self) -> dict:
        return {"name": type(self).__name__, **vars(self)}


@dataclass(frozen=True)
class Single(Step):
    """One network trained on the run's objective."""

    @classmethod
    def make(cls, specs):
        def step(logits, targets, epoch, rows, loss):
            losses = loss(logits[:, 0], targets, epoch, rows)
            return losses.sum(), losses
        return step


def keep_rate(epoch: int, forget_rate: float, t_k: int = 10) -> float:
    """Co-teaching's R(t) = 1 - min(t / T_k * tau, tau) at 0-based ``epoch``, as the paper (the
    authors' code reaches tau at epoch T_k - 1)."""
    return 1 - min(epoch / t_k * forget_rate, forget_rate)


def small_loss_exchange(logits1, logits2, y, n_keep):
    """Co-teaching's losses: each network's ``n_keep`` (per run) smallest-loss rows train the other."""
    loss1, loss2 = row_cross_entropy(logits1, y), row_cross_entropy(logits2, y)
    n_keep = torch.as_tensor(n_keep, device=y.device)
    kept = torch.arange(y.shape[-1], device=y.device) < n_keep[..., None]  # the first n_keep of a loss order
    by_loss1 = torch.argsort(loss1.detach(), dim=-1, stable=True)
    by_loss2 = torch.argsort(loss2.detach(), dim=-1, stable=True)
    return (loss1.gather(-1, by_loss2) * kept).sum(-1) / n_keep, (loss2.gather(-1, by_loss1) * kept).sum(-1) / n_keep


@dataclass(frozen=True)
class Peers(Step):
    """Co-teaching (Han et al. 2018): two networks (the first as a CE run of the seed starts, and
    the one recorded); each keeps its ``round(keep_rate * batch)`` smallest-loss rows for its peer,
    ``forget_rate`` being tau (the paper: the noise rate), reached after ``t_k`` epochs."""

    forget_rate: float = checked(MISSING, check_float, low=0.0, high=1.0, high_open=True)
    t_k: int = checked(10, check_int, minimum=1)
    n_networks: ClassVar[int] = 2
    per_run: ClassVar[tuple[str, ...]] = ("forget_rate",)

    @classmethod
    def make(cls, specs):
        rates, t_k = [spec.forget_rate for spec in specs], specs[0].t_k

        @functools.lru_cache(maxsize=1)  # one copy to the device per epoch and batch size, not per step
        def n_keep(epoch, b, device):
            return torch.tensor([max(1, round(keep_rate(epoch, rate, t_k) * b)) for rate in rates], device=device)

        def step(logits, targets, epoch, rows, loss):
            b = targets.shape[-1]
            loss1, loss2 = small_loss_exchange(logits[:, 0], logits[:, 1], targets, n_keep(epoch, b, logits.device))
            return (loss1 + loss2).sum(), loss1
        return step


class ModuleBank:
    """One run's networks as modules, called one after another."""

    K = 1  # runs

    def __init__(self, models: list[torch.nn.Module], ensemble: bool = False):
        self.models, self.ensemble = models, ensemble

    def parameters(self) -> list[torch.Tensor]:
        return [p for m in self.models for p in m.parameters()]

    def train(self, mode: bool) -> None:
        for m in self.models:
            m.train(mode)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x[0]) for m in self.models])[None]

    def probs(self, x: torch.Tensor, n_classes: int, per_run: bool = False) -> torch.Tensor:
        """Softmax of the recorded network (``ensemble``: of the networks' summed logits) over the
        first ``n_classes`` outputs: 1 x b x c."""
        x = x[0] if per_run else x
        logits = sum(m(x) for m in self.models) if self.ensemble else self.models[0](x)
        return logits[:, :n_classes].float().softmax(1)[None]

    def module(self, k: int) -> torch.nn.Module:
        return self.models[0]

    def state(self, k: int) -> dict:
        return {name: v.detach().cpu().clone() for name, v in self.models[0].state_dict().items()}

    def checkpoint(self) -> list[dict]:
        """Live tensors: save them before the next step."""
        return [m.state_dict() for m in self.models]

    def restore(self, state: list[dict]) -> None:
        for m, saved in zip(self.models, state):
            m.load_state_dict(saved)


class StackedBank:
    """K runs' networks (``n`` a run, the first recorded) in one batched call; ``ModuleBank``'s methods."""

    def __init__(self, models: list[list[torch.nn.Module]]):
        self.K, self.n = len(models), len(models[0])
        flat = [m for run in models for m in run]
        self.template = copy.deepcopy(flat[0])
        self.params, self.buffers = stack_module_state(flat)
        base = self.base = copy.deepcopy(flat[0]).to("meta")

        def forward(p, b, x):
            return functional_call(base, (p, b), (x,))

        self._each = vmap(forward)  # weights and inputs stacked
        self._shared = vmap(forward, in_dims=(0, 0, None))  # weights stacked, one input for all

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def logits(self, x):
        x = x[:, None].expand(self.K, self.n, *x.shape[1:]).flatten(0, 1)  # a view when n = 1
        return self._each(self.params, self.buffers, x).unflatten(0, (self.K, self.n))

    def probs(self, x, n_classes, per_run=False):
        params = {k: v[::self.n] for k, v in self.params.items()}  # each run's first network (all when n = 1)
        buffers = {k: v[::self.n] for k, v in self.buffers.items()}
        out = self._each(params, buffers, x) if per_run else self._shared(params, buffers, x)
        return out[..., :n_classes].float().softmax(-1)

    def state(self, k: int) -> dict:
        i = k * self.n
        return {name: v[i].detach().cpu().clone() for name, v in {**self.params, **self.buffers}.items()}

    def checkpoint(self) -> dict:
        return {"params": self.params, "buffers": self.buffers}

    @torch.no_grad()
    def restore(self, state: dict) -> None:  # in place: the optimiser holds these tensors
        for part in ("params", "buffers"):
            for name, tensor in getattr(self, part).items():
                tensor.copy_(state[part][name])

    def module(self, k: int) -> torch.nn.Module:
        device = next(iter(self.params.values())).device
        self.template.load_state_dict(self.state(k))
        return self.template.to(device)
