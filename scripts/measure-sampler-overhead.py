"""Sampler overhead: samples/s of the ``single`` CPU case with the telemetry sampler on versus off.

    .venv/bin/python scripts/measure-sampler-overhead.py --preset small --pairs 10

One rank, one model, laid out as ``pytest bench/`` lays them out: the rank is launched (single's plain
rank process, bench/launch/plain.py) and driven over the channel, the rounds timed by the rank itself,
and the sampler runs as it does there, a thread in this (the driving) process watching the rank's
process. On and off alternate within each pair, and which goes first alternates between pairs, so
drift on a shared machine hits both alike. Prints each pair and the median ratio on/off
(1.0 = free; the target is >= 0.99), and the sampler thread's own CPU time as a share of the
machine's usable cores: a direct figure that other load on a shared machine does not blur.
"""

from __future__ import annotations

import argparse
import statistics

from bench.config.cases import BenchCase
from bench.launch import LAUNCHERS
from bench.strategies import REGISTRY
from bench.telemetry import DEFAULT_INTERVAL_S, Sampler
from gpusizer_common import metrics


def samples_per_s(group, case: BenchCase, sampler: Sampler | None) -> float:
    """Global samples per second from the median of ``case.rounds`` rounds (as the record does)."""
    round_times_s = []
    if sampler is not None:
        sampler.start()
    try:
        for _ in range(case.rounds):
            round_times_s.append(max(group.run_round(case.steps_per_round)))  # the rank's own seconds
    finally:
        if sampler is not None:
            sampler.stop()
    return metrics.samples_per_s(metrics.samples_per_round(case.global_batch_size, case.steps_per_round), round_times_s)


def main() -> None:
    parser = argparse.ArgumentParser(description="telemetry sampler overhead: on vs off, alternated")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--interval-s", type=float, default=DEFAULT_INTERVAL_S)
    args = parser.parse_args()
    case = BenchCase(strategy="single", world_size=1, preset=args.preset, precision="fp32", device_type="cpu",
                     per_device_batch_size=args.batch_size, scaling="weak", steps_per_round=args.steps,
                     rounds=args.rounds, warmup_rounds=2)
    group = LAUNCHERS[REGISTRY[case.strategy].launcher](case, launch_timeout_s=300, round_timeout_s=600)
    try:
        for _ in range(case.warmup_rounds):
            group.run_round(case.steps_per_round)
        ratios, sampler_cpu_s, sampled_s, ticks = [], 0.0, 0.0, 0
        for pair in range(args.pairs):
            results = {}
            for mode in (("on", "off") if pair % 2 == 0 else ("off", "on")):
                sampler = (Sampler("cpu", [0], interval_s=args.interval_s, pids=tuple(group.pids))
                           if mode == "on" else None)
                results[mode] = samples_per_s(group, case, sampler)
                if sampler is not None:
                    sampler_cpu_s += sampler.thread_cpu_s
                    sampled_s += sampler.ended_s - sampler.began_s
                    ticks += sampler.ticks
                    cores = sampler.cores
            ratios.append(results["on"] / results["off"])
            print(f"pair {pair + 1}: on {results['on']:,.1f} samples/s, off {results['off']:,.1f} samples/s, "
                  f"ratio {ratios[-1]:.4f}")
    finally:
        group.close()
    print(f"median ratio on/off over {args.pairs} pairs (interval {args.interval_s} s, preset {args.preset}): "
          f"{statistics.median(ratios):.4f}")
    print(f"sampler thread: {sampler_cpu_s:.3f} CPU s over {sampled_s:.1f} s sampled, {ticks} ticks "
          f"({1000 * sampler_cpu_s / ticks:.2f} ms each) = {100 * sampler_cpu_s / (sampled_s * cores):.3f} % "
          f"of {cores} cores")


if __name__ == "__main__":
    main()
