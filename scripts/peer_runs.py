"""The standalone peers, launched as their users launch them: one place for compare-peers.py and
measure-harness-overhead.py.

Each strategy's peer trains the same model, per-device batch, steps per round and rounds as the suite,
without gpusizer's harness, and prints one JSON line whose ``samples_per_s`` is the median round of
the slowest rank (the suite's definition):

- single: peers/plain_loop.py, the seed's plain loop, in a process of its own;
- ddp, fsdp: peers/ddp_standalone.py (``--wrap fsdp`` for FSDP2) under torchrun;
- horovod: peers/horovod_synthetic.py under horovodrun with gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.hardware.allocator import allocator_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT_S = 1800
PEER_STRATEGIES = ("single", "ddp", "fsdp", "horovod")


def peer_command(strategy: str, world_size: int, preset: str, batch_size: int, steps: int, rounds: int,
                 warmup_rounds: int) -> list[str]:
    n = str(world_size)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", n]
    launch = {
        "single": [sys.executable, str(ROOT / "peers" / "plain_loop.py")],
        "ddp": [*torchrun, str(ROOT / "peers" / "ddp_standalone.py")],
        "fsdp": [*torchrun, str(ROOT / "peers" / "ddp_standalone.py"), "--wrap", "fsdp"],
        "horovod": [str(BIN / "horovodrun"), "-np", n, "-H", f"localhost:{n}", "--gloo", sys.executable,
                    str(ROOT / "peers" / "horovod_synthetic.py")],
    }
    if strategy not in launch:
        raise ValueError(f"no peer for strategy {strategy!r}; peers exist for {', '.join(PEER_STRATEGIES)}")
    if strategy == "single" and world_size != 1:
        raise ValueError("the plain loop (single's peer) runs at world size 1 only")
    return [*launch[strategy], "--preset", preset, "--batch-size", str(batch_size), "--steps", str(steps),
            "--rounds", str(rounds), "--warmup-rounds", str(warmup_rounds)]


def peer_rate(strategy: str, world_size: int, preset: str, batch_size: int, steps: int, rounds: int,
              warmup_rounds: int = 2) -> float:
    """The peer's samples/s (median round, slowest rank)."""
    # The suite gives each rank cores // world_size threads; the peers read OMP_NUM_THREADS like torchrun users.
    threads = max(1, len(os.sched_getaffinity(0)) // world_size)
    # The suite's ranks' thread count and malloc state (bench/hardware/allocator.py) on the peer's side too.
    env = {**os.environ, **allocator_env(os.environ), "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    command = peer_command(strategy, world_size, preset, batch_size, steps, rounds, warmup_rounds)
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                          start_new_session=True)
    for line in reversed(done.stdout.splitlines()):
        start = line.find('{"peer"')  # horovodrun prefixes each line with the rank
        if start >= 0:
            return json.loads(line[start:])["samples_per_s"]
    raise RuntimeError(f"no result line from the {strategy} peer:\n{done.stdout[-2000:]}")
