"""Why a setup is slower: each setup's measured step split (the record's step_breakdown), as a stacked bar
per setup and as one sentence per multi-device setup naming the part that limits it.

The split is the benchmark's (one profiled round after the timed rounds, the slowest rank's, its shares
stated on the timed step: bench/record/step_split.py): compute, exposed communication, other and idle add
up to the timed step; overlapped communication is hidden behind compute and so is not a part of its own.
Where the profiled round ran more than DILATION_NOTED off the timed step, the sentence says so: its shares
are then those of a slowed step.
"""

from __future__ import annotations

import dataclasses
import html
import math

import pandas as pd

from reports.figures import Chart, _cap, _finish
from reports.words import fmt_number, fmt_pct

# The parts of a step, in the order they stack, with the words the report uses for them.
PART_WORDS = {"compute_s": "compute", "exposed_comm_s": "exposed communication", "other_s": "other host work",
              "idle_s": "idle"}
# What can stand between a multi-device setup and perfect scaling: every part but compute.
LIMITING_PARTS = ("exposed_comm_s", "other_s", "idle_s")
TITLE = "Where the step goes: compute, exposed communication, other, idle (one profiled round)"
# The bound on the split against the timed step: past it the profiler's own cost is named.
DILATION_NOTED = 0.05


def _measured(setups: pd.DataFrame) -> pd.DataFrame:
    if "step_breakdown" not in setups:
        return setups.iloc[0:0]
    return setups[setups["step_breakdown"].map(lambda value: isinstance(value, dict))]


def dilation(split: dict) -> float:
    """How much longer (or, negative, shorter) the profiled round's step was than the timed step."""
    return split["profiled_step_s"] / split["step_s"] - 1.0


# Below this share no part is said to limit a setup: its step is compute.
NEGLIGIBLE_SHARE = 0.01


def limiting_part(split: dict) -> tuple[str, float]:
    """The largest part other than compute and its share of the step."""
    part = max(LIMITING_PARTS, key=lambda name: split[name])
    return part, split[part] / split["step_s"]


def limiting_sentence(row) -> str:
    split = row["step_breakdown"]
    part, share = limiting_part(split)
    if share < NEGLIGIBLE_SHARE:
        text = (f"{row['label']}: compute is {fmt_pct(split['compute_s'] / split['step_s'])} of the step at "
                f"{row['world_size']} devices; nothing else is {fmt_pct(NEGLIGIBLE_SHARE)} of it")
    else:
        shares = ", ".join(f"{PART_WORDS[name]} {fmt_pct(split[name] / split['step_s'])}" for name in PART_WORDS
                           if name != part)
        hidden = split["overlapped_comm_s"]
        overlap = ("overlapped communication not measured" if not math.isfinite(hidden)
                   else f"{fmt_number(hidden * 1e3)} ms of communication hidden behind compute")
        text = (f"{row['label']}: {PART_WORDS[part]} is {fmt_pct(share)} of the step at {row['world_size']} "
                f"devices ({shares}; {overlap})")
    slowed = dilation(split)
    if abs(slowed) > DILATION_NOTED:
        text += (f"; the profiled round ran {fmt_pct(abs(slowed))} {'slower' if slowed > 0 else 'faster'} than the "
                 f"timed ones, so these shares are approximate")
    return text + "."


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
    figure.add_trace(go.Scatter(name="the profiled round's own step", x=labels, mode="markers",
                                y=[split["profiled_step_s"] * 1e3 for split in splits],
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
                      ("From each setup's step split (one profiled round after the timed rounds, the slowest "
                       "rank; its shares of the timed step)."),
                      "", *[f"- {md(sentence)}" for sentence in sentences], ""])
