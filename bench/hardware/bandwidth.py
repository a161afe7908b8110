"""The communication ceiling: all-reduce bus bandwidth between the devices a case uses.

Measured once per (device type, world size) per session, before the case's workers start, in rank
processes of its own (never in the pytest process), each with the threads a rank of that world size
trains with: NCCL between GPUs 0..N-1, gloo between N CPU processes. Bus bandwidth follows
nccl-tests: algbw = bytes / time, busbw = algbw * 2(n-1)/n, the per-link rate a ring all-reduce
needs, so it compares across world sizes and against the hardware link speed.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time

from bench.strategies.process_group import backend_for

# Message sizes: from latency-bound to bandwidth-bound; the best busbw over them is the ceiling.
SIZES_BYTES = {"cpu": (1 << 20, 1 << 23, 1 << 25), "cuda": (1 << 24, 1 << 27, 1 << 30)}
TARGET_MEASURE_S = 0.2  # per size, per rank
MIN_ITERATIONS, MAX_ITERATIONS = 3, 1000
DEFAULT_TIMEOUT_S = 120.0

# A failure that is not the deadline (a port taken between choosing and binding it, a peer reset on a
# busy shared machine) gets one more try: a failed ceiling now skips every case of its world size.
# A late one does not: waiting twice for a broken interconnect is what the deadline exists to avoid.
ATTEMPTS_AFTER_FAILURE = 2

_CACHE: dict[tuple[str, int], dict] = {}


class CeilingTimeout(RuntimeError):
    """A rank of the all-reduce ceiling gave no result before the deadline."""


def bus_bandwidth_bytes_per_s(size_bytes: int, time_s: float, world_size: int) -> float:
    """nccl-tests' all-reduce bus bandwidth."""
    return size_bytes / time_s * 2.0 * (world_size - 1) / world_size


def allreduce_ceiling(device_type: str, world_size: int, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """The measurement for this device type and world size, measured on first use. A failure is
    kept (with its reason) so a broken setup costs one timeout per session, not one per case."""
    if world_size < 2:
        raise ValueError(f"allreduce_ceiling: world_size {world_size!r}; allowed: an integer >= 2")
    key = (device_type, world_size)
    if key not in _CACHE:
        began = time.perf_counter()
        for _attempt in range(ATTEMPTS_AFTER_FAILURE):
            try:
                sizes = measure_allreduce(device_type, world_size, timeout_s=timeout_s)
                reason = None
                break
            except CeilingTimeout as error:
                sizes, reason = [], str(error)
                break
            except (RuntimeError, OSError) as error:
                sizes, reason = [], str(error)
        best = max((s["busbw_bytes_per_s"] for s in sizes), default=None)
        _CACHE[key] = {
            "device_type": device_type,
            "world_size": world_size,
            "backend": backend_for(device_type),
            "busbw_bytes_per_s": best,
            "sizes": sizes,
            "measure_s": time.perf_counter() - began,
            "reason": reason,
        }
    return _CACHE[key]


def measured_ceilings() -> list[dict]:
    return [dict(entry) for entry in _CACHE.values()]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_allreduce(device_type: str, world_size: int, *, timeout_s: float) -> list[dict]:
    """Start ``world_size`` processes, all-reduce each size, return per size the slowest rank's time.

    Every process has a deadline: past it, all are terminated, then killed, and RuntimeError says so.
    """
    context = multiprocessing.get_context("spawn")  # fork after torch threads started is unsafe
    port = _free_port()
    pipes, processes = [], []
    for rank in range(world_size):
        parent_end, child_end = context.Pipe(duplex=False)
        process = context.Process(target=_rank_main, name=f"gpusizer-allreduce-{rank}", daemon=True,
                                  args=(rank, world_size, device_type, port, child_end))
        process.start()
        child_end.close()
        pipes.append(parent_end)
        processes.append(process)
    deadline = time.monotonic() + timeout_s
    results: list = [None] * world_size
    try:
        for rank, pipe in enumerate(pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise CeilingTimeout(f"all-reduce ceiling ({backend_for(device_type)}, {world_size} processes): "
                                   f"rank {rank} gave no result within {timeout_s:g} s")
            results[rank] = pipe.recv()
    except EOFError:
        raise RuntimeError(f"all-reduce ceiling: a rank exited without a result "
                           f"(exit codes {[p.exitcode for p in processes]})") from None
    finally:
        _reap(processes, deadline)
    errors = [detail for status, detail in results if status == "error"]
    if errors:
        raise RuntimeError(f"all-reduce ceiling: {errors[0]}")
    return [
        {"size_bytes": size, "time_s": time_s,
         "algbw_bytes_per_s": size / time_s,
         "busbw_bytes_per_s": bus_bandwidth_bytes_per_s(size, time_s, world_size)}
        for size, time_s in zip(SIZES_BYTES[device_type],
                                (max(per_rank) for per_rank in zip(*(times for _, times in results))))
    ]


def _reap(processes: list, deadline: float) -> None:
    for process in processes:
        process.join(max(0.1, min(5.0, deadline - time.monotonic())))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)


def _rank_main(rank: int, world_size: int, device_type: str, port: int, pipe) -> None:
    """One rank: join the group, time all-reduces of each size, send per-op seconds, exit hard."""
    import datetime

    import torch
    import torch.distributed as dist

    from bench.hardware.devices import is_cuda, threads_per_rank

    try:
        _ceiling_fault_hook(world_size)
        torch.set_num_threads(threads_per_rank(device_type, world_size))  # as a training rank of this world size
        if not is_cuda(device_type):
            device = torch.device("cpu")
        else:
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device_type), init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
        times_s = [_time_allreduce(dist, torch, device, size) for size in SIZES_BYTES[device_type]]
        dist.barrier()
        dist.destroy_process_group()
        pipe.send(("ok", times_s))
    except Exception as error:  # noqa: BLE001 - the parent reports it in one line
        pipe.send(("error", f"rank {rank}: {type(error).__name__}: {error}".splitlines()[0]))
    pipe.close()
    # A clean interpreter exit after gloo now and then aborts (see DESIGN.md): leave at once.
    os._exit(0)


def _ceiling_fault_hook(world_size: int) -> None:
    """The test hook ``GPUSIZER_FAULT=allreduce[<W>]:<fail|hang>`` (grammar: bench/launch/worker_main.py):
    a broken interconnect, made on a CPU: every rank raises, or never answers."""
    from bench.launch.worker_main import FAULT_ENV, parse_faults

    for fault in parse_faults(os.environ.get(FAULT_ENV))[1]:
        if not fault.applies_to(world_size):
            continue
        if fault.kind == "hang":
            while True:
                time.sleep(3600)
        raise RuntimeError(f"injected fault ({FAULT_ENV}): the all-reduce ceiling fails")


def _time_allreduce(dist, torch, device, size_bytes: int) -> float:
    from bench.hardware.devices import synchronize

    tensor = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)

    dist.all_reduce(tensor)  # warm-up: connections, buffers
    synchronize(device)
    began = time.perf_counter()
    dist.all_reduce(tensor)
    synchronize(device)
    # Every rank must run the same number of collectives: agree on the slowest rank's estimate.
    probe_s = torch.tensor([time.perf_counter() - began], dtype=torch.float64, device=device)
    dist.all_reduce(probe_s, op=dist.ReduceOp.MAX)
    iterations = min(MAX_ITERATIONS, max(MIN_ITERATIONS, math.ceil(TARGET_MEASURE_S / max(probe_s.item(), 1e-9))))
    dist.barrier()
    began = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(tensor)
    synchronize(device)
    return (time.perf_counter() - began) / iterations
