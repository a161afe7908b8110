"""Predicted peak memory per device for a workload, by trace or by formula, and what fits."""

from __future__ import annotations

import functools

from sizing.step_memory import METHODS, StepMemory
from sizing.strategies import STRATEGY_MEMORY
from sizing.workload import Workload

HEADROOM_FRACTION = 0.85  # under this share of memory: fits with headroom (allocator, fragmentation, context)
MAX_SEARCH_BATCH = 2**31


@functools.lru_cache(maxsize=4096)  # fit asks the same workload once per GPU
def predict(workload: Workload, method: str = "trace") -> StepMemory:
    """The busiest device's memory at the step's high-water mark."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; allowed: {', '.join(METHODS)}")
    return STRATEGY_MEMORY[workload.strategy].peak(workload, method)


def verdict(peak_bytes: int, memory_bytes: int) -> str:
    if peak_bytes <= HEADROOM_FRACTION * memory_bytes:
        return "fits"
    if peak_bytes <= memory_bytes:
        return "tight"
    return "does not fit"


def max_batch_size(workload: Workload, memory_bytes: int, method: str = "formula") -> int:
    """The largest per-device batch whose predicted peak is within ``memory_bytes``; 0 when not even one sample.

    Memory grows monotonically with the batch, so double then bisect. The formula (cheap, within 10 %
    of the trace by test) is the default; bench's --find-max-batch starts its real search from it.
    """
    def fits(batch: int) -> bool:
        return predict(_with_batch(workload, batch), method).peak_bytes <= memory_bytes

    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= MAX_SEARCH_BATCH and fits(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def min_fsdp_world_size(workload: Workload, memory_bytes: int, limit: int = 4096,
                        method: str = "formula") -> int | None:
    """The smallest world size at which FSDP brings this workload within ``memory_bytes``; None up to ``limit``.

    By the formula, as max_batch_size: the FSDP trace runs FSDP2 on fake ranks (about a second for xl),
    and a bisection asks a dozen world sizes per GPU and precision."""
    def fits(world_size: int) -> bool:
        sized = Workload(workload.config, workload.precision, "fsdp", world_size, workload.per_device_batch_size)
        return predict(sized, method).peak_bytes <= memory_bytes

    # More shards never need more memory per device: bisect.
    if not fits(limit):
        return None
    low, high = 0, limit  # low does not fit (0: nothing below 1), high fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _with_batch(workload: Workload, batch: int) -> Workload:
    return Workload(workload.config, workload.precision, workload.strategy, workload.world_size, batch)
