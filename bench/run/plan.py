"""``pytest bench/ --plan``: what a run would do and about how long it would take, before paying for it;
and the progress line after each case of a real run.

An estimate, not a measurement: nothing is started to make it (no worker, no ceiling, no matmul peak).
Launches, ceilings and peaks take the typical seconds below; a round lasts ``--min-round-s`` where
sizing is on, else the case's training FLOPs at an assumed sustained rate. Each constant says where
it comes from; the estimate is only as good as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.hardware.devices import compute_devices
from bench.hardware.peak import peak_key
from bench.strategies import REGISTRY
from gpusizer_common import metrics

# Popen to every rank ready. GPU: torchrun + CUDA context + NCCL init, 8-12 s per launched case
# (issue 9's reading of a default sweep); CPU: this project's loaded 2-core VM, 4-8 s. Every strategy
# launches its ranks: single's and dp's one plain rank process too (a little less: no launcher, no group).
LAUNCH_S = {"cuda": 10.0, "cpu": 6.0}
# A later case of a kept worker group (bench/run/group_pool.py) rebuilds model, optimizer and data in the
# running ranks instead of launching: about a second for the presets here (a guess, not yet measured
# on a GPU; CPU records show it as case_setup_s).
CASE_SETUP_S = {"cuda": 1.0, "cpu": 1.0}
# The all-reduce ceiling, once per world size: spawning its ranks plus ~0.2 s per message size.
CEILING_S = {"cuda": 15.0, "cpu": 8.0}
# The matmul peak, once per precision and thread layout: a probe process's start, three square shapes,
# each >= 0.2 s, plus warm-up.
PEAK_S = {"cuda": 3.0, "cpu": 3.0}
# Sustained training FLOP/s assumed per device when no round sizing sets the round length: about
# a third of an H100/H200's dense bf16 peak; what the whole 2-core CPU VM of this project reached
# (README: single-1 small, 4063 samples/s x 46 MFLOP).
ASSUMED_FLOPS_PER_S = {"cuda": 300e12, "cpu": 150e9}
# Calibration grows the steps by doubling, then scaling: the rounds it runs add up to about twice
# the final one.
CALIBRATION_ROUNDS_EQUIVALENT = 2.0


@dataclass(frozen=True)
class CaseEstimate:
    case_id: str
    skip_reason: str | None
    launch_s: float
    calibration_s: float
    warmup_s: float
    rounds_s: float
    profile_s: float = 0.0  # the profiled round of the step split, after the timed ones (with --step-breakdown)

    @property
    def total_s(self) -> float:
        return self.launch_s + self.calibration_s + self.warmup_s + self.rounds_s + self.profile_s


def round_s(case: BenchCase, min_round_s: float) -> float:
    """How long one measured round is expected to last."""
    step_flops = case.model_config.flops_per_sample * case.global_batch_size
    devices = compute_devices(case.device_type, case.world_size)
    natural_s = case.steps_per_round * step_flops / (ASSUMED_FLOPS_PER_S[case.device_type] * devices)
    return max(natural_s, min_round_s)


def estimate_case(case: BenchCase, options: BenchOptions, skip_reason: str | None,
                  reuses_group: bool = False) -> CaseEstimate:
    """``reuses_group``: the previous running case left its launched group up for this one."""
    if skip_reason is not None:
        return CaseEstimate(case.case_id, skip_reason, 0.0, 0.0, 0.0, 0.0)
    min_round_s = options.resolved_min_round_s(case.device_type)
    one_round_s = round_s(case, min_round_s)
    return CaseEstimate(
        case_id=case.case_id,
        skip_reason=None,
        launch_s=(CASE_SETUP_S if reuses_group else LAUNCH_S)[case.device_type],
        calibration_s=CALIBRATION_ROUNDS_EQUIVALENT * min_round_s if min_round_s > 0 else 0.0,
        warmup_s=max(options.resolved_warmup_s(case.device_type), case.warmup_rounds * one_round_s),
        rounds_s=case.rounds * one_round_s,
        profile_s=one_round_s if options.step_breakdown else 0.0,
    )


@dataclass(frozen=True)
class Plan:
    estimates: list[CaseEstimate]
    ceilings_s: float
    peaks_s: float

    @property
    def total_s(self) -> float:
        return sum(e.total_s for e in self.estimates) + self.ceilings_s + self.peaks_s

    def lines(self, price_per_hour: float | None) -> list[str]:
        rows = [f"{'case':<28} {'estimate':>9}  what"]
        for e in self.estimates:
            what = f"skip: {e.skip_reason}" if e.skip_reason else (
                f"launch {e.launch_s:.0f} s, calibration {e.calibration_s:.1f} s, warm-up {e.warmup_s:.1f} s, "
                f"rounds {e.rounds_s:.1f} s" + (f", profiled round {e.profile_s:.1f} s" if e.profile_s else ""))
            rows.append(f"{e.case_id:<28} {_duration(e.total_s):>9}  {what}")
        running = [e for e in self.estimates if not e.skip_reason]
        parts = {"launches": sum(e.launch_s for e in running), "calibration": sum(e.calibration_s for e in running),
                 "warm-up": sum(e.warmup_s for e in running), "rounds": sum(e.rounds_s + e.profile_s for e in running),
                 "ceilings": self.ceilings_s, "matmul peaks": self.peaks_s}
        rows.append(f"gpusizer plan: {len(running)} case(s) to run, {len(self.estimates) - len(running)} skipped; "
                    f"estimated wall time {_duration(self.total_s)} ("
                    + ", ".join(f"{name} {_duration(seconds)}" for name, seconds in parts.items()) + ")")
        if price_per_hour is not None:
            rows.append(f"gpusizer plan: estimated cost {metrics.cost_of(price_per_hour, self.total_s):.2f} at "
                        f"{price_per_hour:g} per hour")
        rows.append("gpusizer plan: nothing was started and no result file was written")
        return rows


def make_plan(cases: list[BenchCase], options: BenchOptions, skip_reason) -> Plan:
    """``skip_reason(case)``: the controller's cheap check (no worker, no ceiling)."""
    from bench.run.group_pool import group_key  # late: imports the launchers

    estimates, held_key = [], None
    for case in cases:
        reason = skip_reason(case)
        estimates.append(estimate_case(case, options, reason, reuses_group=reason is None
                                       and group_key(case) == held_key))
        if reason is None:
            held_key = group_key(case)  # a skipped case leaves the held group as it was
    running = [case for case, e in zip(cases, estimates) if not e.skip_reason]
    world_sizes = {(case.device_type, case.world_size) for case in running if case.world_size > 1}
    peaks = {(case.device_type, peak_key(case.device_type, case.precision,
                                         REGISTRY[case.strategy].processes(case.world_size))) for case in running}
    return Plan(estimates, sum(CEILING_S[device] for device, _ in world_sizes),
                sum(PEAK_S[device] for device, _ in peaks))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60.0
    return f"{minutes:.1f} min" if minutes < 60 else f"{math.floor(minutes / 60)} h {minutes % 60:.0f} min"


