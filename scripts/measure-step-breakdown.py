"""The step split's cost and its check, from one real `pytest bench/` run (issue 20).

    .venv/bin/python scripts/measure-step-breakdown.py [pytest bench/ options, e.g. --presets small]

Runs `pytest bench/` with pytest's `--durations=0` into a fresh results folder, then prints per case:
the profiled round's cost (the record's ``step_breakdown_s``, timed by the controller) as a share of the
case's wall time (pytest's setup + call + teardown of its test: launch, probes, warm-up, timed rounds,
the profiled round and everything else), and the split itself: its parts (stated on the step the timed rounds measured, median round / steps per
round), the profiled round's own step against that timed step (the profiler's dilation), and its
communication. The last line is the
whole run's cost: the sum of ``step_breakdown_s`` over the sum of the cases' wall times.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+\S*test_train\[(?P<case>[^\]]+)\]")
PARTS = ("compute_s", "exposed_comm_s", "other_s", "idle_s")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="gpusizer-split-") as folder:
        command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "--durations=0",
                   "--results-dir", folder, "--step-breakdown", *argv]
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        wall_s: dict[str, float] = defaultdict(float)
        for line in run.stdout.splitlines():
            match = DURATION.match(line)
            if match:
                wall_s[match["case"]] += float(match.group(1))
        files = list(Path(folder).glob("*.json"))
        if run.returncode != 0 or not files:
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
            print(f"measure-step-breakdown: pytest bench/ exited {run.returncode}", file=sys.stderr)
            return 1
        records = [bench["extra_info"] for bench in json.loads(files[0].read_text())["benchmarks"]]
    total_cost_s = total_wall_s = 0.0
    for record in records:
        case, split = record["case_id"], record["step_breakdown"]
        cost_s, wall = record["step_breakdown_s"] or 0.0, wall_s.get(record["case_id"], float("nan"))
        total_cost_s, total_wall_s = total_cost_s + cost_s, total_wall_s + wall
        if split is None:
            print(f"{case}: no split: {record['step_breakdown_reason']}")
            continue
        timed_s = statistics.median(record["round_times_s"]) / record["steps_per_round"]
        min_s, max_s = (bound(record["round_times_s"]) / record["steps_per_round"] for bound in (min, max))
        parts_s = sum(split[part] for part in PARTS)  # on the timed step by construction; the check is the dilation
        profiled_s = split["profiled_step_s"]
        comm_s = split["exposed_comm_s"] + (split["overlapped_comm_s"] or 0.0)
        print(f"{case}: cost {cost_s:.2f} s of {wall:.1f} s wall = {cost_s / wall:.1%}; ms/step compute "
              f"{split['compute_s'] * 1e3:.1f}, exposed comm {split['exposed_comm_s'] * 1e3:.1f}, overlapped comm "
              f"{split['overlapped_comm_s'] * 1e3 if split['overlapped_comm_s'] is not None else float('nan'):.1f}, "
              f"other {split['other_s'] * 1e3:.1f}, idle {split['idle_s'] * 1e3:.1f}; parts {parts_s * 1e3:.1f}; "
              f"profiled round {profiled_s * 1e3:.1f} vs timed step {timed_s * 1e3:.1f} "
              f"({profiled_s / timed_s - 1:+.1%}; timed rounds {min_s * 1e3:.1f} to "
              f"{max_s * 1e3:.1f} ms/step); communication {comm_s * 1e3:.1f} ms; "
              f"rank {split['rank']}")
    print(f"whole run: the profiled rounds cost {total_cost_s:.1f} s of {total_wall_s:.1f} s of case wall time "
          f"= {total_cost_s / total_wall_s:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
