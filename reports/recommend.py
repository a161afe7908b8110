"""The answer: for each objective and workload, the best setup, what it cannot be told apart from, the
runners-up, the time-versus-cost frontier, and the warnings that could change the decision.

Ranks are by dominance, never by point estimates alone: a setup's rank is 1 + the number of setups
that are *clearly* better, i.e. whose whole 95% interval lies on the better side of its interval.
Two setups whose intervals overlap are "not distinguishable" and can share a rank. A setup without
an interval (a single round) overlaps everything. Only plain data comes out; render words it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.analyse import SUPERLINEAR_EFFICIENCY
from reports.load import ResultSet

# Thresholds for warnings. The timing-gap limit is the one bench/record.py flags with.
TIMING_GAP_LIMIT = 0.03
THROTTLE_LIMIT = 0.05  # share of sampled time a GPU was thermally or power throttled
LOW_UTILISATION_PCT = 50.0
MEMORY_HEADROOM_LIMIT = 0.10
RUNNERS_UP = 3


@dataclass(frozen=True)
class Objective:
    key: str
    title: str
    column: str  # the point estimate; "<column>_low" and "<column>_high" are its interval
    higher_is_better: bool
    unit: str

    def __post_init__(self) -> None:
        if not self.key or not self.column:
            raise ValueError("Objective: key and column are required")


FASTEST = Objective("fastest", "Fastest", "samples_per_s", True, "samples/s")
CHEAPEST = Objective("cheapest", "Cheapest per sample", "cost_per_million_samples", False, "per million samples")
LEAST_ENERGY = Objective("least_energy", "Least energy per sample", "joules_per_sample", False, "J/sample")
WITHIN_BUDGET = Objective("within_budget", "Fastest within the budget", "samples_per_s", True, "samples/s")
OBJECTIVES = (FASTEST, CHEAPEST, LEAST_ENERGY, WITHIN_BUDGET)


@dataclass(frozen=True)
class Pick:
    """The best setup of one workload for one objective, or why none was judged."""

    objective: Objective
    workload: str
    best: dict | None = None
    tied: tuple[dict, ...] = ()  # not distinguishable from the best
    runners_up: tuple[dict, ...] = ()  # the next setups by point estimate, with their ranks
    next_clearly_worse: dict | None = None  # the best setup that the winner clearly beats
    candidates: int = 0
    not_judged: str | None = None  # why none: a key of render.NOT_JUDGED_TEXT


@dataclass(frozen=True)
class Finding:
    """One warning: what kind, which setup or case, the number behind it and any reason from the file."""

    kind: str
    subject: str
    value: float | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Recommendation:
    setups: pd.DataFrame  # the summary with rank_<objective> and on_frontier columns added
    picks: tuple[Pick, ...]
    findings: tuple[Finding, ...]
    priced: bool
    budget: float | None


def recommend(setups: pd.DataFrame, results: ResultSet, *, priced: bool, budget: float | None = None) -> Recommendation:
    setups = setups.copy()
    picks: list[Pick] = []
    setups["candidate"] = ~setups["baseline_only"].astype(bool) if not setups.empty else pd.Series(dtype=bool)
    for objective in OBJECTIVES:
        setups[f"rank_{objective.key}"] = math.nan
    setups["on_frontier"] = False
    for workload in sorted(setups["preset"].unique()) if not setups.empty else []:
        in_workload = setups["preset"] == workload
        for objective in OBJECTIVES:
            pick, ranks = _judge(setups[in_workload & setups["candidate"]], objective, workload, priced, budget)
            picks.append(pick)
            setups.loc[ranks.index, f"rank_{objective.key}"] = ranks
        setups.loc[in_workload, "on_frontier"] = _frontier(setups[in_workload & setups["candidate"]]) \
            .reindex(setups.index[in_workload], fill_value=False)
    findings = tuple(_findings(setups, results, priced))
    return Recommendation(setups=setups, picks=tuple(picks), findings=findings, priced=priced, budget=budget)


def dominance_ranks(value: pd.Series, low: pd.Series, high: pd.Series, higher_is_better: bool) -> pd.Series:
    """1 + how many setups are clearly better (intervals do not overlap); NaN where the value is missing."""
    sign = 1.0 if higher_is_better else -1.0
    # In "bigger is better" terms, an interval missing (one round) stretches without bound.
    lows = np.where(np.isfinite(low), np.minimum(sign * low, sign * high), -np.inf)
    highs = np.where(np.isfinite(high), np.maximum(sign * low, sign * high), np.inf)
    known = np.isfinite(value.to_numpy(dtype=float))
    # Clearly better than setup i: any j whose low end is above i's high end. Counted by sorting, not
    # pairwise: thousands of setups would make an n x n matrix of gigabytes.
    sorted_lows = np.sort(lows[known])
    ranks = 1.0 + (sorted_lows.size - np.searchsorted(sorted_lows, highs, side="right"))
    return pd.Series(np.where(known, ranks, np.nan), index=value.index)


def _judge(candidates: pd.DataFrame, objective: Objective, workload: str, priced: bool,
           budget: float | None) -> tuple[Pick, pd.Series]:
    empty = pd.Series(dtype=float)
    if objective in (CHEAPEST, WITHIN_BUDGET) and not priced:
        return Pick(objective, workload, not_judged="no_prices"), empty
    if objective is WITHIN_BUDGET and budget is None:
        return Pick(objective, workload, not_judged="no_budget"), empty
    if objective in (CHEAPEST, WITHIN_BUDGET):
        candidates = candidates[np.isfinite(candidates["price_per_hour"].to_numpy(dtype=float))]
        if candidates.empty:
            return Pick(objective, workload, not_judged="no_price_match"), empty
    if objective is WITHIN_BUDGET:
        candidates = candidates[candidates["cost_to_target"] <= budget]
        if candidates.empty:
            return Pick(objective, workload, not_judged="nothing_fits"), empty
    candidates = candidates[np.isfinite(candidates[objective.column].to_numpy(dtype=float))]
    if candidates.empty:
        return Pick(objective, workload, not_judged="no_energy" if objective is LEAST_ENERGY else "no_candidates"), \
            empty
    column = objective.column
    ranks = dominance_ranks(candidates[column], candidates[f"{column}_low"], candidates[f"{column}_high"],
                            objective.higher_is_better)
    ordered = candidates.assign(**{f"rank_{objective.key}": ranks}).sort_values(
        [f"rank_{objective.key}", column], ascending=[True, not objective.higher_is_better])
    best = ordered.iloc[0]
    overlaps = _overlaps(best, ordered, column)
    tied = ordered.iloc[1:][overlaps.iloc[1:]]
    clearly_worse = ordered.iloc[1:][~overlaps.iloc[1:]]
    pick = Pick(
        objective=objective,
        workload=workload,
        best=best.to_dict(),
        tied=tuple(tied.to_dict("records")),
        runners_up=tuple(ordered.iloc[1:1 + RUNNERS_UP].to_dict("records")),
        next_clearly_worse=clearly_worse.iloc[0].to_dict() if not clearly_worse.empty else None,
        candidates=len(ordered),
    )
    return pick, ranks


def _overlaps(best: pd.Series, ordered: pd.DataFrame, column: str) -> pd.Series:
    low, high = ordered[f"{column}_low"], ordered[f"{column}_high"]
    best_low, best_high = best[f"{column}_low"], best[f"{column}_high"]
    if not (math.isfinite(best_low) and math.isfinite(best_high)):
        return pd.Series(True, index=ordered.index)
    unknown = ~(np.isfinite(low) & np.isfinite(high))
    return unknown | ((low <= best_high) & (high >= best_low))


def _frontier(candidates: pd.DataFrame) -> pd.Series:
    """Setups no other setup beats on both time and cost to train the target (point estimates)."""
    priced = candidates[np.isfinite(candidates["cost_to_target"].to_numpy(dtype=float))] \
        if "cost_to_target" in candidates else candidates.iloc[0:0]
    on = pd.Series(False, index=candidates.index)
    time_s, cost = priced["time_to_target_s"].to_numpy(), priced["cost_to_target"].to_numpy()
    for position, index in enumerate(priced.index):
        dominated = (time_s <= time_s[position]) & (cost <= cost[position]) & \
                    ((time_s < time_s[position]) | (cost < cost[position]))
        on[index] = not dominated.any()
    return on


def _findings(setups: pd.DataFrame, results: ResultSet, priced: bool):
    """Warnings that could change the decision, most serious first."""
    yield from _case_findings(results.outcomes, "failed")
    for run_id in results.runs.loc[~results.runs["complete"].fillna(True).astype(bool), "run_id"]:
        yield Finding("incomplete_run", str(run_id))
    needed = ["label", "flags", "scaling_efficiency", "mfu", "throttle_fraction", "telemetry_source", "util_mean_pct",
              "timing_gap_fraction", "memory_headroom_fraction", "baseline_only", "price_per_hour", "machine",
              "device_name"]
    for row in setups[needed].to_dict("records"):
        label, flags = row["label"], set(row["flags"])
        if row["scaling_efficiency"] > SUPERLINEAR_EFFICIENCY:
            yield Finding("superlinear", label, value=row["scaling_efficiency"])
        if "mfu_above_peak" in flags or row["mfu"] > 1.0:
            yield Finding("mfu_above_peak", label, value=row["mfu"])
        if "throttled" in flags or row["throttle_fraction"] > THROTTLE_LIMIT:
            yield Finding("throttled", label, value=_finite(row["throttle_fraction"]))
        gpu_idle = row["telemetry_source"] == "nvml" and row["util_mean_pct"] < LOW_UTILISATION_PCT
        if "low_utilisation" in flags or gpu_idle:
            yield Finding("low_utilisation", label, value=_finite(row["util_mean_pct"]))
        if "timing_gap" in flags or row["timing_gap_fraction"] > TIMING_GAP_LIMIT:
            yield Finding("timing_gap", label, value=row["timing_gap_fraction"])
        if "memory_near_capacity" in flags or row["memory_headroom_fraction"] < MEMORY_HEADROOM_LIMIT:
            yield Finding("memory_near_capacity", label, value=_finite(row["memory_headroom_fraction"]))
        if row["baseline_only"]:
            yield Finding("baseline_only", label)
        if priced and not math.isfinite(row["price_per_hour"]):
            yield Finding("unpriced", label, detail=f"{row['machine']} / {row['device_name']}")
    yield from _mixed_workload_findings(setups)
    if not priced:
        yield Finding("no_prices", "all setups")
    if not setups.empty and not np.isfinite(setups["joules_per_sample"].to_numpy(dtype=float)).any():
        yield Finding("no_energy", "all setups")
    yield from _case_findings(results.outcomes, "skipped")


def _case_findings(outcomes: pd.DataFrame, status: str):
    """One finding per machine, case and reason, however many runs repeated it (the count is kept)."""
    chosen = outcomes[outcomes["status"] == status].fillna({"reason": "no reason recorded"})
    for (machine, case_id, reason), group in chosen.groupby(["machine", "case_id", "reason"], sort=False):
        runs = group["run_id"].nunique()
        subject = f"{machine}: {case_id}" + (f" (in {runs} runs)" if runs > 1 else "")
        yield Finding(status, subject, detail=str(reason))


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _mixed_workload_findings(setups: pd.DataFrame):
    """Setups are ranked within a preset; say so when a preset was measured at different batch sizes or
    scalings, since their throughputs are then not like for like."""
    if setups.empty:
        return
    for preset, group in setups.groupby("preset", sort=True):
        # What a run holds fixed: the per-device batch (weak scaling) or the global batch (strong).
        fixed = sorted({
            f"{int(row.per_device_batch_size)} per device (weak)" if row.scaling == "weak"
            else f"{int(row.per_device_batch_size) * int(row.world_size)} global (strong)"
            for row in group.itertuples()
        })
        if len(fixed) > 1:
            yield Finding("mixed_workload", f"preset {preset}", detail="batch " + ", ".join(fixed))
