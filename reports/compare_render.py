"""How a ``CompareReport`` looks: a terminal table, Markdown for a pull-request comment, JSON for
machines, and an optional plotly chart of the history. Compare's numbers are rounded here, in reports/words.py's
formats."""

from __future__ import annotations

import json
import math

import pandas as pd

from reports.compare import IMPROVED, INCONCLUSIVE, MISSING, NEW, NOT_COMPARABLE, REGRESSED, CompareReport
from reports.words import fmt_change_pct, fmt_rate

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
# The verdict's samples/s are at the compared round-time quantile (p25 by default), not the median round:
# their headers say so, so that they are not read as the history's (and the report's) samples/s.
CASE_HEADERS = ("case", "verdict", "samples/s at p{quantile} baseline", "samples/s at p{quantile} current",
                "change [{confidence:.0%} CI]", "p", "rounds b/c", "note")
HISTORY_HEADERS = ("case", "runs", "samples/s over time", "first", "latest", "min", "max")


# -- numbers as text (rates and changes in reports/words.py's formats) -----------------------------


def _change(row: pd.Series) -> str:
    if not math.isfinite(row["throughput_change"]):
        return "-"
    low, high = row["throughput_change_low"] * 100, row["throughput_change_high"] * 100
    return f"{fmt_change_pct(row['throughput_change'])} [{low:+.1f}, {high:+.1f}]"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.2g}"


def _rounds(row: pd.Series) -> str:
    if not math.isfinite(row["baseline_rounds"]):
        return "-"
    return f"{int(row['baseline_rounds'])}/{int(row['current_rounds'])}"


