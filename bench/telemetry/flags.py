"""Anomalies the telemetry shows, as record flags. Thresholds: bench/record/flags.py and docs/record.md."""

from __future__ import annotations

# The thresholds live with every other flag's, in bench/record/flags.py (the one judge of each anomaly).
from bench.record.flags import (
    LOW_UTILISATION_PCT,
    MEMORY_NEAR_CAPACITY_FRACTION,
    MIN_TELEMETRY_SAMPLES,
    THROTTLED_FRACTION,
    cpu_memory_near_capacity,
)


def telemetry_flags(telemetry: dict, ram_bytes: float | None = None) -> list[str]:
    """Flags for the record from a telemetry summary. ``ram_bytes``: the machine's memory, against which
    a CPU case's process tree is judged (a GPU case is judged on its devices' memory)."""
    flags = set()
    if not telemetry.get("devices") and cpu_memory_near_capacity(
            (telemetry.get("cpu") or {}).get("peak_rss_bytes"), ram_bytes):
        flags.add("memory_near_capacity")
    for device in telemetry.get("devices", []):
        fractions = [f for f in device["throttle_fraction"].values() if f is not None]
        if fractions and max(fractions) > THROTTLED_FRACTION:
            flags.add("throttled")
        if device["util_mean_pct"] is not None and device["util_mean_pct"] < LOW_UTILISATION_PCT:
            flags.add("low_utilisation")
        used, total = device["memory_used_peak_bytes"], device["memory_total_bytes"]
        if used is not None and total and used > MEMORY_NEAR_CAPACITY_FRACTION * total:
            flags.add("memory_near_capacity")
    return sorted(flags)


def judged_telemetry_flags(telemetry: dict, ram_bytes: float | None = None) -> list[str]:
    """``telemetry_flags`` when the window holds enough samples; marks ``telemetry`` (in place) with
    ``samples_too_few`` either way, so a reader sees why a short case has no telemetry flag."""
    too_few = int(telemetry.get("samples") or 0) < MIN_TELEMETRY_SAMPLES
    telemetry["samples_too_few"] = too_few
    return [] if too_few else telemetry_flags(telemetry, ram_bytes)
