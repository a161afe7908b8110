"""The contract with the result files, as tables: what a record must hold, and the tables it is loaded into.

docs/record.md says what each key means (schema_version 1, the only schema). Read ``CASE_SCHEMA`` as one
table: each column of ``ResultSet.cases`` with its dtype and, where the column is a key every record
has, the kind of value the record must give it; a record that breaks a row is refused with a one-line
``InputError`` naming the key and what is allowed. The other columns are derived by the loader or come
from optional keys and the machine inventory.
"""

from __future__ import annotations

import math

import pandas as pd

from gpusizer_common.case_identity import CASE_IDENTITY
from reports.errors import InputError

SUPPORTED_SCHEMA_VERSIONS = (1,)

# Plausibility bounds that keep arithmetic finite: counts beyond 2**53 are not exact as floats (and
# 10**400 overflows one), and a round of K training steps takes far longer than a nanosecond
# (1e-320 s would make the throughput infinite).
MAX_COUNT = 2**53
MIN_ROUND_S = 1e-9

# What a required record key must be. COUNT: an integer 1 to MAX_COUNT; NUMBER: a finite number;
# POSITIVE: a finite number > 0; SECONDS: a non-empty list of round times >= MIN_ROUND_S.
TEXT, COUNT, NUMBER, POSITIVE, FLAG, SECONDS = "text", "count", "number", "positive", "flag", "seconds"
_JSON_TYPES = {TEXT: (str,), COUNT: (int,), NUMBER: (int, float), POSITIVE: (int, float), FLAG: (bool,)}

# Column of ResultSet.cases -> (its dtype, what the record must give it; None: not a required key).
# "object" columns hold lists or dicts. The order is the table's column order.
CASE_SCHEMA: dict[str, tuple[str, str | None]] = {
    "run_id": ("string", None),
    "run_datetime": ("datetime64[ns, UTC]", None),
    "machine": ("string", None),
    "instance_type": ("string", None),  # the cloud instance type where the machine states it (inventory), else <NA>
    "gpu_name": ("string", None),  # <NA> on a CPU run
    "device_name": ("string", TEXT),  # GPU name or CPU model: what one rank trained on
    "gpu_count": ("Int64", None),  # GPUs in the machine (not in the case)
    "cpu_model": ("string", None),
    "driver_version": ("string", None),
    "cuda_version": ("string", None),
    "torch_version": ("string", None),
    "case_id": ("string", TEXT),
    "strategy": ("string", TEXT),
    "launcher": ("string", None),
    "world_size": ("Int64", COUNT),
    "device_type": ("string", TEXT),
    "preset": ("string", TEXT),
    "precision": ("string", TEXT),
    "per_device_batch_size": ("Int64", COUNT),
    "global_batch_size": ("Int64", COUNT),
    "scaling": ("string", TEXT),
    "steps_per_round": ("Int64", COUNT),
    "rounds": ("Int64", None),  # how many rounds were measured: the length of the controller's stats.data
    "samples_per_s": ("float64", None),  # recomputed from round_times_s, not the record's convenience copy
    "round_times_s": ("object", SECONDS),  # the ranks' own times (the slowest rank per round): the measurement
    "controller_round_times_s": ("object", None),  # pytest-benchmark's stats.data: the check on them
    "flops_per_sample": ("float64", NUMBER),
    "num_params": ("Int64", None),
    "peak_flops_per_s": ("float64", POSITIVE),
    "compute_devices": ("Int64", COUNT),  # how many matmul peaks the case had: world_size on cuda, 1 on cpu
    "launch_s": ("float64", None),
    "peak_memory_bytes": ("float64", None),
    "memory_capacity_bytes": ("float64", None),  # per device: GPU memory, or the machine's RAM on CPU
    "energy_j": ("float64", None),
    "memory_used_fraction": ("float64", None),  # fullest device's memory in use, as memory_near_capacity judges it
    "util_mean_pct": ("float64", None),
    "throttle_fraction": ("float64", None),  # the largest thermal, power-brake or hardware-slowdown share of any device
    "telemetry_source": ("string", None),
    "flags": ("object", None),
    "unstable_reasons": ("object", None),  # the benchmark's one-line reasons for the "unstable" flag ([] when stable)
    "baseline_only": ("boolean", FLAG),
    "timing_gap_fraction": ("float64", NUMBER),
    # Memory sizing (issue 13): predicted beside measured step peak, and --find-max-batch's answer.
    "predicted_peak_bytes": ("float64", None),
    "predicted_peak_parts_bytes": ("object", None),  # that peak by part, {} when absent (numbers only)
    "measured_step_peak_bytes": ("float64", None),
    "predicted_peak_error_fraction": ("float64", None),  # the benchmark's, like with like (docs/record.md)
    "max_per_device_batch_size": ("float64", None),
    "max_batch_samples_per_s": ("float64", None),
    # Issue 20: the slowest rank's step split from one profiled round (checked by step_breakdown below); None
    # where not measured (the record's step_breakdown_reason says why).
    "step_breakdown": ("object", None),
}
CASE_COLUMNS: dict[str, str] = {column: dtype for column, (dtype, _) in CASE_SCHEMA.items()}
REQUIRED_RECORD_KEYS: dict[str, str] = {column: kind for column, (_, kind) in CASE_SCHEMA.items() if kind}

