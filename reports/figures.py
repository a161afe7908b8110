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

from reports.words import fmt_tick

MAX_BARS = 60  # beyond this a bar or box chart is unreadable; the table has every setup
MAX_PANELS = 24  # machines drawn side by side; beyond this the panels are too small to read
# Above these the charts keep the fastest and say so (the table and the CSV always have every setup):
# a report over thousands of setups must stay a file a browser opens, built in seconds.
MAX_SERIES = 60  # lines (setup series) in a line chart, over all its panels
MAX_COLOURED_MACHINES = 24  # machines with a colour of their own in the cost-time scatter; the rest are grey
GIB = 1024.0**3
# Log axes get ticks at 1, 2 and 5 of every decade, each labelled in full ("2,000", not plotly's lone "2"
# for a minor tick: on data spanning less than a decade that was the only label). Where fewer than two of
# those fall on the data, 1.5, 3 and 7 are added; over more than three decades, the decades alone.
LOG_STEPS = (1.0, 2.0, 5.0)
LOG_STEPS_FINE = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


def log_ticks(values) -> tuple[list[float], list[str]]:
    """Tick values and their labels for a log axis over ``values`` (the positive, finite ones)."""
    data = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if not data:
        return [], []
    low, high = min(data) / 1.2, max(data) * 1.2  # a little room, as the axis's own range has
    # Over more than three decades 1-2-5 labels would crowd the axis: the decades alone.
    for steps in ((1.0,),) if high / low > 1e3 else (LOG_STEPS, LOG_STEPS_FINE):
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [step * 10.0**exponent for exponent in decades for step in steps if low <= step * 10.0**exponent <= high]
        if len(ticks) >= 2:
            break
    return ticks, [fmt_tick(tick) for tick in ticks]


def log_axis(values) -> dict:
    """A log axis with full labels at 1-2-5 steps over ``values`` (see log_ticks)."""
    ticks, labels = log_ticks(values)
    return {"type": "log", "tickmode": "array", "tickvals": ticks, "ticktext": labels} if ticks else {"type": "log"}
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
    plot = data.assign(err_plus=data["samples_per_s_high"] - data["samples_per_s"],
                       err_minus=data["samples_per_s"] - data["samples_per_s_low"])
    plot, note = _cap_series(*_cap_machines(plot))
    figure = _faceted_lines(plot, "samples_per_s", "throughput (samples/s, log scale)", log_y=True,  # spans decades
                            errors=("err_plus", "err_minus"))
    return Chart("throughput", title, _finish(figure, title, plot), note)


def scaling_chart(data: pd.DataFrame) -> Chart:
    title = "Scaling efficiency against the same machine's 1-device run"
    plot = data[np.isfinite(data["scaling_efficiency"].to_numpy(dtype=float))]
    if plot.empty or (plot["world_size"] <= 1).all():
        return Chart("scaling", title, None, "not drawn: needs a 1-device run and a multi-device run on one machine")
    plot, note = _cap_series(*_cap_machines(plot.assign(efficiency_pct=plot["scaling_efficiency"] * 100.0)))
    figure = _faceted_lines(plot, "efficiency_pct", "scaling efficiency (%)",
                            reference_lines=((100.0, "dot", "gray"), (105.0, "dash", "red")))
    return Chart("scaling", title, _finish(figure, title, plot),
                 "dotted line: 100% (perfect scaling); red dashed line: 105%, above which a result is suspicious"
                 + (f"; {note}" if note else ""))


