"""Values the loader derives rather than copies: one number per case from the telemetry's per-device
summaries and the machine inventory. (Throughput from the round times is gpusizer_common/metrics.py's.)"""

from __future__ import annotations

import math

import numpy as np

from gpusizer_common.device_type import is_cuda
from reports.schema import is_number, number_or_nan, text


def inventory(machine_info: dict) -> dict:
    """``machine_info["gpusizer"]``: the inventory bench/ adds to pytest-benchmark's machine_info."""
    found = machine_info.get("gpusizer") if isinstance(machine_info, dict) else None
    return found if isinstance(found, dict) else {}


def inventory_gpus(machine_info: dict) -> list:
    gpus = inventory(machine_info).get("gpus")
    return gpus if isinstance(gpus, list) else []


def cpu_model(machine_info: dict) -> str | None:
    cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), dict) else {}
    return text(inventory(machine_info).get("cpu_model") or cpu.get("brand_raw"))


def machine_columns(machine_info: dict) -> dict:
    """The case table's columns about the machine; ``_``-keys are for memory_capacity only, not columns."""
    found = inventory(machine_info)
    gpus = inventory_gpus(machine_info)
    instance = found.get("instance") if isinstance(found.get("instance"), dict) else {}
    return {
        "instance_type": text(instance.get("instance_type")),
        "gpu_count": len(gpus),
        "cpu_model": cpu_model(machine_info),
        "driver_version": text(found.get("driver_version")),
        "cuda_version": text(found.get("cuda_version")),
        "torch_version": text(found.get("torch_version")),
        "_gpu_memory_bytes": [gpu.get("memory_total_bytes") for gpu in gpus if isinstance(gpu, dict)],
        "_ram_bytes": found.get("memory_total_bytes"),
    }


def memory_capacity(devices: list[dict], context: dict, device_type: str) -> float:
    """Per-device memory the case could use: from telemetry, else the inventory; RAM on CPU."""
    if is_cuda(device_type):
        totals = [d.get("memory_total_bytes") for d in devices] or context.get("_gpu_memory_bytes") or []
        totals = [t for t in totals if is_number(t) and t > 0]
        return float(min(totals)) if totals else math.nan
    return number_or_nan(context.get("_ram_bytes"))


def memory_used_fraction(devices: list[dict], cpu: dict, context: dict) -> float:
    """The share of memory in use on the fullest device, read as the benchmark's "memory_near_capacity"
    flag judges it (bench/telemetry/flags.py): NVML's used over total on a GPU; on a CPU the process
    tree's peak RSS over the machine's RAM. The report shows this number beside that flag."""
    shares = [d["memory_used_peak_bytes"] / d["memory_total_bytes"] for d in devices
              if is_number(d.get("memory_used_peak_bytes")) and is_number(d.get("memory_total_bytes"))
              and d["memory_total_bytes"] > 0]
    if shares:
        return float(max(shares))
    rss, ram = cpu.get("peak_rss_bytes"), context.get("_ram_bytes")
    return float(rss / ram) if not devices and is_number(rss) and is_number(ram) and ram > 0 else math.nan


def util_mean(devices: list[dict], cpu: dict) -> float:
    values = [d.get("util_mean_pct") for d in devices if is_number(d.get("util_mean_pct"))]
    if values:
        return float(np.mean(values))
    return number_or_nan(cpu.get("util_mean_pct"))


def throttle(devices: list[dict]) -> float:
    shares = []
    for device in devices:
        fractions = device.get("throttle_fraction")
        if isinstance(fractions, dict):
            # The reasons the benchmark's "throttled" flag counts (bench/telemetry/summary.py: thermal, the
            # hardware power brake, the hardware slowdown), so the number shown beside the flag is the one
            # it was judged on. Idle clock-downs and the software power cap are not among them.
            shares.extend(value for value in fractions.values() if is_number(value))
    return float(max(shares)) if shares else math.nan
