"""A training protocol (Appendix A): network, SGD schedule and augmentation, checked when built."""

from __future__ import annotations

import dataclasses

from . import optim
from .checks import check_bool, check_choice, check_fields, check_float, check_int, checked, fail


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Network ``model`` (in ``models.MODELS``) trained for ``n_epochs`` epochs of ``batch_size``;
    ``lr`` is multiplied by ``gamma`` at each epoch in ``milestones``. ``augment``: random crop and
    flip (CIFAR) or the streamed data's transforms (Clothing1M); ``pretrained``: a state_dict file for
    all but the last layer; ``fresh_optimizer``: a new optimiser (momentum reset) every epoch, as the
    official CIFAR-10 and Clothing1M scripts (default: one per run); ``optimizer``: "sgd" (Appendix A)
    or "adam" (no momentum; the L_DMI authors' MNIST setting, ``methods.LDMI_MNIST``)."""

    model: str
    n_epochs: int = checked(dataclasses.MISSING, check_int, minimum=1)
    batch_size: int = checked(dataclasses.MISSING, check_int, minimum=1)
    lr: float = checked(dataclasses.MISSING, check_float, low=0.0, low_open=True)
    momentum: float = checked(dataclasses.MISSING, check_float, low=0.0, high=1.0, high_open=True)
    weight_decay: float = checked(0.0, check_float, low=0.0)
    milestones: tuple[int, ...] = ()
    gamma: float = checked(1.0, check_float, low=0.0, low_open=True)
    augment: bool = checked(False, check_bool)
    pretrained: str | None = None
    fresh_optimizer: bool = checked(False, check_bool)
    optimizer: str = checked("sgd", check_choice, choices=("sgd", "adam"))

    def __post_init__(self):
        from .models import MODELS  # late: models import torchvision

        if self.model not in MODELS:
            fail("model", self.model, f"one of {sorted(MODELS)}")
        check_fields(self)
        if not isinstance(self.milestones, tuple):
            fail("milestones", self.milestones, "a tuple of positive integers (epochs)")
        for m in self.milestones:
            check_int(m, "milestones", minimum=1)
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            fail("pretrained", self.pretrained, "a path (str) to a state_dict file, or None")

    def make_optimizer(self, parameters):
        """A fresh optimiser over ``parameters`` (stacked weights too: its updates are element-wise)."""
        if self.optimizer == "adam":
            return optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch`` (MultiStepLR semantics)."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def replace(self, **overrides) -> "Protocol":
        """This protocol with fields replaced (None leaves a field as it is); unknown names are refused."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            fail("protocol field", unknown, f"fields of Protocol: {names}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
