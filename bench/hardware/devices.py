"""Which compute device a run uses and how many of it there are. Probed cheaply, CUDA imported late."""

from __future__ import annotations

import functools
import os
import platform

import torch

from gpusizer_common.cpuinfo import cpuinfo_values
from gpusizer_common.device_type import is_cuda  # bench's modules take it from here, with the rest of the device facts

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def torch_device(device_type: str, local_rank: int = 0) -> torch.device:
    """The device a rank computes on: GPU ``local_rank`` of its host, or the CPU every CPU rank shares."""
    return torch.device("cuda", local_rank) if is_cuda(device_type) else torch.device("cpu")


def set_current_cuda_device(device: torch.device) -> None:
    """Make ``device`` this thread's current CUDA device (a CUDA-only API: nothing to do on CPU)."""
    if is_cuda(device.type):
        torch.cuda.set_device(device)


def compute_devices(device_type: str, world_size: int) -> int:
    """How many devices do a case's compute: one GPU per rank; on CPU one host, whose cores its ranks share."""
    return world_size if is_cuda(device_type) else 1


def ranks_per_memory(device_type: str, world_size: int) -> int:
    """How many ranks keep their training state in one device's memory: one per GPU; on CPU every
    rank, in the host's RAM."""
    return 1 if is_cuda(device_type) else world_size


def device_unavailable_reason(device_type: str) -> str | None:
    """Why this machine has none of ``device_type`` (CUDA needs a CUDA build and a visible GPU; a CPU
    is always there); None when it has."""
    return cuda_unavailable_reason() if is_cuda(device_type) else None


def resolve_device_type(requested: str) -> str:
    """``auto`` means cuda when a CUDA device is visible, else cpu."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def cuda_unavailable_reason() -> str | None:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build; install a CUDA build of torch to benchmark GPUs"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"
    return None


def device_count(device_type: str) -> int:
    """GPUs for cuda; for cpu, the number of worker processes the cores allow (one core each at least)."""
    if is_cuda(device_type):
        return torch.cuda.device_count()
    return usable_cores()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_rank(device_type: str, processes: int) -> int:
    """The usable cores split evenly between a case's processes, on GPU as on CPU.

    A GPU rank left at torch's default starts one thread per core: 8 ranks on a 96-core instance
    would run 768 threads fighting over 96 cores (the data, the optimizer and NCCL's host side all
    need some). ``device_type`` is kept for the callers: the split is the same for both."""
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"threads_per_rank: device type {device_type!r}; allowed: cpu, cuda")
    return max(1, usable_cores() // max(1, processes))


@functools.cache
def cpu_model_name() -> str:
    names = cpuinfo_values("model name")
    return names[0] if names else platform.processor() or platform.machine()


def device_name(device_type: str, index: int = 0) -> str:
    if is_cuda(device_type):
        return torch.cuda.get_device_name(index)
    return cpu_model_name()


def synchronize(device: torch.device) -> None:
    if is_cuda(device.type):
        torch.cuda.synchronize(device)
