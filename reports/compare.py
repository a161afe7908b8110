"""Regression verdicts: which baseline runs to compare against, which cases match, and what changed.

Pure functions on the tables ``reports.load`` builds; nothing here reads files or prints. The
statistical design (why round times, why Mann-Whitney plus a threshold) is in docs/regression.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpusizer_common import metrics
from gpusizer_common.case_identity import CASE_IDENTITY
from reports import derived
from reports.schema import text
from reports.stats import DEFAULT_RESAMPLES, mann_whitney_p, min_mann_whitney_p, quantile_ratio_ci

# Two rows with equal CASE_IDENTITY values measure the same case; DESIGN_COLUMNS say how it was
# measured: rounds are only comparable when each one trains the same samples.
DESIGN_COLUMNS = ("global_batch_size", "steps_per_round")

REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE = "regressed", "improved", "unchanged", "inconclusive"
NEW, MISSING, NOT_COMPARABLE = "new", "missing", "not comparable"
VERDICTS = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE, NEW, MISSING, NOT_COMPARABLE)

COMPARISON_COLUMNS = (
    "case_id", *CASE_IDENTITY, *DESIGN_COLUMNS, "verdict", "note",
    "baseline_rounds", "current_rounds", "baseline_runs",
    "baseline_round_s", "current_round_s", "baseline_median_s", "current_median_s",
    "time_ratio", "time_ratio_low", "time_ratio_high",
    "throughput_change", "throughput_change_low", "throughput_change_high",
    "baseline_samples_per_s_at_round_quantile", "current_samples_per_s_at_round_quantile", "p_value", "min_p_value", "baseline_run_ids",
)
# Verdicts that mean the case was actually compared, and those of them that decided something: the
# gate passes only when at least one case was decided (inconclusive everywhere is a comparison of nothing).
COMPARED_VERDICTS = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE)
DECIDED_VERDICTS = (REGRESSED, IMPROVED, UNCHANGED)


@dataclass(frozen=True)
class CompareConfig:
    """How strict the verdict is. ``threshold``: the smallest change in throughput (a fraction, 0.05 =
    5%) that counts; ``alpha``: the Mann-Whitney significance level; ``confidence``: of the bootstrap
    interval of the change; ``baseline_runs``: how many of the latest same-hardware runs of a folder
    are pooled into the baseline; ``round_quantile``: which quantile of the round times is compared
    (0.5 = the median)."""

    threshold: float = 0.05
    alpha: float = 0.01
    # The round time compared: the lower quartile. A code change moves every round; a busy machine
    # preempts some rounds and leaves the rest as they were. See docs/regression.md for the measurements.
    round_quantile: float = 0.25
    # The interval the verdict reads matches alpha (99% for 0.01): both halves of the rule are equally strict.
    confidence: float = 0.99
    baseline_runs: int = 5
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        numbers = (
            ("threshold", lambda v: 0 <= v < 1, "a fraction from 0 to below 1 (0.05 = 5%)"),
            ("alpha", lambda v: 0 < v < 0.5, "a number between 0 and 0.5 (e.g. 0.01)"),
            ("round_quantile", lambda v: 0 < v < 1, "a number between 0 and 1 (0.25 = lower quartile, 0.5 = median)"),
            ("confidence", lambda v: 0 < v < 1, "a number between 0 and 1 (e.g. 0.99)"),
        )
        for name, in_range, allowed in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(value):
                raise ValueError(f"{name}: {value!r} is out of range; allowed: {allowed}")
        for name in ("baseline_runs", "n_resamples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r} is out of range; allowed: an integer >= 1")


# -- which runs ------------------------------------------------------------------------------------


def hardware_fingerprint(machine_info: dict) -> dict:
    """What must match for two runs to be comparable as the same hardware and software stack:
    GPU model and count, driver, CUDA and torch versions; the CPU model stands in when there is no GPU."""
    inventory, gpus = derived.inventory(machine_info), derived.inventory_gpus(machine_info)
    names = sorted({str(gpu.get("name")) for gpu in gpus if isinstance(gpu, dict) and gpu.get("name")})
    fingerprint = {
        "gpu_model": " + ".join(names) if names else None,
        "gpu_count": len(gpus),
        "driver_version": text(inventory.get("driver_version")),
        "cuda_version": text(inventory.get("cuda_version")),
        "torch_version": text(inventory.get("torch_version")),
    }
    if not gpus:
        fingerprint["cpu_model"] = derived.cpu_model(machine_info)
    return fingerprint


def fingerprint_differences(baseline: dict, current: dict) -> list[str]:
    """``["torch_version 2.12.0 -> 2.13.0", ...]``: every fingerprint key whose value differs."""
    differences = []
    for key in sorted(set(baseline) | set(current)):
        if baseline.get(key) != current.get(key):
            differences.append(f"{key} {_shown(baseline.get(key))} -> {_shown(current.get(key))}")
    return differences


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


def choose_baseline_runs(runs: pd.DataFrame, fingerprints: dict[str, dict], current_fingerprint: dict,
                         count: int, allow_different_hardware: bool,
                         current_datetime: pd.Timestamp | None = None) -> tuple[list[str], list[str]]:
    """The runs a rolling baseline may pool: those not newer than the current run (by their own
    datetime; the same file given as both is compared with itself) whose hardware fingerprint equals
    the current one's, or any such runs when different hardware is allowed. Oldest first; each case
    then pools the latest ``count`` of them that measured it (``compare_cases``), so a run without that
    case (or one that measured nothing, which the loader drops) takes no slot.

    Returns ``(eligible run_ids, differences)``; ``differences`` is empty when the runs share the
    current fingerprint, else what differs from the latest candidate (for the "not comparable" line).
    """
    del count  # applied per case in compare_cases
    ordered = runs.sort_values(["run_datetime", "run_id"], na_position="first")
    if current_datetime is not None and not pd.isna(current_datetime):
        ordered = ordered[ordered["run_datetime"].isna() | (ordered["run_datetime"] <= current_datetime)]
    run_ids = list(ordered["run_id"])
    same = [run_id for run_id in run_ids if fingerprints[run_id] == current_fingerprint]
    if same:
        return same, []
    if not run_ids:
        return [], []
    differences = fingerprint_differences(fingerprints[run_ids[-1]], current_fingerprint)
    return (run_ids if allow_different_hardware else []), differences


# -- which cases, and what changed -----------------------------------------------------------------


def _key(row: pd.Series) -> tuple:
    return tuple(row[column] for column in CASE_IDENTITY)


def compare_cases(baseline: pd.DataFrame, current: pd.DataFrame, config: CompareConfig) -> pd.DataFrame:
    """One row per case in either table (COMPARISON_COLUMNS), in the current run's order, then the
    baseline's missing cases. ``baseline`` may pool several runs; ``current`` is one run. Each case
    pools the latest ``config.baseline_runs`` baseline runs that measured it the same way."""
    baseline_by_key: dict[tuple, list[pd.Series]] = {}  # oldest run first, so [-1] is the latest
    for _, row in baseline.sort_values(["run_datetime", "run_id"], na_position="first").iterrows():
        baseline_by_key.setdefault(_key(row), []).append(row)
    rows = []
    seen = set()
    for _, row in current.iterrows():
        key = _key(row)
        seen.add(key)
        rows.append(_compare_one(baseline_by_key.get(key, []), row, config))
    for key, base_rows in baseline_by_key.items():
        if key not in seen:
            latest = base_rows[-1]
            rows.append(_row(latest, MISSING, "in the baseline but not in the current run",
                             baseline_runs=len(base_rows)))
    return _disambiguate(pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)))


def _disambiguate(comparison: pd.DataFrame) -> pd.DataFrame:
    """A case_id does not always carry the batch (e.g. one run at batch 64, one at 32): where two rows
    share one, name each by its batch and scaling so that verdicts and error lines stay unambiguous."""
    shared = comparison["case_id"].duplicated(keep=False)
    if shared.any():
        comparison = comparison.copy()
        comparison.loc[shared, "case_id"] = [
            f"{row.case_id} (batch {row.per_device_batch_size}, {row.scaling})"
            for row in comparison.loc[shared].itertuples()]
    return comparison


def _row(source: pd.Series, verdict: str, note: str, **numbers) -> dict:
    row = {column: math.nan for column in COMPARISON_COLUMNS}
    row["baseline_run_ids"] = []
    row.update({column: source[column] for column in ("case_id", *CASE_IDENTITY, *DESIGN_COLUMNS)})
    row.update(verdict=verdict, note=note, **numbers)
    return row


def _compare_one(base_rows: list[pd.Series], current: pd.Series, config: CompareConfig) -> dict:
    if not base_rows:
        return _row(current, NEW, "not in the baseline")
    matching = [row for row in base_rows if all(row[c] == current[c] for c in DESIGN_COLUMNS)]
    if not matching:
        latest = base_rows[-1]
        changed = ", ".join(f"{c} {latest[c]} -> {current[c]}" for c in DESIGN_COLUMNS if latest[c] != current[c])
        return _row(current, NOT_COMPARABLE, f"measured differently: {changed}")

    matching = matching[-config.baseline_runs:]  # the latest runs that measured this case
    baseline_s = np.concatenate([np.asarray(row["round_times_s"], dtype=float) for row in matching])
    current_s = np.asarray(current["round_times_s"], dtype=float)
    ratio, low, high = quantile_ratio_ci(baseline_s, current_s, config.round_quantile, confidence=config.confidence,
                                         n_resamples=config.n_resamples, seed=config.seed)
    baseline_round_s = float(np.quantile(baseline_s, config.round_quantile))
    current_round_s = float(np.quantile(current_s, config.round_quantile))
    p_value = mann_whitney_p(baseline_s, current_s)
    min_p = min_mann_whitney_p(baseline_s.size, current_s.size)
    samples_per_round = metrics.samples_per_round(current["global_batch_size"], current["steps_per_round"])
    # Throughput is samples per second, the inverse of round time: a ratio r of round times is a
    # throughput change of 1/r - 1, and the interval's ends swap.
    change, change_low, change_high = 1 / ratio - 1, 1 / high - 1, 1 / low - 1
    verdict, note = _verdict(change, change_low, change_high, p_value, min_p, baseline_s.size, current_s.size,
                             config)
    return _row(
        current, verdict, note,
        baseline_rounds=baseline_s.size, current_rounds=current_s.size, baseline_runs=len(matching),
        baseline_round_s=baseline_round_s, current_round_s=current_round_s,
        baseline_median_s=float(np.median(baseline_s)), current_median_s=float(np.median(current_s)),
        time_ratio=ratio, time_ratio_low=low, time_ratio_high=high,
        throughput_change=change, throughput_change_low=change_low, throughput_change_high=change_high,
        # At the compared round time, not the median round: a statistic of its own, named so (samples_per_s
        # is the median round's, as in the history and the report).
        baseline_samples_per_s_at_round_quantile=metrics.samples_per_s_at(samples_per_round, baseline_round_s),
        current_samples_per_s_at_round_quantile=metrics.samples_per_s_at(samples_per_round, current_round_s),
        p_value=p_value, min_p_value=min_p, baseline_run_ids=[str(row["run_id"]) for row in matching],
    )


def _verdict(change: float, low: float, high: float, p_value: float, min_p: float, n_baseline: int,
             n_current: int, config: CompareConfig) -> tuple[str, str]:
    """Regressed (improved) only when the rounds differ significantly (Mann-Whitney p < alpha) AND the
    whole confidence interval of the throughput change lies beyond the threshold. Significance alone
    flags the harmless few-% drift between two runs of a busy machine; a threshold on the point
    estimate alone flags one noisy run. A case whose interval reaches below -threshold without
    regressing is inconclusive, never unchanged: the measurement cannot rule a regression out.
    ``low``/``high``: the interval of the throughput change."""
    significant = p_value < config.alpha
    if significant and high < -config.threshold:
        return REGRESSED, ""
    if significant and low > config.threshold:
        return IMPROVED, ""
    if not significant and min_p >= config.alpha:
        return INCONCLUSIVE, (f"too few rounds to decide ({n_baseline} vs {n_current}: the test cannot reach "
                              f"p < {config.alpha:g}); measure more rounds (--rounds)")
    if low < -config.threshold:
        # The interval still holds a slowdown past the threshold: "unchanged" would pass the gate on a
        # measurement that cannot rule a regression out (seen: a 30% slower copy at [-54%, +23%]).
        if significant and change < -config.threshold:
            return INCONCLUSIVE, (f"possibly slower than -{config.threshold:.0%}, but the interval reaches "
                                  f"inside the threshold; re-run to decide")
        return INCONCLUSIVE, (f"too noisy to decide: the interval reaches below -{config.threshold:.0%}; "
                              f"re-run on a quieter machine or with more rounds (--rounds)")
    if abs(change) > config.threshold:
        why = "the interval reaches inside the threshold" if significant else "not significant"
        return UNCHANGED, f"possibly {'slower' if change < 0 else 'faster'}, but {why}; noisy rounds"
    if significant:
        return UNCHANGED, f"a significant change within the {config.threshold:.0%} threshold"
    return UNCHANGED, ""


def explain_missing(comparison: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """A case in the baseline but not in the current results may have been skipped or have failed in
    the current run: say so, with the run's own reason, rather than only "missing"."""
    fates = {_key(row): (row["status"], row["reason"])
             for _, row in outcomes[outcomes["status"] != "passed"].iterrows()}
    comparison = comparison.copy()
    for index, row in comparison[comparison["verdict"] == MISSING].iterrows():
        fate = fates.get(_key(row))
        if fate is not None:
            status, reason = fate
            comparison.loc[index, "note"] = f"{status} in the current run" + (f": {reason}" if reason else "")
    return comparison


