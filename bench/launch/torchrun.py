"""Start a case's ranks with torchrun (``python -m torch.distributed.run``): ddp and fsdp."""

from __future__ import annotations

import re
import sys

from bench.config.cases import BenchCase
from bench.hardware.devices import is_cuda
from bench.launch.diagnosis import describe_exit_code
from bench.launch.remote import WORKER_MODULE, LaunchSpec, RemoteGroup


def torchrun_command(world_size: int) -> list[str]:
    # The torchrun of this interpreter, run as a module so no PATH lookup can pick another torch.
    # --standalone: a private rendezvous on a free localhost port, so concurrent runs never collide.
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={world_size}", "--max-restarts=0", "-m", WORKER_MODULE,
    ]


def torchrun_exit_cause(log: str, rank: int) -> str | None:
    """torchrun's failure summary has, per failed rank, 'rank : R (local_rank: L)' then 'exitcode : C'."""
    match = re.search(rf"rank\s*:\s*{rank}\s*\(local_rank[^\n]*\n\s*exitcode\s*:\s*(-?\d+)", log)
    return describe_exit_code(int(match.group(1))) if match else None


def launch_torchrun(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> RemoteGroup:
    if case.hosts:
        return _launch_multinode(case, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)
    spec = LaunchSpec(
        name="torchrun",
        command=torchrun_command(case.world_size),
        rank_env=("RANK", "LOCAL_RANK"),
        exit_cause=torchrun_exit_cause,
        env={"GLOO_SOCKET_IFNAME": "lo"} if not is_cuda(case.device_type) else {},  # stay on loopback
    )
    return RemoteGroup(case, spec, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)


def _launch_multinode(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> RemoteGroup:
    """torchrun --nnodes N on every host of ``case.hosts`` (over ssh), through bench.launch.fanout."""
    from bench.config.hosts import active_cluster
    from bench.launch.fanout import host_failure
    from bench.launch.multinode import case_hosts, network_info, torchrun_fanout_env

    cluster = active_cluster()
    env, address = torchrun_fanout_env(case, cluster, launch_timeout_s)
    spec = LaunchSpec(
        name="torchrun",
        command=[sys.executable, "-m", "bench.launch.fanout"],
        rank_env=("RANK", "LOCAL_RANK"),
        exit_cause=torchrun_exit_cause,
        env=env,
        channel_host=address,
        host_failure=host_failure,
    )
    group = RemoteGroup(case, spec, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)
    group.network = network_info(address, case_hosts(case))
    return group
