"""What the malloc state costs a CPU step: the seed's plain loop under glibc's default (dynamic) thresholds
against the thresholds every gpusizer rank starts with (bench/hardware/allocator.py).

    .venv/bin/python scripts/measure-allocator.py --presets small --pairs 6

Alternated pairs (the order flips every pair), each side a fresh `peers/plain_loop.py` process with every
core; printed per run: samples/s (median round) and the process's minor page faults (model build
included); per preset: the median of fixed / default, and the 1-minute load before and after.
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


def run_plain_loop(preset: str, batch_size: int, fixed: bool) -> tuple[float, int]:
    """One plain-loop process: its samples/s and its minor page faults."""
    env = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_ENV}
    if fixed:
        env.update(ALLOCATOR_ENV)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    done = subprocess.run([sys.executable, str(ROOT / "peers" / "plain_loop.py"), "--preset", preset,
                           "--batch-size", str(batch_size)], check=True, capture_output=True, text=True, env=env)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"], faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=6)
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
                sides[fixed] = run_plain_loop(preset, args.batch_size, fixed)
            (default_rate, default_faults), (fixed_rate, fixed_faults) = sides[False], sides[True]
            ratios.append(fixed_rate / default_rate)
            print(f"{preset} pair {pair + 1}: default {default_rate:,.0f} samples/s, {default_faults:,} minor faults; "
                  f"fixed {fixed_rate:,.0f} samples/s, {fixed_faults:,} minor faults", flush=True)
        print(f"{preset}: fixed / default median {statistics.median(ratios):.3f} "
              f"(pairs {', '.join(f'{r:.3f}' for r in ratios)}); load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
