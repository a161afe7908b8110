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

# The benchmark judges every anomaly when it writes the record (bench/record/flags.py, docs/record.md); the
# report reads the flags and never re-judges with thresholds of its own. Each flag's number shown with it:
FLAG_VALUES = {
    "mfu_above_peak": "mfu",
    "throttled": "throttle_fraction",
    "low_utilisation": "util_mean_pct",
    "timing_gap": "timing_gap_fraction",
    # The flag's own measure (NVML used / total, or the tree's RSS / RAM), not the training's peak.
    "memory_near_capacity": "memory_free_fraction",
}
UNSTABLE = "unstable"
RUNNERS_UP = 3
# A choice needs at least this share of the judged setups measured steady (not flagged unstable). Below it
# the machine was busy for most of the run: the few steady setups are not the comparison that was asked
# for, and the answer is to measure again on a quiet machine (1 steady of 7 is no choice; 1 of 2 is).
MIN_STEADY_SHARE = 0.5


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
    candidates: int = 0  # the setups judged for this objective, steady or not
    steady: int = 0  # of them, those not flagged unstable
    # Setups measured on an unstable machine: never ranked clearly better or worse than another.
    withheld: tuple[dict, ...] = ()
    # Of those, the ones whose point estimate beats the best's: the best is then not the best measured.
    withheld_better: tuple[dict, ...] = ()
    not_judged: str | None = None  # why none: a key of words.NOT_JUDGED_TEXT

    @property
    def best_of_all(self) -> bool:
        """The best is also the best point estimate of every setup judged, the withheld ones included."""
        return self.best is not None and not self.withheld_better


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
    # An unstable setup's interval says nothing about the machine's real speed: it counts as unknown,
    # so it is never clearly better or worse than another, and a stable setup is preferred at equal rank.
    unstable = candidates["flags"].map(lambda flags: UNSTABLE in flags).astype(bool)
    low = candidates[f"{column}_low"].where(~unstable)
    high = candidates[f"{column}_high"].where(~unstable)
    # ...and it gets no rank of its own: "rank 1" would read as "among the best" for a setup that may be slow.
    ranks = dominance_ranks(candidates[column], low, high, objective.higher_is_better).where(~unstable)
    ordered = candidates.assign(**{f"rank_{objective.key}": ranks, "_unstable": unstable}).sort_values(
        [f"rank_{objective.key}", "_unstable", column], ascending=[True, True, not objective.higher_is_better])
    records = ordered.drop(columns="_unstable")
    withheld = ordered["_unstable"]
    steady = int((~withheld).sum())
    if steady < len(ordered) and steady < MIN_STEADY_SHARE * len(ordered):
        # Too little left to choose from: no best, but the counts and the withheld setups, to say why.
        return Pick(objective, workload, candidates=len(ordered), steady=steady, not_judged="too_few_steady",
                    withheld=tuple(records[withheld].to_dict("records"))), ranks
    best = ordered.iloc[0]
    overlaps = _overlaps(best, ordered, low.reindex(ordered.index), high.reindex(ordered.index))
    # An unstable setup overlaps everything (no interval): it is listed as withheld, not as a tie.
    tied = ordered.iloc[1:][overlaps.iloc[1:] & ~ordered["_unstable"].iloc[1:]]
    clearly_worse = ordered.iloc[1:][~overlaps.iloc[1:]]
    # Runners-up by point estimate (their rank shown beside), so a faster setup never reads as worse.
    runners_up = ordered.iloc[1:].sort_values(column, ascending=not objective.higher_is_better)
    beats_best = (ordered[column] > best[column]) if objective.higher_is_better else (ordered[column] < best[column])
    pick = Pick(
        objective=objective,
        workload=workload,
        best=records.loc[best.name].to_dict(),
        tied=tuple(records.loc[tied.index].to_dict("records")),
        runners_up=tuple(records.loc[runners_up.index[:RUNNERS_UP]].to_dict("records")),
        next_clearly_worse=records.loc[clearly_worse.index[0]].to_dict() if not clearly_worse.empty else None,
        candidates=len(ordered),
        steady=steady,
        withheld=tuple(records[withheld].to_dict("records")),
        withheld_better=tuple(records[withheld & beats_best].to_dict("records")),
    )
    return pick, ranks


def _overlaps(best: pd.Series, ordered: pd.DataFrame, low: pd.Series, high: pd.Series) -> pd.Series:
    """Which setups the best cannot be told apart from; a missing interval (one round, or unstable)
    overlaps everything."""
    best_low, best_high = low[best.name], high[best.name]
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
    """Warnings that could change the decision, most serious first (render orders them by kind)."""
    for ignored in results.ignored:
        yield Finding("ignored_run", ignored)
    yield from _case_findings(results.outcomes, "failed")
    for run_id in results.runs.loc[~results.runs["complete"].fillna(True).astype(bool), "run_id"]:
        yield Finding("incomplete_run", str(run_id))
    unstable_rows = setups[setups["flags"].map(lambda flags: UNSTABLE in flags).astype(bool)]
    for row in unstable_rows[["label", "unstable_reasons"]].to_dict("records"):
        yield Finding(UNSTABLE, row["label"], detail="; ".join(row["unstable_reasons"]) or "no reason recorded")
    needed = ["label", "flags", "scaling_efficiency", "baseline_only", "price_per_hour", "machine", "device_name",
              *FLAG_VALUES.values()]
    for row in setups[needed].to_dict("records"):
        label = row["label"]
        if row["scaling_efficiency"] > SUPERLINEAR_EFFICIENCY:
            yield Finding("superlinear", label, value=row["scaling_efficiency"])
        # Every flag the benchmark set, known or new (a new flag reaches the reader with no change here).
        for flag in row["flags"]:
            if flag in (UNSTABLE, "baseline_only"):
                continue
            column = FLAG_VALUES.get(flag)
            yield Finding(flag, label, value=_finite(row[column]) if column else None)
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
    chosen = outcomes[outcomes["status"] == status].fillna({"reason": "no reason recorded", "device_type": "?"})
    # The id carries the device type: a case skipped on cuda and measured on cpu are different cases.
    for (machine, case_id, device_type, reason), group in chosen.groupby(
            ["machine", "case_id", "device_type", "reason"], sort=False):
        runs = group["run_id"].nunique()
        subject = f"{machine}: {case_id} on {device_type}" + (f" (in {runs} runs)" if runs > 1 else "")
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
