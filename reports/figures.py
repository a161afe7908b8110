"""The report's charts (plotly). Each builder returns a Chart: a figure, or the reason it is not drawn.

Strings from result files are HTML-escaped before they reach plotly: plotly.js reads a small set of
HTML tags inside text, so a hostname like ``<b>`` would otherwise be interpreted, not shown.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_BARS = 60  # beyond this a bar or box chart is unreadable; the table has every setup
GIB = 1024.0**3
TEXT_COLUMNS = ("label", "machine", "device_name", "strategy", "precision", "preset", "series")


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    figure: object | None  # a plotly Figure, or None when there is nothing to draw
    note: str | None = None  # why not drawn, or what was left out


def build_charts(setups: pd.DataFrame, *, target_samples: float, currency: str | None) -> list[Chart]:
    data = _escaped(setups)
    return [
        throughput_chart(data),
        scaling_chart(data),
        cost_time_chart(data, target_samples, currency),
        energy_chart(data),
        memory_chart(data),
        round_time_chart(data),
    ]


def throughput_chart(data: pd.DataFrame) -> Chart:
    title = "Throughput versus device count, per strategy (one panel per machine)"
    if data.empty:
        return Chart("throughput", title, None, "no passed cases")
    import plotly.express as px

    plot = data.sort_values("world_size").assign(
        err_plus=lambda d: d["samples_per_s_high"] - d["samples_per_s"],
        err_minus=lambda d: d["samples_per_s"] - d["samples_per_s_low"])
    figure = px.line(plot, x="world_size", y="samples_per_s", color="series", facet_col="machine",
                     facet_col_wrap=_wrap(plot), markers=True, error_y="err_plus", error_y_minus="err_minus",
                     hover_name="label", labels={"world_size": "devices (GPUs; CPU: worker processes)",
                                                 "samples_per_s": "throughput (samples/s)", "series": "setup"})
    return Chart("throughput", title, _finish(figure, title, plot))


def scaling_chart(data: pd.DataFrame) -> Chart:
    title = "Scaling efficiency against the same machine's 1-device run"
    plot = data[np.isfinite(data["scaling_efficiency"].to_numpy(dtype=float))]
    if plot.empty or (plot["world_size"] <= 1).all():
        return Chart("scaling", title, None, "not drawn: needs a 1-device run and a multi-device run on one machine")
    import plotly.express as px

    plot = plot.sort_values("world_size").assign(efficiency_pct=lambda d: d["scaling_efficiency"] * 100.0)
    figure = px.line(plot, x="world_size", y="efficiency_pct", color="series", facet_col="machine",
                     facet_col_wrap=_wrap(plot), markers=True, hover_name="label",
                     labels={"world_size": "devices (GPUs; CPU: worker processes)",
                             "efficiency_pct": "scaling efficiency (%)", "series": "setup"})
    figure.add_hline(y=100.0, line_dash="dot", annotation_text="perfect (100%)")
    figure.add_hline(y=105.0, line_dash="dash", line_color="red", annotation_text="suspicious above 105%")
    return Chart("scaling", title, _finish(figure, title, plot))


def cost_time_chart(data: pd.DataFrame, target_samples: float, currency: str | None) -> Chart:
    title = f"Cost versus time to train {target_samples:,.0f} samples, with the time-cost frontier"
    plot = data[np.isfinite(data["cost_to_target"].to_numpy(dtype=float))] if "cost_to_target" in data else data[:0]
    if currency is None or plot.empty:
        return Chart("cost_time", title, None, "not drawn: no prices matched (pass --prices CSV)")
    import plotly.express as px
    import plotly.graph_objects as go

    plot = plot.assign(time_h=plot["time_to_target_s"] / 3600.0,
                       time_err_plus=(plot["time_to_target_s_high"] - plot["time_to_target_s"]) / 3600.0,
                       time_err_minus=(plot["time_to_target_s"] - plot["time_to_target_s_low"]) / 3600.0)
    figure = px.scatter(plot, x="time_h", y="cost_to_target", color="machine", symbol="preset",
                        error_x="time_err_plus", error_x_minus="time_err_minus", hover_name="label",
                        log_x=True, log_y=True,
                        labels={"time_h": f"time to train {target_samples:,.0f} samples (h)",
                                "cost_to_target": f"cost to train {target_samples:,.0f} samples ({currency})"})
    for preset, group in plot[plot["on_frontier"]].groupby("preset"):
        group = group.sort_values("time_h")
        figure.add_trace(go.Scatter(x=group["time_h"], y=group["cost_to_target"], mode="lines",
                                    line={"dash": "dash", "color": "black"}, name=f"frontier ({preset})",
                                    hoverinfo="skip"))
    return Chart("cost_time", title, _finish(figure, title, plot))


def energy_chart(data: pd.DataFrame) -> Chart:
    title = "Energy per sample"
    plot = data[np.isfinite(data["joules_per_sample"].to_numpy(dtype=float))]
    if plot.empty:
        return Chart("energy", title, None, "not drawn: no run measured energy (needs a GPU with NVML, "
                                            "or CPU energy counters)")
    import plotly.express as px

    plot, note = _cap(plot.sort_values("joules_per_sample"))
    plot = plot.assign(err_plus=plot["joules_per_sample_high"] - plot["joules_per_sample"],
                       err_minus=plot["joules_per_sample"] - plot["joules_per_sample_low"])
    figure = px.bar(plot, x="label", y="joules_per_sample", color="machine", error_y="err_plus",
                    error_y_minus="err_minus", labels={"label": "setup", "joules_per_sample": "energy (J/sample)"})
    return Chart("energy", title, _finish(figure, title, plot), note)


def memory_chart(data: pd.DataFrame) -> Chart:
    title = "Peak memory used versus capacity, per device"
    plot = data[np.isfinite(data["peak_memory_bytes"].to_numpy(dtype=float))]
    if plot.empty:
        return Chart("memory", title, None, "not drawn: no case recorded its peak memory")
    import plotly.graph_objects as go

    plot, note = _cap(plot.sort_values("peak_memory_bytes", ascending=False))
    figure = go.Figure([
        go.Bar(name="peak used (GiB)", x=plot["label"], y=plot["peak_memory_bytes"] / GIB),
        go.Bar(name="capacity (GiB)", x=plot["label"], y=plot["memory_capacity_bytes"] / GIB, opacity=0.4),
    ])
    figure.update_layout(barmode="group", xaxis_title="setup", yaxis_title="memory per device (GiB)")
    return Chart("memory", title, _finish(figure, title, plot), note)


def round_time_chart(data: pd.DataFrame) -> Chart:
    title = "Round-time distributions (controller's stopwatch, every measured round)"
    if data.empty:
        return Chart("round_times", title, None, "no passed cases")
    import plotly.express as px

    plot, note = _cap(data.sort_values("samples_per_s", ascending=False))
    rounds = plot[["label", "machine", "round_times_s"]].explode("round_times_s")
    rounds["round_time_ms"] = rounds["round_times_s"].astype(float) * 1000.0
    figure = px.box(rounds, x="label", y="round_time_ms", color="machine", points="all",
                    labels={"label": "setup", "round_time_ms": "round time (ms)"})
    return Chart("round_times", title, _finish(figure, title, plot), note)


# -- helpers ---------------------------------------------------------------------------------------


def _escaped(setups: pd.DataFrame) -> pd.DataFrame:
    data = setups.copy()
    data["series"] = (data["strategy"] + " " + data["precision"] + " " + data["preset"] + " b"
                      + data["per_device_batch_size"].astype(str)
                      + np.where(data["scaling"] == "strong", " strong", ""))
    for column in TEXT_COLUMNS:
        if column in data:
            data[column] = data[column].map(lambda text: html.escape(str(text)))
    return data


def _cap(plot: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    if len(plot) <= MAX_BARS:
        return plot, None
    return plot.head(MAX_BARS), f"showing the first {MAX_BARS} of {len(plot)} setups; the table lists all"


def _wrap(plot: pd.DataFrame) -> int:
    return min(3, max(1, plot["machine"].nunique()))


def _finish(figure, title: str, plot: pd.DataFrame):
    panels = plot["machine"].nunique() if "machine" in plot else 1
    rows = math.ceil(panels / 3) if figure.layout.annotations else 1
    figure.update_layout(title=html.escape(title), height=max(420, 320 * rows), template="plotly_white",
                         legend={"font": {"size": 10}})
    # plotly labels facets "machine=<name>": keep only the name.
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]) if a.text and "=" in a.text else None)
    return figure
