"""Measure `gpusizer compare` on runs of one and the same commit: how often it cries wolf, and whether it
still sees a real slowdown, for several choices of the round-time quantile.

    python scripts/compare-false-alarms.py RESULT_FILE_OR_FOLDER... [--quantiles 0.5,0.25,0.1]

Every ordered pair of runs is compared (all are the same code, so any "regressed" or "improved" is a
false alarm); each run is also compared with copies of itself whose rounds are all 30% and 2% slower
(must and must not regress). With --rolling K, each run is also judged, in time order, against the
K runs before it pooled, as a CI job with a rolling baseline does. Runs should share hardware and
case design, as in a CI history.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import pandas as pd

from reports.compare import IMPROVED, REGRESSED, CompareConfig, compare_cases
from reports.load import load_results


def slowed(cases: pd.DataFrame, factor: float) -> pd.DataFrame:
    copy = cases.copy()
    copy["round_times_s"] = [[t * factor for t in times] for times in copy["round_times_s"]]
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--quantiles", default="0.5,0.25,0.1")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--rolling", type=int, default=5, metavar="K")
    args = parser.parse_args()
    cases = load_results(args.paths).cases
    runs = sorted((group for _, group in cases.groupby("run_id")), key=lambda run: run["run_datetime"].iloc[0])
    print(f"{len(runs)} runs, {len(cases)} case results, {len(runs) * (len(runs) - 1)} ordered same-commit pairs")
    for quantile in (float(q) for q in args.quantiles.split(",")):
        config = CompareConfig(round_quantile=quantile, threshold=args.threshold)
        pairs = pd.concat([compare_cases(a, b, config) for a, b in itertools.permutations(runs, 2)])
        slower = pd.concat([compare_cases(run, slowed(run, 1.3), config) for run in runs])
        slightly = pd.concat([compare_cases(run, slowed(run, 1.02), config) for run in runs])
        false_alarms = pairs["verdict"].isin([REGRESSED, IMPROVED]).sum()
        print(f"quantile {quantile:g}: same-commit false alarms {false_alarms}/{len(pairs)} "
              f"(regressed {(pairs['verdict'] == REGRESSED).sum()}, improved {(pairs['verdict'] == IMPROVED).sum()}), "
              f"largest |change| {pairs['throughput_change'].abs().max():.1%}; "
              f"30% slower copies regressed {(slower['verdict'] == REGRESSED).sum()}/{len(slower)}; "
              f"2% slower copies regressed {(slightly['verdict'] == REGRESSED).sum()}/{len(slightly)}")
        if len(runs) > args.rolling:
            rolling = pd.concat([compare_cases(pd.concat(runs[i - args.rolling:i]), runs[i], config)
                                 for i in range(args.rolling, len(runs))])
            print(f"  rolling baseline of {args.rolling} runs: false alarms "
                  f"{rolling['verdict'].isin([REGRESSED, IMPROVED]).sum()}/{len(rolling)}, "
                  f"largest |change| {rolling['throughput_change'].abs().max():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
