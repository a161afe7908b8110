"""Start a case's one rank as a plain Python process (``python -m bench.launch.worker_main``): single, dp.

No process group and no launcher in between: the process started is the rank itself, driven over the
same channel with the same round protocol as torchrun's and horovodrun's ranks (bench/launch/remote.py),
so ``single`` and ``dp`` are timed exactly as the distributed strategies are, and a hung, crashed or
out-of-memory rank is stopped like any other. ``dp`` drives all of its case's GPUs from this one process.
"""

from __future__ import annotations

import sys

from bench.config.cases import BenchCase
from bench.launch.remote import WORKER_MODULE, LaunchSpec, RemoteGroup

PLAIN_RANK_ENV = "GPUSIZER_PLAIN_RANK"  # the rank (and local rank) of the one process: always 0


def launch_plain(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> RemoteGroup:
    spec = LaunchSpec(
        name="python",
        command=[sys.executable, "-m", WORKER_MODULE],
        rank_env=(PLAIN_RANK_ENV, PLAIN_RANK_ENV),
        exit_cause=None,  # the launched process is the rank: its own exit status is the cause
        env={PLAIN_RANK_ENV: "0"},
    )
    return RemoteGroup(case, spec, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s)
