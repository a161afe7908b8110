"""Read result files into one tidy table, refusing anything that is not a gpusizer result we understand.

``load_results(paths)`` takes files and folders (a folder means the ``*.json`` directly inside it, in
name order) and returns a ``ResultSet``: one row per benchmark case per run in ``cases``, the fate of
every case (passed, skipped, failed) in ``outcomes``, and each run's ``machine_info``. Every problem
with the input raises ``InputError`` naming the file and what is wrong; no file is ever written.

The contract is docs/record.md (schema_version 1). Throughput is recomputed here from the ranks' own
round times (``extra_info.round_times_s``; the controller's ``stats.data`` where a record lacks them)
rather than trusted from the record's convenience copy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reports.errors import InputError

SUPPORTED_SCHEMA_VERSIONS = (1,)

# Declared dtypes of ResultSet.cases, in column order. "object" columns hold lists or dicts.
CASE_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "run_datetime": "datetime64[ns, UTC]",
    "machine": "string",
    "instance_type": "string",  # the cloud instance type where the machine states it (inventory), else <NA>
    "gpu_name": "string",  # <NA> on a CPU run
    "device_name": "string",  # GPU name or CPU model: what one rank trained on
    "gpu_count": "Int64",  # GPUs in the machine (not in the case)
    "cpu_model": "string",
    "driver_version": "string",
    "cuda_version": "string",
    "torch_version": "string",
    "case_id": "string",
    "strategy": "string",
    "launcher": "string",
    "world_size": "Int64",
    "device_type": "string",
    "preset": "string",
    "precision": "string",
    "per_device_batch_size": "Int64",
    "global_batch_size": "Int64",
    "scaling": "string",
    "steps_per_round": "Int64",
    "rounds": "Int64",
    "samples_per_s": "float64",
    "round_times_s": "object",
    "worker_round_times_s": "object",
    "controller_round_times_s": "object",
    "flops_per_sample": "float64",
    "num_params": "Int64",
    "peak_flops_per_s": "float64",
    "compute_devices": "Int64",
    "launch_s": "float64",
    "peak_memory_bytes": "float64",
    "memory_capacity_bytes": "float64",  # per device: GPU memory, or the machine's RAM on CPU
    "energy_j": "float64",
    "util_mean_pct": "float64",
    "throttle_fraction": "float64",  # the largest thermal or power throttle share of any device
    "telemetry_source": "string",
    "flags": "object",
    "unstable_reasons": "object",  # the benchmark's one-line reasons for the "unstable" flag ([] when stable)
    "baseline_only": "boolean",
    "timing_gap_fraction": "float64",
    # Memory sizing (issue 13): predicted beside measured step peak, and --find-max-batch's answer.
    "predicted_peak_bytes": "float64",
    "measured_step_peak_bytes": "float64",
    "max_per_device_batch_size": "float64",
    "max_batch_samples_per_s": "float64",
}

OUTCOME_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "machine": "string",
    "case_id": "string",
    "status": "string",
    "reason": "string",
    "strategy": "string",
    "world_size": "Int64",
    "device_type": "string",
    "preset": "string",
    "precision": "string",
    "per_device_batch_size": "Int64",
    "scaling": "string",
}

RUN_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "run_datetime": "datetime64[ns, UTC]",
    "machine": "string",
    "complete": "boolean",
    "passed": "Int64",
    "skipped": "Int64",
    "failed": "Int64",
}

# Record keys a case cannot be understood without, and the JSON types they must have.
_NUMBER = (int, float)
# Plausibility bounds that keep arithmetic finite: counts beyond 2**53 are not exact as floats (and
# 10**400 overflows one), and a round of K training steps takes far longer than a nanosecond
# (1e-320 s would make the throughput infinite).
MAX_COUNT = 2**53
MIN_ROUND_S = 1e-9
REQUIRED_RECORD_KEYS: dict[str, tuple[type, ...]] = {
    "case_id": (str,),
    "strategy": (str,),
    "world_size": (int,),
    "device_type": (str,),
    "device_name": (str,),
    "preset": (str,),
    "precision": (str,),
    "per_device_batch_size": (int,),
    "global_batch_size": (int,),
    "scaling": (str,),
    "steps_per_round": (int,),
    "flops_per_sample": _NUMBER,
    "peak_flops_per_s": _NUMBER,
}

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
        cases=_frame(case_rows, CASE_COLUMNS),
        outcomes=_frame(outcome_rows, OUTCOME_COLUMNS),
        runs=_frame(run_rows, RUN_COLUMNS),
        machines=machines,
        ignored=tuple(ignored),
    )


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given, folders as their ``*.json`` in name order; each file once, in first-seen order."""
    if not paths:
        raise InputError("no result files given; pass result files or folders (e.g. results/)")
    files: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"path {raw}: does not exist; expected a result file or a folder of them")
        if path.is_dir():
            found = sorted(child for child in path.glob("*.json") if child.is_file())
            if not found:
                raise InputError(f"folder {raw}: has no *.json result files in it")
            candidates = [str(child) for child in found]
        elif path.is_file():
            candidates = [str(path)]
        else:
            raise InputError(f"path {raw}: is not a regular file or a folder")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files