MIN_ESTIMATE_TO_SCALE_S = 10.0
MAX_SCALE = 5.0


class Progress:
    """After each case: how long the run has taken and, from the plan's estimates scaled by how the
    finished cases compared with theirs, how long the rest should take."""

    def __init__(self, plan: Plan, clock) -> None:
        self.clock = clock
        self.began_s = clock()
        self.pending = {e.case_id: e.total_s for e in plan.estimates}
        self.done_estimate_s = 0.0
        self.done = 0
        self.total = len(plan.estimates)

    def line(self, case_id: str, status: str) -> str:
        self.done_estimate_s += self.pending.pop(case_id, 0.0)
        self.done += 1
        elapsed_s = self.clock() - self.began_s
        left_estimate_s = sum(self.pending.values())
        # The plan's constants are rough; the run so far says how rough on this machine, once the
        # finished cases were estimated long enough to judge by (a skipped or tiny first case is not),
        # and within bounds, so one odd case does not turn the estimate into hours.
        ratio = 1.0
        if self.done_estimate_s >= MIN_ESTIMATE_TO_SCALE_S:
            ratio = min(max(elapsed_s / self.done_estimate_s, 1 / MAX_SCALE), MAX_SCALE)
        return (f"gpusizer: {self.done}/{self.total} {case_id} {status}; elapsed {_duration(elapsed_s)}, "
                f"estimated remaining {_duration(left_estimate_s * ratio)}")
