"""Clothing1M (Table 3) under ``root/clothing1m`` (``FILES`` and the images they list), streamed from
disk (``ImageFiles``, ``StreamSource``) with the official transforms, and Appendix A's protocol:
ResNet-50 from ImageNet weights the user supplies; each run keeps the model with the best clean
validation accuracy, and SEAL's iteration m starts from iteration m-1's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .checks import check_bool, check_int, fail
from .datasets import DatasetSpec, register_dataset
from .environment import data_root
from .hardware import cpu_cores
from .protocol import Protocol
from .runs import Data, Labelled, Run

FILES = ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt", "clean_val_key_list.txt",
         "clean_test_key_list.txt")
CLASSES = ("T-shirt", "shirt", "knitwear", "chiffon", "sweater", "hoodie", "windbreaker", "jacket", "down coat",
           "suit", "shawl", "dress", "vest", "underwear")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Appendix A: ResNet-50 from ImageNet weights, 10 epochs, batch 256, SGD momentum 0.9, weight decay 1e-3,
# lr 1e-3 then 1e-4 after 5 epochs (DMI's schedule and the methods' options: paper.method_options).
PROTOCOL = Protocol("resnet50", 10, 256, 1e-3, 0.9, 1e-3, (5,), 0.1, augment=True)


def _not_in_memory(root, train, verify):
    raise ValueError("dataset='clothing1m' streams its images from disk: use clothing1m.load_clothing1m(root) "
                     "and clothing1m.ImageFiles, not load_dataset")


register_dataset(DatasetSpec("clothing1m", CLASSES, IMAGENET_MEAN, IMAGENET_STD, (3, 224, 224), PROTOCOL,
                             _not_in_memory))


def folder(root=None, needed=()) -> Path:
    """``root/clothing1m``; FileNotFoundError unless the files ``needed`` are there."""
    base = (Path(root) if root is not None else data_root()) / "clothing1m"
    missing = [name for name in needed if not (base / name).exists()]
    if missing:
        raise FileNotFoundError(f"Clothing1M files {missing} not found in {base}; Clothing1M is distributed by "
                                "its authors on request (Xiao et al. 2015)")
    return base


def clothing1m_available(root=None) -> bool:
    """Whether all of Clothing1M's list files are under ``root/clothing1m``."""
    return all((folder(root) / name).exists() for name in FILES)


def _rows(path: Path) -> list[list[str]]:
    """A list file's lines, split; each starts with an image key, refused unless relative, without '..'."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    for key, *_ in rows:
        if PurePosixPath(key).is_absolute() or ".." in PurePosixPath(key).parts or "\\" in key:
            fail(f"image key in {path.name}", key, "a path relative to the clothing1m folder, without '..'")
    return rows


def load_clothing1m_labels(root=None):
    """``(noisy, clean)`` dicts image key -> class: the 1M noisy labels and the human-checked ones."""
    base = folder(root, FILES[:2])
    return tuple({key: int(label) for key, label in _rows(base / name)} for name in FILES[:2])


def load_clothing1m(root=None) -> dict:
    """``{"train": (keys, noisy labels), "val": (keys, clean labels), "test": (keys, clean labels)}``."""
    base = folder(root, FILES)
    noisy, clean = load_clothing1m_labels(root)
    splits = {}
    for split, key_list, kv in (("train", FILES[2], noisy), ("val", FILES[3], clean), ("test", FILES[4], clean)):
        keys = tuple(k for (k,) in _rows(base / key_list))
        unlabelled = [k for k in keys if k not in kv]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} images of {key_list} have no label, e.g. {unlabelled[0]}")
        splits[split] = (keys, torch.tensor([kv[k] for k in keys]))
    return splits


@dataclass(frozen=True, eq=False)
class ImageFiles(Data):
    """Images ``root/clothing1m/<key>``: squashed to ``resize`` x ``resize``, then a random ``crop`` and
    flip when training, squashed to ``crop`` x ``crop`` for evaluation (the official transforms);
    ``squash=False``: torchvision's ImageNet recipe. ``workers`` (default: the usable CPU cores less
    one; 0: this process) and ``batch_size`` (evaluation) do not change a result (seeded per image)."""

    keys: tuple[str, ...]
    root: str
    resize: int = 256
    crop: int = 224
    squash: bool = True
    workers: int | None = field(default=None, compare=False)
    batch_size: int = field(default=256, compare=False)
    dataset: str = "clothing1m"

    def __post_init__(self):
        check_int(self.resize, "resize", minimum=1)
        check_int(self.crop, "crop", minimum=1, maximum=self.resize)
        check_bool(self.squash, "squash")
        check_int(self.workers, "workers", minimum=0, none_ok=True)
        check_int(self.batch_size, "batch_size", minimum=1)
        h = hashlib.sha256("\n".join(self.keys).encode())
        h.update(f"{self.resize} {self.crop}{'' if self.squash else ' aspect'}".encode())
        object.__setattr__(self, "fingerprint", h.hexdigest()[:16])

    def __len__(self):
        return len(self.keys)

    def source(self, device):
        return StreamSource(self, device)


class _Images(Dataset):
    """Items ``(index, image)`` for an index or ``(index, seed)`` (augmented from ``seed + index``)."""

    def __init__(self, files: ImageFiles, transform):
        self.base, self.keys, self.transform = folder(files.root), files.keys, transform

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        with Image.open(self.base / self.keys[i]) as img, torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.default_generator.manual_seed(seed + i)  # not the GPUs' generators
            return i, self.transform(img.convert("RGB"))


class _EpochOrder(Sampler):
    """Per epoch, ``(index, seed)`` in a random order, with one seed, both from the run's ``generator``."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.skip = n, generator, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator)
        seed = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        skip, self.skip = self.skip, 0  # the next pass: the whole epoch again
        return iter([(int(i), seed) for i in order[skip:]])