def read_json(path: str) -> object:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"file {path}: cannot be read ({error.strerror or error})") from None
    if not raw.strip():
        raise InputError(f"file {path}: is empty; expected a result JSON written by `pytest bench/`")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"file {path}: is not JSON (not UTF-8 text); expected a result JSON from `pytest bench/`") \
            from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"file {path}: is nested too deeply to be a result file; expected a result JSON "
                         f"from `pytest bench/`") from None
    except json.JSONDecodeError as error:
        # A parse error at the very end of the text (or a string never closed) means the file stops
        # early: a copy cut short, rather than something that was never JSON.
        if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
            raise InputError(f"file {path}: truncated JSON (the text ends at byte {len(raw)} before the "
                             f"document is closed); copy the file again") from None
        raise InputError(f"file {path}: is not JSON ({error.msg} at line {error.lineno} column {error.colno})") \
            from None


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
        _check_schema_version(path, section.get("schema_version"), "the 'gpusizer' section")
    elif not payload["benchmarks"]:
        raise InputError(f"file {path}: not a gpusizer result (no 'gpusizer' section and no benchmarks); {_NOT_OURS}")

    run_datetime = _parse_datetime(path, payload.get("datetime"))
    machine = str(machine_info.get("node") or "unknown-host")
    context = {"run_id": path, "run_datetime": run_datetime, "machine": machine, **_machine_columns(machine_info)}
    cases = [_case_row(path, entry, context) for entry in payload["benchmarks"]]
    outcomes = _outcome_rows(path, section, cases, machine)
    statuses = [row["status"] for row in outcomes]
    counts = {status: statuses.count(status) for status in ("passed", "skipped", "failed")}
    complete = bool(section.get("complete", True)) if section is not None else True
    run = {"run_id": path, "run_datetime": run_datetime, "machine": machine, "complete": complete, **counts}
    return {"machine_info": machine_info, "cases": cases, "outcomes": outcomes, "run": run}


def hardware_fingerprint(machine_info: dict) -> dict:
    """What must match for two runs to be comparable as the same hardware and software stack:
    GPU model and count, driver, CUDA and torch versions; the CPU model stands in when there is no GPU."""
    inventory = machine_info.get("gpusizer") if isinstance(machine_info, dict) else None
    inventory = inventory if isinstance(inventory, dict) else {}
    gpus = inventory.get("gpus") if isinstance(inventory.get("gpus"), list) else []
    names = sorted({str(gpu.get("name")) for gpu in gpus if isinstance(gpu, dict) and gpu.get("name")})
    fingerprint = {
        "gpu_model": " + ".join(names) if names else None,
        "gpu_count": len(gpus),
        "driver_version": _text(inventory.get("driver_version")),
        "cuda_version": _text(inventory.get("cuda_version")),
        "torch_version": _text(inventory.get("torch_version")),
    }
    if not gpus:
        fingerprint["cpu_model"] = _cpu_model(machine_info)
    return fingerprint


# -- one file's pieces -----------------------------------------------------------------------------


def _check_schema_version(path: str, version: object, where: str) -> None:
    if version is None:
        raise InputError(f"file {path}: {where} has no schema_version; expected one of "
                         f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}")
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InputError(f"file {path}: unknown schema_version {version!r} in {where}; this gpusizer reads "
                         f"schema_version {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))} "
                         f"(a newer gpusizer may read it)")


