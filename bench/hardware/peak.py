"""The physical limit for MFU: the best dense-matmul FLOP/s this device reaches at a precision.

Measured once per (device, precision, threads) per session and cached, outside any timed round.
A sweep of large square shapes is used because no training step can run a matmul faster than
the best of those on the same device; MFU = achieved / this stays <= 1 (a breach is flagged).
"""

from __future__ import annotations

import time

import torch

from bench.hardware.devices import is_cuda, synchronize
from reference_model import Precision

# Square sizes: big enough to saturate the units, small enough to finish in seconds.
SWEEP_SIZES = {"cpu": (1024, 2048, 3072), "cuda": (4096, 8192, 16384)}
REPEATS = 3
MIN_MEASURE_S = 0.2  # per shape, so CPU timer noise stays small

_CACHE: dict[tuple, float] = {}


def matmul_peak_flops_per_s(device: torch.device, precision: str) -> float:
    key = (str(device), precision, torch.get_num_threads())
    if key not in _CACHE:
        _CACHE[key] = _measure(device, precision)
    return _CACHE[key]


def _measure(device: torch.device, precision: str) -> float:
    mode = Precision(precision, device.type)
    dtype = mode.autocast_dtype or torch.float32
    best = 0.0
    with mode.matmul_mode():
        for size in SWEEP_SIZES[device.type]:
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            torch.mm(a, b)  # warm-up: kernel selection, allocation
            synchronize(device)
            flops = 2.0 * size**3
            for _ in range(REPEATS):
                count, began = 0, time.perf_counter()
                while True:
                    torch.mm(a, b)
                    count += 1
                    synchronize(device)
                    elapsed = time.perf_counter() - began
                    if elapsed >= MIN_MEASURE_S:
                        break
                best = max(best, flops * count / elapsed)
            del a, b
    if is_cuda(device.type):
        # The pytest process must not sit on gigabytes of cached blocks that rank 0 then misses.
        torch.cuda.empty_cache()
    return best


# The same probe again when the session ends (bench/record/stability.py): a machine that was busy, throttled
# or shared at one end of the session shows as a peak that moved. Same keys as _CACHE.
_END: dict[tuple, float] = {}


def measure_end_of_session() -> dict[tuple, float]:
    """Measure every peak of this session once more, with the thread count it was first measured at."""
    for key in list(_CACHE):
        if key in _END:
            continue
        device, precision, threads = key
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _END[key] = _measure(torch.device(device), precision)
        finally:
            torch.set_num_threads(saved)
    return dict(_END)


def session_peaks() -> dict[tuple, tuple[float, float | None]]:
    """Every peak this session measured: (device, precision, threads) -> (FLOP/s when first measured,
    FLOP/s at the session's end or None before it ended)."""
    return {key: (flops, _END.get(key)) for key, flops in _CACHE.items()}


def peak_key_of(device_type: str, precision: str, start_flops_per_s: float) -> tuple | None:
    """The probe a record's ``peak_flops_per_s`` came from (it holds the cached value itself)."""
    for key, value in _CACHE.items():
        if torch.device(key[0]).type == device_type and key[1] == precision and value == start_flops_per_s:
            return key
    return None
