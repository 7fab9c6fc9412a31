"""The methods of the paper's benchmarks (Section 4.3, Tables 1-3), and ELR and PLC beyond them, as
registry entries: a ``Method`` is a label, its options with defaults, and a driver that trains
stages of runs, each stage of all cells (base runs) in one ``Trainer`` call. Stages that coincide
are one run: CE is the ``ce`` method, the first stage of Forward and DMI, and SEAL's iteration 0.
``run_method`` trains one cell, ``run_methods`` K cells (equal run by run, stacked: up to float
summation order); ``register_method(name, loss_method(label, YourObjective))`` adds a method.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import cache, engine
from .dividemix import dividemix
from .elr_plus import ELRPlus
from .sop import sop, sop_plus
from .checks import check_bool, check_float, check_int, check_new_name, check_rate, check_seed, fail
from .engine import predict, train_many
from .hardware import resolve_precision
from .losses import DAC, DMI, ELR, GCE, PLC, CrossEntropy, Forward, Objective, TruncatedGCE
from .protocol import Protocol
from .runs import MethodResult, Run, RunResult, Tensors, make_run
from .stats import anchor_transition_matrix
from .steps import Peers, Single, Step


@dataclass(frozen=True)
class Trainer:
    """How a driver's stages are trained: ``engine.train_many``'s options."""

    backend: str = "auto"
    device: object = None
    use_cache: bool = True
    stack_size: int | None = None
    workers: int | None = None

    def __call__(self, runs: list[Run]) -> list[RunResult]:
        return train_many(runs, backend=self.backend, device=self.device, use_cache=self.use_cache,
                          stack_size=self.stack_size, workers=self.workers)

    def predict(self, run: Run, weights: dict, all_outputs: bool = False) -> torch.Tensor:
        return predict(run, weights, device=self.device, all_outputs=all_outputs)

    def derive(self, key: str, compute: Callable[[], dict]) -> dict:
        """A result derived from trained runs (Forward's T): cached under ``key``, computed once
        (under the key's lock) by ``compute()``."""
        if not self.use_cache:
            return compute()
        while (stored := cache.load(key)) is None:
            lock = cache.Lock.acquire(key)
            if lock is None:  # another process is computing it
                time.sleep(engine.WAIT_SECONDS)
                continue
            with lock:
                if cache.load(key) is None:
                    cache.save(key, compute())
        return stored


@dataclass(frozen=True)
class Method:
    """A registry entry: ``label``, ``driver(runs, rates, trainer, **options) -> list[MethodResult]``,
    its ``options`` with their defaults, whether it takes the noise rate."""

    label: str
    driver: Callable
    options: dict
    uses_noise_rate: bool = False


def _keywords(function: Callable) -> dict:
    """A driver's options: its keyword-only parameters, with their defaults."""
    return {p.name: p.default for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY}


METHODS: dict[str, Method] = {}


def register_method(name: str, method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry under ``name`` (an existing name only with ``replace=True``)."""
    check_new_name(METHODS, name, "method", replace)
    if not (isinstance(method, Method) and isinstance(method.label, str) and method.label and callable(method.driver)
            and isinstance(method.options, dict)):
        fail("method", method, "a methods.Method (e.g. loss_method(label, YourObjective)) with a label (a non-empty "
             "string), a callable driver and a dict of options")
    METHODS[name] = method
    return method


def get_method(name) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        fail("method", name, f"one of {sorted(METHODS)}")
    return METHODS[name]


def method_options(name: str) -> tuple[str, ...]:
    """The method's own options (beyond the run fields every method takes)."""
    return tuple(get_method(name).options)


def method_label(name: str) -> str:
    """The method's name in tables ("SEAL (DMI)" for ``seal_dmi``)."""
    return get_method(name).label


# ---------------------------------------------------------------- stages shared by the drivers

def _weights_kept(run: Run) -> str:
    return "last" if run.keep == "none" else run.keep


def ce_runs(runs: list[Run], keep_weights: bool = False) -> list[Run]:
    """The CE runs (the ``ce`` method, the first stage of Forward, DMI and SEAL); ``keep_weights``: for
    a later stage, the best on a noisy validation split if there is one (as L_DMI's authors; a last-epoch
    model that has memorised the noise gives Forward a T close to the identity)."""
    def keep(run):
        wanted = _weights_kept(run) if keep_weights else run.keep
        return "best_val" if run.val is not None and wanted != "none" else wanted

    return [run.replace(objective=CrossEntropy(), step=Single(), record_softmax=True, label="CE", keep=keep(run))
            for run in runs]


def _stages(*stages: list[RunResult]) -> list[MethodResult]:
    """The cells' results from each stage's results (one per cell)."""
    return [MethodResult("", cell) for cell in zip(*stages)]


def one_stage_method(label_: str, changes: Callable, options: dict | None = None,
                     uses_noise_rate=False) -> Method:
    """A method that trains each base run ``run`` (noise rate ``rate``) once, as ``run.replace(**changes(run,
    rate, **options))``; its options: ``options``, else ``changes``' keyword-only parameters."""
    def driver(runs, rates, trainer, **options):
        return _stages(trainer([run.replace(label=label_, **changes(run, rate, **options))
                                for run, rate in zip(runs, rates)]))
    return Method(label_, driver, _keywords(changes) if options is None else options, uses_noise_rate)


def loss_method(label_: str, cls: type[Objective] | type[Step]) -> Method:
    """A method that trains ``cls(**options)``, its options the class's fields: an objective, or a step on
    cross-entropy (ELR+'s)."""
    if not (isinstance(cls, type) and issubclass(cls, (Objective, Step))):
        fail("cls", cls, "a subclass of idnhelpers.losses.Objective (or of idnhelpers.steps.Step)")

    def changes(run, rate, **options):
        spec = cls(**options)
        return dict(objective=spec) if isinstance(spec, Objective) else dict(objective=CrossEntropy(), step=spec)
    return one_stage_method(label_, changes, {f.name: f.default for f in dataclasses.fields(cls)})


def ce(runs, rates, trainer):
    """Cross-entropy on the noisy labels."""
    return _stages(trainer(ce_runs(runs)))


def forward(runs, rates, trainer, *, anchor_percentile=97.0):
    """Forward correction (Patrini et al. 2017): T from the CE network by the anchor-point estimator
    (``stats.anchor_transition_matrix``, ``anchor_percentile`` None: argmax), then a fresh network."""
    check_float(anchor_percentile, "anchor_percentile", low=0.0, high=100.0, low_open=True, none_ok=True)
    stage1 = ce_runs(runs, keep_weights=True)
    first = trainer(stage1)
    Ts = [_anchor_T(run, r, anchor_percentile, trainer) for run, r in zip(stage1, first)]
    second = trainer([run.replace(objective=Forward(tuple(map(tuple, T.tolist()))), label="Forward")
                      for run, T in zip(runs, Ts)])
    return [MethodResult("", (a, b), T=T) for a, b, T in zip(first, second, Ts)]


def _anchor_T(ce_run: Run, ce_result: RunResult, percentile, trainer: Trainer) -> torch.Tensor:
    key = cache.config_key(dict(stage="anchor T", ce=ce_run.key(), percentile=percentile))
    return trainer.derive(key, lambda: {"T": anchor_transition_matrix(trainer.predict(ce_run, ce_result.weights),
                                                                       percentile)})["T"]


def dac(runs, rates, trainer, *, retrain_without_abstained=False, **objective_options):
    """DAC (Thulasidasan et al. 2019; ``losses.DAC``'s fields are the other options), the stage our
    Tables 1-2 report; ``retrain_without_abstained``: then CE on the rows it does not abstain on."""
    check_bool(retrain_without_abstained, "retrain_without_abstained")
    objective = DAC(**objective_options)
    if retrain_without_abstained and not all(isinstance(run.data, Tensors) for run in runs):
        fail("retrain_without_abstained", True, "False for streamed images (rows are removed from tensors)")
    first = trainer([run.replace(objective=objective, label="DAC",
                                 keep=_weights_kept(run) if retrain_without_abstained else run.keep) for run in runs])
    if not retrain_without_abstained:
        return _stages(first)
    kept_runs = []
    for run, r in zip(runs, first):
        outputs = trainer.predict(run.replace(objective=objective), r.weights, all_outputs=True)
        rows = (outputs.argmax(1) != run.n_classes).nonzero().squeeze(1)
        if not len(rows):
            fail("retrain_without_abstained", True, f"a DAC model that keeps some instances (it abstained on all "
                 f"{len(outputs)}: raise alpha_final or train longer)")
        kept_runs.append(run.replace(data=Tensors(run.data.X[rows], run.data.dataset), targets=run.targets[rows],
                                     y_true=None if run.y_true is None else run.y_true[rows], track=None, csr=None,
                                     label="CE without abstained"))
    return _stages(first, trainer(ce_runs(kept_runs)))


def coteaching(run, rate, *, t_k=10) -> dict:
    """Co-teaching's run (Han et al. 2018, ``steps.Peers``), the forget rate being the noise rate."""
    return dict(step=Peers(rate, t_k))


# The L_DMI authors' own (Fashion-)MNIST setting: Adam, lr 1e-4, 20 epochs (``run_method("dmi", ..., **LDMI_MNIST)``)
LDMI_MNIST = dict(optimizer="adam", lr=1e-4, n_epochs=20, weight_decay=0.0)


def dmi(runs, rates, trainer, *, optimizer="sgd", lr=1e-6, momentum=0.9, weight_decay=1e-4, n_epochs=None,
        milestones=(), gamma=None, official_loss=True, average_epochs=None):
    """DMI (Xu et al. 2019): the CE model trained further with L_DMI (``n_epochs`` None: the
    protocol's). Defaults: the L_DMI authors' CIFAR-10 optimiser, as the SEAL paper publishes no DMI
    setting for MNIST (their (Fashion-)MNIST one: ``**LDMI_MNIST``; Clothing1M, Appendix A: lr 1e-6
    halved after 5 epochs, ``paper.CLOTHING1M_DMI``). ``average_epochs``: S of
    the DMI stage (SEAL (DMI)'s S^[0]) averages its first that many epochs."""
    milestones = tuple(milestones) if isinstance(milestones, list) else milestones  # else Protocol says what it takes
    protocols = [run.protocol.replace(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      milestones=milestones, gamma=gamma, n_epochs=n_epochs) for run in runs]
    first = trainer(ce_runs(runs, keep_weights=True))
    second = trainer([run.replace(protocol=p, objective=DMI(official_loss), init=r.weights, record_softmax=True,
                                  average_epochs=average_epochs, label="DMI")
                      for run, p, r in zip(runs, protocols, first)])
    return _stages(first, second)


def _seal_iterations(runs, stages, trainer, n_iterations, retrain):
    """Algorithm 2's iterations 1..n, each on the previous one's averaged softmax."""
    stages = [list(s) for s in stages]
    for m in range(1, n_iterations + 1):
        results = trainer([run.replace(targets=s[-1].S, objective=CrossEntropy(), step=Single(), record_softmax=True,
                                       init=None if retrain else s[-1].weights, label=f"SEAL iteration {m}",
                                       keep=run.keep if retrain or m == n_iterations else _weights_kept(run))
                           for run, s in zip(runs, stages)])
        for s, r in zip(stages, results):
            s.append(r)
    return [MethodResult("", tuple(s)) for s in stages]


def seal(runs, rates, trainer, *, n_iterations=10, retrain=True):
    """SEAL (Algorithm 2): CE, then ``n_iterations`` iterations on the averaged softmax, each from a
    fresh network of the same seed (``retrain``, MNIST/CIFAR-10) or the previous weights (Clothing1M)."""
    check_int(n_iterations, "n_iterations", minimum=0)
    first = trainer(ce_runs(runs, keep_weights=not retrain))
    return _seal_iterations(runs, [(r,) for r in first], trainer, n_iterations, retrain)


def seal_dmi(runs, rates, trainer, *, n_iterations=10, retrain=True, dmi_options=None):
    """SEAL (DMI) (Table 3): SEAL started from DMI's averaged softmax (S^[0])."""
    check_int(n_iterations, "n_iterations", minimum=0)
    dmi_options = dict(dmi_options or {})
    unknown = sorted(set(dmi_options) - set(METHODS["dmi"].options))
    if unknown:
        fail("dmi_options", unknown, f"options of dmi: {list(METHODS['dmi'].options)}")
    start = dmi(runs, rates, trainer, **dmi_options)
    return _seal_iterations(runs, [r.stages for r in start], trainer, n_iterations, retrain)


register_method("ce", Method("CE", ce, _keywords(ce)))
register_method("forward", Method("Forward", forward, _keywords(forward)))
register_method("coteaching", one_stage_method("Co-teaching", coteaching, uses_noise_rate=True))
register_method("gce", loss_method("GCE", GCE))
register_method("gce_truncated", loss_method("GCE (truncated)", TruncatedGCE))
register_method("dac", Method("DAC", dac, {**{f.name: f.default for f in dataclasses.fields(DAC)},
                                              "retrain_without_abstained": False}))
register_method("dmi", Method("DMI", dmi, _keywords(dmi)))
register_method("seal", Method("SEAL", seal, _keywords(seal)))
register_method("seal_dmi", Method("SEAL (DMI)", seal_dmi, _keywords(seal_dmi)))
# Beyond the paper: baselines of later IDN papers (chapter 05's "beyond the paper" block)
register_method("elr", loss_method("ELR", ELR))
register_method("plc", loss_method("PLC", PLC))
register_method("dividemix", one_stage_method("DivideMix", dividemix))
register_method("elr_plus", loss_method("ELR+", ELRPlus))
register_method("sop", one_stage_method("SOP", sop))
register_method("sop_plus", one_stage_method("SOP+", sop_plus))


# ---------------------------------------------------------------- entry points

# Run fields every method takes (the rest are set by the method or by run_methods' arguments)
RUN_OPTIONS = ("y_true", "precision", "softmax_mode", "record_softmax", "track", "csr", "init", "keep", "deterministic")


def run_stages(name: str, runs: list[Run], noise_rates=None, trainer: Trainer = Trainer(), **options) -> list[
        MethodResult]:
    """Method ``name`` on base runs (one per cell); ``noise_rates``: one per run (Co-teaching's)."""
    method = get_method(name)
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        fail("option", unknown, f"options of {name}: {sorted(method.options)}")
    rates = [None] * len(runs) if noise_rates is None else [check_rate(r, "noise_rate") for r in noise_rates]
    if len(rates) != len(runs):
        fail("noise_rates", noise_rates, f"one noise rate per run ({len(runs)})")
    if method.uses_noise_rate and None in rates:
        fail("noise_rate", None, f"a number in [0, 1): {name} uses it (its forget rate)")
    results = method.driver(runs, rates, trainer, **{**method.options, **options})
    return [dataclasses.replace(r, method=name) for r in results]


def run_methods(name: str, X, y_noisy_sets, protocol: Protocol, *, seeds, dataset: str, noise_rates=None,
                backend: str = "auto", device=None, use_cache: bool = True, stack_size: int | None = None,
                X_test=None, y_test=None, X_val=None, y_val=None, **options) -> list[MethodResult]:
    """Method ``name`` on K cells: cell k trains on ``y_noisy_sets[k]`` with ``seeds[k]`` (and
    ``noise_rates[k]``). Other keywords: the method's options or ``Run`` fields (``precision="auto"``:
    ``hardware.resolve_precision``)."""
    if len(y_noisy_sets) != len(seeds) or not seeds:
        fail("seeds", seeds, f"one seed per label set ({len(y_noisy_sets)} label sets)")
    method = get_method(name)
    run_fields = {k: options.pop(k) for k in list(options) if k in RUN_OPTIONS}
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        fail("option", unknown, f"options of {name}: {sorted(method.options)}, or run options {list(RUN_OPTIONS)}")
    if "precision" in run_fields:
        run_fields["precision"] = resolve_precision(run_fields["precision"], device)
    data = X if isinstance(X, Tensors) else Tensors(X, dataset)
    test = None if X_test is None else Tensors(X_test, dataset)
    val = None if X_val is None else Tensors(X_val, dataset)
    runs = [make_run(data, y, protocol, dataset=dataset, seed=check_seed(s), X_test=test, y_test=y_test, X_val=val,
                     y_val=y_val, **run_fields) for y, s in zip(y_noisy_sets, seeds)]
    trainer = Trainer(backend, device, use_cache, stack_size)
    return run_stages(name, runs, noise_rates, trainer, **options)


def run_method(name: str, X, y_noisy, protocol: Protocol, *, seed: int = 0, noise_rate: float | None = None,
               **options) -> MethodResult:
    """Method ``name`` on one cell (see ``run_methods``), trained run by run."""
    rates = None if noise_rate is None else [noise_rate]
    return run_methods(name, X, [y_noisy], protocol, seeds=[seed], noise_rates=rates,
                       **{"backend": "loop", **options})[0]


def summarize(result) -> dict:
    """Test accuracy (%) at the last epoch (the paper's headline), the best epoch and the one best on
    the noisy validation split (NaN without one), epochs 1-based; ``train``: last ``fit_acc`` (Fig. 4)."""
    test = result.history["test_acc"]
    val = result.history.get("val_acc")
    best = max(range(len(test)), key=test.__getitem__)
    val_selected = val_epoch = float("nan")
    if val:
        chosen = max(range(len(val)), key=val.__getitem__)
        val_selected, val_epoch = 100 * test[chosen], chosen + 1
    return dict(last=100 * test[-1], best=100 * test[best], best_epoch=best + 1,
                train=100 * result.history["fit_acc"][-1], val_selected=val_selected, val_epoch=val_epoch)
