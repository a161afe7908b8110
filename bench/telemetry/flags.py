"""Anomalies the telemetry shows, as record flags. Thresholds are named here and in docs/telemetry.md."""

from __future__ import annotations

# Held down by a thermal, power or hardware limit in more than this share of the samples. A GPU at
# full load touches its power cap now and then; a tenth of the run is no longer "now and then".
THROTTLED_FRACTION = 0.10
# NVML utilisation is the share of time any kernel ran; below this mean the GPU mostly waited
# (on the input, the CPU launching kernels, or communication).
LOW_UTILISATION_PCT = 50.0
# Peak memory used (whole device, as NVML counts it) above this share of the device's memory.
MEMORY_NEAR_CAPACITY_FRACTION = 0.90


def telemetry_flags(telemetry: dict) -> list[str]:
    """Flags for the record from a telemetry summary; GPU-only: the CPU fallback raises none."""
    flags = set()
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
