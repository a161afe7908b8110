"""The record's ``step_breakdown``: the slowest rank's step split from one profiled round after the timed
rounds (docs/record.md), or null with the reason; and ``step_breakdown_s``, what that round cost the case."""

from __future__ import annotations

import time

from bench.config.cases import BenchCase

BREAKDOWN_KEYS = ("step_s", "compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s", "rank", "source")
OFF_REASON = "not measured: off (run pytest bench/ with --step-breakdown)"


def step_breakdown_record(case: BenchCase, group, *, enabled: bool) -> dict:
    """Call after the timed rounds, with the group still up; every rank runs the profiled round together."""
    if not enabled:
        return {"step_breakdown": None, "step_breakdown_reason": OFF_REASON, "step_breakdown_s": None}
    profiled_rounds = getattr(group, "profiled_rounds", None)
    if profiled_rounds is None:
        return {"step_breakdown": None, "step_breakdown_s": None,
                "step_breakdown_reason": f"not measured: the {type(group).__name__} runs no profiled round"}
    began = time.perf_counter()
    ranks = profiled_rounds(case.steps_per_round)
    cost_s = time.perf_counter() - began
    failed = [rank["reason"] for rank in ranks if "reason" in rank]
    if failed:
        return {"step_breakdown": None, "step_breakdown_s": cost_s,
                "step_breakdown_reason": f"not measured: {'; '.join(failed)}"}
    # The step is not over until every rank's is: the slowest rank's split is the step's.
    slowest = max(ranks, key=lambda parts: parts["step_s"])
    return {"step_breakdown": {key: slowest[key] for key in BREAKDOWN_KEYS}, "step_breakdown_reason": None,
            "step_breakdown_s": cost_s}
