"""From the loaded cases to one row per setup with every derived number the report judges by.

A setup is what a buyer would choose: a machine (and its GPU or CPU), how many devices, the strategy,
the precision, and the workload (model preset, per-device batch, scaling). Runs of the same setup on
the same machine are pooled: their rounds form one sample (gpusizer_common/metrics.py ``pooled_rounds``),
whose throughput is ``metrics.samples_per_s`` of it (global samples in a round over the median round
time), and the 95% interval of that median round time comes from a bootstrap (reports/stats.py). Every
derived number is the one definition in gpusizer_common/metrics.py. Numbers stay unrounded here; render
formats them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gpusizer_common import metrics
from gpusizer_common.case_identity import CASE_IDENTITY
from gpusizer_common.device_type import is_cuda
from reports.load import ResultSet
from reports.prices import PriceTable

# A setup: the case (what was run, the one definition bench/ writes) on a machine and its device.
SETUP_KEYS = ["machine", "device_name", *CASE_IDENTITY]
CONFIDENCE = 0.95
# Enough for a stable 95% percentile interval; the compare command's default of 2000 would double the
# report's time on hundreds of result files for endpoints that move far less than the interval is wide.
BOOTSTRAP_RESAMPLES = 1000
# Scaling above this fraction of perfect is more than the hardware can give: a measuring problem. The
# one anomaly judged here rather than by the benchmark: it needs two setups, possibly from two runs.
SUPERLINEAR_EFFICIENCY = 1.05


# Per-setup summaries of per-case numbers that pandas aggregates in one pass (NaN, i.e. not measured, is
# skipped; a setup where no run measured a number keeps NaN).
_AGGREGATES = {
    "gpu_name": ("gpu_name", "first"),
    "instance_type": ("instance_type", "first"),
    "telemetry_source": ("telemetry_source", "first"),
    "compute_devices": ("compute_devices", "first"),
    "global_batch_size": ("global_batch_size", "first"),
    "flops_per_sample": ("flops_per_sample", "first"),
    "peak_flops_per_s": ("peak_flops_per_s", "median"),
    "runs": ("run_id", "nunique"),
    "peak_memory_bytes": ("peak_memory_bytes", "max"),
    "memory_capacity_bytes": ("memory_capacity_bytes", "min"),
    "memory_used_fraction": ("memory_used_fraction", "max"),
    "util_mean_pct": ("util_mean_pct", "mean"),
    "throttle_fraction": ("throttle_fraction", "max"),
    "timing_gap_fraction": ("timing_gap_fraction", "max"),
    "launch_s": ("launch_s", "median"),
    "baseline_only": ("baseline_only", "any"),
    # The step split of the setup's latest run that measured one (pooled runs: not averaged, it is one round).
    "step_breakdown": ("step_breakdown", "last"),
}


def summarise(results: ResultSet, prices: PriceTable | None, target_samples: float) -> pd.DataFrame:
    """One row per setup: throughput with its interval, scaling, MFU, energy, memory and, with prices, cost."""
    cases = results.cases  # may be empty (every case failed): the same columns come out, with no rows
    grouped = cases.groupby(SETUP_KEYS, sort=True, dropna=False)
    setups = grouped.agg(**_AGGREGATES)
    positions = grouped.indices
    # Taken out of pandas once: per-setup pandas calls cost more than the arithmetic on thousands of setups.
    columns = {name: cases[name].to_numpy(dtype=float, na_value=np.nan)
               for name in ("global_batch_size", "steps_per_round", "energy_j")}
    columns.update({name: cases[name].to_numpy(dtype=object)
                    for name in ("round_times_s", "flags", "unstable_reasons", "run_id")})
    rounds = pd.DataFrame.from_records([_round_summary(positions[key], columns) for key in setups.index],
                                       columns=_ROUND_COLUMNS)
    setups = pd.concat([setups.reset_index(), rounds], axis=1)
    for column in ("compute_devices", "global_batch_size", "runs"):
        setups[column] = setups[column].astype(int)
    setups["baseline_only"] = setups["baseline_only"].astype(bool)
    for column in ("gpu_name", "instance_type", "telemetry_source"):  # missing text is None, as in a record
        setups[column] = setups[column].astype(object).where(setups[column].notna(), None)
    setups["per_device_samples_per_s"] = setups["samples_per_s"] / setups["world_size"].astype(float)
    setups["mfu"] = metrics.mfu(setups["samples_per_s"], setups["flops_per_sample"], setups["peak_flops_per_s"],
                                setups["compute_devices"])
    setups["memory_headroom_fraction"] = 1.0 - setups["peak_memory_bytes"] / setups["memory_capacity_bytes"]
    setups["memory_free_fraction"] = 1.0 - setups["memory_used_fraction"]
    setups["label"] = _labels(setups)
    _add_scaling(setups)
    _add_cost(setups, prices, target_samples)
    return setups.sort_values(["preset", "samples_per_s"], ascending=[True, False], ignore_index=True)


_ROUND_COLUMNS = ["rounds", "samples_per_s", "samples_per_s_low", "samples_per_s_high", "round_times_s",
                  "samples_trained", "joules_per_sample", "joules_per_sample_low", "joules_per_sample_high", "flags",
                  "unstable_reasons", "run_ids"]


def _round_summary(positions: np.ndarray, columns: dict) -> dict:
    """What needs every round of a setup: throughput and its interval, energy per sample, flags, runs."""
    times = [np.asarray(columns["round_times_s"][p], dtype=float) for p in positions]
    samples_per_round = metrics.samples_per_round(columns["global_batch_size"][positions],
                                                  columns["steps_per_round"][positions])
    # The runs' rounds as one run (the ranks' own times), then the one definition: a setup measured in
    # one run shows the very samples_per_s its record holds.
    pooled_samples, pooled_times_s = metrics.pooled_rounds(
        (float(samples), rounds.tolist()) for samples, rounds in zip(samples_per_round, times))
    median = metrics.samples_per_s(pooled_samples, pooled_times_s)
    low, high = throughput_interval(pooled_samples, pooled_times_s)
    trained_per_run = samples_per_round * np.array([rounds.size for rounds in times])
    # Energy per sample over the runs that measured it; its interval follows the throughput interval
    # (power is taken as its mean over the measured rounds, so only the time per sample varies).
    energy_j = columns["energy_j"][positions]
    measured = np.isfinite(energy_j)
    joules_per_sample = (float(metrics.joules_per_sample(energy_j[measured].sum(), trained_per_run[measured].sum()))
                         if measured.any() else math.nan)
    return {
        "rounds": len(pooled_times_s),
        "samples_per_s": median,
        "samples_per_s_low": low,
        "samples_per_s_high": high,
        "round_times_s": np.concatenate(times).tolist(),
        "samples_trained": float(trained_per_run.sum()),
        "joules_per_sample": joules_per_sample,
        "joules_per_sample_low": joules_per_sample * median / high if high > 0 else math.nan,
        "joules_per_sample_high": joules_per_sample * median / low if low > 0 else math.nan,
        "flags": sorted({flag for p in positions for flag in columns["flags"][p]}),
        "unstable_reasons": sorted({reason for p in positions for reason in columns["unstable_reasons"][p]}),
        "run_ids": sorted({str(columns["run_id"][p]) for p in positions}),
    }


def throughput_interval(samples_in_round: float, round_times_s: list[float]) -> tuple[float, float]:
    """The 95% bootstrap interval of the throughput: of the median round time, each end then turned into
    samples/s as the throughput itself is (the slower end of the times is the lower end of the rate). NaN
    for one round, which has no spread to learn from (recommend treats a missing interval as overlapping
    every other)."""
    from reports.stats import bootstrap_median_ci  # the compare command's statistics, shared

    if len(round_times_s) < 2:
        return math.nan, math.nan
    fast_s, slow_s = bootstrap_median_ci(round_times_s, confidence=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES)
    return metrics.samples_per_s_at(samples_in_round, slow_s), metrics.samples_per_s_at(samples_in_round, fast_s)


def _labels(setups: pd.DataFrame) -> pd.Series:
    """A short unique name for each setup, as a buyer would say it."""
    def label(row) -> str:
        unit = "" if is_cuda(row["device_type"]) else " (proc)"
        text = (f"{row['machine']} · {row['world_size']}× {row['device_name']}{unit} · {row['strategy']} · "
                f"{row['precision']} · {row['preset']} b{row['per_device_batch_size']}")
        return text + (" strong" if row["scaling"] == "strong" else "")

    needed = ["machine", "world_size", "device_name", "device_type", "strategy", "precision", "preset",
              "per_device_batch_size", "scaling"]
    return pd.Series([label(row) for row in setups[needed].to_dict("records")], index=setups.index, dtype=object)


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

    needed = setups[SETUP_KEYS + ["global_batch_size", "samples_per_s", "label", "flags"]]
    baselines = {key(row, row["strategy"]): row for row in needed[needed["world_size"] == 1].to_dict("records")}
    efficiency, baseline_labels, baseline_unstable = [], [], []
    for row in needed.to_dict("records"):
        base = baselines.get(key(row, "single"))
        if base is None:
            base = baselines.get(key(row, row["strategy"]))
        efficiency.append(math.nan if base is None else
                          metrics.scaling_efficiency(row["samples_per_s"], row["world_size"], base["samples_per_s"]))
        baseline_labels.append(None if base is None else base["label"])
        baseline_unstable.append(base is not None and "unstable" in base["flags"])
    setups["scaling_efficiency"] = efficiency
    setups["scaling_baseline"] = baseline_labels
    # A speed-up against a 1-device run measured on an unstable machine says little: render says so.
    setups["scaling_baseline_unstable"] = baseline_unstable


def _add_cost(setups: pd.DataFrame, prices: PriceTable | None, target_samples: float) -> None:
    """Cost per million samples, and time and cost to train ``target_samples``; NaN where not priced."""
    hourly, sources, dates, matches = [], [], [], []
    for row in setups[["machine", "device_name", "instance_type", "compute_devices"]].to_dict("records"):
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
        setups[f"cost_per_million_samples{suffix}"] = metrics.cost_per_million_samples(setups["price_per_hour"],
                                                                                      setups[throughput])
        setups[f"time_to_target_s{suffix}"] = metrics.seconds_to_train(target_samples, setups[throughput])
        setups[f"cost_to_target{suffix}"] = metrics.cost_of(setups["price_per_hour"],
                                                           setups[f"time_to_target_s{suffix}"])
