"""Read result files into one tidy table, refusing anything that is not a gpusizer result we understand.

``load_results(paths)`` takes files and folders (reports/result_files.py) and returns a ``ResultSet``:
one row per benchmark case per run in ``cases``, the fate of every case (passed, skipped, failed) in
``outcomes``, and each run's ``machine_info``. Every problem with the input raises ``InputError`` naming
the file and what is wrong; no file is ever written.

The contract is docs/record.md (schema_version 1), read as tables in reports/schema.py. Throughput is
recomputed here from the ranks' own round times (``extra_info.round_times_s``) rather than trusted from
the record's convenience copy; the controller's ``stats.data`` are kept beside them as the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from gpusizer_common import metrics
from gpusizer_common.device_type import is_cuda
from reports import derived
from reports.errors import InputError
from reports.result_files import expand_paths, read_json
from reports.schema import (
    CASE_COLUMNS,
    OUTCOME_COLUMNS,
    OUTCOME_STATUSES,
    RUN_COLUMNS,
    check_record,
    check_schema_version,
    count_or,
    frame,
    is_number,
    number_or_nan,
    round_times,
    step_breakdown,
    text,
)

_NOT_OURS = "this looks like another tool's pytest-benchmark file"


@dataclass(frozen=True, eq=False)
class ResultSet:
    """Everything the result files say. ``cases``: one row per benchmark case per run (CASE_COLUMNS);
    ``outcomes``: every case's status and reason (OUTCOME_COLUMNS); ``runs``: one row per file
    (RUN_COLUMNS); ``machines``: run_id -> that file's ``machine_info``."""

    cases: pd.DataFrame
    outcomes: pd.DataFrame
    runs: pd.DataFrame
    machines: dict[str, dict] = field(default_factory=dict)
    # Files that measured nothing (``measured: 0``: every case skipped or failed): no row in ``runs``
    # or ``cases`` (so no place in a rolling baseline), their outcomes kept; "path (N skipped, M failed)".
    ignored: tuple[str, ...] = ()

    @property
    def paths(self) -> list[str]:
        return list(self.machines)


def load_results(paths: list[str]) -> ResultSet:
    """Load every result file under ``paths`` (files or folders); InputError on any bad one."""
    files = expand_paths(paths)
    case_rows: list[dict] = []
    outcome_rows: list[dict] = []
    run_rows: list[dict] = []
    machines: dict[str, dict] = {}
    ignored: list[str] = []
    for path in files:
        payload = read_json(path)
        run = parse_run(path, payload)
        if not run["cases"]:
            # Measured nothing: no run row (it takes no place in a rolling baseline), but the reasons
            # of its skips and failures are data and stay in the outcomes.
            counts = run["run"]
            ignored.append(f"{path} ({counts['skipped']} skipped, {counts['failed']} failed)")
            outcome_rows.extend(run["outcomes"])
            continue
        machines[path] = run["machine_info"]
        case_rows.extend(run["cases"])
        outcome_rows.extend(run["outcomes"])
        run_rows.append(run["run"])
    return ResultSet(
        cases=frame(case_rows, CASE_COLUMNS),
        outcomes=frame(outcome_rows, OUTCOME_COLUMNS),
        runs=frame(run_rows, RUN_COLUMNS),
        machines=machines,
        ignored=tuple(ignored),
    )


def parse_run(path: str, payload: object) -> dict:
    """One result file -> its case rows, outcome rows, run row and machine_info."""
    if not isinstance(payload, dict) or not isinstance(payload.get("benchmarks"), list):
        raise InputError(f"file {path}: not a pytest-benchmark result file (no 'benchmarks' list); "
                         f"expected a result JSON written by `pytest bench/`")
    machine_info = payload.get("machine_info")
    if not isinstance(machine_info, dict):
        raise InputError(f"file {path}: has no 'machine_info' object; expected a result JSON from `pytest bench/`")
    section = payload.get("gpusizer")
    if section is not None:
        if not isinstance(section, dict):
            raise InputError(f"file {path}: the 'gpusizer' section is not an object")
        check_schema_version(path, section.get("schema_version"), "the 'gpusizer' section")
    elif not payload["benchmarks"]:
        raise InputError(f"file {path}: not a gpusizer result (no 'gpusizer' section and no benchmarks); {_NOT_OURS}")

    run_datetime = _parse_datetime(path, payload.get("datetime"))
    machine = str(machine_info.get("node") or "unknown-host")
    context = {"run_id": path, "run_datetime": run_datetime, "machine": machine, **derived.machine_columns(machine_info)}
    cases = [_case_row(path, entry, context) for entry in payload["benchmarks"]]
    outcomes = _outcome_rows(path, section, cases, machine)
    statuses = [row["status"] for row in outcomes]
    counts = {status: statuses.count(status) for status in OUTCOME_STATUSES}
    complete = bool(section.get("complete", True)) if section is not None else True
    run = {"run_id": path, "run_datetime": run_datetime, "machine": machine, "complete": complete, **counts}
    return {"machine_info": machine_info, "cases": cases, "outcomes": outcomes, "run": run}


# -- one file's pieces -----------------------------------------------------------------------------