def sparkline(values: list[float]) -> str:
    """One block character per run, scaled between the series' min and max."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = high - low
    out = []
    for value in values:
        if not math.isfinite(value):
            out.append(" ")
        elif span == 0:
            out.append(SPARK_LEVELS[len(SPARK_LEVELS) // 2])
        else:
            out.append(SPARK_LEVELS[round((value - low) / span * (len(SPARK_LEVELS) - 1))])
    return "".join(out)


# -- rows shared by the terminal and Markdown ------------------------------------------------------


def case_headers(report: CompareReport) -> tuple[str, ...]:
    return tuple(header.format(confidence=report.config.confidence, quantile=f"{report.config.round_quantile * 100:g}")
                 for header in CASE_HEADERS)


def case_rows(report: CompareReport) -> list[tuple[str, ...]]:
    return [(str(row["case_id"]), str(row["verdict"]), fmt_rate(row["baseline_samples_per_s_at_round_quantile"]),
             fmt_rate(row["current_samples_per_s_at_round_quantile"]), _change(row), _p(row["p_value"]), _rounds(row),
             str(row["note"]))
            for _, row in report.comparison.iterrows()]


def history_rows(report: CompareReport) -> list[tuple[str, ...]]:
    rows = []
    for case_id, group in report.history.groupby("case_id", sort=False):
        values = [float(v) for v in group["samples_per_s"]]
        rows.append((str(case_id), str(len(values)), sparkline(values), fmt_rate(values[0]), fmt_rate(values[-1]),
                     fmt_rate(min(values)), fmt_rate(max(values))))
    return rows


def nothing_compared_reason(report: CompareReport) -> str:
    parts = [f"{report.count(verdict)} {verdict}" for verdict in (INCONCLUSIVE, NEW, MISSING, NOT_COMPARABLE)
             if report.count(verdict)]
    what = ("no case could be decided: the measurements cannot rule a regression in or out" if report.compared
            else "no case is in both the baseline and the current run")
    return what + (f" ({', '.join(parts)})" if parts else "")


def headline(report: CompareReport) -> str:
    if not report.comparable:
        return "NOT COMPARABLE: no baseline run has this hardware and software"
    regressed = report.regressed
    if regressed:
        return f"REGRESSED: {len(regressed)} case(s) slower: {', '.join(regressed)}"
    if not report.decided:
        return f"NOTHING COMPARED: {nothing_compared_reason(report)}"
    parts = [f"{report.count(IMPROVED)} improved"] if report.count(IMPROVED) else []
    if report.count(INCONCLUSIVE):
        parts.append(f"{report.count(INCONCLUSIVE)} inconclusive (see their notes)")
    return "no regression" + (f" ({', '.join(parts)})" if parts else "")


def _ordinal(quantile: float) -> str:
    return f"{quantile * 100:g}th-percentile"


def context_lines(report: CompareReport) -> list[str]:
    config = report.config
    dates = [stamp for stamp in report.baseline_datetimes if not pd.isna(stamp)]
    span = f", {dates[0]:%Y-%m-%d %H:%M} to {dates[-1]:%Y-%m-%d %H:%M} UTC" if dates else ""
    lines = [
        f"current: {report.current_run}",
        f"baseline: {report.baseline_source} ({len(report.baseline_runs)} run(s) pooled{span})",
        (f"rule: regressed (improved) when Mann-Whitney p < {config.alpha:g} on the round times and the whole "
         f"{config.confidence:.0%} interval of the throughput change is below -{config.threshold:.1%} "
         f"(above +{config.threshold:.1%})"),
        (f"samples/s and change: at the {_ordinal(config.round_quantile)} round time "
         f"({'the median' if config.round_quantile == 0.5 else 'the faster rounds, robust to preempted ones'}); "
         f"history: at the median round"),
        "hardware: " + ", ".join(f"{key} {value}" for key, value in report.current_fingerprint.items()
                                 if value not in (None, 0)),
    ]
    if report.differences:
        lines.append("DIFFERENT hardware/software: " + "; ".join(report.differences))
    if report.other_hardware_runs:
        lines.append(f"ignored: {report.other_hardware_runs} baseline run(s) from other hardware or software")
    for ignored in report.ignored:
        lines.append(f"ignored: {ignored}: it measured nothing")
    return lines


# -- terminal --------------------------------------------------------------------------------------


def _text_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths)).rstrip(),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def terminal(report: CompareReport) -> str:
    parts = [f"gpusizer compare: {headline(report)}", *context_lines(report), ""]
    parts.append(_text_table(case_headers(report), case_rows(report)))
    if not report.history.empty:
        parts += ["", "history (samples/s per run, oldest first):", _text_table(HISTORY_HEADERS, history_rows(report))]
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------------


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def cells(row):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return "\n".join([cells(headers), "|" + "---|" * len(headers), *(cells(row) for row in rows)])


def markdown(report: CompareReport) -> str:
    # Green only when every compared case was decided and none regressed; nothing compared, or any
    # case the measurement could not decide, is a warning.
    if report.regressed or not report.comparable:
        marker = ":x:"
    elif not report.decided or report.count(INCONCLUSIVE):
        marker = ":warning:"
    else:
        marker = ":white_check_mark:"
    rows = [(f"**{row[0]}**", f"**{row[1]}**", *row[2:]) if row[1] in (REGRESSED, NOT_COMPARABLE) else row
            for row in case_rows(report)]
    parts = [f"### gpusizer compare {marker} {headline(report)}", "",
             *(f"- {line}" for line in context_lines(report)), "", _md_table(case_headers(report), rows)]
    if not report.history.empty:
        parts += ["", "<details><summary>History: samples/s per run, oldest first</summary>", "",
                  _md_table(HISTORY_HEADERS, history_rows(report)), "", "</details>"]
    return "\n".join(parts) + "\n"


# -- JSON ------------------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """numpy/pandas scalars -> JSON types; NaN and NA -> null; times -> ISO 8601."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def to_json(report: CompareReport) -> str:
    config = report.config
    payload = {
        "verdict": ("not comparable" if not report.comparable else "regressed" if report.regressed
                    else "nothing compared" if not report.decided else "ok"),
        "compared": report.compared,
        "decided": report.decided,
        "ignored": list(report.ignored),
        "regressed": report.regressed,
        "settings": {"threshold": config.threshold, "alpha": config.alpha, "confidence": config.confidence,
                     "baseline_runs": config.baseline_runs, "round_quantile": config.round_quantile,
                     "metric": ("the round_quantile of the ranks' own round times (s), reported as samples/s in "
                                "*_samples_per_s_at_round_quantile; the history's samples_per_s is at the median "
                                "round")},
        "current": {"run_id": report.current_run, "run_datetime": _plain(report.current_datetime),
                    "fingerprint": report.current_fingerprint},
        "baseline": {"source": report.baseline_source, "runs": report.baseline_runs,
                     "run_datetimes": [_plain(stamp) for stamp in report.baseline_datetimes],
                     "differences": report.differences, "other_hardware_runs": report.other_hardware_runs},
        "cases": [{key: _plain(value) for key, value in row.items()}
                  for row in report.comparison.to_dict(orient="records")],
        "history": [{key: _plain(value) for key, value in row.items()}
                    for row in report.history.to_dict(orient="records")],
    }
    return json.dumps(payload, indent=2) + "\n"


# -- HTML chart ------------------------------------------------------------------------------------


def html(report: CompareReport) -> str:
    """A line per case of samples/s over time; plotly is imported late (the 'report' extra)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for case_id, group in report.history.groupby("case_id", sort=False):
        figure.add_trace(go.Scatter(x=list(group["run_datetime"]), y=list(group["samples_per_s"]),
                                    mode="lines+markers", name=str(case_id)))
    current = report.history[report.history["run_id"] == report.current_run]
    if not current.empty:
        figure.add_trace(go.Scatter(x=list(current["run_datetime"]), y=list(current["samples_per_s"]),
                                    mode="markers", name="current run",
                                    marker={"symbol": "star", "size": 13, "color": "black"}))
    title = f"gpusizer compare: {headline(report)}"
    if report.history.empty:
        title += " (no history: BASELINE is a single file)"
    figure.update_layout(title=title, xaxis_title="run (UTC)", yaxis_title="samples/s (median round)",
                         template="plotly_white", showlegend=True)
    return figure.to_html(include_plotlyjs=True, full_html=True)
