"""The setups table: as a reader sees it (formatted text, in the HTML report) and as a program reads it
(the CSV, with raw, unrounded numbers)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from reports.schema import BREAKDOWN_SECONDS
from reports.words import fmt_bytes, fmt_duration, fmt_interval, fmt_money, fmt_number, fmt_pct


def display_table(setups: pd.DataFrame, currency: str | None) -> pd.DataFrame:
    """The setups table as a reader sees it: formatted text, one row per setup."""
    def rank(value) -> str:
        return "unranked" if not math.isfinite(value) else f"{value:.0f}"

    rows = []
    ordered = setups.sort_values(["preset", "rank_fastest", "samples_per_s"], ascending=[True, True, False],
                                 na_position="last")
    for row in ordered.drop(columns=["round_times_s", "run_ids"]).to_dict("records"):
        rows.append({
            "workload": row["preset"],
            "rank (fastest)": rank(row["rank_fastest"]),
            "setup": row["label"],
            "samples/s": fmt_number(row["samples_per_s"]),
            "95% CI (samples/s)": fmt_interval(row["samples_per_s_low"], row["samples_per_s_high"]).removeprefix(
                "95% CI "),
            "per device (samples/s)": fmt_number(row["per_device_samples_per_s"]),
            "scaling efficiency": fmt_pct(row["scaling_efficiency"]),
            "MFU": fmt_pct(row["mfu"]),
            "energy (J/sample)": fmt_number(row["joules_per_sample"]),
            "peak memory / capacity": (f"{fmt_bytes(row['peak_memory_bytes'])} / "
                                       f"{fmt_bytes(row['memory_capacity_bytes'])}"),
            "headroom": fmt_pct(row["memory_headroom_fraction"]),
            "price/h": fmt_money(row["price_per_hour"], currency),
            "cost per million samples": fmt_money(row["cost_per_million_samples"], currency),
            "time to target": fmt_duration(row["time_to_target_s"]),
            "cost to target": fmt_money(row["cost_to_target"], currency),
            "rank (cheapest)": rank(row["rank_cheapest"]),
            "frontier": "yes" if row["on_frontier"] else "",
            "flags": ", ".join(row["flags"]),
            "runs × rounds": f"{row['runs']} runs, {row['rounds']} rounds",
        })
    return pd.DataFrame(rows)


CSV_DROP = ("round_times_s", "candidate")


def write_csv(setups: pd.DataFrame, path: Path) -> None:
    """Every setup with raw, unrounded numbers; lists joined with ';'."""
    table = setups.drop(columns=[c for c in CSV_DROP if c in setups]).copy()
    for column in ("flags", "run_ids"):
        table[column] = table[column].map(lambda items: ";".join(map(str, items)))
    if "step_breakdown" in table:  # the split's seconds as columns of their own (empty where not measured)
        splits = table.pop("step_breakdown")
        for key in BREAKDOWN_SECONDS:
            table[f"step_breakdown_{key}"] = splits.map(
                lambda split, key=key: split[key] if isinstance(split, dict) else math.nan)
    table.to_csv(path, index=False)