def regressed_cases(comparison: pd.DataFrame) -> list[str]:
    return list(comparison.loc[comparison["verdict"] == REGRESSED, "case_id"])


# -- history ---------------------------------------------------------------------------------------


def case_history(cases: pd.DataFrame) -> pd.DataFrame:
    """Per case and run, over time: ``case_id``, ``run_id``, ``run_datetime``, ``samples_per_s`` (the
    loader's, from the run's median round: the record's and the report's number), oldest first. Feeds the
    history view of a rolling baseline."""
    columns = ["case_id", "run_id", "run_datetime", "samples_per_s"]
    if cases.empty:
        return pd.DataFrame(columns=columns)
    return cases.sort_values(["run_datetime", "run_id"], na_position="first")[columns].reset_index(drop=True)


# -- the whole answer ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CompareReport:
    """Everything the renderers show. ``comparable`` is False when no baseline run matches the current
    hardware fingerprint (and different hardware was not allowed); ``differences`` says what differs."""

    config: CompareConfig
    baseline_source: str
    current_run: str
    current_datetime: pd.Timestamp
    current_fingerprint: dict
    baseline_runs: list[str]
    baseline_datetimes: list[pd.Timestamp]
    differences: list[str]
    other_hardware_runs: int
    comparable: bool
    comparison: pd.DataFrame
    history: pd.DataFrame
    ignored: tuple[str, ...] = ()  # input files that measured nothing (every case skipped or failed)

    @property
    def regressed(self) -> list[str]:
        return regressed_cases(self.comparison)

    @property
    def compared(self) -> int:
        """Cases actually compared; 0 means the gate has nothing to say (every case new or missing)."""
        return int(self.comparison["verdict"].isin(COMPARED_VERDICTS).sum())

    @property
    def decided(self) -> int:
        """Cases with a verdict the measurement supports; 0 means every compared case was inconclusive."""
        return int(self.comparison["verdict"].isin(DECIDED_VERDICTS).sum())

    def count(self, verdict: str) -> int:
        return int((self.comparison["verdict"] == verdict).sum())