def _faceted_lines(plot: pd.DataFrame, y: str, y_title: str, *, log_y: bool = False, errors: tuple | None = None,
                   reference_lines: tuple = ()) -> dict:
    """One panel per machine, one line per setup series over device counts. Built as a plain figure
    dict: plotly's validating objects take seconds once there are hundreds of traces."""
    from plotly.colors import qualitative

    machines = sorted(plot["machine"].unique())
    series_names = sorted(plot["series"].unique())
    colours = {name: qualitative.Plotly[i % len(qualitative.Plotly)] for i, name in enumerate(series_names)}
    dashes = {name: ("solid", "dash", "dot", "dashdot")[i // len(qualitative.Plotly) % 4]
              for i, name in enumerate(series_names)}
    columns = min(3, len(machines))
    rows = math.ceil(len(machines) / columns)
    layout: dict = {"annotations": [], "shapes": [], "legend": {"title": {"text": "setup"}}}
    traces, shown = [], set()
    by_machine = dict(tuple(plot.groupby("machine", sort=False)))
    for index, machine in enumerate(machines):
        row, column = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x_domain = _domain(column, columns, gap=0.06)
        y_domain = _domain(rows - 1 - row, rows, gap=0.5 / max(rows, 1) if rows > 1 else 0.0)
        layout[f"xaxis{suffix}"] = {"domain": x_domain, "anchor": f"y{suffix}", "dtick": 1,
                                    "title": {"text": "devices (GPUs; CPU: worker processes)"}}
        layout[f"yaxis{suffix}"] = {"domain": y_domain, "anchor": f"x{suffix}", **(log_axis(plot[y]) if log_y else {}),
                                    "title": {"text": y_title if column == 0 else ""}}
        layout["annotations"].append({"text": machine, "showarrow": False, "xref": "paper", "yref": "paper",
                                      "x": sum(x_domain) / 2, "y": y_domain[1], "yanchor": "bottom",
                                      "xanchor": "center"})
        for value, dash, colour in reference_lines:
            layout["shapes"].append({"type": "line", "xref": f"x{suffix} domain", "yref": f"y{suffix}", "x0": 0,
                                     "x1": 1, "y0": value, "y1": value, "line": {"dash": dash, "color": colour}})
        for name, group in by_machine[machine].groupby("series", sort=True):
            group = group.sort_values("world_size")
            trace = {"type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": name,
                     "showlegend": name not in shown, "x": group["world_size"].tolist(), "y": group[y].tolist(),
                     "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "hovertext": group["label"].tolist(),
                     "line": {"color": colours[name], "dash": dashes[name]}}
            if errors:
                trace["error_y"] = {"type": "data", "array": group[errors[0]].tolist(),
                                    "arrayminus": group[errors[1]].tolist()}
            shown.add(name)
            traces.append(trace)
    return {"data": traces, "layout": layout}


def _domain(position: int, count: int, gap: float) -> list[float]:
    width = (1.0 - gap * (count - 1)) / count
    start = position * (width + gap)
    return [start, min(1.0, start + width)]


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
    plot, note, grey = _grey_other_machines(plot)
    figure = px.scatter(plot, x="time_h", y="cost_to_target", color="machine", symbol="preset",
                        color_discrete_map=grey,
                        error_x="time_err_plus", error_x_minus="time_err_minus", hover_name="label",
                        log_x=True, log_y=True,
                        labels={"time_h": f"time to train {target_samples:,.0f} samples (h, log scale)",
                                "cost_to_target": f"cost to train {target_samples:,.0f} samples "
                                                  f"({currency}, log scale)"})
    figure.update_xaxes(**log_axis(plot["time_h"]))
    figure.update_yaxes(**log_axis(plot["cost_to_target"]))
    for preset, group in plot[plot["on_frontier"]].groupby("preset"):
        group = group.sort_values("time_h")
        # The frontier is drawn on top, solid and thick, its points named: readable without hovering.
        names = [f"{row.strategy} {row.world_size}× {row.precision}" for row in group.itertuples()]
        figure.add_trace(go.Scatter(x=group["time_h"], y=group["cost_to_target"], mode="lines+markers+text",
                                    text=names, textposition="top right", textfont={"size": 11},
                                    line={"color": "black", "width": 3}, marker={"size": 9, "color": "black"},
                                    name=f"frontier ({preset})", hoverinfo="skip"))
    return Chart("cost_time", title, _finish(figure, title, plot), note)


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
        go.Scatter(name="capacity (GiB)", x=plot["label"], y=plot["memory_capacity_bytes"] / GIB, mode="markers",
                   marker={"symbol": "line-ew-open", "size": 24, "line": {"width": 3}, "color": "red"}),
    ])
    # Log scale: a few hundred MiB used next to tens of GiB of capacity must both stay visible.
    figure.update_layout(xaxis_title="setup", yaxis_title="memory per device (GiB, log scale)")
    figure.update_yaxes(**log_axis(pd.concat([plot["peak_memory_bytes"], plot["memory_capacity_bytes"]]) / GIB))
    return Chart("memory", title, _finish(figure, title, plot), note)


