"""The record's ``step_breakdown``: the slowest rank's step split from one profiled round after the timed
rounds (docs/record.md), or null with the reason; and ``step_breakdown_s``, what that round cost the case.

The profiler slows the round it watches (on CPU every recorded op costs the host a little; FSDP's many
small ops cost it most), and a single round strays from the median of the timed ones. So the split keeps
the profiled round's *shares* and states them in seconds of the step the timed rounds measured: the parts
add up to the measured step, and ``profiled_step_s`` keeps what the profiled round itself took, so the
dilation (profiled / timed - 1) is in the record and in the report for anyone who doubts the shares.
"""

from __future__ import annotations

import time

from bench.config.cases import BenchCase
from bench.launch.base import WorkerGroup

BREAKDOWN_KEYS = ("step_s", "compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s",
                  "profiled_step_s", "rank", "source")
SECONDS_PARTS = ("compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s")
OFF_REASON = "not measured: off (run pytest bench/ with --step-breakdown)"


def on_timed_step(parts: dict, timed_step_s: float) -> dict:
    """One rank's profiled split restated on the timed step: each part keeps its share of the profiled step."""
    scale = timed_step_s / parts["step_s"]
    split = {key: (None if parts[key] is None else parts[key] * scale) for key in SECONDS_PARTS}
    source = (f"{parts['source']}; shares of the profiled round ({parts['step_s'] * 1e3:.4g} ms/step) applied to "
              f"the timed step ({timed_step_s * 1e3:.4g} ms/step)")
    return {**split, "step_s": timed_step_s, "profiled_step_s": parts["step_s"], "rank": parts["rank"],
            "source": source}


def step_breakdown_lost(error: Exception) -> dict:
    """The record's keys when a rank was lost in the profiled round: the case's timed rounds stand."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return {"step_breakdown": None, "step_breakdown_s": None,
            "step_breakdown_reason": f"not measured: the profiled round lost a rank: {first_line}"}


def step_breakdown_record(case: BenchCase, group: WorkerGroup, *, enabled: bool, timed_step_s: float) -> dict:
    """Call after the timed rounds, with the group still up; every rank runs the profiled round together.
    ``timed_step_s``: the step the timed rounds measured (median round / steps), on which the parts are stated."""
    if not enabled:
        return {"step_breakdown": None, "step_breakdown_reason": OFF_REASON, "step_breakdown_s": None}
    began = time.perf_counter()
    ranks = group.profiled_rounds(case.steps_per_round)
    cost_s = time.perf_counter() - began
    failed = [rank["reason"] for rank in ranks if "reason" in rank]
    if failed:
        return {"step_breakdown": None, "step_breakdown_s": cost_s,
                "step_breakdown_reason": f"not measured: {'; '.join(failed)}"}
    # The step is not over until every rank's is: the slowest rank's split is the step's.
    slowest = max(ranks, key=lambda parts: parts["step_s"])
    split = on_timed_step(slowest, timed_step_s)
    return {"step_breakdown": {key: split[key] for key in BREAKDOWN_KEYS}, "step_breakdown_reason": None,
            "step_breakdown_s": cost_s}
