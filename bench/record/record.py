"""The result record written into each benchmark's ``extra_info``: raw facts, names with units.

docs/record.md is the contract with reports/. Bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import statistics

from bench.config.cases import BenchCase
from bench.hardware.devices import compute_devices, is_cuda
from bench.record.flags import MIN_TELEMETRY_SAMPLES, TIMING_GAP_LIMIT, apply_stability, round_spread_fraction
from bench.strategies import REGISTRY
from gpusizer_common import metrics

SCHEMA_VERSION = 1



def slowest_rank_per_round(rank_times_s: list[list[float]]) -> list[float]:
    """Per round, the slowest rank's own time: the round is not over until every rank is."""
    return [max(times) for times in rank_times_s]


def timing_gap_fraction(controller_s: list[float], worker_s: list[float]) -> float:
    worker_median = statistics.median(worker_s)
    return abs(statistics.median(controller_s) - worker_median) / worker_median


def outside_busy_pct(telemetry: dict, device_type: str) -> tuple[float | None, str | None]:
    """How busy processes outside the benchmark kept the case's device (the telemetry's ``outside``)."""
    outside = telemetry.get("outside") or {}
    if is_cuda(device_type) and telemetry.get("samples_too_few"):
        # The GPU share is a mean of NVML's per-tick process samples: too few ticks say nothing, and no
        # flag is raised from a window that short (the CPU share is a difference of CPU times: it holds).
        return None, f"fewer than {MIN_TELEMETRY_SAMPLES} telemetry samples in the measured window"
    value = outside.get("gpu_busy_pct" if is_cuda(device_type) else "cpu_busy_pct")
    return value, (None if value is not None else outside.get("reason") or "not sampled")


def build_record(
    case: BenchCase,
    *,
    controller_round_times_s: list[float],
    worker_round_times_s: list[float],
    device_name: str,
    threads_per_rank: int,
    peak_flops_per_s: float,
    launch_s: float,
    peak_memory_bytes: int,
    telemetry: dict,
    extra_flags: list[str] = (),
) -> dict:
    strategy = REGISTRY[case.strategy]
    config = case.model_config
    # The ranks' own round times say how fast training ran; the controller's (which add the IPC of
    # each round) only check them, through timing_gap.
    samples_per_s = metrics.samples_per_s(metrics.samples_per_round(case.global_batch_size, case.steps_per_round),
                                          worker_round_times_s)
    gap = timing_gap_fraction(controller_round_times_s, worker_round_times_s)
    devices = compute_devices(case.device_type, case.world_size)
    flags = list(extra_flags)
    if gap > TIMING_GAP_LIMIT:
        flags.append("timing_gap")
    if metrics.mfu(samples_per_s, config.flops_per_sample, peak_flops_per_s, devices) > 1:
        flags.append("mfu_above_peak")
    if strategy.baseline_only:
        flags.append("baseline_only")
    outside_pct, outside_reason = outside_busy_pct(telemetry, case.device_type)
    record = {
        "schema_version": SCHEMA_VERSION,
        **case.identity(),
        "baseline_only": strategy.baseline_only,
        "launcher": strategy.launcher,
        "device_name": device_name,
        "threads_per_rank": threads_per_rank,
        "model_config": config.as_dict(),
        "num_params": config.num_params,
        "flops_per_sample": config.flops_per_sample,
        "steps_per_round": case.steps_per_round,
        "warmup_rounds": case.warmup_rounds,
        "rounds": case.rounds,
        "round_times_s": list(worker_round_times_s),
        "samples_per_s": samples_per_s,
        "timing_gap_fraction": gap,
        "peak_flops_per_s": peak_flops_per_s,
        "compute_devices": devices,
        "launch_s": launch_s,
        "peak_memory_bytes": peak_memory_bytes,
        "telemetry": telemetry,
        "flags": sorted(set(flags)),
        "skipped_reason": None,
        # Stability (bench/record/flags.py): the end-of-session peak is filled in when the session ends.
        "round_spread_fraction": round_spread_fraction(list(controller_round_times_s)),
        "outside_busy_pct": outside_pct,
        "outside_busy_reason": outside_reason,
        "peak_flops_end_per_s": None,
    }
    return apply_stability(record)
