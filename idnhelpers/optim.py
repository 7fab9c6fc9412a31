"""The protocols' optimisers, SGD with momentum (Appendix A) and Adam (the L_DMI authors' MNIST
setting), on torch's ``_foreach`` operations: the same weights bit for bit as ``torch.optim.SGD`` /
``Adam`` on a CPU (``tests/test_hardware.py``), without torch.optim's import of ``torch._dynamo``
(about 2.5 s). Updates are element-wise: one optimiser over stacked weights (``steps.StackedBank``) is K.
"""

from __future__ import annotations

import torch


class _Optimizer:
    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class SGD(_Optimizer):
    """SGD with momentum (no dampening, not Nesterov's) and L2 ``weight_decay``; ``lr`` may change.
    A parameter without a gradient (a network the step does not train: DivideMix's) keeps its
    weights and momentum, as in ``torch.optim.SGD``."""

    def __init__(self, parameters, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(parameters)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            old = [i for i in live if self.buffers[i] is not None]
            if old:
                buffers = [self.buffers[i] for i in old]
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, [g for i, g in zip(live, grads) if self.buffers[i] is not None])
            for i, g in zip(live, grads):  # torch.optim.SGD: the first buffer is the gradient itself
                if self.buffers[i] is None:
                    self.buffers[i] = g.detach().clone()
            grads = [self.buffers[i] for i in live]
        torch._foreach_add_(params, grads, alpha=-self.lr)


class Adam(_Optimizer):
    """Adam (Kingma and Ba 2015; torch's default betas and eps) with L2 ``weight_decay``; ``lr`` may change."""

    def __init__(self, parameters, lr: float, weight_decay: float = 0.0):
        self.params = list(parameters)
        self.lr, self.weight_decay = lr, weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        if any(p.grad is None for p in self.params):
            raise RuntimeError("Adam.step needs a gradient for every parameter")
        beta1, beta2 = 0.9, 0.999
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        self.steps += 1
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        step_size = self.lr / (1 - beta1 ** self.steps)
        denominators = torch._foreach_div(torch._foreach_sqrt(self.exp_avg_sq), (1 - beta2 ** self.steps) ** 0.5)
        torch._foreach_add_(denominators, 1e-8)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denominators, value=-step_size)
