"""Memory bookkeeping of one rank: where its peak starts, what it was, and giving memory back.

The peak of a case is what training on a rank needs. It is reset after the model is built, wrapped
(FSDP: sharded) and its data made, so the full fp32 model FSDP builds on every rank before
``fully_shard`` frees it, and any other construction transient, never counts. Everything that
training holds (parameters, gradients, optimizer state, batches) is still allocated at the reset,
so it is part of the peak.
"""

from __future__ import annotations

import gc
import resource
import sys

import torch

from bench.hardware.devices import is_cuda


def reset_peak_memory(devices: list[torch.device]) -> None:
    """Start the peak count of every device afresh (the CPU: this process's peak RSS)."""
    for device in devices:
        if is_cuda(device.type):
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_peak_rss()


def peak_memory_per_device(devices: list[torch.device]) -> list[int]:
    """Bytes at the peak since the reset, one per device (cuda: max_memory_allocated; cpu: peak RSS)."""
    return [int(torch.cuda.max_memory_allocated(device)) if is_cuda(device.type) else peak_rss_bytes()
            for device in devices]


def release_cached_memory() -> None:
    """In a rank, after a case of a kept group or a --find-max-batch try: collect what it left (reference
    cycles too) and hand the CUDA caching allocator's cached blocks back to the driver, so the next case
    (or try) finds the memory free.

    ``torch.cuda.empty_cache`` empties the cache of every device the allocator used, in one call.
    Looping over devices with ``torch.cuda.device(i)`` instead would create a CUDA context on GPUs this
    process never touched, taking memory from the ranks that are about to use them."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS count afresh (Linux >= 4.0), so a case of a kept rank does not
    inherit the high-water mark of the cases before it. False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since the last reset (VmHWM); elsewhere the
    process-lifetime maximum from getrusage (Linux reports KiB, macOS bytes)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
