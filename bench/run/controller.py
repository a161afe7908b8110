"""Drives one case: skip check, launch, warm-up, the timed rounds, the record. Strategy-agnostic.

The pytest process only drives and records: every strategy trains in rank processes its launcher
started, and the heavy probes (matmul peak, all-reduce ceiling, --verify's reference) run in processes
of their own too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import psutil

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.hardware.bandwidth import allreduce_ceiling
from bench.hardware.devices import device_count, device_name, device_unavailable_reason, is_cuda
from bench.hardware.peak import matmul_peak_flops_per_s
from bench.launch import LAUNCHERS, WorkerGroup
from bench.launch.remote import WorkerError
from bench.record.case_facts import add_case_facts
from bench.record.memory_model import memory_record
from bench.record.record import build_record, slowest_rank_per_round
from bench.record.step_split import step_breakdown_lost, step_breakdown_record
from bench.run.group_pool import Acquired, GroupPool
from bench.run.out_of_memory import device_memory_bytes, too_large_reason
from bench.run.round_sizing import size_rounds
from bench.run.verify import case_reference, check_case
from bench.strategies import REGISTRY
from bench.telemetry import Sampler
from bench.telemetry.flags import judged_telemetry_flags
from gpusizer_common import metrics
from reference_model import unsupported_reason


def skip_reason(case: BenchCase) -> str | None:
    """Why this machine cannot run the case, saying how to get what is missing; None when it can."""
    reason = device_unavailable_reason(case.device_type)
    if reason:
        return reason
    available = device_count(case.device_type)
    if case.world_size > available and not case.hosts:  # a multi-node case counts --hosts slots instead
        unit = "GPUs" if is_cuda(case.device_type) else "CPU cores (one worker process each)"
        return f"world size {case.world_size} needs {case.world_size} {unit}; this machine has {available}"
    reason = REGISTRY[case.strategy].unavailable_reason(case.device_type, case.world_size, case.precision)
    if reason:
        return reason
    reason = unsupported_reason(case.precision, case.device_type)
    if reason:
        return reason
    # Before anything is allocated: a case whose training state alone exceeds the memory cannot run.
    return too_large_reason(case, device_memory_bytes(case.device_type))


def interconnect_skip_reason(case: BenchCase, ceiling_timeout_s: float) -> str | None:
    """Why the case's devices cannot communicate, from the all-reduce ceiling at its world size.

    Measured once per world size per session (before the first case of it, outside any round) and
    kept: when it fails or does not answer within ``ceiling_timeout_s``, every case of that world
    size is skipped at once instead of each waiting for its launch or round deadline.
    """
    if case.world_size < 2 or case.hosts:
        return None  # multi-node cases measure their ceilings across the hosts (bench/hardware/multinode_bandwidth.py)
    ceiling = allreduce_ceiling(case.device_type, case.world_size, timeout_s=ceiling_timeout_s)
    if ceiling["reason"] is None:
        return None
    return (f"the all-reduce ceiling ({ceiling['backend']}) between {case.world_size} {case.device_type} "
            f"ranks failed, so every case of world size {case.world_size} is skipped: {ceiling['reason']}")


@dataclass
class RoundDriver:
    """The function pytest-benchmark times: one call = one round of K steps on every rank."""

    group: WorkerGroup
    steps: int
    rank_times_s: list[list[float]] = field(default_factory=list)

    def __call__(self) -> None:
        self.rank_times_s.append(self.group.run_round(self.steps))


def measure_case(case: BenchCase, benchmark, options: BenchOptions, pool: GroupPool | None = None) -> dict:
    """Run the case under ``benchmark`` and return its record (also stored in extra_info).

    Without ``pool`` the case launches its own group and closes it; with one (the pytest session's,
    bench/run/group_pool.py) a launched group is kept up for the next case that shares it."""
    # Measured before launch, outside the rounds, once per session and thread layout, in probe rank
    # processes with the threads of this case's ranks (bench/hardware/peak.py).
    probe_timeout_s = options.launch_timeout_s + options.round_timeout_s
    peak_flops_per_s = matmul_peak_flops_per_s(case.device_type, case.precision,
                                               REGISTRY[case.strategy].processes(case.world_size),
                                               timeout_s=probe_timeout_s)
    # The communication ceiling between these devices (stored with the machine, not the case) was
    # measured by interconnect_skip_reason before this case; asked again here it is a cache hit.
    if case.world_size > 1 and not case.hosts:
        allreduce_ceiling(case.device_type, case.world_size, timeout_s=options.ceiling_timeout_s)
    elif case.hosts:  # multi-node: across the hosts and within the first one
        from bench.hardware.multinode_bandwidth import multinode_ceilings

        multinode_ceilings(case, options.cluster, timeout_s=options.ceiling_timeout_s)
    # --verify's reference trains single in a rank process of its own, before the case's memory is in use.
    reference = case_reference(case, timeout_s=probe_timeout_s) if options.verify else None
    # With a pool, a launched group may come from the previous case of the same strategy, world size
    # and hosts (rebuilt for this one) and goes back to it only if this case ends cleanly.
    if pool is None:
        launcher = LAUNCHERS[REGISTRY[case.strategy].launcher]
        acquired = Acquired(launcher(case, launch_timeout_s=options.launch_timeout_s,
                                     round_timeout_s=options.round_timeout_s), reused=False)
    else:
        acquired = pool.acquire(case, launch_timeout_s=options.launch_timeout_s,
                                round_timeout_s=options.round_timeout_s)
    group = acquired.group
    clean = False
    try:
        # --verify: before measuring, the training about to be timed must be the same as single's.
        verified = check_case(case, group, reference) if options.verify else None
        del reference
        # Calibration and warm-up run here rather than through pedantic's warmup_rounds so the sampler
        # covers the measured rounds only; pytest-benchmark never sees those calls.
        sizing = size_rounds(lambda steps: max(group.run_round(steps)), steps_per_round=case.steps_per_round,
                             min_round_s=options.resolved_min_round_s(case.device_type),
                             warmup_rounds=case.warmup_rounds,
                             warmup_s=options.resolved_warmup_s(case.device_type))
        sized_case = dataclasses.replace(case, steps_per_round=sizing.steps_per_round)
        driver = RoundDriver(group, sized_case.steps_per_round)
        # The ranks are children of this process; the launcher also names their pids.
        sampler = Sampler(case.device_type, list(range(case.world_size)), pids=tuple(group.pids))
        with sampler:
            benchmark.pedantic(driver, rounds=case.rounds, warmup_rounds=0, iterations=1)
        peak_memory = group.peak_memory_bytes()
        telemetry = sampler.summary(samples_trained=sized_case.global_batch_size * sized_case.steps_per_round
                                    * case.rounds)
        record = build_record(
            sized_case,
            controller_round_times_s=list(benchmark.stats.stats.data),
            worker_round_times_s=slowest_rank_per_round(driver.rank_times_s),
            device_name=device_name(case.device_type),
            threads_per_rank=group.threads_per_rank,
            peak_flops_per_s=peak_flops_per_s,
            launch_s=group.launch_s,
            peak_memory_bytes=peak_memory,
            telemetry=telemetry,
            extra_flags=judged_telemetry_flags(telemetry, ram_bytes=psutil.virtual_memory().total),
        )
        add_case_facts(record, case, group)  # before close: the group still has the ranks' facts
        record.update(steps_per_round_requested=case.steps_per_round, round_sizing=sizing.as_dict())
        record.update(memory_record(case, group))  # predicted beside measured peak, after the timed rounds
        record.update(getattr(group, "network", {}))  # multi-node: the interface and controller address used
        record.update(acquired.record_keys())  # group_reused, case_setup_s (launched strategies)
        # Last, after every timed round and measured peak: the profiler's cost touches none of them.
        try:
            record.update(step_breakdown_record(
                sized_case, group, enabled=options.step_breakdown,
                timed_step_s=metrics.seconds_to_train(sized_case.global_batch_size, record["samples_per_s"])))
            clean = True
        except WorkerError as error:
            # A rank lost (crashed, or past --round-timeout-s) in the profiled round costs the split, not the
            # measured case; the group, no longer whole, is closed rather than reused (clean stays False).
            record.update(step_breakdown_lost(error))
    except KeyboardInterrupt:
        # Ctrl-C, SIGTERM, SIGHUP: the user wants out now, so no waiting for a clean exit of the ranks.
        group.abort()
        raise
    finally:
        if pool is None:
            group.close()
        else:
            pool.release(case, group, clean=clean)  # any failure: closed, never reused
    if verified is not None:
        record["verify_max_abs_difference"] = verified.max_abs_difference
    benchmark.extra_info.update(record)
    return record