def _parse_datetime(path: str, raw: object) -> pd.Timestamp:
    if raw is None:
        return pd.NaT
    try:
        stamp = pd.Timestamp(str(raw))
    except (ValueError, TypeError):
        raise InputError(f"file {path}: 'datetime' {raw!r} is not an ISO 8601 time") from None
    # pytest-benchmark writes UTC; a naive stamp is taken as UTC rather than local time.
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _case_row(path: str, entry: object, context: dict) -> dict:
    if not isinstance(entry, dict):
        raise InputError(f"file {path}: a 'benchmarks' entry is not an object")
    name = entry.get("name", "?")
    where = f"file {path}: benchmark {name!r}"
    record = entry.get("extra_info")
    if not isinstance(record, dict) or "schema_version" not in record:
        raise InputError(f"file {path}: not a gpusizer result (no schema_version in extra_info of benchmark "
                         f"{name!r}); {_NOT_OURS}")
    check_schema_version(path, record["schema_version"], f"benchmark {name!r}")
    check_record(where, record)

    stats = entry.get("stats") if isinstance(entry.get("stats"), dict) else {}
    if stats.get("data") is None:
        raise InputError(f"{where}: has no per-round data (stats.data); gpusizer's `pytest bench/` always keeps "
                         f"it, so this file was saved another way")
    controller_s = round_times(where, stats["data"], "stats.data")
    # The ranks' own times are the measurement; the controller's add its IPC and only check them.
    worker_s = round_times(where, record["round_times_s"], "extra_info.round_times_s")
    if len(worker_s) != len(controller_s):
        raise InputError(f"{where}: extra_info.round_times_s holds {len(worker_s)} round times and stats.data "
                         f"{len(controller_s)}; expected one of each per measured round")

    telemetry = record.get("telemetry") if isinstance(record.get("telemetry"), dict) else {}
    devices = [d for d in telemetry.get("devices") or [] if isinstance(d, dict)]
    cpu = telemetry.get("cpu") if isinstance(telemetry.get("cpu"), dict) else {}
    device_type = record["device_type"]
    flags = record.get("flags") if isinstance(record.get("flags"), list) else []
    row = {
        **{key: value for key, value in context.items() if not key.startswith("_")},
        "gpu_name": record["device_name"] if is_cuda(device_type) else None,
        "device_name": record["device_name"],
        "case_id": record["case_id"],
        "strategy": record["strategy"],
        "launcher": text(record.get("launcher")),
        "world_size": record["world_size"],
        "device_type": device_type,
        "preset": record["preset"],
        "precision": record["precision"],
        "per_device_batch_size": record["per_device_batch_size"],
        "global_batch_size": record["global_batch_size"],
        "scaling": record["scaling"],
        "steps_per_round": record["steps_per_round"],
        "rounds": len(controller_s),
        "samples_per_s": metrics.samples_per_s(
            metrics.samples_per_round(record["global_batch_size"], record["steps_per_round"]), worker_s),
        "round_times_s": worker_s,
        "controller_round_times_s": controller_s,
        "flops_per_sample": float(record["flops_per_sample"]),
        "num_params": count_or(record.get("num_params"), None),
        "peak_flops_per_s": float(record["peak_flops_per_s"]),
        "compute_devices": record["compute_devices"],
        "launch_s": number_or_nan(record.get("launch_s")),
        "peak_memory_bytes": number_or_nan(record.get("peak_memory_bytes")),
        "memory_capacity_bytes": derived.memory_capacity(devices, context, device_type),
        "energy_j": number_or_nan(telemetry.get("energy_j")),
        "memory_used_fraction": derived.memory_used_fraction(devices, cpu, context),
        "util_mean_pct": derived.util_mean(devices, cpu),
        "throttle_fraction": derived.throttle(devices),
        "telemetry_source": text(telemetry.get("source")),
        "flags": sorted({str(flag) for flag in flags}),
        "unstable_reasons": [str(reason) for reason in record.get("unstable_reasons") or []
                             if isinstance(reason, str)] if isinstance(record.get("unstable_reasons"), list) else [],
        "baseline_only": record["baseline_only"],
        "timing_gap_fraction": float(record["timing_gap_fraction"]),
        "predicted_peak_parts_bytes": _parts_bytes(record.get("predicted_peak_parts_bytes")),
        **{key: number_or_nan(record.get(key)) for key in (
            "predicted_peak_bytes", "measured_step_peak_bytes", "predicted_peak_error_fraction",
            "max_per_device_batch_size", "max_batch_samples_per_s")},
        "step_breakdown": step_breakdown(where, record.get("step_breakdown")),
    }
    return row


def _parts_bytes(raw: object) -> dict:
    """The predicted peak's parts, name to bytes; an entry that is not a number is dropped, not trusted."""
    if not isinstance(raw, dict):
        return {}
    return {str(name): float(value) for name, value in raw.items() if is_number(value)}


def _outcome_rows(path: str, section: dict | None, cases: list[dict], machine: str) -> list[dict]:
    """Every case's fate. Files without a gpusizer section (--benchmark-autosave) only know what passed."""
    if section is None or not isinstance(section.get("cases"), list):
        return [{"run_id": path, "machine": machine, "status": "passed", "reason": None,
                 **{key: row[key] for key in OUTCOME_COLUMNS if key in row and key not in ("run_id", "machine")}}
                for row in cases]
    rows = []
    for entry in section["cases"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("case_id"), str):
            raise InputError(f"file {path}: an entry of gpusizer.cases has no case_id")
        status = entry.get("status")
        if status not in OUTCOME_STATUSES:
            raise InputError(f"file {path}: case {entry['case_id']!r} has status {status!r}; "
                             f"expected passed, skipped or failed")
        row = {key: entry.get(key) for key in OUTCOME_COLUMNS}
        row.update(run_id=path, machine=machine, reason=text(entry.get("reason")))
        for key in ("world_size", "per_device_batch_size"):
            row[key] = count_or(row[key], None)
        rows.append(row)
    return rows
