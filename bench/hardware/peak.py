"""The physical limit for MFU: the best dense-matmul FLOP/s this device reaches at a precision.

Measured in rank processes (bench/launch/probe.py), never in the pytest process, under the thread
layout of the training it judges: as many processes as the case runs ranks on this machine's CPU, each
with a rank's threads, side by side (their FLOP/s add up: they share the one CPU), or on a GPU one
process with a rank's threads on GPU 0 (one device's peak). Measured once per (device, precision,
processes, threads) per session and cached, outside any timed round. A sweep of large square shapes is
used because no training step can run a matmul faster than the best of those on the same device;
MFU = achieved / this stays <= 1 (a breach is flagged).
"""

from __future__ import annotations

import time

import torch

from bench.hardware.devices import is_cuda, synchronize, threads_per_rank, usable_cores
from reference_model import Precision

# Square sizes: big enough to saturate the units, small enough to finish in seconds.
SWEEP_SIZES = {"cpu": (1024, 2048, 3072), "cuda": (4096, 8192, 16384)}
REPEATS = 3
MIN_MEASURE_S = 0.2  # per shape, so CPU timer noise stays small
# A probe is a process start (imports) plus a few seconds of matmuls; past this it is stuck.
PROBE_TIMEOUT_S = 300.0

_CACHE: dict[tuple, float] = {}


def peak_layout(device_type: str, rank_processes: int) -> tuple[int, int]:
    """(probe processes, threads each) for a case of ``rank_processes`` rank processes: on a GPU one
    process on one device, on the CPU one per rank that shares it; each with a rank's threads."""
    threads = threads_per_rank(device_type, rank_processes)
    return (1 if is_cuda(device_type) else min(rank_processes, usable_cores())), threads


def peak_key(device_type: str, precision: str, rank_processes: int) -> tuple:
    """The cache key: (device, precision, probe processes, threads each)."""
    device = "cuda:0" if is_cuda(device_type) else "cpu"
    return (device, precision, *peak_layout(device_type, rank_processes))


def matmul_peak_flops_per_s(device_type: str, precision: str, rank_processes: int,
                            timeout_s: float = PROBE_TIMEOUT_S) -> float:
    """The peak of one device for a case of ``rank_processes`` rank processes (measured on first use)."""
    key = peak_key(device_type, precision, rank_processes)
    if key not in _CACHE:
        _CACHE[key] = _probe(key, timeout_s)
    return _CACHE[key]


def _probe(key: tuple, timeout_s: float) -> float:
    from bench.launch.probe import run_in_ranks  # late: the launch package imports the strategies

    device, precision, processes, threads = key
    flops = run_in_ranks(f"{__name__}:measure", [{"device_name": device, "precision": precision}] * processes,
                         threads=threads, timeout_s=timeout_s, what=f"matmul peak ({device}, {precision})")
    return float(sum(flops))  # processes > 1 only on the CPU, which they share


def measure(device_name: str, precision: str) -> float:
    """In a probe process: this device's best FLOP/s over the sweep."""
    device = torch.device(device_name)
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
    return best


# The same probe again when the session ends (bench/record/stability.py): a machine that was busy, throttled
# or shared at one end of the session shows as a peak that moved. Same keys as _CACHE.
_END: dict[tuple, float] = {}


def measure_end_of_session() -> dict[tuple, float]:
    """Measure every peak of this session once more, in the layout it was first measured in."""
    for key in list(_CACHE):
        if key not in _END:
            _END[key] = _probe(key, PROBE_TIMEOUT_S)
    return dict(_END)


def session_peaks() -> dict[tuple, tuple[float, float | None]]:
    """Every peak this session measured: (device, precision, processes, threads) -> (FLOP/s when first
    measured, FLOP/s at the session's end or None before it ended)."""
    return {key: (flops, _END.get(key)) for key, flops in _CACHE.items()}


def peak_key_of(device_type: str, precision: str, start_flops_per_s: float) -> tuple | None:
    """The probe a record's ``peak_flops_per_s`` came from (it holds the cached value itself)."""
    for key, value in _CACHE.items():
        if torch.device(key[0]).type == device_type and key[1] == precision and value == start_flops_per_s:
            return key
    return None
