"""From the loaded cases to one row per setup with every derived number the report judges by.

A setup is what a buyer would choose: a machine (and its GPU or CPU), how many devices, the strategy,
the precision, and the workload (model preset, per-device batch, scaling). Runs of the same setup on
the same machine are pooled: their per-round throughputs form one sample, and the 95% interval of its
median comes from a bootstrap (reports/stats.py). Numbers stay unrounded here; render formats them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.load import ResultSet
from reports.prices import PriceTable

SETUP_KEYS = ["machine", "device_name", "world_size", "strategy", "precision", "preset",
              "per_device_batch_size", "scaling"]
CONFIDENCE = 0.95
# Scaling above this fraction of perfect is more than the hardware can give: a measuring problem.
SUPERLINEAR_EFFICIENCY = 1.05
DEFAULT_TARGET_SAMPLES = 1_000_000_000


def summarise(results: ResultSet, prices: PriceTable | None = None,
              target_samples: float = DEFAULT_TARGET_SAMPLES) -> pd.DataFrame:
    """One row per setup: throughput with its interval, scaling, MFU, energy, memory and, with prices, cost."""
    cases = results.cases
    if cases.empty:
        return pd.DataFrame(columns=SETUP_KEYS)
    rows = [_setup_row(keys, group) for keys, group in cases.groupby(SETUP_KEYS, sort=True, dropna=False)]
    setups = pd.DataFrame.from_records(rows)
    setups["label"] = _labels(setups)
    _add_scaling(setups)
    _add_cost(setups, prices, target_samples)
    return setups.sort_values(["preset", "samples_per_s"], ascending=[True, False], ignore_index=True)


def _setup_row(keys: tuple, group: pd.DataFrame) -> dict:
    row = dict(zip(SETUP_KEYS, keys))
    # Per-round throughput: global samples in the round over the round's time (controller's stopwatch).
    samples_per_round = (group["global_batch_size"] * group["steps_per_round"]).to_numpy(dtype=float)
    per_round = np.concatenate([per / np.asarray(times, dtype=float)
                                for per, times in zip(samples_per_round, group["round_times_s"])])
    round_times_s = np.concatenate([np.asarray(times, dtype=float) for times in group["round_times_s"]])
    median = float(np.median(per_round))
    low, high = throughput_interval(per_round)
    samples_trained = float(sum(per * len(times) for per, times in zip(samples_per_round, group["round_times_s"])))
    energy_j = group["energy_j"].to_numpy(dtype=float)
    measured_energy = np.isfinite(energy_j)
    # Energy per sample over the runs that measured it; its interval follows the throughput interval
    # (power is taken as its mean over the measured rounds, so only the time per sample varies).
    joules_per_sample = math.nan
    if measured_energy.any():
        trained_with_energy = float(sum(per * len(times) for per, times, ok in
                                        zip(samples_per_round, group["round_times_s"], measured_energy) if ok))
        joules_per_sample = float(energy_j[measured_energy].sum()) / trained_with_energy
    first = group.iloc[0]
    flags = sorted({flag for flags in group["flags"] for flag in flags})
    peak = float(group["peak_flops_per_s"].median())
    row.update(
        gpu_name=first["gpu_name"] if pd.notna(first["gpu_name"]) else None,
        instance_type=first["instance_type"] if pd.notna(first["instance_type"]) else None,
        device_type=first["device_type"],
        compute_devices=int(first["compute_devices"]),
        runs=int(group["run_id"].nunique()),
        rounds=int(per_round.size),
        global_batch_size=int(first["global_batch_size"]),
        samples_per_s=median,
        samples_per_s_low=low,
        samples_per_s_high=high,
        per_device_samples_per_s=median / row["world_size"],
        round_throughputs=per_round.tolist(),
        round_times_s=round_times_s.tolist(),
        samples_trained=samples_trained,
        mfu=median * float(first["flops_per_sample"]) / (peak * int(first["compute_devices"])),
        joules_per_sample=joules_per_sample,
        joules_per_sample_low=joules_per_sample * median / high if high > 0 else math.nan,
        joules_per_sample_high=joules_per_sample * median / low if low > 0 else math.nan,
        peak_memory_bytes=float(group["peak_memory_bytes"].max()),
        memory_capacity_bytes=float(group["memory_capacity_bytes"].min()),
        util_mean_pct=float(group["util_mean_pct"].mean()),
        throttle_fraction=float(group["throttle_fraction"].max()),
        timing_gap_fraction=float(group["timing_gap_fraction"].max()),
        launch_s=float(group["launch_s"].median()),
        telemetry_source=first["telemetry_source"] if pd.notna(first["telemetry_source"]) else None,
        flags=flags,
        baseline_only=bool(group["baseline_only"].any()),
        run_ids=sorted(str(run_id) for run_id in group["run_id"].unique()),
    )
    row["memory_headroom_fraction"] = 1.0 - row["peak_memory_bytes"] / row["memory_capacity_bytes"]
    return row


def throughput_interval(per_round: np.ndarray) -> tuple[float, float]:
    """The 95% bootstrap interval of the median per-round throughput; NaN for one round, which has no
    spread to learn from (recommend treats a missing interval as overlapping every other)."""
    from reports.stats import bootstrap_median_ci  # the compare command's statistics, shared

    if per_round.size < 2:
        return math.nan, math.nan
    low, high = bootstrap_median_ci(per_round, confidence=CONFIDENCE)
    return float(low), float(high)


def _labels(setups: pd.DataFrame) -> pd.Series:
    """A short unique name for each setup, as a buyer would say it."""
    def label(row) -> str:
        unit = "" if row["device_type"] == "cuda" else " (proc)"
        text = (f"{row['machine']} · {row['world_size']}× {row['device_name']}{unit} · {row['strategy']} · "
                f"{row['precision']} · {row['preset']} b{row['per_device_batch_size']}")
        return text + (" strong" if row["scaling"] == "strong" else "")

    return setups.apply(label, axis=1)


def _add_scaling(setups: pd.DataFrame) -> None:
    """Scaling efficiency: per-device throughput over the same machine's 1-device throughput.

    The baseline trains the same preset at the same precision and scaling on one device, with the same
    per-device batch (weak scaling) or the same global batch (strong scaling); ``single`` is preferred,
    else the strategy itself at world size 1.
    """
    def key(row, strategy: str) -> tuple:
        batch_key = "per_device_batch_size" if row["scaling"] == "weak" else "global_batch_size"
        return (row["machine"], row["device_name"], row["preset"], row["precision"], row["scaling"],
                batch_key, row[batch_key], strategy)

    baselines = {key(row, row["strategy"]): row for _, row in setups[setups["world_size"] == 1].iterrows()}
    efficiency, baseline_labels = [], []
    for _, row in setups.iterrows():
        base = baselines.get(key(row, "single"))
        if base is None:
            base = baselines.get(key(row, row["strategy"]))
        efficiency.append(math.nan if base is None else row["samples_per_s"] / (row["world_size"] * base["samples_per_s"]))
        baseline_labels.append(None if base is None else base["label"])
    setups["scaling_efficiency"] = efficiency
    setups["scaling_baseline"] = baseline_labels


def _add_cost(setups: pd.DataFrame, prices: PriceTable | None, target_samples: float) -> None:
    """Cost per million samples, and time and cost to train ``target_samples``; NaN where not priced."""
    hourly, sources, dates, matches = [], [], [], []
    for _, row in setups.iterrows():
        price = prices.find(row["machine"], row["device_name"], row["instance_type"]) if prices is not None else None
        hourly.append(price.hourly_cost(row["compute_devices"]) if price else math.nan)
        sources.append(price.source if price else None)
        dates.append(price.date if price else None)
        matches.append(price.match if price else None)
    setups["price_per_hour"] = hourly
    setups["price_match"] = matches
    setups["price_source"] = sources
    setups["price_date"] = dates
    setups["currency"] = prices.currency if prices is not None else None
    setups["target_samples"] = float(target_samples)
    for suffix, throughput in (("", "samples_per_s"), ("_low", "samples_per_s_high"), ("_high", "samples_per_s_low")):
        # The fastest end of the throughput interval gives the cheapest and shortest end of the others.
        seconds_per_sample = 1.0 / setups[throughput]
        setups[f"cost_per_million_samples{suffix}"] = setups["price_per_hour"] / 3600.0 * seconds_per_sample * 1e6
        setups[f"time_to_target_s{suffix}"] = target_samples * seconds_per_sample
        setups[f"cost_to_target{suffix}"] = setups["price_per_hour"] / 3600.0 * setups[f"time_to_target_s{suffix}"]
