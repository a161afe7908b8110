"""The HTML report: one self-contained page (plotly.js embedded once, every chart a div that uses it).

What it says comes from reports/answer.py (the blocks the Markdown report walks too) and reports/words.py;
this module decides how it looks, and escapes every string that came from a result file.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

import pandas as pd

from reports.answer import Answer
from reports.figures import Chart
from reports.recommend import Finding, Recommendation
from reports.setups_table import display_table
from reports.words import ReportContext, counted, finding_text, fmt_money, grouped_findings


def html_text(text: str) -> str:
    """Escaped text in which Markdown's `code` marks become <code>, rather than showing literally."""
    parts = html.escape(str(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired mark: leave the text as it is
        return html.escape(str(text))
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


CHART_CAPTIONS = {
    "throughput": ("Samples per second over all devices (log scale) against the device count; one line per "
                   "strategy, precision and batch; bars: 95% intervals. Higher is better."),
    "scaling": ("Per-device throughput over the same machine's 1-device throughput, in %; 100% is perfect scaling. "
                "On a CPU extra processes share the same cores, so this shows communication overhead."),
    "cost_time": ("Each point a setup: time (log scale) and cost (log scale) to train the target. Labelled points "
                  "on the solid black line are the frontier: no other setup is both faster and cheaper."),
    "energy": "Joules per training sample for each setup, with its 95% interval. Lower is better.",
    "memory": ("Peak memory per device (bar, log scale) against the device's capacity (red mark). A bar near its "
               "mark leaves no room for a larger batch or model."),
    "step_breakdown": ("Milliseconds per training step of the slowest rank: compute, communication not hidden "
                       "behind compute, other host work and idle, in the shares one round under torch.profiler "
                       "measured after the timed rounds, stacked to the step the timed rounds measured; the black "
                       "mark is what the profiled round itself took per step (the profiler's dilation)."),
    "round_times": ("Every measured round's time in ms (log scale), one box per setup: a wide box or far points "
                    "mean a noisy measurement."),
}


# Registered before plotly.js runs, so that a script error anywhere on the page is recorded in the DOM
# (a headless browser test reads it back) as well as shown to the reader.
_ERROR_CATCHER = """
window.gpusizerErrors = [];
window.addEventListener("error", function (event) {
  window.gpusizerErrors.push(String(event.message || event.error || "script error"));
});
"""

# Counts the charts that plotly actually drew (a div with an SVG inside) and writes it down.
_STATUS_SCRIPT = """
(function () {
  function record() {
    var status = document.getElementById("gpusizer-status");
    var drawn = Array.prototype.filter.call(document.querySelectorAll(".js-plotly-plot"),
      function (div) { return div.querySelector(".main-svg") !== null; }).length;
    status.setAttribute("data-plots-drawn", String(drawn));
    status.setAttribute("data-errors", window.gpusizerErrors.join(" | "));
    // How far the answer section and the page reach past their width (0: no horizontal scroll).
    var answer = document.getElementById("answer");
    status.setAttribute("data-answer-overflow-px", String(answer ? answer.scrollWidth - answer.clientWidth : -1));
    status.setAttribute("data-page-overflow-px",
      String(document.documentElement.scrollWidth - document.documentElement.clientWidth));
    status.setAttribute("data-viewport-px", String(document.documentElement.clientWidth));
    status.textContent = drawn + " of " + status.getAttribute("data-plots-expected") + " charts drawn" +
      (window.gpusizerErrors.length ? "; script errors: " + window.gpusizerErrors.join(" | ") : "");
  }
  record();
  window.addEventListener("load", function () { setTimeout(record, 0); });
})();
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; } td, th { border: 1px solid #ddd; padding: .25em .5em; }
th { background: #f4f4f4; position: sticky; top: 0; } .pick { margin: .4em 0 .8em 0; }
.note { color: #666; font-style: italic; } .warn li { margin-bottom: .2em; } .meta td:first-child { font-weight: 600; }
.scroll { overflow-x: auto; max-height: 40em; } td.setup { white-space: nowrap; }
.bottom { font-size: 1.15em; background: #eef6ee; border-left: 4px solid #2a7a2a; padding: .5em .8em; }
.caption { color: #444; font-size: .9em; margin: .2em 0 1.5em 0; } code { background: #f2f2f2; padding: 0 .2em; }
#answer { overflow-wrap: anywhere; }
"""


def render_html(recommendation: Recommendation, answer: Answer, charts: list[Chart], context: ReportContext,
                extra_sections: str = "") -> str:
    """``extra_sections``: HTML of sections built elsewhere (the scaling projection), before the method."""
    from plotly.io import to_html
    from plotly.offline import get_plotlyjs

    drawn = [chart for chart in charts if chart.figure is not None]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>gpusizer report: which GPU and setup to choose</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_ERROR_CATCHER}</script>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',  # once, for every chart
        "</head><body>",
        "<h1>gpusizer report: which GPU and setup to choose</h1>",
        _html_meta(context),
        '<section id="answer">',
        "<h2>The answer</h2>",
        _html_answer(answer),
        "<h2>Warnings that could change the decision</h2>",
        _html_findings(recommendation.findings),
        "</section>",
        "<h2>Charts</h2>",
    ]
    for chart in charts:
        if chart.figure is None:  # a drawn chart carries its own title
            parts.append(f"<h3>{html.escape(chart.title)}</h3>")
        if chart.figure is not None:
            parts.append(to_html(chart.figure, include_plotlyjs=False, full_html=False, div_id=f"chart-{chart.key}",
                                 validate=False, config={"responsive": True, "displaylogo": False}))
        # One caption beneath each chart: what it shows, then what was left out or why it is not drawn.
        caption = " ".join(text for text in (CHART_CAPTIONS.get(chart.key) if chart.figure is not None else None,
                                             chart.note) if text)
        if caption:
            parts.append(f'<p class="caption">{html.escape(caption)}</p>')
    parts += [
        "<h2>Every setup</h2>",
        ('<p class="note">Ranks as in the answer. Scaling efficiency is against the same '
        "machine's 1-device run; MFU against the matmul peak measured in the same session.</p>"),
        '<div class="scroll">' + _html_table(display_table(recommendation.setups, context.currency)) + "</div>",
        extra_sections,
        "<h2>Method</h2>",
        _html_method(context),
        (f'<p id="gpusizer-status" class="note" data-plots-expected="{len(drawn)}" data-plots-drawn="0" '
        f'data-errors=""></p>'),
        f"<script>{_STATUS_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _html_meta(context: ReportContext) -> str:
    prices = (f"{context.prices_path} ({context.currency})" if context.prices_path
              else "none given: cost was not judged")
    budget = fmt_money(context.budget, context.currency) + " total for the target" if context.budget else "none given"
    rows = [
        ("made", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("from", (f"{counted(context.files, 'result file')} ({_shortened(context.inputs)}), "
                 f"{counted(context.machines, 'machine')}, {counted(context.cases, 'measured case')}")),
        ("target", f"{context.target_samples:,.0f} samples (change with --target-samples)"),
        ("prices", prices),
        ("budget", budget),
    ]
    body = "".join(f"<tr><td>{html.escape(key)}</td><td>{html.escape(value)}</td></tr>"
                   for key, value in rows)
    return f'<table class="meta">{body}</table>'


def _shortened(inputs: tuple[str, ...], shown: int = 5) -> str:
    """The paths given, the first few of a long shell glob only."""
    text = ", ".join(inputs[:shown])
    return text + (f" and {len(inputs) - shown} more" if len(inputs) > shown else "")


def _html_answer(answer: Answer) -> str:
    if not answer.workloads:
        return "<p>No case passed in these files, so there is nothing to recommend; see the warnings.</p>"
    parts = []
    for block in answer.workloads:
        prefix = f"Model preset {block.workload}: " if answer.several_workloads else ""
        parts.append(f'<p class="bottom"><b>{html.escape(prefix)}</b>{html_text(block.bottom_line)}</p>')
    parts.append('<ul class="note">' + "".join(f"<li>{html_text(note)}</li>" for note in answer.notes) + "</ul>")
    for block in answer.workloads:
        parts.append(f"<h3>Workload: model preset {html.escape(block.workload)}</h3><ul>")
        for pick in block.picks:
            parts.append(f'<li class="pick"><b>{html.escape(pick.title)}:</b> {html_text(pick.sentence)}')
            parts.extend(f"<br><i>{html_text(note)}</i>" for note in pick.notes)
            if pick.runners_up:
                items = "".join(f"<li>{html_text(text)}</li>" for text in pick.runners_up)
                parts.append(f"<br>Runners-up, by {html.escape(pick.unit)}:<ul>{items}</ul>")
            parts.append("</li>")
        parts.append("</ul>")
    return "\n".join(parts)


def _html_findings(findings: tuple[Finding, ...]) -> str:
    if not findings:
        return "<p>None.</p>"
    parts = []
    for title, group in grouped_findings(findings):
        items = "".join(f"<li>{html_text(finding_text(finding))}</li>" for finding in group)
        parts.append(f'<h3>{html.escape(title)} ({len(group)})</h3><ul class="warn">{items}</ul>')
    return "\n".join(parts)


def _html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>No measured setups.</p>"
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in table.columns)
    # The setup's name never wraps: the table scrolls sideways in its own box instead.
    classes = ['class="setup"' if column == "setup" else "" for column in table.columns]
    body = "".join("<tr>" + "".join(f"<td {cls}>{html.escape(str(value))}</td>" for cls, value in zip(classes, row))
                   + "</tr>" for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_method(context: ReportContext) -> str:
    lines = [
        ("Throughput is global samples per round over the round's time (the slowest rank's own), from the "
        "median round: the median of the round times, then samples over it. Runs of the same setup on the same "
        "machine are pooled: their rounds form one sample (a round of other steps per round counted in "
        "proportion to its samples). A setup measured in one run shows its result file's samples_per_s."),
        ("Intervals: 95% percentile bootstrap of the median round time, as samples/s; cost and time intervals "
        "follow from it, and so does the energy interval (power taken as its mean over the measured rounds)."),
        ("Cost: price per hour (per GPU used, or per instance) over throughput; time and cost to train the target "
        f"of {context.target_samples:,.0f} samples."),
        "dp (DataParallel) is shown as a baseline only and is never recommended.",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
