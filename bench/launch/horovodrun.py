"""Start a case's ranks with horovodrun (Gloo controller, on this host): horovod."""

from __future__ import annotations

import math
import os
import re
import sys

from bench.cases import BenchCase
from bench.launch.remote import WORKER_MODULE, LaunchSpec, RemoteGroup, describe_exit_code
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
    spec = LaunchSpec(
        name="horovodrun",
        command=horovodrun_command(case.world_size, launch_timeout_s),
        rank_env=("HOROVOD_RANK", "HOROVOD_LOCAL_RANK"),
        exit_cause=horovodrun_exit_cause,
        # horovodrun starts helpers by name: they must come from this environment.
        env={"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
    )
    return RemoteGroup(case, spec, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)