def _parse_datetime(path: str, raw: object) -> pd.Timestamp:
    if raw is None:
        return pd.NaT
    try:
        stamp = pd.Timestamp(str(raw))
    except (ValueError, TypeError):
        raise InputError(f"file {path}: 'datetime' {raw!r} is not an ISO 8601 time") from None
    # pytest-benchmark writes UTC; a naive stamp is taken as UTC rather than local time.
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _machine_columns(machine_info: dict) -> dict:
    inventory = machine_info.get("gpusizer") if isinstance(machine_info.get("gpusizer"), dict) else {}
    gpus = inventory.get("gpus") if isinstance(inventory.get("gpus"), list) else []
    instance = inventory.get("instance") if isinstance(inventory.get("instance"), dict) else {}
    return {
        "instance_type": _text(instance.get("instance_type")),
        "gpu_count": len(gpus),
        "cpu_model": _cpu_model(machine_info),
        "driver_version": _text(inventory.get("driver_version")),
        "cuda_version": _text(inventory.get("cuda_version")),
        "torch_version": _text(inventory.get("torch_version")),
        "_gpu_memory_bytes": [gpu.get("memory_total_bytes") for gpu in gpus if isinstance(gpu, dict)],
        "_ram_bytes": inventory.get("memory_total_bytes"),
    }


def _cpu_model(machine_info: dict) -> str | None:
    inventory = machine_info.get("gpusizer") if isinstance(machine_info.get("gpusizer"), dict) else {}
    cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), dict) else {}
    return _text(inventory.get("cpu_model") or cpu.get("brand_raw"))


def _case_row(path: str, entry: object, context: dict) -> dict:
    if not isinstance(entry, dict):
        raise InputError(f"file {path}: a 'benchmarks' entry is not an object")
    name = entry.get("name", "?")
    where = f"file {path}: benchmark {name!r}"
    record = entry.get("extra_info")
    if not isinstance(record, dict) or "schema_version" not in record:
        raise InputError(f"file {path}: not a gpusizer result (no schema_version in extra_info of benchmark "
                         f"{name!r}); {_NOT_OURS}")
    _check_schema_version(path, record["schema_version"], f"benchmark {name!r}")
    for key, types in REQUIRED_RECORD_KEYS.items():
        value = record.get(key)
        if value is None:
            raise InputError(f"{where}: the record has no {key!r}; see docs/record.md for the required keys")
        if isinstance(value, bool) or not isinstance(value, types) or (types is _NUMBER and
                                                                       not _is_number(value)):
            kind = " or ".join(t.__name__ for t in types)
            raise InputError(f"{where}: {key!r} is {value!r}; expected a finite {kind}")
    for key in ("world_size", "per_device_batch_size", "global_batch_size", "steps_per_round"):
        if not 1 <= record[key] <= MAX_COUNT:
            raise InputError(f"{where}: {key!r} is {record[key]!r:.40}; expected an integer 1 to 2**53")
    if record["peak_flops_per_s"] <= 0:
        raise InputError(f"{where}: 'peak_flops_per_s' is {record['peak_flops_per_s']!r}; expected a number > 0")

    stats = entry.get("stats") if isinstance(entry.get("stats"), dict) else {}
    controller_s = _round_times(where, stats.get("data"), "stats.data")
    if controller_s is None:
        raise InputError(f"{where}: has no per-round data (stats.data); gpusizer's `pytest bench/` always keeps "
                         f"it, so this file was saved another way")
    worker_s = _round_times(where, record.get("round_times_s"), "extra_info.round_times_s") or []
    # The ranks' own times are the measurement; the controller's add its IPC and only check them.
    measured_s = worker_s if len(worker_s) == len(controller_s) else controller_s
    median_s = float(np.median(measured_s))
    samples_per_s = record["global_batch_size"] * record["steps_per_round"] / median_s
    gap = record.get("timing_gap_fraction")
    if not _is_number(gap) and worker_s:  # older records: recompute the controller-worker gap
        gap = abs(float(np.median(controller_s)) - float(np.median(worker_s))) / float(np.median(worker_s))

    telemetry = record.get("telemetry") if isinstance(record.get("telemetry"), dict) else {}
    devices = [d for d in telemetry.get("devices") or [] if isinstance(d, dict)]
    cpu = telemetry.get("cpu") if isinstance(telemetry.get("cpu"), dict) else {}
    device_type = record["device_type"]
    flags = record.get("flags") if isinstance(record.get("flags"), list) else []
    baseline_only = record.get("baseline_only")
    row = {
        **{key: value for key, value in context.items() if not key.startswith("_")},
        "gpu_name": record["device_name"] if device_type == "cuda" else None,
        "device_name": record["device_name"],
        "case_id": record["case_id"],
        "strategy": record["strategy"],
        "launcher": _text(record.get("launcher")),
        "world_size": record["world_size"],
        "device_type": device_type,
        "preset": record["preset"],
        "precision": record["precision"],
        "per_device_batch_size": record["per_device_batch_size"],
        "global_batch_size": record["global_batch_size"],
        "scaling": record["scaling"],
        "steps_per_round": record["steps_per_round"],
        "rounds": len(controller_s),
        "samples_per_s": samples_per_s,
        "round_times_s": measured_s,
        "controller_round_times_s": controller_s,
        "worker_round_times_s": worker_s,
        "flops_per_sample": float(record["flops_per_sample"]),
        "num_params": _int_or(record.get("num_params"), None),
        "peak_flops_per_s": float(record["peak_flops_per_s"]),
        "compute_devices": _int_or(record.get("compute_devices"), record["world_size"] if device_type == "cuda" else 1),
        "launch_s": _number_or_nan(record.get("launch_s")),
        "peak_memory_bytes": _number_or_nan(record.get("peak_memory_bytes")),
        "memory_capacity_bytes": _memory_capacity(devices, context, device_type),
        "energy_j": _number_or_nan(telemetry.get("energy_j")),
        "util_mean_pct": _util_mean(devices, cpu),
        "throttle_fraction": _throttle(devices),
        "telemetry_source": _text(telemetry.get("source")),
        "flags": sorted({str(flag) for flag in flags}),
        "unstable_reasons": [str(reason) for reason in record.get("unstable_reasons") or []
                             if isinstance(reason, str)] if isinstance(record.get("unstable_reasons"), list) else [],
        "baseline_only": bool(baseline_only) if isinstance(baseline_only, bool) else record["strategy"] == "dp",
        "timing_gap_fraction": _number_or_nan(gap),
        **{key: _number_or_nan(record.get(key)) for key in (
            "predicted_peak_bytes", "measured_step_peak_bytes", "max_per_device_batch_size", "max_batch_samples_per_s")},
    }
    return row


