"""The engine's batches from instances kept on the device (``TensorSource``), normalised and (CIFAR)
augmented there. Each run draws its order and augmentation from its own generator: the same batches
alone or stacked. Clothing1M's images stream from disk (``clothing1m.StreamSource``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .datasets import get_dataset

OFFICIAL_SOFTMAX_BATCH = 1000  # the official code records the softmax in batches of 1000


def eval_batch(device: torch.device) -> int:
    """Rows per evaluation call: 512 on a CPU keeps the MNIST CNN's activations in cache (0.49 s per
    10k in fp32 against 0.77 s with 2048; NOTES.md, "Speed"); a GPU wants 2048."""
    return 512 if device.type == "cpu" else 2048


class Normalizer:
    """uint8 batch -> float in [0, 1] standardised per channel, channels-last (the fastest for the
    engine's convolutions); a feature batch standardised per feature."""

    def __init__(self, dataset: str, device: torch.device):
        spec = get_dataset(dataset)
        shape = (1, -1) if spec.is_features else (1, -1, 1, 1)
        self.divisor = 1.0 if spec.is_features else 255.0
        self.mean = torch.tensor(spec.mean, device=device).view(shape)
        self.inv_std = 1 / torch.tensor(spec.std, device=device).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / self.divisor - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


PAD = 4  # Appendix A's CIFAR-10 crop: zero-pad 4 pixels, crop back


def augmentation_draws(generators: list[torch.Generator], sizes: list[int], device: torch.device) -> list[tuple]:
    """Per batch of ``sizes``, the offsets (2 x K b) and flips (K b) of the K runs' rows, drawn from
    each run's CPU generator and moved to ``device`` in one copy (not one per step)."""
    if not sizes:
        return []
    per_run = [[(torch.randint(0, 2 * PAD + 1, (2, b), generator=g), torch.rand(b, generator=g) < 0.5) for b in sizes]
               for g in generators]
    offsets = torch.stack([torch.cat([o for o, _ in parts], 1) for parts in per_run], 1).to(device, non_blocking=True)
    flips = torch.stack([torch.cat([f for _, f in parts]) for parts in per_run]).to(device, non_blocking=True)
    return [(o.flatten(1), f.flatten()) for o, f in zip(offsets.split(sizes, 2), flips.split(sizes, 1))]


def augment_batch(x: torch.Tensor, draws: tuple) -> torch.Tensor:
    """Appendix A's CIFAR-10 augmentation of uint8 ``x`` (one batch's ``augmentation_draws``): random
    crop after zero-padding ``PAD`` pixels, random horizontal flip."""
    (dy, dx), flip = draws
    b, _, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class TensorSource:
    """A ``runs.Tensors`` on the device; without augmentation normalised once, not per batch."""

    def __init__(self, data, device: torch.device):
        self.X = data.X.to(device)
        self.device = device
        self.normalize = Normalizer(data.dataset, device)

    def __len__(self):
        return len(self.X)

    @functools.cached_property
    def normalized(self) -> torch.Tensor:
        return self.normalize(self.X)

    def train_batches(self, generators: list[torch.Generator], batch_size: int, augment: bool, drop_last: bool,
                      skip: int = 0):
        """One epoch of the K runs: per step ``(rows, x)``, K x b rows of each run's random order and
        their inputs, without a final incomplete batch (``drop_last``) or the first ``skip`` steps."""
        batches = torch.stack([torch.randperm(len(self.X), generator=g) for g in generators]).to(self.device)
        batches = batches.split(batch_size, 1)
        if drop_last and len(batches) > 1 and batches[-1].shape[1] < batch_size:
            batches = batches[:-1]
        yield from self._batches(batches, generators, augment, skip)

    def inputs(self, rows: torch.Tensor, generators: list[torch.Generator], augment: bool) -> torch.Tensor:
        """The inputs of K x b ``rows``, augmented (draws from each run's generator) if ``augment``."""
        return next(self._batches([rows], generators, augment))[1]

    def eval_batches(self, batch_size: int, augment_generators: list[torch.Generator] | None = None):
        """The instances in order, normalised, ``batch_size`` rows at a time; with ``augment_generators``
        (the official softmax recording) one augmented copy per generator: K x b x ..."""
        if augment_generators is None:
            yield from self.normalized.split(batch_size)
            return
        rows = torch.arange(len(self.X), device=self.device).expand(len(augment_generators), -1)
        yield from (x for _, x in self._batches(rows.split(batch_size, 1), augment_generators, True))

    def _batches(self, batches, generators: list[torch.Generator], augment: bool, skip: int = 0):
        """``(rows, x)`` of each K x b ``rows`` of ``batches`` from the ``skip``-th on, augmented with the
        draws of all the batches made at once (one copy to the device)."""
        sizes = [rows.shape[1] for rows in batches]
        draws = augmentation_draws(generators, sizes, self.device) if augment else [None] * len(sizes)
        for rows, d in zip(batches[skip:], draws[skip:]):
            yield rows, (self.normalized[rows] if d is None
                         else self.normalize(augment_batch(self.X[rows.flatten()], d)).unflatten(0, rows.shape))
