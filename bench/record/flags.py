"""Every anomaly flag a record can carry, and the one threshold behind each.

The benchmark is the only judge: it decides each flag when it writes the record, with the numbers
below, and reports/ reads the flags without re-judging (docs/record.md lists flags and thresholds).
A new flag is a name in a record's ``flags``; the report shows any flag it finds, so adding one here
(and its line in docs/record.md) is enough to reach the reader.
"""

from __future__ import annotations

import statistics

from bench.hardware.devices import is_cuda

# -- timing --------------------------------------------------------------------------------------
# The controller's and the workers' median round times should agree; beyond this: ``timing_gap``.
TIMING_GAP_LIMIT = 0.03

# -- telemetry (GPU) -----------------------------------------------------------------------------
# Held down by a thermal or hardware slowdown (the hardware power brake included; the software power
# cap is recorded apart as power_cap_fraction) in more than this share of the samples.
THROTTLED_FRACTION = 0.10
# NVML utilisation is the share of time any kernel ran; below this mean the GPU mostly waited
# (on the input, the CPU launching kernels, or communication).
LOW_UTILISATION_PCT = 50.0
# Peak memory used above this share of the capacity: NVML's whole-device memory on a GPU; on a CPU
# the process tree's peak resident memory against the machine's RAM.
MEMORY_NEAR_CAPACITY_FRACTION = 0.90

# Fewer samples than this in a case's measured window say nothing about utilisation, clocks or power
# (at 100 ms a sample, under a second of rounds): the record says so and no telemetry flag is raised.
MIN_TELEMETRY_SAMPLES = 10

# -- unstable: the machine did not hold still while the case was measured --------------------------
# The matmul peak measured at the start and again at the end of the session differs by more than
# this fraction: the device was slower (or faster) at one end, so every case of it is suspect.
PEAK_DRIFT_LIMIT = 0.10
# Processes outside the benchmark's own process tree kept more than this % of the case's device busy
# during its measured rounds (CPU: of the usable cores; GPU: SM utilisation by other processes).
OUTSIDE_BUSY_LIMIT_PCT = 10.0
# The rounds' interquartile range over their median. A quiet machine keeps rounds within a few %;
# a neighbour preempting some rounds spreads them far beyond this.
ROUND_SPREAD_LIMIT = 0.10


def round_spread_fraction(round_times_s: list[float]) -> float | None:
    """Interquartile range over median of the round times; None with fewer than two rounds."""
    if len(round_times_s) < 2:
        return None
    q1, _, q3 = statistics.quantiles(round_times_s, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(round_times_s)


def peak_end_over_start(start_flops_per_s: float | None, end_flops_per_s: float | None) -> float | None:
    if not start_flops_per_s or end_flops_per_s is None:
        return None
    return end_flops_per_s / start_flops_per_s


def unstable_reasons(*, peak_ratio: float | None, outside_busy_pct: float | None,
                     round_spread: float | None, device_type: str) -> list[str]:
    """One line per reason the case was measured on an unstable machine; empty when none."""
    reasons = []
    if peak_ratio is not None and abs(peak_ratio - 1.0) > PEAK_DRIFT_LIMIT:
        reasons.append(f"matmul peak at the session's end was {peak_ratio:.2f}x the peak at its start "
                       f"(limit {PEAK_DRIFT_LIMIT:.0%} apart)")
    if outside_busy_pct is not None and outside_busy_pct > OUTSIDE_BUSY_LIMIT_PCT:
        what = "GPU" if is_cuda(device_type) else "CPU cores"
        reasons.append(f"processes outside the benchmark kept {outside_busy_pct:.0f}% of the {what} busy during "
                       f"its rounds (limit {OUTSIDE_BUSY_LIMIT_PCT:.0f}%)")
    if round_spread is not None and round_spread > ROUND_SPREAD_LIMIT:
        reasons.append(f"its rounds spread by {round_spread:.0%} of the median (interquartile range; "
                       f"limit {ROUND_SPREAD_LIMIT:.0%})")
    return reasons


def apply_stability(record: dict, *, peak_end_flops_per_s: float | None = None) -> dict:
    """Write the stability keys and the ``unstable`` flag into ``record`` (in place; also returned).

    Called when the record is built (the end-of-session peak not yet known) and again at the end of the
    session with that peak, so the verdict always reads every number the record holds.
    """
    if peak_end_flops_per_s is not None:
        record["peak_flops_end_per_s"] = peak_end_flops_per_s
    ratio = peak_end_over_start(record.get("peak_flops_per_s"), record.get("peak_flops_end_per_s"))
    record["peak_end_over_start"] = ratio
    reasons = unstable_reasons(peak_ratio=ratio, outside_busy_pct=record.get("outside_busy_pct"),
                               round_spread=record.get("round_spread_fraction"),
                               device_type=record.get("device_type", "cpu"))
    record["unstable_reasons"] = reasons
    flags = set(record.get("flags", [])) - {"unstable"}
    if reasons:
        flags.add("unstable")
    record["flags"] = sorted(flags)
    return record


def cpu_memory_near_capacity(peak_tree_rss_bytes: float | None, ram_bytes: float | None) -> bool:
    return bool(peak_tree_rss_bytes and ram_bytes and peak_tree_rss_bytes > MEMORY_NEAR_CAPACITY_FRACTION * ram_bytes)
