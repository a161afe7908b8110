"""The all-reduce ceiling across hosts: bus bandwidth (nccl-tests' definition) with one rank per host,
so it measures the links between the hosts; and within the first host, with bench.hardware.bandwidth.

Across hosts the ranks are started like a multi-node case's (torchrun --nnodes N through
bench.launch.fanout, so nothing is left behind on any host); rank 0 prints its result as one
``GPUSIZER_ALLREDUCE <json>`` line, read back from the launcher's log. Measured once per host set
per session; a failure is kept with its reason.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from bench.hardware.bandwidth import _time_allreduce, allreduce_ceiling, bus_bandwidth_bytes_per_s
from bench.hardware.devices import set_current_cuda_device, torch_device
from bench.strategies.process_group import backend_for

RESULT_PREFIX = "GPUSIZER_ALLREDUCE "
# Smaller than one host's sizes on CPU: a slow link (the tests shape one to 100 Mbit/s) must still
# finish each size within seconds; the largest already moves 8 MiB per all-reduce.
SIZES_BYTES = {"cpu": (1 << 20, 1 << 23), "cuda": (1 << 24, 1 << 27, 1 << 30)}
SIZES_ENV = "GPUSIZER_ALLREDUCE_SIZES"
DEVICE_ENV = "GPUSIZER_ALLREDUCE_DEVICE"

_CACHE: dict[tuple[str, ...], dict] = {}


def measured_internode_ceilings() -> list[dict]:
    return [dict(entry) for entry in _CACHE.values()]


def multinode_ceilings(case, cluster, *, timeout_s: float) -> None:
    """Before a multi-node case: the across-hosts ceiling of its hosts, and the within-host one of the
    first host's ranks (measured here, where the controller runs: the first host, normally)."""
    from bench.launch.multinode import case_hosts

    hosts = case_hosts(case)
    if hosts[0].slots > 1:
        allreduce_ceiling(case.device_type, hosts[0].slots, timeout_s=timeout_s)
    if len(hosts) > 1:
        internode_allreduce_ceiling(case, cluster, timeout_s=timeout_s)


def internode_allreduce_ceiling(case, cluster, *, timeout_s: float) -> dict:
    from bench.config.hosts import Host
    from bench.launch.multinode import case_hosts

    names = tuple(host.name for host in case_hosts(case))
    if names not in _CACHE:
        one_each = tuple(Host(name, 1) for name in names)
        began = time.perf_counter()
        try:
            sizes, reason = measure_internode(case.device_type, one_each, cluster, timeout_s=timeout_s), None
        except (RuntimeError, OSError) as error:
            sizes, reason = [], str(error)
        _CACHE[names] = {
            "scope": "across hosts",
            "hosts": list(names),
            "nodes": len(names),
            "ranks_per_node": 1,
            "device_type": case.device_type,
            "world_size": len(names),
            "backend": backend_for(case.device_type),
            "busbw_bytes_per_s": max((s["busbw_bytes_per_s"] for s in sizes), default=None),
            "sizes": sizes,
            "measure_s": time.perf_counter() - began,
            "reason": reason,
        }
    return _CACHE[names]


def measure_internode(device_type: str, hosts, cluster, *, timeout_s: float,
                      sizes_bytes: tuple[int, ...] | None = None) -> list[dict]:
    """One all-reduce rank per host; per size the slowest rank's seconds. RuntimeError on failure."""
    from bench.config.cases import BenchCase
    from bench.launch.multinode import torchrun_fanout_env
    from bench.launch.processes import LaunchedProcessTree
    from bench.launch.remote import WORKER_MODULE

    sizes_bytes = sizes_bytes or SIZES_BYTES[device_type]
    probe = BenchCase(strategy="ddp", world_size=len(hosts), preset="tiny", precision="fp32", device_type=device_type,
                      per_device_batch_size=1, scaling="weak", steps_per_round=1, rounds=1, warmup_rounds=0,
                      hosts=tuple(host.spec() for host in hosts))
    fanout_env, _ = torchrun_fanout_env(probe, cluster, timeout_s)
    plan = json.loads(fanout_env["GPUSIZER_FANOUT"])
    for node in plan["nodes"]:  # the same torchrun line, running this module instead of a training worker
        node["argv"][node["argv"].index(WORKER_MODULE)] = __name__
    fanout_env["GPUSIZER_FANOUT"] = json.dumps(plan)
    env = {**os.environ, **fanout_env, SIZES_ENV: ",".join(map(str, sizes_bytes)), DEVICE_ENV: device_type,
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    tree = LaunchedProcessTree([sys.executable, "-m", "bench.launch.fanout"], env, "allreduce-hosts")
    try:
        code = tree.wait(timeout_s)
        log = tree.log_text()
    finally:
        tree.kill()
    match = re.search(rf"{RESULT_PREFIX}(\{{.*\}})", log)
    if match is None:
        last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
        why = f"no result within {timeout_s:g} s" if code is None else f"the launcher exited with code {code}"
        raise RuntimeError(f"all-reduce ceiling across hosts {', '.join(h.name for h in hosts)}: {why}: {last[0]}")
    times_s = json.loads(match.group(1))["times_s"]
    return [{"size_bytes": size, "time_s": time_s, "algbw_bytes_per_s": size / time_s,
             "busbw_bytes_per_s": bus_bandwidth_bytes_per_s(size, time_s, len(hosts))}
            for size, time_s in zip(sizes_bytes, times_s)]


def main() -> None:
    """One rank under torchrun: time each size, agree on the slowest rank's time, rank 0 prints it."""
    import datetime

    import torch
    import torch.distributed as dist

    device_type = os.environ[DEVICE_ENV]
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch_device(device_type, local_rank)
    set_current_cuda_device(device)
    dist.init_process_group(backend_for(device_type), timeout=datetime.timedelta(seconds=120))
    times_s = []
    for size in (int(s) for s in os.environ[SIZES_ENV].split(",")):
        seconds = torch.tensor([_time_allreduce(dist, torch, device, size)], dtype=torch.float64, device=device)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        times_s.append(seconds.item())
    dist.barrier()
    if dist.get_rank() == 0:
        print(RESULT_PREFIX + json.dumps({"times_s": times_s}), flush=True)
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # as bench.hardware.bandwidth: gloo now and then aborts in a clean interpreter exit


if __name__ == "__main__":
    main()
