"""What this machine is and the choices that depend on it: the device and precision ``"auto"`` mean
(bf16 only where the hardware reports it native and fast), the TF32 and determinism switches of a
run, what a result records of its hardware, and the measured matrix-product rate.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import re
import time
import warnings

import torch

from .checks import check_choice, fail

PRECISIONS = ("fp32", "tf32", "bf16")  # what a run trains in (tf32: CUDA only)
PRECISION_CHOICES = ("auto",) + PRECISIONS  # what a user may ask for
ISA_ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


@functools.cache
def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    lines = text.split("\n\n")[0].splitlines()
    return {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def _mkldnn_bf16() -> bool:
    """oneDNN's own report: bf16 kernels usable within the instruction set it may use."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(device) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; otherwise a torch device name."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        fail("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        fail("device", device, "'cpu' or 'auto': CUDA is not available on this machine")
    return resolved


def native_bf16(device) -> bool:
    """CUDA with compute capability >= 8.0, or a CPU with ``avx512_bf16``/``amx_bf16`` that oneDNN may
    use (``ONEDNN_MAX_CPU_ISA=AVX2`` turns it off; emulated bf16 is often 100x slower)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and _mkldnn_bf16() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 0.5,
                  device: str = "cpu") -> float:
    """The rate (GFLOP/s) of a ``size`` x ``size`` matrix product on ``device``: the best over ``seconds``."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def resolve_precision(precision, device, device_type: str | None = None) -> str:
    """``"auto"``: bf16 where it is native, else fp32. bf16 and tf32 are refused on a GPU without them,
    tf32 on a CPU; bf16 on a CPU without it is emulated, with a warning giving the slowdown.
    ``device_type``: where the runs train when not on ``device`` (jobs), decided for that kind of device;
    "cuda" on a machine without CUDA (Slurm jobs from a login node): "auto" is refused and the rest are
    left to the GPUs this machine cannot see."""
    check_choice(precision, "precision", PRECISION_CHOICES)
    if device_type == "cuda" and not torch.cuda.is_available():
        if precision == "auto":
            fail("precision", "auto", "'fp32', 'tf32' or 'bf16' for runs on GPUs this machine cannot see: "
                 "'auto' is decided by the GPU that trains (tf32, bf16: compute capability 8.0+, e.g. A100)")
        return precision
    device = resolve_device(device)
    if device_type is not None and device_type != device.type:
        device = resolve_device(device_type)
    native = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "tf32" and device.type != "cuda":
        fail("precision", precision, "'auto', 'fp32' or 'bf16' on a CPU: TF32 is an NVIDIA GPU format (compute "
             "capability 8.0 or later)")
    if precision in ("bf16", "tf32") and device.type == "cuda" and not native:
        major, minor = torch.cuda.get_device_capability(device)
        fail("precision", precision, f"'fp32' or 'auto' on {torch.cuda.get_device_name(device)} (compute "
             f"capability {major}.{minor}): {precision} needs 8.0 or later")
    if precision == "bf16" and not native:  # the slowdown measured on this CPU
        slowdown = matmul_gflops(torch.float32, 256, 0.2) / matmul_gflops(torch.bfloat16, 256, 0.2)
        warnings.warn(f"precision='bf16' on this CPU ({cpu_model()}) is emulated: a matrix product runs "
                      f"{slowdown:.0f}x slower than in fp32 here; precision='auto' chooses fp32", stacklevel=2)
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast where ``precision`` is "bf16", else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def training_settings(device, precision: str, deterministic: bool = False):
    """The switches a run trains under, restored afterwards. On CUDA, TF32 only for ``"tf32"`` (PyTorch
    runs convolutions in TF32 by default). ``deterministic``: deterministic algorithms, no cuDNN
    benchmarking, ``CUBLAS_WORKSPACE_CONFIG`` unless set; an operation without one is refused."""
    device = torch.device(device)
    # the allow_tf32 flags: with the newer fp32_precision ones at "ieee", reading cudnn.allow_tf32 and
    # entering cudnn.flags() raise (torch 2.9+), so code inside a run could not use them
    switches = (torch.backends.cuda.matmul, torch.backends.cudnn) if device.type == "cuda" else ()
    saved = ([s.allow_tf32 for s in switches], torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    for switch in switches:
        switch.allow_tf32 = precision == "tf32"
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as error:
        if deterministic and "deterministic" in str(error):
            fail("deterministic", True, f"False for this run: {str(error).splitlines()[0]}")
        raise
    finally:
        for switch, value in zip(switches, saved[0]):
            switch.allow_tf32 = value
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def describe(device, precision: str, deterministic: bool = False) -> dict:
    """What a result records of its hardware: the GPU and CUDA versions, or the CPU's ``fingerprint()``."""
    device = torch.device(device)
    record = {"device": str(device), "precision": precision, "deterministic": deterministic}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {**record, "gpu": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2 ** 30, 1), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "tf32": precision == "tf32", "torch": str(torch.__version__)}
    return {**record, **fingerprint()}


def fingerprint() -> dict:
    """What decides whether two CPU results can be bit-identical: the CPU, its kernels and torch."""
    text = torch.__config__.show()
    onednn, mkl = re.search(r"MKL-DNN v([\w.]+)", text), re.search(r"Math Kernel Library Version ([\w.\-]+)", text)
    return {"cpu": cpu_model(), "flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
            "onednn": onednn.group(1) if onednn else None, "mkl": mkl.group(1) if mkl else None,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "isa_environment": {name: os.environ[name] for name in ISA_ENVIRONMENT if name in os.environ},
            "torch": str(torch.__version__), "threads": torch.get_num_threads()}


@functools.cache
def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity: what Slurm or taskset gave it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tune_cpu_allocator() -> bool:
    """Keep freed activations in glibc's heap instead of the kernel's: 10% faster on the MNIST protocol
    (NOTES.md, "Speed"). A no-op without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    # M_MMAP_THRESHOLD (-3): heap below 32 MB; M_TRIM_THRESHOLD (-1): keep up to 512 MB freed
    return bool(mallopt(-3, 32 << 20)) and bool(mallopt(-1, 512 << 20))