class StreamSource:
    """The batch source of ``ImageFiles`` (``sources.TensorSource``'s interface); its loaders' workers
    persist across epochs, and on CUDA batches go through pinned memory."""

    def __init__(self, files: ImageFiles, device: torch.device):
        from torchvision import transforms  # late: importing torchvision costs seconds (it imports torch._dynamo)

        self.files, self.device = files, device
        normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if files.squash:  # the official train_clothing.py
            resize, evaluate = transforms.Resize((files.resize, files.resize)), [transforms.Resize((files.crop,) * 2)]
        else:
            resize = transforms.Resize(files.resize)
            evaluate = [resize, transforms.CenterCrop(files.crop)]
        self.train_transform = transforms.Compose([resize, transforms.RandomCrop(files.crop),
                                                   transforms.RandomHorizontalFlip()] + normalize)
        self.eval_transform = transforms.Compose(evaluate + normalize)
        self.workers = max(1, cpu_cores() - 1) if files.workers is None else files.workers
        self.loaders = {}

    def __len__(self):
        return len(self.files)

    def _loader(self, name: str, transform, **options) -> DataLoader:
        if name not in self.loaders:
            self.loaders[name] = DataLoader(
                _Images(self.files, transform), num_workers=self.workers, persistent_workers=self.workers > 0,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(0), **options)  # its own seeds: the caller's RNG untouched
        return self.loaders[name]

    def _batches(self, loader):
        for rows, x in loader:
            yield rows.to(self.device, non_blocking=True), x.to(self.device, non_blocking=True)

    def train_batches(self, generators, batch_size, augment, drop_last, skip: int = 0):
        """One epoch of the single run's generator (``_EpochOrder``), without its first ``skip`` batches."""
        (generator,) = generators
        loader = self._loader(f"train {augment}", self.train_transform if augment else self.eval_transform,
                              batch_size=batch_size, sampler=_EpochOrder(len(self.files), generator),
                              drop_last=drop_last and len(self.files) > batch_size)
        if loader.sampler.generator is not generator:
            fail("generators", "another run's generator", "the generator this source's first epoch used")
        loader.sampler.skip = skip * batch_size
        for rows, x in self._batches(loader):
            yield rows[None], x[None]

    def eval_batches(self, batch_size=None, augment_generators=None):
        if augment_generators is not None:
            fail("softmax_mode", "official", "'eval' for streamed images")
        for _, x in self._batches(self._loader("eval", self.eval_transform, batch_size=self.files.batch_size)):
            yield x


def clothing1m_runs(root, weights_path, protocol: Protocol = PROTOCOL, *, seed: int = 0, precision: str = "fp32",
                    device_type: str = "cpu", workers: int | None = None, resize: int = 256, crop: int = 224,
                    squash: bool = True) -> Run:
    """The base run of every Table 3 entry: noisy training images, clean validation set (picks the model)
    and test set, ResNet-50 from ``weights_path``."""
    if weights_path is None or not Path(weights_path).exists():
        raise FileNotFoundError(f"ImageNet ResNet-50 weights not found at {weights_path!r} (a torchvision "
                                "resnet50 state_dict file)")
    splits = load_clothing1m(root)
    root = str(root if root is not None else data_root())

    def files(split):
        return ImageFiles(splits[split][0], root, resize=resize, crop=crop, squash=squash, workers=workers)

    return Run(files("train"), splits["train"][1], protocol.replace(pretrained=str(weights_path)), seed=seed,
               precision=precision, device_type=device_type, record_softmax=False,
               val=Labelled(files("val"), splits["val"][1]), test=Labelled(files("test"), splits["test"][1]),
               keep="best_val")