def _round_times(where: str, raw: object, name: str) -> list[float] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: {name} is {type(raw).__name__} {raw!r:.40}; expected a non-empty list of seconds")
    for value in raw:
        if not _is_number(value) or value < MIN_ROUND_S:
            raise InputError(f"{where}: {name} holds {value!r:.40}; expected round times in seconds >= {MIN_ROUND_S:g}")
    return [float(value) for value in raw]


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
        if status not in ("passed", "skipped", "failed"):
            raise InputError(f"file {path}: case {entry['case_id']!r} has status {status!r}; "
                             f"expected passed, skipped or failed")
        row = {key: entry.get(key) for key in OUTCOME_COLUMNS}
        row.update(run_id=path, machine=machine, reason=_text(entry.get("reason")))
        for key in ("world_size", "per_device_batch_size"):
            row[key] = _int_or(row[key], None)
        rows.append(row)
    return rows


# -- small helpers ---------------------------------------------------------------------------------


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))
    for column, dtype in columns.items():
        if dtype == "object":
            frame[column] = frame[column].astype(object)
        elif dtype.startswith("datetime"):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(dtype)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame


def _is_number(value: object) -> bool:
    if not isinstance(value, _NUMBER) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _number_or_nan(value: object) -> float:
    return float(value) if _is_number(value) else math.nan


def _int_or(value: object, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT else default


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _memory_capacity(devices: list[dict], context: dict, device_type: str) -> float:
    """Per-device memory the case could use: from telemetry, else the inventory; RAM on CPU."""
    if device_type == "cuda":
        totals = [d.get("memory_total_bytes") for d in devices] or context.get("_gpu_memory_bytes") or []
        totals = [t for t in totals if _is_number(t) and t > 0]
        return float(min(totals)) if totals else math.nan
    return _number_or_nan(context.get("_ram_bytes"))


def _util_mean(devices: list[dict], cpu: dict) -> float:
    values = [d.get("util_mean_pct") for d in devices if _is_number(d.get("util_mean_pct"))]
    if values:
        return float(np.mean(values))
    return _number_or_nan(cpu.get("util_mean_pct"))


def _throttle(devices: list[dict]) -> float:
    shares = []
    for device in devices:
        fractions = device.get("throttle_fraction")
        if isinstance(fractions, dict):
            # "other" reasons include idle clock-downs, which are no sign of an overheated or capped GPU.
            shares.extend(fractions[k] for k in ("thermal", "power") if _is_number(fractions.get(k)))
    return float(max(shares)) if shares else math.nan
