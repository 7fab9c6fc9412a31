"""Clothing1M (Table 3): its files, images streamed from disk, and the paper's protocol (Appendix A).

1M JPEG images do not fit in memory, so unlike the tensor-resident engine (``train``) this
pipeline reads them with a DataLoader: resize to 256, random 224 crop and horizontal flip for
training, centre crop for evaluation, ImageNet normalisation. The network is torchvision's
ResNet-50 with ImageNet weights from a file the user supplies (nothing is downloaded). Every run
keeps the model with the best accuracy on the clean validation set and reports its test accuracy.
SEAL does not re-initialise: iteration m starts from iteration m-1's best model (Appendix A).
Files expected under ``root/clothing1m`` (the data set's own layout): ``noisy_label_kv.txt``,
``clean_label_kv.txt``, ``noisy_train_key_list.txt``, ``clean_val_key_list.txt``,
``clean_test_key_list.txt`` and the images at the paths they list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from .coteaching import keep_rate, small_loss_exchange
from .data import default_root
from .losses import DAC, DMI, GCE, Forward, Objective
from .methods import LABELS
from .models import resnet50
from .runs import cached, config_key, fingerprint
from .stats import anchor_transition_matrix
from .train import _autocast, resolve_device

N_CLASSES = 14
FILES = ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt", "clean_val_key_list.txt",
         "clean_test_key_list.txt")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
METHODS = ("ce", "forward", "coteaching", "gce", "dac", "dmi", "seal", "seal_dmi")
NOISE_RATE = 0.3846  # overall label noise of Clothing1M (61.54% correct, Xiao et al. 2015): Co-teaching's tau


@dataclass(frozen=True)
class Clothing1MProtocol:
    """Appendix A: 10 epochs, batch 256, SGD momentum 0.9, weight decay 1e-3, learning rate
    ``lr`` for the first ``lr_drop_epoch`` epochs then a tenth of it (DMI: ``lr_dmi``, then half)."""

    n_epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    lr_dmi: float = 1e-6
    lr_drop_epoch: int = 5
    momentum: float = 0.9
    weight_decay: float = 1e-3
    resize: int = 256
    crop: int = 224
    n_iterations: int = 3  # SEAL iterations

    def lr_at(self, epoch: int, dmi: bool = False) -> float:
        if dmi:
            return self.lr_dmi * (0.5 if epoch >= self.lr_drop_epoch else 1.0)
        return self.lr * (0.1 if epoch >= self.lr_drop_epoch else 1.0)


def folder(root=None) -> Path:
    return (Path(root) if root is not None else default_root()) / "clothing1m"


def clothing1m_available(root=None) -> bool:
    """Whether all of Clothing1M's list files are under ``root/clothing1m``."""
    return all((folder(root) / name).exists() for name in FILES)


def load_clothing1m(root=None) -> dict:
    """``{"train": (paths, noisy labels), "val": (paths, clean labels), "test": (paths, clean labels)}``."""
    base = folder(root)
    missing = [name for name in FILES if not (base / name).exists()]
    if missing:
        raise FileNotFoundError(f"Clothing1M files {missing} not found in {base}; Clothing1M is distributed by "
                                "its authors on request (Xiao et al. 2015)")

    def lines(name):
        return [line.split() for line in (base / name).read_text().splitlines() if line.strip()]

    labels = {name: {key: int(label) for key, label in lines(name)} for name in FILES[:2]}
    splits = {}
    for split, key_list, kv in (("train", FILES[2], FILES[0]), ("val", FILES[3], FILES[1]), ("test", FILES[4], FILES[1])):
        keys = [k for (k,) in lines(key_list)]
        unlabelled = [k for k in keys if k not in labels[kv]]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} images of {key_list} have no label in {kv}, e.g. {unlabelled[0]}")
        splits[split] = ([str(base / k) for k in keys], torch.tensor([labels[kv][k] for k in keys]))
    return splits


