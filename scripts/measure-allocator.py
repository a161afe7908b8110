"""What the malloc state costs a CPU step: a training loop under glibc's default (dynamic) thresholds
against the thresholds every gpusizer rank starts with (bench/hardware/allocator.py).

    .venv/bin/python scripts/measure-allocator.py --presets small --pairs 6 [--loop rank]

``--loop plain`` (the default) runs the seed's plain loop (`peers/plain_loop.py`); ``--loop rank`` the suite's
own rank loop (bench/run/worker.py's ``TrainingWorker``, single, without the controller). Alternated pairs
(the order flips every pair), each side a fresh process with every core, 10 steps x 10 rounds after 2
warm-up rounds; printed per run: samples/s (median round) and the process's minor page faults (model
build included); per preset: the median of fixed / default, and the 1-minute load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from bench.hardware.allocator import ALLOCATOR_ENV, users_own

ROOT = Path(__file__).resolve().parent.parent


# The suite's rank loop without the controller: the same steps as peers/plain_loop.py's defaults.
RANK_LOOP = """
import json, statistics, sys
from bench.config.cases import BenchCase
from bench.run.worker import TrainingWorker
preset, batch = sys.argv[1], int(sys.argv[2])
case = BenchCase(strategy="single", world_size=1, preset=preset, precision="fp32", device_type="cpu",
                 per_device_batch_size=batch, scaling="weak", steps_per_round=10, rounds=10, warmup_rounds=2)
worker = TrainingWorker(case)
rounds_s = [worker.run_round(10) for _ in range(12)][2:]
print(json.dumps({"samples_per_s": batch * 10 / statistics.median(rounds_s)}))
"""


def run_loop(loop: str, preset: str, batch_size: int, fixed: bool) -> tuple[float, int]:
    """One process of ``loop``: its samples/s and its minor page faults."""
    env = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_ENV}
    if fixed:
        env.update(ALLOCATOR_ENV)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    argv = ([str(ROOT / "peers" / "plain_loop.py"), "--preset", preset, "--batch-size", str(batch_size)]
            if loop == "plain" else ["-c", RANK_LOOP, preset, str(batch_size)])
    done = subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"], faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--loop", choices=("plain", "rank"), default="plain")
    args = parser.parse_args()
    own = users_own(os.environ)
    if own:
        print(f"measure-allocator: unset your own allocator settings first ({', '.join(own)})", file=sys.stderr)
        return 2
    for preset in args.presets.split(","):
        load_before = os.getloadavg()[0]
        ratios = []
        for pair in range(args.pairs):
            sides = {}
            for fixed in ((False, True) if pair % 2 == 0 else (True, False)):
                sides[fixed] = run_loop(args.loop, preset, args.batch_size, fixed)
            (default_rate, default_faults), (fixed_rate, fixed_faults) = sides[False], sides[True]
            ratios.append(fixed_rate / default_rate)
            print(f"{preset} pair {pair + 1}: default {default_rate:,.0f} samples/s, {default_faults:,} minor faults; "
                  f"fixed {fixed_rate:,.0f} samples/s, {fixed_faults:,} minor faults", flush=True)
        print(f"{preset} ({args.loop} loop): fixed / default median {statistics.median(ratios):.3f} "
              f"(pairs {', '.join(f'{r:.3f}' for r in ratios)}); load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