# Every case's fate, passed or not: which case (the case identity) and what became of it.
OUTCOME_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "machine": "string",
    "case_id": "string",
    "status": "string",
    "reason": "string",
    **{column: CASE_COLUMNS[column] for column in CASE_IDENTITY},
}
OUTCOME_STATUSES = ("passed", "skipped", "failed")

RUN_COLUMNS: dict[str, str] = {
    "run_id": "string",
    "run_datetime": "datetime64[ns, UTC]",
    "machine": "string",
    "complete": "boolean",
    "passed": "Int64",
    "skipped": "Int64",
    "failed": "Int64",
}


# -- checks ----------------------------------------------------------------------------------------


def check_schema_version(path: str, version: object, where: str) -> None:
    if version is None:
        raise InputError(f"file {path}: {where} has no schema_version; expected one of "
                         f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}")
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InputError(f"file {path}: unknown schema_version {version!r} in {where}; this gpusizer reads "
                         f"schema_version {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))} "
                         f"(a newer gpusizer may read it)")


def check_record(where: str, record: dict) -> None:
    """Every required key present with a value of its kind (REQUIRED_RECORD_KEYS), else InputError."""
    for key, kind in REQUIRED_RECORD_KEYS.items():
        value = record.get(key)
        if value is None:
            raise InputError(f"{where}: the record has no {key!r}; see docs/record.md for the required keys")
        if kind == SECONDS:
            round_times(where, value, f"extra_info.{key}")
            continue
        types = _JSON_TYPES[kind]
        if (kind != FLAG and isinstance(value, bool)) or not isinstance(value, types) or (
                kind in (NUMBER, POSITIVE) and not is_number(value)):
            allowed = ("a finite " if kind in (NUMBER, POSITIVE) else "a ") + " or ".join(t.__name__ for t in types)
            raise InputError(f"{where}: {key!r} is {value!r}; expected {allowed}")
        if kind == COUNT and not 1 <= value <= MAX_COUNT:
            raise InputError(f"{where}: {key!r} is {value!r:.40}; expected an integer 1 to 2**53")
        if kind == POSITIVE and value <= 0:
            raise InputError(f"{where}: {key!r} is {value!r}; expected a number > 0")


# step_breakdown: the parts (seconds per step) of step_s, the timed step; profiled_step_s, what the profiled
# round took; overlapped communication may be null (not seen).
BREAKDOWN_PARTS = ("compute_s", "exposed_comm_s", "other_s", "idle_s")
BREAKDOWN_SECONDS = ("step_s", "profiled_step_s", *BREAKDOWN_PARTS, "overlapped_comm_s")


def step_breakdown(where: str, raw: object) -> dict | None:
    """The record's step_breakdown as a dict of floats (rank, source kept), None when null; InputError
    naming the key when it is not one (docs/record.md)."""
    if raw is None:
        return None
    name = "extra_info.step_breakdown"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: {name} is {type(raw).__name__} {raw!r:.40}; expected an object or null")
    parts = {}
    for key in BREAKDOWN_SECONDS:
        if key not in raw:
            raise InputError(f"{where}: {name} has no {key!r}; expected every one of {', '.join(BREAKDOWN_SECONDS)}")
        value = raw[key]
        if value is None and key == "overlapped_comm_s":
            parts[key] = math.nan
            continue
        if not is_number(value) or value < 0:
            raise InputError(f"{where}: {name}.{key} is {value!r:.40}; expected seconds per step >= 0")
        parts[key] = float(value)
    for key in ("step_s", "profiled_step_s"):
        if parts[key] <= 0:
            raise InputError(f"{where}: {name}.{key} is {parts[key]!r}; expected seconds per step > 0")
    total = sum(parts[key] for key in BREAKDOWN_PARTS)
    if abs(total - parts["step_s"]) > 1e-6 * parts["step_s"]:  # the chart stacks them to the step
        raise InputError(f"{where}: {name}'s parts ({' + '.join(BREAKDOWN_PARTS)}) add up to {total!r}, "
                         f"not its step_s {parts['step_s']!r}; expected them to add up to the step")
    return {**parts, "rank": raw.get("rank"), "source": text(raw.get("source"))}


def round_times(where: str, raw: object, name: str) -> list[float]:
    """A list of round times in seconds, as floats; InputError naming ``name`` if it is not one."""
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: {name} is {type(raw).__name__} {raw!r:.40}; expected a non-empty list of seconds")
    for value in raw:
        if not is_number(value) or value < MIN_ROUND_S:
            raise InputError(f"{where}: {name} holds {value!r:.40}; expected round times in seconds >= {MIN_ROUND_S:g}")
    return [float(value) for value in raw]


# -- values ----------------------------------------------------------------------------------------


def frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    """``rows`` as a table with exactly ``columns``, each of its declared dtype (also when empty)."""
    table = pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))
    for column, dtype in columns.items():
        if dtype == "object":
            table[column] = table[column].astype(object)
        elif dtype.startswith("datetime"):
            table[column] = pd.to_datetime(table[column], utc=True).astype(dtype)
        else:
            table[column] = table[column].astype(dtype)
    return table


def is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def number_or_nan(value: object) -> float:
    return float(value) if is_number(value) else math.nan


def count_or(value: object, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT else default


def text(value: object) -> str | None:
    return None if value is None else str(value)
