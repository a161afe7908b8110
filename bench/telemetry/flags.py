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


# Fewer samples than this in a case's measured window say nothing about utilisation, clocks or power
# (at 100 ms a sample, under a second of rounds): the record says so and no flag is raised from them.
MIN_TELEMETRY_SAMPLES = 10


def judged_telemetry_flags(telemetry: dict) -> list[str]:
    """``telemetry_flags`` when the window holds enough samples; marks ``telemetry`` (in place) with
    ``samples_too_few`` either way, so a reader sees why a short case has no telemetry flag."""
    too_few = int(telemetry.get("samples") or 0) < MIN_TELEMETRY_SAMPLES
    telemetry["samples_too_few"] = too_few
    return [] if too_few else telemetry_flags(telemetry)
