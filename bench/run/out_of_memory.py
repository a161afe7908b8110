"""Out of memory fails one case, in one line, and never the run.

``does not fit: <preset> <precision> <strategy> at batch N on <device> (<memory> GiB)`` is the line, for
a case skipped beforehand (its weights, gradients and optimizer state alone exceed the memory) and for
one that ran out while running (torch.OutOfMemoryError, or an allocation failure, in a rank).
"""

from __future__ import annotations

import torch

from bench.config.cases import BenchCase
from bench.hardware.devices import device_name, is_cuda, ranks_per_memory
from bench.strategies import REGISTRY

GIB = 1 << 30
# What training holds per parameter before any activation: fp32 weights (every precision keeps fp32
# master weights; autocast casts per op), fp32 gradients, and the optimizer's state. The reference
# model's optimizer is plain SGD without momentum (reference_model.make_optimizer): no state.
# tests/test_out_of_memory.py fails if that optimizer changes, so this stays true.
WEIGHT_BYTES_PER_PARAMETER = 4
GRADIENT_BYTES_PER_PARAMETER = 4
OPTIMIZER_STATE_BYTES_PER_PARAMETER = 0
STATE_BYTES_PER_PARAMETER = (WEIGHT_BYTES_PER_PARAMETER + GRADIENT_BYTES_PER_PARAMETER
                             + OPTIMIZER_STATE_BYTES_PER_PARAMETER)
# The type name a rank's one-line error starts its cause with (worker_main: "<Type>: <message>").
OOM_TYPE_NAME = torch.OutOfMemoryError.__name__


def device_memory_bytes(device_type: str) -> int | None:
    """Memory of one device: a GPU's (every GPU of a case is taken to be alike), or the host's RAM,
    which all CPU ranks share. None where it cannot be read."""
    if is_cuda(device_type):
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(0).total_memory)
    import psutil  # late: only CPU cases ask

    return int(psutil.virtual_memory().total)


def state_bytes_per_memory(case: BenchCase) -> int:
    """Weights + gradients + optimizer state that must sit in one device's memory (on CPU: in the
    host's, shared by every rank). A strategy that shards them splits them over the ranks."""
    total = case.model_config.num_params * STATE_BYTES_PER_PARAMETER
    per_rank = -(-total // case.world_size) if REGISTRY[case.strategy].shards_training_state else total
    return per_rank * ranks_per_memory(case.device_type, case.world_size)


def does_not_fit(case: BenchCase, memory_bytes: int | None, detail: str | None = None) -> str:
    memory = f"{memory_bytes / GIB:.1f} GiB" if memory_bytes else "memory unknown"
    # dp's batch is split over its GPUs: the batch named is what one device trains on, as everywhere.
    line = (f"does not fit: {case.preset} {case.precision} {case.strategy} at batch "
            f"{case.per_device_batch_size} on {_device_label(case.device_type)} ({memory})")
    return f"{line}; {detail}" if detail else line


def _device_label(device_type: str) -> str:
    if is_cuda(device_type) and not torch.cuda.is_available():
        return "cuda"  # no device to name (a plan, or a test on a CPU machine)
    return device_name(device_type)


def too_large_reason(case: BenchCase, memory_bytes: int | None) -> str | None:
    """The skip reason when the training state alone exceeds the memory; None when it may fit."""
    if not memory_bytes:
        return None
    need = state_bytes_per_memory(case)
    if need <= memory_bytes:
        return None
    where = "per GPU" if is_cuda(case.device_type) else f"for {case.world_size} rank(s) in host memory"
    return does_not_fit(case, memory_bytes,
                        f"weights, gradients and optimizer state alone need {need / GIB:.1f} GiB {where}")


# Allocation failures that reach Python as a plain RuntimeError, not torch.OutOfMemoryError: cuBLAS
# cannot allocate its workspace or handle when the caching allocator has taken the rest of the GPU.
ALLOCATION_FAILURE_TEXTS = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDA out of memory", "CUDA error: out of memory")


def is_out_of_memory(one_line_error: str) -> bool:
    """Whether a rank's one-line failure (WorkerError) was the device running out of memory."""
    return f"{OOM_TYPE_NAME}:" in one_line_error or any(text in one_line_error for text in ALLOCATION_FAILURE_TEXTS)
