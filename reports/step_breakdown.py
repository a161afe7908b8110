"""Why a setup is slower: each setup's measured step split (the record's step_breakdown), as a stacked bar
per setup and as one sentence per multi-device setup naming the part that limits it.

The split is the benchmark's (one profiled round after the timed rounds, the slowest rank's): compute,
exposed communication, other and idle add up to the profiled step; overlapped communication is hidden
behind compute and so is not a part of its own.
"""

from __future__ import annotations

import dataclasses
import html
import math

import pandas as pd

from gpusizer_common import metrics
from reports.figures import Chart, _cap, _finish
from reports.words import fmt_number, fmt_pct

# The parts of a step, in the order they stack, with the words the report uses for them.
PART_WORDS = {"compute_s": "compute", "exposed_comm_s": "exposed communication", "other_s": "other host work",
              "idle_s": "idle"}
# What can stand between a multi-device setup and perfect scaling: every part but compute.
LIMITING_PARTS = ("exposed_comm_s", "other_s", "idle_s")
TITLE = "Where the step goes: compute, exposed communication, other, idle (one profiled round)"


def _measured(setups: pd.DataFrame) -> pd.DataFrame:
    if "step_breakdown" not in setups:
        return setups.iloc[0:0]
    return setups[setups["step_breakdown"].map(lambda value: isinstance(value, dict))]


def timed_step_s(row) -> float:
    """The timed rounds' step: the time to train one global batch at the setup's throughput (median round)."""
    return metrics.seconds_to_train(row["global_batch_size"], row["samples_per_s"])


def limiting_part(split: dict) -> tuple[str, float]:
    """The largest part other than compute and its share of the profiled step."""
    part = max(LIMITING_PARTS, key=lambda name: split[name])
    return part, split[part] / split["step_s"]


def limiting_sentence(row) -> str:
    split = row["step_breakdown"]
    part, share = limiting_part(split)
    shares = ", ".join(f"{PART_WORDS[name]} {fmt_pct(split[name] / split['step_s'])}" for name in PART_WORDS
                       if name != part)
    hidden = split["overlapped_comm_s"]
    overlap = ("overlapped communication not measured" if not math.isfinite(hidden)
               else f"{fmt_number(hidden * 1e3)} ms of communication hidden behind compute")
    return (f"{row['label']}: {PART_WORDS[part]} is {fmt_pct(share)} of the step at {row['world_size']} devices "
            f"({shares}; {overlap}).")


def limiting_sentences(setups: pd.DataFrame) -> list[str]:
    """One sentence per multi-device setup with a measured split; the others are said to have none."""
    multi = setups[setups["world_size"] > 1]
    measured = _measured(multi)
    sentences = [limiting_sentence(row) for row in measured.to_dict("records")]
    missing = len(multi) - len(measured)
    if missing:
        sentences.append(f"{missing} multi-device setup(s) have no measured step split (pytest bench/ "
                         f"--step-breakdown measures it).")
    return sentences


def with_step_split(charts: list[Chart], setups: pd.DataFrame) -> list[Chart]:
    """The report's charts with the step split's: the stacked bars after the scaling chart, and under the
    scaling chart what limits each multi-device setup (its caption is escaped when written)."""
    limits = limiting_sentences(setups)
    out = []
    for chart in charts:
        if chart.key == "scaling" and limits:
            chart = dataclasses.replace(chart, note=" ".join(
                filter(None, (chart.note, "What limits each multi-device setup: " + " ".join(limits)))))
        out.append(chart)
        if chart.key == "scaling":
            out.append(breakdown_chart(setups))
    return out


def breakdown_chart(setups: pd.DataFrame) -> Chart:
    measured = _measured(setups)
    if measured.empty:
        return Chart("step_breakdown", TITLE, None, "not drawn: no case recorded a step split")
    import plotly.graph_objects as go

    plot, note = _cap(measured)
    splits = list(plot["step_breakdown"])
    # plotly.js reads some HTML tags inside text: labels from result files are escaped (as reports/figures.py does).
    labels = [html.escape(str(label)) for label in plot["label"]]
    figure = go.Figure([go.Bar(name=words, x=labels, y=[split[part] * 1e3 for split in splits])
                        for part, words in PART_WORDS.items()])
    figure.add_trace(go.Scatter(name="timed step (median round / steps)", x=labels, mode="markers",
                                y=[timed_step_s(row) * 1e3 for row in plot.to_dict("records")],
                                marker={"symbol": "line-ew-open", "size": 24, "line": {"width": 3}, "color": "black"}))
    figure.update_layout(barmode="stack", xaxis_title="setup", yaxis_title="ms per step")
    return Chart("step_breakdown", TITLE, _finish(figure, TITLE, plot), note)


def render_markdown(setups: pd.DataFrame) -> str:
    """The Markdown summary's section: the limiting part of each multi-device setup; empty without any."""
    from reports.render_markdown import md

    sentences = limiting_sentences(setups)
    if not sentences:
        return ""
    return "\n".join(["", "## Scaling: what limits each multi-device setup", "",
                      "From each setup's step split (one profiled round after the timed rounds, the slowest rank).",
                      "", *[f"- {md(sentence)}" for sentence in sentences], ""])
