"""Which device computes: `auto` takes CUDA when there is one and says so; the CPU fall-back is said plainly."""

import contextlib
import os
import time

import torch

from .errors import DuiitError


def resolve_device(spec: str = "auto"):
    """(torch.device, a sentence for people saying what will be used and why)."""
    spec = (spec or "auto").strip().lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            return device, f"using CUDA device {device.index}: {torch.cuda.get_device_name(device)}"
        return torch.device("cpu"), "CUDA is not available: using the CPU (training and translation will be slow)"
    if spec == "cpu":
        return torch.device("cpu"), "using the CPU (as requested)"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DuiitError(f"device {spec!r} requested but CUDA is not available (torch {torch.__version__}); "
                             "use --device cpu or auto")
        try:
            device = torch.device(spec if ":" in spec else f"cuda:{local_rank}")
        except RuntimeError:
            raise DuiitError(f"device {spec!r} is not a valid CUDA device name") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DuiitError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device, f"using CUDA device {device.index}: {torch.cuda.get_device_name(device)}"
    raise DuiitError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")


def autocast(device: torch.device):
    """bf16 autocast on CUDA where supported (no loss scaling needed); a no-op context on the CPU."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def cuda_fp32_math(tf32: bool):
    """Whether CUDA's fp32 convolutions and matrix products may round through TF32 while inside (torch lets
    cuDNN do so by default): TF32 moved the reference generator's HU by 18 HU at the 99.9th percentile on an
    H200 (Testing/benchmarks/results/gpu_check.md). The previous setting comes back afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _cpu_times(path="/proc/stat"):
    """(busy, total) CPU time in ticks over all cores since boot (Linux), or None where not readable."""
    try:
        with open(path) as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(interval: float = 0.5) -> float:
    """How many cores other work keeps busy: measured over `interval` s where the kernel tells (this process
    sleeps meanwhile), else the 1-minute load average, which still counts a job that ended a minute ago."""
    first = _cpu_times()
    if first is not None:
        time.sleep(interval)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            return (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def default_cpu_threads() -> int:
    """PyTorch's CPU thread count less the cores other work keeps busy: on a shared 2-core machine, 2 threads
    ran a training step 4-10x slower than 1 while another job used a core."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - round(busy_cores())))
