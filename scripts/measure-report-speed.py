"""How long `gpusizer report` takes on many result files: docs/report.md quotes what this prints.

    .venv/bin/python scripts/measure-report-speed.py REAL_RESULT.json [--files 500] [--cases 40] [--machines 20]

The files are made from one real result file of `pytest bench/`: its first benchmark entry (real round
times, real record) is copied into ``--cases`` entries per file whose identity (strategy, device count,
preset, precision; hence case_id) varies, and the files are spread over ``--machines`` machine names.
Only those identity fields and hostnames are changed; nothing is measured anew. The report is then
built once as a user would (a fresh process: `python -m reports report DIR -o ...`) and timed.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDENTITIES = [  # (strategy, world_size): 9 per preset and precision, +dp to make 40 per file
    ("single", 1), ("ddp", 1), ("ddp", 2), ("ddp", 4), ("ddp", 8), ("fsdp", 1), ("fsdp", 2), ("fsdp", 4), ("fsdp", 8)]


def identities(count: int):
    grid = [(s, w, p, q) for p, q in itertools.product(("tiny", "small"), ("fp32", "bf16")) for s, w in IDENTITIES]
    grid += [("dp", w, p, "fp32") for p in ("tiny", "small") for w in (2, 4)]
    return list(itertools.islice(itertools.cycle(grid), count))


def make_files(real: Path, folder: Path, files: int, cases: int, machines: int) -> None:
    data = json.loads(real.read_text())
    template = data["benchmarks"][0]
    for index in range(files):
        run = copy.deepcopy(data)
        run["machine_info"]["node"] = f"machine-{index % machines:02d}"  # changed name (see docstring)
        run["benchmarks"], run["gpusizer"]["cases"] = [], []
        for strategy, world_size, preset, precision in identities(cases):
            entry = copy.deepcopy(template)
            record = entry["extra_info"]
            case_id = f"{strategy}-{world_size}-{preset}-{precision}"
            record.update(case_id=case_id, strategy=strategy, world_size=world_size, preset=preset,
                          precision=precision, baseline_only=strategy == "dp",
                          global_batch_size=record["per_device_batch_size"] * world_size)
            entry["name"] = f"test_train[{case_id}]"
            run["benchmarks"].append(entry)
            run["gpusizer"]["cases"].append({"case_id": case_id, "status": "passed", "reason": None})
        (folder / f"run-{index:04d}.json").write_text(json.dumps(run, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real", type=Path, help="a result file written by `pytest bench/`")
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--machines", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpusizer-speed-") as tmp:
        folder = Path(tmp) / "results"
        folder.mkdir()
        make_files(args.real, folder, args.files, args.cases, args.machines)
        command = [sys.executable, "-m", "reports", "report", str(folder), "-o", str(Path(tmp) / "out" / "r.html")]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        elapsed_s = time.perf_counter() - began
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time is the steadier figure on a shared machine, where wall time also counts waiting.
        cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        size_mib = (Path(tmp) / "out" / "r.html").stat().st_size / 2**20
    print(f"gpusizer report: {args.files} files x {args.cases} cases ({args.machines} machines) "
          f"in {elapsed_s:.2f} s wall, {cpu_s:.2f} s CPU (HTML {size_mib:.1f} MiB; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
