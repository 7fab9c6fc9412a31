"""The machine-dependent choices: the precision 'auto' resolves to, the fingerprint, the optimisers
that replace torch.optim, and the statistics that replace scikit-learn's."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from idnhelpers import hardware
from idnhelpers.datasets import load_dataset, protocol
from idnhelpers.models import MnistCNN
from idnhelpers.optim import SGD, Adam
from idnhelpers.runs import make_run
from idnhelpers.stats import auroc

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_auto_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch):
    monkeypatch.setattr(hardware, "_mkldnn_bf16", lambda: True)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw"}))  # Skylake-X
    assert hardware.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(hardware, "_mkldnn_bf16", lambda: False)  # oneDNN capped below its bf16 instructions
    assert hardware.resolve_precision("auto", "cpu") == "fp32"
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision='fp16' is not allowed: one of \\['auto', 'fp32', 'tf32', 'bf16'\\]"):
        hardware.resolve_precision("fp16", "cpu")


def test_an_isa_cap_in_the_environment_turns_native_bf16_off():
    """With oneDNN capped at AVX2 (the stand-in for a CPU without bf16), auto resolves to fp32 and the
    fingerprint says so, whatever this CPU is."""
    code = ("from idnhelpers import hardware; f = hardware.fingerprint(); "
            "print(hardware.resolve_precision('auto', 'cpu'), f['capability'], sorted(f['isa_environment']))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **AVX2}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fp32", "AVX2", "['ATEN_CPU_CAPABILITY',", "'MKL_ENABLE_INSTRUCTIONS',",
                                   "'ONEDNN_MAX_CPU_ISA']"]


def test_naming_bf16_where_it_is_emulated_warns_with_the_measured_slowdown(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    monkeypatch.setattr(hardware, "matmul_gflops", lambda dtype, size, seconds: 104.6 if dtype == torch.float32 else 1)
    with pytest.warns(UserWarning, match="precision='bf16' on this CPU .* is emulated: a matrix product runs 105x "
                                         "slower than in fp32 here; precision='auto' chooses fp32"):
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"


def test_a_run_takes_a_resolved_precision_only():
    X, y = load_dataset("digits")
    with pytest.raises(ValueError, match="precision='auto' is not allowed: .*hardware.resolve_precision"):
        make_run(X, y, protocol("digits", n_epochs=1), dataset="digits", precision="auto")


def test_the_fingerprint_names_cpu_kernels_torch_and_threads():
    f = hardware.fingerprint()
    assert set(f) == {"cpu", "flags", "onednn", "mkl", "capability", "isa_environment", "torch", "threads"}
    assert f["torch"] == torch.__version__ and f["threads"] == torch.get_num_threads() and f["cpu"]


def test_matmul_rate_is_measured():
    assert 0.1 < hardware.matmul_gflops(torch.float32, 256, 0.05) < 1e5


@pytest.mark.parametrize("name", ["sgd", "sgd_plain", "adam"])
def test_optimisers_equal_torch_optim_bit_for_bit(name):
    ours, theirs = {
        "sgd": (lambda p: SGD(p, 0.01, 0.5, 1e-4), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5, weight_decay=1e-4)),
        "sgd_plain": (lambda p: SGD(p, 0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        "adam": (lambda p: Adam(p, 1e-3, 1e-4), lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4))}[name]
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    m1 = MnistCNN()
    m2 = copy.deepcopy(m1)
    o1, o2 = ours(m1.parameters()), theirs(m2.parameters())
    for step in range(4):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
        o1.lr = 0.003  # the protocol's schedule changes lr between steps
        for g in o2.param_groups:
            g["lr"] = 0.003
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert not torch.equal(next(m1.parameters()), next(MnistCNN().parameters()))


def test_auroc_equals_scikit_learns():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    for ties in (False, True):
        score = torch.randint(0, 7, (500,), generator=g).double() if ties else torch.rand(500, generator=g)
        positive = torch.rand(500, generator=g) < 0.3
        assert auroc(score, positive) == pytest.approx(roc_auc_score(positive.numpy(), score.numpy()), abs=1e-12)
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0
