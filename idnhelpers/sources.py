"""Where the engine's batches come from: instances resident on the device.

``TensorSource`` keeps a data set's uint8 images on the device once and normalises (and, for
CIFAR, augments) each batch there: no DataLoader and no per-sample transforms stand between
the data and the network. Each run draws its batch order (and augmentation) from its own
generator, so a run's batches are the same whether it trains alone or stacked with others.
Clothing1M's images stream from disk instead (``clothing1m.StreamSource``, same interface).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .datasets import get_dataset

# Rows per evaluation call: on a CPU the MNIST CNN's activations then stay in cache (512 rows: 0.49 s
# per 10k in fp32 against 0.77 s with 2048; NOTES.md, "Speed"); a GPU wants large batches.
EVAL_BATCH = {"cpu": 512, "cuda": 2048}
OFFICIAL_SOFTMAX_BATCH = 1000  # the official code records the softmax in batches of 1000


def eval_batch(device: torch.device) -> int:
    """Rows per evaluation call on ``device``."""
    return EVAL_BATCH.get(device.type, EVAL_BATCH["cuda"])


class Normalizer:
    """uint8 batch -> float, scaled to [0, 1] and standardised per channel (torchvision's order),
    in channels-last memory layout (the layout the engine's convolutions run fastest in); a
    feature batch is standardised per feature."""

    def __init__(self, dataset: str, device: torch.device):
        spec = get_dataset(dataset)
        shape = (1, -1) if spec.is_features else (1, -1, 1, 1)
        self.divisor = 1.0 if spec.is_features else 255.0  # feature vectors are standardised as they are
        self.mean = torch.tensor(spec.mean, device=device).view(shape)
        self.inv_std = 1 / torch.tensor(spec.std, device=device).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / self.divisor - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


PAD = 4  # Appendix A's CIFAR-10 crop: zero-pad 4 pixels, crop back


def augmentation_draws(generators: list[torch.Generator], sizes: list[int], device: torch.device) -> list[tuple]:
    """Per batch of ``sizes``, the random offsets (2 x K b) and flips (K b) of the K runs' rows,
    run after run: each run's drawn on its CPU generator in the order ``augment_batch`` uses them,
    batch after batch, and moved to ``device`` in one copy (a copy per batch would make the GPU
    wait on the host at every step)."""
    if not sizes:
        return []
    per_run = [[(torch.randint(0, 2 * PAD + 1, (2, b), generator=g), torch.rand(b, generator=g) < 0.5) for b in sizes]
               for g in generators]
    offsets = torch.stack([torch.cat([o for o, _ in parts], 1) for parts in per_run], 1).to(device, non_blocking=True)
    flips = torch.stack([torch.cat([f for _, f in parts]) for parts in per_run]).to(device, non_blocking=True)
    return [(o.flatten(1), f.flatten()) for o, f in zip(offsets.split(sizes, 2), flips.split(sizes, 1))]


def augment_batch(x: torch.Tensor, draws: tuple) -> torch.Tensor:
    """Random crop after zero-padding ``PAD`` pixels, then random horizontal flip, on uint8 ``x``
    (Appendix A's CIFAR-10 augmentation), with one batch's ``augmentation_draws``."""
    (dy, dx), flip = draws
    b, _, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class TensorSource:
    """A ``runs.Tensors`` on the device (see the module docstring). Without augmentation the
    instances are normalised once (``normalized``), not per batch: the same values."""

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
        """One epoch of the K runs: per step ``(rows, x)``, K x b rows of each run's shuffled order (a
        random permutation from its generator) and their K x b x ... inputs. ``drop_last`` skips a
        final incomplete batch; ``skip`` leaves out the first steps (an epoch resumed within: the
        same draws, fewer batches)."""
        batches = torch.stack([torch.randperm(len(self.X), generator=g) for g in generators]).to(self.device)
        batches = batches.split(batch_size, 1)
        if drop_last and len(batches) > 1 and batches[-1].shape[1] < batch_size:
            batches = batches[:-1]
        draws = augmentation_draws(generators, [rows.shape[1] for rows in batches], self.device) if augment else None
        for b in range(skip, len(batches)):
            rows = batches[b]
            if augment:
                yield rows, self.normalize(augment_batch(self.X[rows.flatten()], draws[b])).unflatten(0, rows.shape)
            else:
                yield rows, self.normalized[rows]

    def eval_batches(self, batch_size: int | None = None, augment_generators: list[torch.Generator] | None = None):
        """The instances in order, normalised, ``batch_size`` rows at a time (default:
        ``eval_batch``); with ``augment_generators`` (the official code's softmax recording) one
        augmented copy per generator: K x b x ..."""
        batch_size = batch_size or eval_batch(self.device)
        starts = range(0, len(self.X), batch_size)
        sizes = [min(batch_size, len(self.X) - start) for start in starts]
        draws = None if augment_generators is None else augmentation_draws(augment_generators, sizes, self.device)
        for b, start in enumerate(starts):
            if draws is None:
                yield self.normalized[start:start + batch_size]
            else:
                x = self.X[start:start + batch_size]
                copies = x[None].expand(len(augment_generators), *x.shape).flatten(0, 1)
                yield self.normalize(augment_batch(copies, draws[b])).unflatten(0, (len(augment_generators), len(x)))
