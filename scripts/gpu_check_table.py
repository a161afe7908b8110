"""The table scripts/gpu-check.sh prints from its result files, the GPU-only mechanism checks, and the verdict.

    .venv/bin/python scripts/gpu_check_table.py MAIN.json [--oom-run OOM.json --expect-fail CASE:TEXT]
                                                [--checks RELEASE.json]

Exit status 0 only when at least one case ran, no case failed (but the expected out-of-memory one,
which must fail with TEXT in its reason), every GPU case carries real NVML telemetry and every
mechanism check passed; otherwise 1, with the reasons on the last lines. A check that cannot apply
here (world size 2 on one GPU) prints "n/a" with why and does not fail. Reads the raw records directly,
with MFU from the one definition (gpusizer_common/metrics.py, no dependencies), so the check needs
nothing of reports/ and its optional packages.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys

from gpusizer_common import metrics

MIN_ROUND_S = 1.0  # what gpu-check.sh passes as --min-round-s
MIN_TELEMETRY_SAMPLES = 10


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def records(payload: dict) -> list[dict]:
    return [bench["extra_info"] for bench in payload.get("benchmarks", [])]


def mfu(record: dict) -> float:
    return metrics.mfu(record["samples_per_s"], record["flops_per_sample"], record["peak_flops_per_s"],
                       record["compute_devices"])


def rows(payload: dict, label: str = "") -> list[list[str]]:
    table = []
    for record in records(payload):
        telemetry = record.get("telemetry") or {}
        devices = telemetry.get("devices") or []
        util = [d["util_mean_pct"] for d in devices if d.get("util_mean_pct") is not None]
        power = [d["power_mean_w"] for d in devices if d.get("power_mean_w") is not None]
        table.append([
            record["case_id"] + label,
            _cell(record["samples_per_s"], ",.0f"),
            _cell(100 * mfu(record), ".1f"),
            _cell(sum(util) / len(util) if util else None, ".0f"),
            _cell(sum(power) if power else None, ".0f"),
            _cell(telemetry.get("energy_j"), ",.1f"),
            _cell(record.get("peak_memory_bytes", 0) / 2**30, ".2f"),
            ",".join(record.get("flags", [])) or "-",
        ])
    return table


# The one skip the check plans for: a world size above the GPU count (bench/run/controller.skip_reason).
EXPECTED_SKIP = re.compile(r"^world size \d+ needs \d+ GPUs; this machine has \d+$")


def _expected_skip(reason: str) -> bool:
    return bool(EXPECTED_SKIP.match(reason))


def problems(payload: dict, expect_fail: dict[str, str] | None = None) -> list[str]:
    """Failed cases (but the expected ones, which must fail with their text), no case run, no NVML."""
    expect_fail = expect_fail or {}
    found = []
    cases = (payload.get("gpusizer") or {}).get("cases", [])
    for case in cases:
        expected = expect_fail.get(case["case_id"])
        if expected is not None:
            if case["status"] != "failed" or expected not in (case["reason"] or ""):
                found.append(f"{case['case_id']} should have failed with '{expected}': {case['status']}: "
                             f"{case['reason']}")
        elif case["status"] == "failed":
            found.append(f"{case['case_id']} failed: {case['reason']}")
        elif case["status"] == "skipped" and not _expected_skip(case["reason"] or ""):
            # A skip the check did not plan for (a failed all-reduce ceiling, a missing Horovod build)
            # means a mechanism went unchecked: that is not a pass.
            found.append(f"{case['case_id']} skipped: {case['reason']}")
    for case_id in sorted(set(expect_fail) - {case["case_id"] for case in cases}):
        found.append(f"{case_id} did not run (expected to fail with '{expect_fail[case_id]}')")
    if not payload.get("benchmarks"):
        found.append("no case ran")
    for record in records(payload):
        source = (record.get("telemetry") or {}).get("source")
        if record["device_type"] == "cuda" and source != "nvml":
            reason = (record.get("telemetry") or {}).get("reason")
            found.append(f"{record['case_id']}: telemetry source {source}, not nvml ({reason})")
    return found


def _find(recs: list[dict], **keys) -> list[dict]:
    return [r for r in recs if all(r.get(k) == v for k, v in keys.items())]


def mechanism_checks(payload: dict) -> list[tuple[str, bool | None, str]]:
    """One (what, ok or None for n/a, detail) per GPU-only mechanism of issue 9 the records can show."""
    recs = [r for r in records(payload) if r["device_type"] == "cuda"]  # a CPU run has none of these
    cores = ((payload.get("machine_info") or {}).get("gpusizer") or {}).get("cpu_cores")
    checks = []

    def check(what: str, subjects: list[dict], test, detail, missing: str) -> None:
        if not subjects:
            checks.append((what, None, missing))
            return
        bad = [r for r in subjects if not test(r)]
        checks.append((what, not bad, "; ".join(f"{r['case_id']}: {detail(r)}" for r in (bad or subjects[:3]))))

    # At dp-1 DataParallel calls the module in the calling thread (no replica thread runs), where the
    # step's own autocast already applies: only world size 2 and up can show the replicas' dtype.
    check("1 dp bf16: the replicas computed in bfloat16",
          [r for r in _find(recs, strategy="dp", precision="bf16") if r["world_size"] >= 2],
          lambda r: r.get("replica_output_dtypes") == ["bfloat16"], lambda r: r.get("replica_output_dtypes"),
          "needs 2 GPUs: at dp-1 no replica thread runs (no dp-2 bf16 case ran)")
    check("2 dp: every GPU's peak recorded", _find(recs, strategy="dp"),
          lambda r: len(r.get("peak_memory_bytes_per_device") or []) == r["world_size"]
          and max(r["peak_memory_bytes_per_device"]) == r["peak_memory_bytes"],
          lambda r: r.get("peak_memory_bytes_per_device"), "no dp case ran")
    pairs = [(f, d) for f in _find(recs, strategy="fsdp", world_size=2)
             for d in _find(recs, strategy="ddp", world_size=2, preset=f["preset"], precision=f["precision"])]
    if pairs:
        bad = [(f, d) for f, d in pairs if not f["peak_memory_bytes"] < d["peak_memory_bytes"]]
        checks.append(("2 fsdp peak < ddp peak at world size 2 (sharded peak)", not bad,
                       "; ".join(f"{f['precision']}: fsdp {f['peak_memory_bytes'] / 2**30:.2f} GiB vs ddp "
                                 f"{d['peak_memory_bytes'] / 2**30:.2f} GiB" for f, d in (bad or pairs))))
    else:
        checks.append(("2 fsdp peak < ddp peak at world size 2 (sharded peak)", None,
                       "needs 2 GPUs (no fsdp-2 and ddp-2 pair ran)"))
    # The record states the policy the case was given; that FSDP2 then gathers in bf16 and keeps fp32
    # gradients is shown by tests/test_gpu_paths.py on a real FSDP2 (CPU, gloo).
    check("3 fsdp bf16: MixedPrecisionPolicy given: bf16 params, fp32 reduce", _find(recs, strategy="fsdp", precision="bf16"),
          lambda r: r.get("mixed_precision_policy") == {"param_dtype": "bfloat16", "reduce_dtype": "float32"},
          lambda r: r.get("mixed_precision_policy"), "no fsdp bf16 case ran")
    check("4 time-sized rounds: median round >= --min-round-s 1 with >= 10 NVML samples", recs,
          lambda r: statistics.median(r["round_times_s"]) >= 0.9 * MIN_ROUND_S and all(
              d.get("samples", 0) >= MIN_TELEMETRY_SAMPLES for d in (r.get("telemetry") or {}).get("devices", [])),
          lambda r: f"median round {statistics.median(r['round_times_s']):.2f} s, NVML samples "
                    f"{[d.get('samples') for d in (r.get('telemetry') or {}).get('devices', [])]}", "no case ran")
    check("5 fp32 is fp32: no TF32 override variable (tf32_override false)", _find(recs, precision="fp32"),
          lambda r: r.get("tf32_override") is False, lambda r: f"tf32_override {r.get('tf32_override')} "
          f"{r.get('tf32_override_env')}", "no fp32 case ran")
    check("6 threads per rank (as the ranks report torch.get_num_threads()) = cores / processes", [r for r in recs if cores],
          lambda r: r["threads_per_rank"] == max(1, cores // (1 if r["strategy"] in ("single", "dp") else r["world_size"])),
          lambda r: f"{r['threads_per_rank']} threads of {cores} cores", "no case ran or cores unknown")
    # Issue 23: no strategy trains in the pytest process. Every case's ranks were launched (single's and
    # dp's one plain rank process too): a real launch, and the rank processes the case was driven in.
    check("9 every case trained in launched rank processes (single and dp too)", recs,
          lambda r: r.get("launcher") in ("python", "torchrun", "horovodrun") and (r.get("launch_s") or 0) > 0
          and len(r.get("worker_pids") or []) == (1 if r["strategy"] in ("single", "dp") else r["world_size"]),
          lambda r: f"launcher {r.get('launcher')}, launch_s {r.get('launch_s')}, worker_pids {r.get('worker_pids')}",
          "no case ran")
    devices = [(r, d) for r in recs for d in (r.get("telemetry") or {}).get("devices", [])]
    # Memory info v1 is the documented fallback for drivers without v2 (its "used" includes reserved memory).
    checks.append(("7 NVML: power cap recorded apart from throttling, memory info v2 (v1 on older drivers)",
                   all("power_cap_fraction" in d and d.get("memory_info_version") in (1, 2) for _, d in devices)
                   if devices else None,
                   "; ".join(sorted({f"power_cap_fraction {d.get('power_cap_fraction', 'missing')}, memory info v"
                                     f"{d.get('memory_info_version')}" for _, d in devices}))[:300]
                   or "no NVML device telemetry"))
    return checks


def print_table(table: list[list[str]]) -> None:
    header = ["case", "samples/s", "MFU %", "GPU util %", "power W", "energy J", "peak GiB", "flags"]
    table = [header, *table]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(width) if 0 < i < len(header) - 1 else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check_table.py")
    parser.add_argument("result_json")
    parser.add_argument("--oom-run", help="result file of the run with an injected out-of-memory case")
    parser.add_argument("--expect-fail", action="append", default=[], metavar="CASE:TEXT",
                        help="in the --oom-run: CASE must fail with TEXT in its reason")
    parser.add_argument("--checks", help="JSON list of {check, ok, detail} from scripts/gpu_check_release.py")
    args = parser.parse_args(argv)
    expect_fail = dict(item.split(":", 1) for item in args.expect_fail)
    with open(args.result_json, encoding="utf-8") as handle:
        payload = json.load(handle)
    oom = None
    if args.oom_run:
        try:
            with open(args.oom_run, encoding="utf-8") as handle:
                oom = json.load(handle)
        except (OSError, ValueError) as error:
            oom = {"error": str(error)}
    print_table(rows(payload) + (rows(oom, " (oom run)") if oom and "error" not in oom else []))
    for run in (payload, oom or {}):
        for case in (run.get("gpusizer") or {}).get("cases", []):
            if case["status"] != "passed":
                print(f"{case['status']} {case['case_id']}: {case['reason']}")
    inventory = (payload.get("machine_info") or {}).get("gpusizer") or {}
    for peak in (inventory.get("ceilings") or {}).get("matmul_peak", []):
        print(f"matmul peak {peak['device']} {peak['precision']}: {peak['flops_per_s'] / 1e12:.1f} TFLOP/s")
    found = problems(payload)
    if args.oom_run:
        if "error" in oom:
            found.append(f"out-of-memory run: no result file ({oom['error']})")
        else:
            found += [f"out-of-memory run: {p}" for p in problems(oom, expect_fail)]
    checks = mechanism_checks(payload)
    if args.checks:
        try:
            with open(args.checks, encoding="utf-8") as handle:
                checks += [(c["check"], c["ok"], c["detail"]) for c in json.load(handle)]
        except (OSError, ValueError, KeyError) as error:
            checks.append(("8 single and dp ranks give their GPU memory back", False,
                           f"no result from gpu_check_release.py ({error})"))
    for what, ok, detail in checks:
        print(f"check {'ok' if ok else 'n/a' if ok is None else 'FAILED'}: {what}: {detail}")
        if ok is False:
            found.append(f"check failed: {what}")
    for problem in found:
        print(f"gpu-check: {problem}", file=sys.stderr)
    print("gpu-check: " + ("FAILED" if found else "passed"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
