"""Start a case's ranks with horovodrun (Gloo controller, on this host): horovod."""

from __future__ import annotations

import math
import os
import re
import sys

from bench.config.cases import BenchCase
from bench.launch.diagnosis import describe_exit_code
from bench.launch.remote import WORKER_MODULE, LaunchSpec, RemoteGroup
from bench.strategies.horovod import horovodrun_path


def horovodrun_command(world_size: int, launch_timeout_s: float) -> list[str]:
    return [
        str(horovodrun_path()), "-np", str(world_size), "-H", f"localhost:{world_size}", "--gloo",
        "--network-interface", "lo", "--start-timeout", str(max(1, math.ceil(launch_timeout_s))),
        sys.executable, "-m", WORKER_MODULE,
    ]


def horovodrun_exit_cause(log: str, rank: int) -> str | None:
    """horovodrun logs 'Process R exit with status code C.'; it runs ranks through a shell, so a
    signal N shows as 128 + N."""
    match = re.search(rf"Process {rank} exit with status code (-?\d+)", log)
    return describe_exit_code(int(match.group(1))) if match else None


def launch_horovodrun(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> RemoteGroup:
    bin_dir = str(horovodrun_path().parent)
    command, channel_host, network = horovodrun_command(case.world_size, launch_timeout_s), "127.0.0.1", {}
    if case.hosts:  # multi-node: horovodrun -H over the case's hosts, the channel on the address they reach
        from bench.config.hosts import active_cluster
        from bench.launch.multinode import case_hosts, horovodrun_multinode_args, network_info

        host_args, channel_host = horovodrun_multinode_args(case, active_cluster())
        command = _with_hosts(command, host_args)
        network = network_info(channel_host, case_hosts(case))
    spec = LaunchSpec(
        name="horovodrun",
        command=command,
        rank_env=("HOROVOD_RANK", "HOROVOD_LOCAL_RANK"),
        exit_cause=horovodrun_exit_cause,
        # horovodrun starts helpers by name: they must come from this environment.
        env={"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
        channel_host=channel_host,
    )
    group = RemoteGroup(case, spec, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)
    group.network = network
    return group


def _with_hosts(command: list[str], host_args: list[str]) -> list[str]:
    """The one-machine command with its -H and --network-interface replaced by ``host_args``."""
    out, skip = [], 0
    for index, word in enumerate(command):
        if skip:
            skip -= 1
            continue
        if word in ("-H", "--network-interface"):
            skip = 1
            continue
        out.append(word)
    position = out.index("--gloo")
    return out[:position] + host_args + out[position:]
