"""A training run as a value (``Run``: frozen, picklable, checked when built; ``key()``, the cache key,
hashes all that changes its result) and its result (``RunResult``; a method's chain: ``MethodResult``)."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import config_key, file_digest, fingerprint
from .checks import check_bool, check_choice, check_int, check_labels, check_seed, check_softmax, fail
from .csr import CSR_RADIUS, SEARCHES
from .datasets import get_dataset, load_dataset
from .hardware import PRECISIONS
from .losses import CrossEntropy, Objective
from .protocol import Protocol
from .sources import TensorSource
from .steps import Single, Step

RESULT_FORMAT = 1  # bump when a change to the library changes stored results
# "eval": the paper's f^t(x) on the un-augmented instances. "official": as the official code, in eval
# mode on *augmented* instances (its softmax loader uses the training transforms), in batches of 1000.
SOFTMAX_KEYS = {"eval": "eval", "official": "official, eval mode"}  # "official" recorded in train mode before 0.3
DEVICE_TYPES = ("cpu", "cuda")


class Data:
    """Instances a run reads; ``dataset`` names their ``DatasetSpec``, ``fingerprint`` hashes them and
    ``source(device)`` is the batch source (``sources``) that serves them on ``device``."""

    dataset: str
    fingerprint: str


@dataclass(frozen=True, eq=False)
class Tensors(Data):
    """Images (uint8 N x C x H x W) or feature vectors (float32 N x d) of a registered data set; made by
    ``from_dataset`` it pickles as a reference (data set, split, rows, root), re-read on the other side."""

    X: torch.Tensor
    dataset: str
    origin: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        spec = get_dataset(self.dataset)
        dtype = torch.float32 if spec.is_features else torch.uint8
        if not isinstance(self.X, torch.Tensor) or self.X.dtype != dtype or tuple(self.X.shape[1:]) != spec.input_shape:
            shown = f"a {self.X.dtype} tensor of shape {tuple(self.X.shape)}" if isinstance(
                self.X, torch.Tensor) else type(self.X).__name__
            fail("X", shown, f"a {str(dtype)[6:]} tensor N x {' x '.join(map(str, spec.input_shape))} "
                             f"(dataset={self.dataset!r})")
        object.__setattr__(self, "fingerprint", fingerprint(self.X))

    @classmethod
    def from_dataset(cls, dataset: str, rows: torch.Tensor | None = None, train: bool = True,
                     root: str | Path | None = None, verify: bool = True, X_all=None) -> "Tensors":
        """Rows ``rows`` (all if None) of a data set's training or test split (``X_all``, if loaded)."""
        if X_all is None:
            X_all = load_dataset(dataset, root, train, verify)[0]
        rows = None if rows is None else torch.as_tensor(rows).long()
        return cls(X_all if rows is None else X_all[rows], dataset,
                   (dataset, rows, train, None if root is None else str(root), verify))

    def __len__(self):
        return len(self.X)

    def __reduce__(self):
        if self.origin is None:
            return Tensors, (self.X, self.dataset)
        return _reload, (self.origin, self.fingerprint)

    def source(self, device):
        return TensorSource(self, device)


def _reload(origin, expected: str) -> Tensors:
    dataset, rows, train, root, verify = origin
    data = Tensors.from_dataset(dataset, rows, train, root, verify)
    if data.fingerprint != expected:
        raise ValueError(f"{dataset} under {root or 'the default data root'} differs from the copy this run was "
                         f"made with (fingerprint {data.fingerprint}, expected {expected})")
    return data


@dataclass(frozen=True, eq=False)
class Labelled:
    """Instances with their labels: a test or validation set."""

    data: Data
    y: torch.Tensor

    def __post_init__(self):
        object.__setattr__(self, "y", check_labels(self.y, get_dataset(self.data.dataset).n_classes, "y",
                                                   n=len(self.data)))

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint + fingerprint(self.y)


@dataclass(frozen=True, eq=False)
class Weights:
    """A network's state_dict (CPU tensors) as a value with a content fingerprint."""

    state: dict

    @functools.cached_property
    def fingerprint(self) -> str:
        return config_key({name: fingerprint(t) for name, t in self.state.items()})