def round_time_chart(data: pd.DataFrame) -> Chart:
    title = "Round-time distributions (the ranks' own times, every measured round)"
    if data.empty:
        return Chart("round_times", title, None, "no passed cases")
    import plotly.express as px

    plot, note = _cap(data.sort_values("samples_per_s", ascending=False))
    rounds = plot[["label", "machine", "round_times_s"]].explode("round_times_s")
    rounds["round_time_ms"] = rounds["round_times_s"].astype(float) * 1000.0
    figure = px.box(rounds, x="label", y="round_time_ms", color="machine", points="all", log_y=True,
                    labels={"label": "setup", "round_time_ms": "round time (ms, log scale)"})
    figure.update_yaxes(**log_axis(rounds["round_time_ms"]))
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


def _cap_machines(plot: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """At most MAX_PANELS machines: those with the fastest setups, so the contenders stay in view."""
    machines = plot.groupby("machine")["samples_per_s"].max().sort_values(ascending=False).index
    if len(machines) <= MAX_PANELS:
        return plot, None
    kept = plot[plot["machine"].isin(machines[:MAX_PANELS])]
    return kept, (f"showing the {MAX_PANELS} machines with the fastest setups of {len(machines)}; "
                  f"the table lists all")


def _cap_series(plot: pd.DataFrame, note: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """At most MAX_SERIES lines: the series with the fastest setups (one trace per series and panel)."""
    series = plot.groupby("series")["samples_per_s"].max().sort_values(ascending=False).index
    if len(series) <= MAX_SERIES:
        return plot, note
    kept = plot[plot["series"].isin(series[:MAX_SERIES])]
    capped = f"showing the {MAX_SERIES} setup series with the fastest setups of {len(series)}; the table lists all"
    return kept, f"{note}; {capped}" if note else capped


def _grey_other_machines(plot: pd.DataFrame) -> tuple[pd.DataFrame, str | None, dict]:
    """Every setup stays a point; beyond MAX_COLOURED_MACHINES only the machines with the fastest setups
    keep a colour (and a legend entry), the others are pooled as one grey group."""
    machines = plot.groupby("machine")["time_h"].min().sort_values().index
    if len(machines) <= MAX_COLOURED_MACHINES:
        return plot, None, {}
    others = f"other machines ({len(machines) - MAX_COLOURED_MACHINES})"
    pooled = plot.assign(machine=plot["machine"].where(plot["machine"].isin(machines[:MAX_COLOURED_MACHINES]), others))
    return pooled, (f"every setup is a point; the {MAX_COLOURED_MACHINES} machines with the fastest setups of "
                    f"{len(machines)} have a colour each, the rest are pooled in grey as '{others}'"), {others: "#bbbbbb"}


def _cap(plot: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    if len(plot) <= MAX_BARS:
        return plot, None
    return plot.head(MAX_BARS), f"showing the first {MAX_BARS} of {len(plot)} setups; the table lists all"


def _wrap(plot: pd.DataFrame) -> int:
    return min(3, max(1, plot["machine"].nunique()))


def _finish(figure, title: str, plot: pd.DataFrame):
    """Title, size and template; works on a plotly Figure and on a plain figure dict."""
    import plotly.io as pio

    panels = plot["machine"].nunique() if isinstance(figure, dict) else 1
    layout = {"title": {"text": html.escape(title)}, "height": max(420, 320 * math.ceil(panels / 3)),
              "legend": {"font": {"size": 10}}}
    if isinstance(figure, dict):
        # A plain dict is not validated, so the template goes in resolved rather than by name.
        figure["layout"].update(layout, template=pio.templates["plotly_white"].to_plotly_json())
        figure["layout"]["legend"].update(layout["legend"])
        return figure
    figure.update_layout(**layout, template="plotly_white")
    return figure
