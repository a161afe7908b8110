"""Reduce what the sampler saw to the record's ``telemetry`` dict (docs/record.md). Raw facts only:
means, maxima, energy; what could not be measured is ``None`` with the reason next to it."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from gpusizer_common import metrics

if TYPE_CHECKING:  # annotations only: the sampler imports this module to summarise itself
    from bench.telemetry.sampler import DeviceTrace, Sampler

# Clock-event reason bits (nvml.h, nvmlClocksEventReason*). Idle, application clocks and display
# clocks are choices, not limits, and sync boost follows other GPUs: none of them count.
THERMAL_MASK = 0x20 | 0x40  # software thermal slowdown, hardware thermal slowdown
POWER_MASK = 0x80  # hardware power brake (an external signal: the power supply or the board asks for it)
OTHER_MASK = 0x08  # hardware slowdown (the driver does not say whether thermal or power)
# The software power cap is not throttling: a GPU under full load runs at its power limit by design
# (most heavy H100 cases have this bit set at their cap), so it is recorded on its own.
POWER_CAP_MASK = 0x04


def _present(values: list) -> list:
    return [v for v in values if v is not None]


def _mean(values: list) -> float | None:
    values = _present(values)
    return sum(values) / len(values) if values else None


def _max(values: list) -> float | None:
    values = _present(values)
    return max(values) if values else None


def trapezoid_j(times_s: list[float], power_w: list[float | None]) -> float | None:
    """Energy over the sampled span from power readings; ``None`` with fewer than two readings."""
    points = [(t, p) for t, p in zip(times_s, power_w) if p is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def throttle_fraction(reasons: list[int | None]) -> dict[str, float | None]:
    """Fraction of the samples in which each kind of limit held the clocks down."""
    known = _present(reasons)
    if not known:
        return {"thermal": None, "power": None, "other": None}
    return {kind: sum(1 for bits in known if bits & mask) / len(known)
            for kind, mask in (("thermal", THERMAL_MASK), ("power", POWER_MASK), ("other", OTHER_MASK))}


def power_cap_fraction(reasons: list[int | None]) -> float | None:
    """Fraction of the samples in which the GPU ran at its software power cap (not throttling)."""
    known = _present(reasons)
    return sum(1 for bits in known if bits & POWER_CAP_MASK) / len(known) if known else None


def device_energy(trace: DeviceTrace) -> tuple[float | None, str | None, str | None]:
    """``(joules, source, reason)``: the energy counter's difference, else the power integral."""
    if trace.lost:
        return None, None, f"GPU lost during the measurement ({trace.lost}); its energy is unknown"
    counter = _present(trace.values["energy_mj"])
    if len(counter) >= 2:
        return (counter[-1] - counter[0]) / 1000.0, "counter", None
    integral = trapezoid_j(trace.times_s, trace.values["power_w"])
    if integral is not None:
        return integral, "power_integral", None
    missing = "; ".join(trace.unavailable.get(f, "too few samples") for f in ("energy_mj", "power_w"))
    return None, None, f"no energy counter and no power readings: {missing}"


def _joules_per_sample(energy_j: float | None, samples_trained: int) -> float | None:
    """The one definition (gpusizer_common/metrics.py); None where the energy is unknown or nothing trained."""
    return metrics.joules_per_sample(energy_j, samples_trained) if energy_j is not None and samples_trained else None


def device_summary(trace: DeviceTrace, samples_trained: int) -> dict:
    values = trace.values
    energy_j, energy_source, energy_reason = device_energy(trace)
    return {
        "uuid": trace.ref.uuid,
        "pci_bus_id": trace.ref.pci_bus_id,
        "name": trace.name,
        "index": trace.ref.index,
        "samples": len(trace.times_s),
        "util_mean_pct": _mean(values["util_pct"]),
        "util_max_pct": _max(values["util_pct"]),
        "memory_used_peak_bytes": _max(values["memory_used_bytes"]),
        "memory_total_bytes": trace.memory_total_bytes,
        "power_mean_w": _mean(values["power_w"]),
        "energy_j": energy_j,
        "energy_source": energy_source,
        "energy_reason": energy_reason,
        "joules_per_sample": _joules_per_sample(energy_j, samples_trained),
        "temperature_max_c": _max(values["temperature_c"]),
        "sm_clock_mean_mhz": _mean(values["sm_clock_mhz"]),
        "throttle_fraction": throttle_fraction(values["throttle_reasons"]),
        "power_cap_fraction": power_cap_fraction(values["throttle_reasons"]),
        "memory_info_version": trace.memory_info_version,
        "unavailable": dict(trace.unavailable),
        "lost": trace.lost,
    }


def cpu_utilisation(intervals: list[tuple[float, float]], cores: int | None,
                    interval_s: float) -> tuple[float | None, float | None]:
    """``(mean, max)`` % of the usable cores the process tree kept busy. The mean is time-weighted
    over the whole window; the max skips intervals shorter than half the sampling interval, whose
    CPU times are too coarse (the kernel counts in clock ticks of 10 ms) to say anything alone."""
    elapsed_s = sum(elapsed for _, elapsed in intervals)
    if not cores or not elapsed_s:
        return None, None
    mean = 100.0 * sum(busy for busy, _ in intervals) / (elapsed_s * cores)
    full = [100.0 * busy / (elapsed * cores) for busy, elapsed in intervals if elapsed >= interval_s / 2]
    return mean, max(full, default=None)


def cpu_summary(sampler: Sampler) -> dict:
    rapl = sampler.rapl
    energy_j = rapl.energy_j() if rapl is not None else None
    util_mean, util_max = cpu_utilisation(sampler.cpu_intervals, sampler.cores, sampler.interval_s)
    return {
        "util_mean_pct": util_mean,
        "util_max_pct": util_max,
        "peak_rss_bytes": _max(sampler.tree_rss_bytes),
        "energy_j": energy_j,
        "energy_reason": None if energy_j is not None else (rapl.reason if rapl else "sampler never started"),
    }


def summarise(sampler: Sampler, *, samples_trained: int) -> dict:
    devices = [device_summary(trace, samples_trained) for trace in sampler.devices]
    cpu = cpu_summary(sampler)
    if devices:
        energies = [d["energy_j"] for d in devices]
        energy_j = sum(energies) if None not in energies else None
    else:
        energy_j = cpu["energy_j"]
    reasons = [r for r in (sampler.nvml_reason, sampler.error) if r]
    duration_s = (sampler.ended_s - sampler.began_s) if sampler.began_s is not None and sampler.ended_s else None
    return {
        "source": "nvml" if devices else "cpu",
        "interval_s": sampler.interval_s,
        "samples": sampler.ticks,
        "duration_s": duration_s,
        "devices": devices,
        "cpu": cpu,
        "energy_j": energy_j,
        "joules_per_sample": _joules_per_sample(energy_j, samples_trained),
        "sampler_cpu_s": sampler.thread_cpu_s,
        "outside": sampler.outside.summary(sampler.device_type),
        "reason": "; ".join(reasons) or None,
    }