class ImageList(Dataset):
    """Images from files with their labels; items are ``(index, image, label)``."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            return i, self.transform(img.convert("RGB")), self.labels[i]


def loader(paths, labels, proto: Clothing1MProtocol, train: bool, seed: int = 0, workers: int = 4) -> DataLoader:
    """Shuffled and augmented (``train``) or in order with a centre crop."""
    crop = transforms.RandomCrop(proto.crop) if train else transforms.CenterCrop(proto.crop)
    steps = [transforms.Resize(proto.resize), crop] + ([transforms.RandomHorizontalFlip()] if train else [])
    transform = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return DataLoader(ImageList(paths, labels, transform), batch_size=proto.batch_size, shuffle=train,
                      num_workers=workers, generator=torch.Generator().manual_seed(seed) if train else None,
                      persistent_workers=False)


@torch.no_grad()
def predict(model, data: DataLoader, device, precision) -> torch.Tensor:
    model.eval()
    out = []
    for _, x, _ in data:
        with _autocast(device, precision):
            out.append(model(x.to(device))[:, :N_CLASSES].float().softmax(1).cpu())
    return torch.cat(out)


def fit(model, splits, targets, proto, *, objective=Objective(), dmi=False, record=False, peer=None,
        forget_rate=None, seed=0, device=None, precision="fp32", workers=4, desc="Clothing1M") -> dict:
    """Train ``model`` on the training split against ``targets`` (hard or soft), keep the weights
    of the epoch with the best clean-validation accuracy; returns ``best_state``, ``best_epoch``,
    ``test_acc`` (of the best model), ``history`` and, if ``record``, the epoch-averaged softmax
    ``S`` on the training images (centre crop, eval mode), for SEAL. With a ``peer`` network the
    two train by Co-teaching (``coteaching.small_loss_exchange``, keep rate from ``forget_rate``);
    ``model`` is the one evaluated."""
    start = time.perf_counter()
    device = resolve_device(device)
    models = [model.to(device)] + ([peer.to(device)] if peer is not None else [])
    loss_fn = objective.make(N_CLASSES, proto.n_epochs)
    # one SGD over both networks' weights is two independent SGDs: the update is element-wise
    optimizer = torch.optim.SGD([p for m in models for p in m.parameters()], lr=proto.lr, momentum=proto.momentum,
                                weight_decay=proto.weight_decay)
    paths, _ = splits["train"]
    train_data = loader(paths, torch.arange(len(paths)), proto, True, seed, workers)  # labels: row indices
    evals = {k: loader(*splits[k], proto, False, workers=workers) for k in ("val", "test")}
    if record:
        evals["train"] = loader(paths, torch.zeros(len(paths), dtype=torch.long), proto, False, workers=workers)
    history = {"loss": [], "val_acc": [], "test_acc": []}
    S_sum, best = None, (-1.0, None, None)
    for epoch in tqdm(range(proto.n_epochs), desc=desc, unit="epoch"):
        for group in optimizer.param_groups:
            group["lr"] = proto.lr_at(epoch, dmi)
        for m in models:
            m.train()
        total = 0.0
        for _, x, rows in train_data:
            if objective.drop_last and len(rows) < proto.batch_size and len(paths) > proto.batch_size:
                continue
            with _autocast(device, precision):
                logits = [m(x.to(device)).float() for m in models]
            if peer is None:
                loss = loss_fn(logits[0], targets[rows].to(device), epoch)
                logged = loss
            else:
                n_keep = max(1, int(keep_rate(epoch, forget_rate) * len(rows)))
                losses = small_loss_exchange(*logits, targets[rows].to(device), n_keep)
                loss, logged = sum(losses), losses[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += logged.item() * len(rows)
        history["loss"].append(total / len(paths))
        for split in ("val", "test"):
            pred = predict(model, evals[split], device, precision).argmax(1)
            history[f"{split}_acc"].append((pred == splits[split][1]).float().mean().item())
        if record:
            probs = predict(model, evals["train"], device, precision).double()
            S_sum = probs if S_sum is None else S_sum + probs
        if history["val_acc"][-1] > best[0]:
            best = (history["val_acc"][-1], epoch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    return dict(best_state=best[2], best_epoch=best[1] + 1, test_acc=history["test_acc"][best[1]], history=history,
                S=None if S_sum is None else (S_sum / proto.n_epochs).float(), seconds=time.perf_counter() - start)


def file_fingerprint(path) -> str:
    """Content hash of a (weights) file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def run_clothing1m(method: str, root, weights_path, proto: Clothing1MProtocol = Clothing1MProtocol(), *, seed=0,
                   device=None, precision="fp32", workers=4, use_cache=True, forget_rate=NOISE_RATE) -> dict:
    """One Table 3 entry: ``method`` (one of ``METHODS``) trained with the paper's Clothing1M
    protocol; returns ``fit``'s dict of the final stage (``test_acc`` of its best-on-validation
    model) plus ``stages``: the test accuracy of every stage (SEAL: CE then each iteration)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not available on Clothing1M; choose one of {METHODS}")
    if not 0 <= forget_rate < 1:
        raise ValueError(f"forget_rate={forget_rate!r} must be in [0, 1) (Co-teaching's tau)")
    if weights_path is None or not Path(weights_path).exists():
        raise FileNotFoundError(f"ImageNet ResNet-50 weights not found at {weights_path!r} (a torchvision "
                                "resnet50 state_dict file)")
    splits = load_clothing1m(root)
    base = dict(splits={k: hashlib.sha256("\n".join(v[0]).encode()).hexdigest()[:16] + fingerprint(v[1])
                        for k, v in splits.items()},
                weights=file_fingerprint(weights_path), proto=dataclasses.asdict(proto), seed=seed, precision=precision)
    common = dict(seed=seed, device=device, precision=precision, workers=workers)
    y_noisy = splits["train"][1]

    def stage(name, targets, init, **kw):
        config = dict(base, stage=name, init=init["key"] if init else "imagenet",
                      **{k: (v.config() if isinstance(v, Objective) else v) for k, v in kw.items()})
        if isinstance(targets, torch.Tensor) and targets.dim() == 2:
            config["targets"] = fingerprint(targets)

        def compute():
            n_out = N_CLASSES + kw.get("objective", Objective()).extra_outputs
            with torch.random.fork_rng(devices=[]):  # seeded new last layer(s); two differ for Co-teaching
                torch.manual_seed(seed)
                model = resnet50(n_out, weights_path)
                peer = resnet50(n_out, weights_path) if "forget_rate" in kw else None
            if init:
                model.load_state_dict(init["best_state"])
            with torch.random.fork_rng(devices=[]):  # augmentation draws in the main process (workers=0)
                torch.manual_seed(seed)
                return fit(model, splits, targets, proto, peer=peer, desc=f"Clothing1M {name}", **kw, **common)

        return {**cached("clothing1m", config, compute, use_cache), "key": config_key(config)}

    def anchor_T(ce):
        """Forward's T from the CE model's softmax on the training images (one pass, cached)."""
        def compute():
            model = resnet50(N_CLASSES)
            model.load_state_dict(ce["best_state"])
            dev = resolve_device(device)
            probs = predict(model.to(dev), loader(*splits["train"], proto, False, workers=workers), dev, precision)
            return {"T": anchor_transition_matrix(probs)}
        return cached("clothing1m", dict(base, stage="forward T", init=ce["key"]), compute, use_cache)["T"]

    if method == "coteaching":
        runs = [stage("coteaching", y_noisy, None, forget_rate=forget_rate)]
    elif method in ("gce", "dac"):
        runs = [stage(method, y_noisy, None, objective=GCE() if method == "gce" else DAC())]
    else:  # the CE stage comes first; S recorded always (SEAL needs it), so one CE run serves every method
        runs = [stage("ce", y_noisy, None, record=True)]
    if method == "forward":
        T = anchor_T(runs[0])
        runs.append(stage("forward", y_noisy, None, objective=Forward(tuple(map(tuple, T.tolist())))))
    elif method in ("dmi", "seal_dmi"):
        runs.append(stage("dmi", y_noisy, runs[0], objective=DMI(), dmi=True, record=True))
    if method in ("seal", "seal_dmi"):
        for m in range(1, proto.n_iterations + 1):
            runs.append(stage(f"seal {m}", runs[-1]["S"], runs[-1], record=True))
    return {**runs[-1], "stages": [r["test_acc"] for r in runs]}


def clothing1m_table(methods, root, weights_path, proto: Clothing1MProtocol = Clothing1MProtocol(),
                     **kwargs) -> pd.DataFrame:
    """Test accuracy (%) of each method's best-on-validation model, in Table 3's layout; methods
    not available on this pipeline are left out."""
    rows = [(LABELS[m], 100 * run_clothing1m(m, root, weights_path, proto, **kwargs)["test_acc"])
            for m in methods if m in METHODS]
    return pd.DataFrame(rows, columns=["method", "ours"])