@dataclass(frozen=True)
class CSRProbe:
    """Measure the critical sample ratio (Eq. 4) every ``every`` epochs at ``radius`` (pixel units of
    [0, 1]) with the search "lass" or "official" (see ``csr``), on the training ``rows`` or, with
    ``test_draw=n``, on n test rows drawn afresh every epoch, as Ma et al.'s D2L code does."""

    rows: torch.Tensor | None = None
    every: int = 1
    radius: float = CSR_RADIUS
    search: str = "lass"
    test_draw: int | None = None

    def __post_init__(self):
        if (self.rows is None) == (self.test_draw is None):
            fail("csr rows/test_draw", (self.rows, self.test_draw), "exactly one of them: training rows, or the "
                 "number of test rows drawn every epoch")
        check_int(self.test_draw, "csr_test_draw", minimum=1, none_ok=True)
        check_int(self.every, "csr_every", minimum=1)
        if not isinstance(self.radius, (int, float)) or self.radius < 0:
            fail("csr_radius", self.radius, "a number >= 0 (pixel units of [0, 1])")
        check_choice(self.search, "csr_search", SEARCHES)

    def test_rows(self, n_test: int, seed: int, epoch: int) -> torch.Tensor:
        """The ``test_draw`` test rows probed after 0-based ``epoch`` of a run with ``seed``."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(n_test, generator=generator)[:self.test_draw]

    def config(self) -> dict:
        probe = dict(rows=fingerprint(self.rows)) if self.rows is not None else dict(test_draw=self.test_draw)
        # step sizes scale with the radius since 0.3; at the default radius they did not change (nor its keys)
        steps = {} if self.radius == CSR_RADIUS else dict(steps="scaled with the radius")
        return dict(**probe, every=self.every, radius=self.radius, search=self.search, **steps)


@dataclass(frozen=True, eq=False)
class Run:
    """One training run. ``keep``: the weights the result carries (the last epoch's, the best validation
    epoch's or none); ``average_epochs``: ``S`` averages only the first that many epochs (the official
    Clothing1M SEAL (DMI): 5); ``device_type`` (set by the engine) keeps CPU and CUDA results apart."""

    data: Data
    targets: torch.Tensor
    protocol: Protocol
    objective: Objective = CrossEntropy()
    step: Step = Single()
    seed: int = 0
    precision: str = "fp32"
    softmax_mode: str = "eval"
    record_softmax: bool = True
    y_true: torch.Tensor | None = None
    test: Labelled | None = None
    val: Labelled | None = None
    track: torch.Tensor | None = None
    csr: CSRProbe | None = None
    init: Weights | None = None
    keep: str = "last"
    average_epochs: int | None = None
    deterministic: bool = False
    device_type: str = "cpu"
    label: str = ""

    def __post_init__(self):
        for name, kind, allowed in (("data", Data, "a runs.Data (Tensors, or clothing1m.ImageFiles)"),
                                    ("protocol", Protocol, "a Protocol (datasets.protocol(name, ...))"),
                                    ("objective", Objective, "an idnhelpers.losses.Objective"),
                                    ("step", Step, "steps.Single() or steps.Peers(...)")):
            if not isinstance(getattr(self, name), kind):
                fail(name, type(getattr(self, name)).__name__, allowed)
        self._check_targets()
        check_seed(self.seed)
        if self.precision == "auto":
            fail("precision", "auto", f"one of {list(PRECISIONS)}: a run trains in one precision, so 'auto' is "
                 "resolved for its device first (hardware.resolve_precision(precision, device))")
        check_choice(self.precision, "precision", PRECISIONS)
        check_choice(self.device_type, "device_type", DEVICE_TYPES)
        if self.precision == "tf32" and self.device_type != "cuda":
            fail("precision", "tf32", "'fp32' or 'bf16' for a run on a CPU (device_type='cpu'): TF32 is a GPU format")
        check_bool(self.deterministic, "deterministic")
        check_choice(self.softmax_mode, "softmax_mode", SOFTMAX_KEYS)
        check_choice(self.keep, "keep", ("last", "best_val", "none"))
        check_int(self.average_epochs, "average_epochs", minimum=1, none_ok=True)
        check_bool(self.record_softmax, "record_softmax")
        self._check_records()
        if self.init is not None and not isinstance(self.init, Weights):
            object.__setattr__(self, "init", Weights(dict(self.init)))

    def _check_targets(self):
        n, c = len(self.data), self.n_classes
        if torch.as_tensor(self.targets).dim() == 2:
            object.__setattr__(self, "targets", check_softmax(self.targets, n, "targets", n_classes=c))
            if not self.objective.accepts_soft:
                fail("targets", "soft labels", f"hard labels: {type(self.objective).__name__} trains on class indices")
            if self.step.n_networks > 1:
                fail("targets", "soft labels", "hard labels: Co-teaching selects instances by their hard label")
        else:
            object.__setattr__(self, "targets", check_labels(self.targets, c, "targets", n=n))
        self.objective.check(c, self.protocol.n_epochs)
        if self.step.n_networks > 1 and not isinstance(self.objective, CrossEntropy):
            fail("objective", type(self.objective).__name__, "CrossEntropy() with Co-teaching's two networks")
        if self.y_true is not None:
            object.__setattr__(self, "y_true", check_labels(self.y_true, c, "y_true", n=n))

    def _check_records(self):
        dataset, n = self.data.dataset, len(self.data)
        for name in ("test", "val"):
            split = getattr(self, name)
            if split is not None and (not isinstance(split, Labelled) or split.data.dataset != dataset):
                fail(name, split, f"a Labelled set of the same data set ({dataset!r}) as the training data")
        if (self.csr is not None or self.softmax_mode == "official") and not isinstance(self.data, Tensors):
            fail("csr/softmax_mode", (self.csr, self.softmax_mode),
                 "no CSR and softmax_mode='eval' for streamed images")
        if self.csr is not None and self.spec.is_features:
            fail("csr", self.csr, f"None for a feature data set ({dataset!r}): CSR is defined on images")
        if self.protocol.augment and self.spec.is_features:
            fail("augment", True, f"False for a feature data set ({dataset!r}): augmentation crops images")
        if (self.track is not None or self.csr is not None) and not self.record_softmax:
            fail("record_softmax", False, "True when tracking rows or measuring CSR")
        if self.keep == "best_val" and self.val is None:
            fail("keep", self.keep, "'last' or 'none' without a validation set (val)")
        if self.csr is not None and self.csr.test_draw is not None and (
                self.test is None or len(self.test.data) < self.csr.test_draw):
            fail("csr test_draw", self.csr.test_draw, "at most the number of test rows "
                 f"({0 if self.test is None else len(self.test.data)}): the CSR probe draws them from the test set")
        for name, rows in (("track", self.track), ("csr rows", None if self.csr is None else self.csr.rows)):
            if rows is not None:
                rows = torch.as_tensor(rows)
                if rows.dim() != 1 or rows.dtype.is_floating_point or (len(rows) and not (
                        0 <= int(rows.min()) and int(rows.max()) < n)):
                    fail(name, rows, f"a 1-D tensor of row indices in [0, {n})")

    @property
    def spec(self):
        return get_dataset(self.data.dataset)

    @property
    def n_classes(self) -> int:
        return self.spec.n_classes

    def replace(self, **changes) -> "Run":
        return dataclasses.replace(self, **changes)

    def config(self) -> dict:
        """Everything that changes this run's result, as JSON-ready values."""
        def fp(t):
            return None if t is None else fingerprint(torch.as_tensor(t))

        protocol = dataclasses.asdict(self.protocol)
        # keep="none" with a validation set stores the best_val weights (the stages starting there share it)
        kept = "best_val" if self.keep == "best_val" or (self.keep == "none" and self.val is not None) else "last"
        if self.protocol.pretrained is not None:
            try:
                stat = os.stat(self.protocol.pretrained)
            except OSError:
                fail("pretrained", self.protocol.pretrained, "an existing state_dict file")
            protocol["pretrained"] = _digest(self.protocol.pretrained, stat.st_mtime, stat.st_size)
        return dict(
            format=RESULT_FORMAT, dataset=self.spec.identity(), data=self.data.fingerprint, targets=fp(self.targets),
            protocol=protocol, objective=self.objective.config(), step=self.step.config(), seed=self.seed,
            precision=self.precision, softmax_mode=SOFTMAX_KEYS[self.softmax_mode], record_softmax=self.record_softmax,
            y_true=fp(self.y_true), test=self.test and self.test.fingerprint, val=self.val and self.val.fingerprint,
            track=fp(self.track), csr=self.csr and self.csr.config(), init=self.init and self.init.fingerprint,
            weights=kept, average_epochs=self.average_epochs,
            **({"abstention": "an error"} if self.objective.extra_outputs else {}),
            # CPU results keep the keys they had before a GPU could train them
            **({"device": self.device_type} if self.device_type != "cpu" else {}),
            **({"deterministic": True} if self.deterministic else {}))

    @functools.cached_property
    def _key(self) -> str:
        return config_key(self.config())

    def key(self) -> str:
        """The cache key: a hash of ``config()``."""
        return self._key

    def stack_signature(self) -> str:
        """Equal for runs that can train in one stacked call: they differ only in targets (all hard
        or all soft), seed, starting weights, tracked rows and their objective's and step's ``per_run``."""
        if not type(self.step).stackable:
            return self.key()
        config = self.config()
        for name in ("targets", "seed", "init", "track", "y_true"):
            config.pop(name)
        config["soft_targets"] = self.targets.dim() == 2  # one K x n (x c) tensor holds the runs' targets
        for part in ("objective", "step"):
            per_run = type(getattr(self, part)).per_run
            config[part] = {k: v for k, v in config[part].items() if k not in per_run}
        return config_key(config)


