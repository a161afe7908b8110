"""Drives one case: skip check, launch, warm-up, the timed rounds, the record. Strategy-agnostic."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.bandwidth import allreduce_ceiling
from bench.cases import BenchCase
from bench.devices import cuda_unavailable_reason, device_count, device_name
from bench.launch import LAUNCHERS, WorkerGroup
from bench.options import BenchOptions
from bench.peak import matmul_peak_flops_per_s
from bench.record import build_record, slowest_rank_per_round
from bench.strategies import REGISTRY
from bench.telemetry import Sampler, telemetry_flags
from bench.verify import check_case
from reference_model import unsupported_reason


def skip_reason(case: BenchCase) -> str | None:
    """Why this machine cannot run the case, saying how to get what is missing; None when it can."""
    if case.device_type == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            return reason
    available = device_count(case.device_type)
    if case.world_size > available and not case.hosts:  # a multi-node case counts --hosts slots instead
        unit = "GPUs" if case.device_type == "cuda" else "CPU cores (one worker process each)"
        return f"world size {case.world_size} needs {case.world_size} {unit}; this machine has {available}"
    reason = REGISTRY[case.strategy].unavailable_reason(case.device_type, case.world_size, case.precision)
    if reason:
        return reason
    return unsupported_reason(case.precision, case.device_type)


@dataclass
class RoundDriver:
    """The function pytest-benchmark times: one call = one round of K steps on every rank."""

    group: WorkerGroup
    steps: int
    rank_times_s: list[list[float]] = field(default_factory=list)

    def __call__(self) -> None:
        self.rank_times_s.append(self.group.run_round(self.steps))


def measure_case(case: BenchCase, benchmark, options: BenchOptions) -> dict:
    """Run the case under ``benchmark`` and return its record (also stored in extra_info)."""
    peak_device = torch.device("cuda", 0) if case.device_type == "cuda" else torch.device("cpu")
    # Measured before launch, outside the rounds, once per session.
    peak_flops_per_s = matmul_peak_flops_per_s(peak_device, case.precision)
    if case.world_size > 1 and not case.hosts:
        # The communication ceiling between these devices; stored with the machine, not the case.
        allreduce_ceiling(case.device_type, case.world_size, timeout_s=options.launch_timeout_s)
    elif case.hosts:  # multi-node: across the hosts and within the first one
        from bench.multinode_bandwidth import multinode_ceilings

        multinode_ceilings(case, options.cluster, timeout_s=options.launch_timeout_s)
    launcher = LAUNCHERS[REGISTRY[case.strategy].launcher]
    group = launcher(case, launch_timeout_s=options.launch_timeout_s, round_timeout_s=options.round_timeout_s)
    try:
        # --verify: before measuring, the training about to be timed must be the same as single's.
        verified = check_case(case, group) if options.verify else None
        driver = RoundDriver(group, case.steps_per_round)
        # Warm-up runs here rather than through pedantic's warmup_rounds so the sampler covers
        # the measured rounds only; pytest-benchmark never sees the warm-up calls.
        for _ in range(case.warmup_rounds):
            driver()
        driver.rank_times_s.clear()
        # The ranks are children of this process; a launcher may also name their pids.
        sampler = Sampler(case.device_type, list(range(case.world_size)), pids=tuple(getattr(group, "pids", ())))
        with sampler:
            benchmark.pedantic(driver, rounds=case.rounds, warmup_rounds=0, iterations=1)
        peak_memory = group.peak_memory_bytes()
        telemetry = sampler.summary(samples_trained=case.global_batch_size * case.steps_per_round * case.rounds)
        record = build_record(
            case,
            controller_round_times_s=list(benchmark.stats.stats.data),
            worker_round_times_s=slowest_rank_per_round(driver.rank_times_s),
            device_name=device_name(case.device_type),
            threads_per_rank=group.threads_per_rank,
            peak_flops_per_s=peak_flops_per_s,
            launch_s=group.launch_s,
            peak_memory_bytes=peak_memory,
            telemetry=telemetry,
            extra_flags=telemetry_flags(telemetry),
        )
        record.update(getattr(group, "network", {}))  # multi-node: the interface and controller address used
    finally:
        group.close()
    if verified is not None:
        record["verify_max_abs_difference"] = verified.max_abs_difference
    benchmark.extra_info.update(record)
    return record
