"""Harness overhead: `pytest bench/` single-device samples/s versus the plain loop, alternated in one run.

    .venv/bin/python scripts/measure-harness-overhead.py --preset small --pairs 5

Prints each pair and the median ratio suite/plain (>= 0.98 is the target). Both sides use the
same model, per-device batch, steps per round, rounds and thread count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def suite_samples_per_s(args, workdir: Path) -> float:
    out = workdir / "suite.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "-p", "no:cacheprovider",
         "--strategies", "single", "--presets", args.preset, "--precisions", "fp32", "--device", "cpu",
         "--batch-size", str(args.batch_size), "--steps-per-round", str(args.steps), "--rounds", str(args.rounds),
         "--benchmark-json", str(out)],
        check=True, cwd=workdir, stdout=subprocess.DEVNULL, timeout=1800,
    )
    return json.loads(out.read_text())["benchmarks"][0]["extra_info"]["samples_per_s"]


def plain_samples_per_s(args) -> float:
    done = subprocess.run(
        [sys.executable, str(ROOT / "peers" / "plain_loop.py"), "--preset", args.preset,
         "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--rounds", str(args.rounds)],
        check=True, capture_output=True, text=True, timeout=1800,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description="harness overhead: suite vs plain loop, alternated")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            # Alternate which goes first so drift on a shared machine hits both sides alike.
            if pair % 2:
                plain = plain_samples_per_s(args)
                suite = suite_samples_per_s(args, Path(tmp))
            else:
                suite = suite_samples_per_s(args, Path(tmp))
                plain = plain_samples_per_s(args)
            ratios.append(suite / plain)
            print(f"pair {pair + 1}: suite {suite:,.1f} samples/s, plain {plain:,.1f} samples/s, ratio {suite / plain:.3f}")
    print(f"median ratio suite/plain over {args.pairs} pairs: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