@functools.lru_cache(maxsize=32)
def _digest(path: str, mtime: float, size: int) -> str:  # once per version of a pretrained weights file
    return file_digest(path)


@dataclass(frozen=True)
class RunResult:
    """What one run produced: ``S`` the epoch-averaged training softmax (n x c, Eq. 3 / Algorithm 2;
    None if not recorded); ``history``, per-epoch lists: ``loss``, ``fit_acc`` (train mode, on the
    batches as trained: Fig. 4's training accuracy), ``train_acc`` (eval mode), ``true_acc``,
    ``test_acc``, ``val_acc``, ``csr``, with ``y_true`` ``mem_noisy``, ``mem_true``, ``mem_other``,
    ``clean_correct``, for DAC ``test_abstained``, ``test_kept_acc`` and their ``val_`` pair;
    ``snapshots`` (epochs x tracked rows x c), the kept ``weights``, their 1-based ``best_epoch``, ...;
    ``hardware`` is None in results stored before it was."""

    S: torch.Tensor | None
    history: dict
    snapshots: torch.Tensor | None
    weights: dict | None
    best_epoch: int
    precision: str
    device: str
    seconds: float
    threads: int
    hardware: dict | None = None

    def payload(self) -> dict:
        """Plain tensors, lists and numbers: what the cache stores (``RunResult(**payload)`` loads it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class MethodResult:
    """The ``RunResult`` of each stage of a method (CE then DMI; SEAL's iterations 0..m; ...), the
    last the method's own, and Forward's estimated transition matrix ``T``."""

    method: str
    stages: tuple[RunResult, ...]
    T: torch.Tensor | None = None

    @property
    def final(self) -> RunResult:
        return self.stages[-1]

    @property
    def S(self) -> torch.Tensor | None:
        return self.final.S

    @property
    def history(self) -> dict:
        return self.final.history


def make_run(X, targets, protocol: Protocol, *, dataset: str, X_test=None, y_test=None, X_val=None, y_val=None,
             **fields) -> Run:
    """A ``Run`` of ``X`` (a tensor or any ``Data``), with test and validation sets as tensor pairs."""
    def data(Z):
        return Z if isinstance(Z, Data) else Tensors(Z, dataset)

    def labelled(Z, y, name):
        if (Z is None) != (y is None):
            fail(f"X_{name}/y_{name}", "one of the two", f"both X_{name} and y_{name}, or neither")
        return None if Z is None else Labelled(data(Z), y)

    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Run)})
    if unknown:
        fail("option", unknown, f"fields of Run: {[f.name for f in dataclasses.fields(Run)]}")
    return Run(data(X), targets, protocol, test=labelled(X_test, y_test, "test"),
               val=labelled(X_val, y_val, "val"), **fields)
