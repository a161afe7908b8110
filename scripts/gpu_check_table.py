"""The short table scripts/gpu-check.sh prints from its result file, and its verdict.

    .venv/bin/python scripts/gpu_check_table.py results/gpu-check-<time>.json

Exit status 0 only when at least one case ran, none failed, and every GPU case carries real NVML
telemetry; otherwise 1, with the reason on the last line. Reads the raw record directly (MFU as
docs/record.md defines it) so the check needs nothing of reports/.
"""

from __future__ import annotations

import json
import sys


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def rows(payload: dict) -> list[list[str]]:
    table = []
    for bench in payload.get("benchmarks", []):
        record = bench["extra_info"]
        telemetry = record.get("telemetry") or {}
        devices = telemetry.get("devices") or []
        mfu = record["samples_per_s"] * record["flops_per_sample"] / (
            record["peak_flops_per_s"] * record["compute_devices"])
        util = [d["util_mean_pct"] for d in devices if d.get("util_mean_pct") is not None]
        power = [d["power_mean_w"] for d in devices if d.get("power_mean_w") is not None]
        table.append([
            record["case_id"],
            _cell(record["samples_per_s"], ",.0f"),
            _cell(100 * mfu, ".1f"),
            _cell(sum(util) / len(util) if util else None, ".0f"),
            _cell(sum(power) if power else None, ".0f"),
            _cell(telemetry.get("energy_j"), ",.1f"),
            ",".join(record.get("flags", [])) or "-",
        ])
    return table


def problems(payload: dict) -> list[str]:
    found = []
    cases = (payload.get("gpusizer") or {}).get("cases", [])
    for case in cases:
        if case["status"] == "failed":
            found.append(f"{case['case_id']} failed: {case['reason']}")
    if not payload.get("benchmarks"):
        found.append("no case ran")
    for bench in payload.get("benchmarks", []):
        record = bench["extra_info"]
        source = (record.get("telemetry") or {}).get("source")
        if record["device_type"] == "cuda" and source != "nvml":
            reason = (record.get("telemetry") or {}).get("reason")
            found.append(f"{record['case_id']}: telemetry source {source}, not nvml ({reason})")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check_table.py RESULT_JSON", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        payload = json.load(handle)
    header = ["case", "samples/s", "MFU %", "GPU util %", "power W", "energy J", "flags"]
    table = [header, *rows(payload)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(width) if 0 < i < len(header) - 1 else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))))
    for case in (payload.get("gpusizer") or {}).get("cases", []):
        if case["status"] == "skipped":
            print(f"skipped {case['case_id']}: {case['reason']}")
    inventory = (payload.get("machine_info") or {}).get("gpusizer") or {}
    for peak in (inventory.get("ceilings") or {}).get("matmul_peak", []):
        print(f"matmul peak {peak['device']} {peak['precision']}: {peak['flops_per_s'] / 1e12:.1f} TFLOP/s")
    found = problems(payload)
    for problem in found:
        print(f"gpu-check: {problem}", file=sys.stderr)
    print("gpu-check: " + ("FAILED" if found else "passed"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
