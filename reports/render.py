"""Words and files: the one place numbers are rounded and strings from result files are escaped.

Writes one self-contained HTML page (plotly.js embedded once, every chart a div that uses it), a
Markdown summary for a CI log or a pull-request comment, and a CSV of the setups table.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from reports.analyse import SUPERLINEAR_EFFICIENCY
from reports.figures import Chart
from reports.recommend import Finding, Pick, Recommendation

# How each warning reads, most decision-changing first. {subject} and {value} are filled per finding.
FINDING_TEXT = {
    "unstable": ("Unstable machine: comparisons withheld",
                 ("{subject} was measured while the machine was not steady ({detail}); it is never ranked "
                  "clearly better or worse than another setup: measure it again on a quiet machine")),
    "ignored_run": ("Result files ignored", ("{subject} measured nothing (every case skipped or failed), so it was "
                                            "ignored")),
    "failed": ("Failed cases", "{subject} failed: {detail}"),
    "incomplete_run": ("Incomplete runs", "{subject} was cut short or was still running; cases may be missing"),
    "superlinear": ("Suspicious scaling (above 105%)",
                    ("{subject} scales at {value_pct} of perfect: more than the devices can give, so the "
                    "1-device baseline was probably slowed by something else; do not trust this speed-up")),
    "mfu_above_peak": ("Faster than the measured peak",
                       "{subject} reaches {value_pct} of the measured matmul peak: the peak or the timing is wrong"),
    "throttled": ("Throttling", ("{subject} was thermally or power throttled ({value_pct} of the time): its numbers "
                                "understate the GPU; check cooling and power limits")),
    "low_utilisation": ("Low utilisation", ("{subject} kept the devices {value_plain}% busy on average: something "
                                           "other than the GPU limits it, so a smaller GPU may do as well")),
    "timing_gap": ("Timing gap between controller and workers",
                   ("{subject}: the controller's and the workers' median round times differ by {value_pct}; its "
                   "throughput is less certain")),
    "memory_near_capacity": ("Memory nearly full", ("{subject} leaves {value_pct} of device memory free: a larger "
                                                   "batch or model will not fit")),
    "baseline_only": ("Baseline only (never recommended)",
                      "{subject}: DataParallel is shown for comparison only; use ddp instead"),
    "mixed_workload": ("Mixed workloads ranked together",
                       ("{subject} was measured at {detail}: its setups are ranked together, but a larger batch "
                        "alone can raise throughput; compare runs made with the same options")),
    "unpriced": ("No price", "{subject}: {detail} matches no row of the prices file; its cost was not judged"),
    "no_prices": ("Cost not judged", ("no --prices file was given, so cost was not judged (nothing is guessed); "
                                     "see examples/prices.example.csv")),
    "no_energy": ("Energy not judged", "no run measured energy (GPU runs with NVML do), so energy was not judged"),
    "skipped": ("Skipped cases", "{subject} was skipped: {detail}"),
}

NOT_JUDGED_TEXT = {
    "no_prices": "not judged: no --prices file was given",
    "no_price_match": "not judged: no row of the prices file matches these setups (see 'No price' below)",
    "no_budget": "not asked: give --budget (total cost of training the target samples) to answer it",
    "nothing_fits": "no priced setup trains the target samples within the budget of {budget}",
    "no_energy": "not judged: no run measured energy",
    "no_candidates": "no setup could be judged (only baseline-only, unpriced or unmeasured ones)",
}

MARKDOWN_LIST_LIMIT = 10  # per warning kind; the HTML lists them all


@dataclass(frozen=True)
class ReportContext:
    """What the report was made from, for its header."""

    inputs: tuple[str, ...]
    files: int
    machines: int
    cases: int
    target_samples: float
    prices_path: str | None
    currency: str | None
    budget: float | None


# -- number formats ------------------------------------------------------------------------------


def fmt_number(value: float, digits: int = 3) -> str:
    """Three significant figures with thousands separators: 123,000 / 1,230 / 12.3 / 0.0123."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{round(value, decimals):,.{decimals}f}"


def fmt_pct(fraction: float) -> str:
    return "n/a" if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.1f}%"


def fmt_bytes(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value / 1024**3:.2f} GiB"


def fmt_money(value: float, currency: str | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{fmt_number(value) if value < 100 else f'{value:,.0f}'} {currency or ''}".strip()


def fmt_duration(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{fmt_number(seconds / size)} {unit}"
    return f"{fmt_number(seconds)} s"


def fmt_interval(low: float, high: float, formatter=fmt_number) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval (one round)"
    return f"95% CI {formatter(low)}–{formatter(high)}"


# -- sentences -----------------------------------------------------------------------------------


def pick_sentence(pick: Pick, context: ReportContext) -> str:
    """One plain-text sentence: the best setup and why. Escaping is the caller's job."""
    if pick.best is None:
        return NOT_JUDGED_TEXT[pick.not_judged].format(budget=fmt_money(context.budget, context.currency))
    best, key = pick.best, pick.objective.key
    target = f"{context.target_samples:,.0f}"
    if key in ("fastest", "within_budget"):
        text = (f"{best['label']} trains {fmt_number(best['samples_per_s'])} samples/s "
                f"({fmt_interval(best['samples_per_s_low'], best['samples_per_s_high'])})")
        if pick.next_clearly_worse is not None:
            ratio = best["samples_per_s"] / pick.next_clearly_worse["samples_per_s"]
            text += f", {fmt_number(ratio)}× the next clearly slower setup"
        if math.isfinite(best.get("scaling_efficiency", math.nan)) and best["world_size"] > 1:
            text += f", scaling at {fmt_pct(best['scaling_efficiency'])} of perfect on {best['world_size']} devices"
            if best.get("scaling_baseline_unstable"):
                text += " (against a 1-device run measured on an unstable machine: not to be trusted)"
        if key == "within_budget":
            text += (f"; training {target} samples takes {fmt_duration(best['time_to_target_s'])} and costs "
                     f"{fmt_money(best['cost_to_target'], context.currency)}, within the budget of "
                     f"{fmt_money(context.budget, context.currency)}")
        else:
            text += "; " + to_target_text(best, context)
    elif key == "cheapest":
        interval = fmt_interval(best["cost_per_million_samples_low"], best["cost_per_million_samples_high"])
        text = (f"{best['label']} costs {fmt_money(best['cost_per_million_samples'], context.currency)} per "
                f"million samples ({interval}) "
                f"at {fmt_money(best['price_per_hour'], context.currency)}/h (price '{best['price_match']}', "
                f"{best['price_date']}); {target} samples take {fmt_duration(best['time_to_target_s'])} and cost "
                f"{fmt_money(best['cost_to_target'], context.currency)}")
    else:
        text = (f"{best['label']} uses {fmt_number(best['joules_per_sample'])} J/sample "
                f"({fmt_interval(best['joules_per_sample_low'], best['joules_per_sample_high'])}); "
                + to_target_text(best, context))
    return text + _caution(best) + "."


def to_target_text(row: dict, context: ReportContext) -> str:
    """``1,000,000,000 samples take 3.2 h (and cost 41 USD)``: what the pick means for the user's target."""
    text = f"{context.target_samples:,.0f} samples take {fmt_duration(row['time_to_target_s'])}"
    cost = row.get("cost_to_target", math.nan)
    if context.currency and cost is not None and math.isfinite(cost):
        text += f" and cost {fmt_money(cost, context.currency)}"
    return text


def bottom_line(recommendation: Recommendation, context: ReportContext, workload: str) -> str:
    """One sentence first: which setup, why, and its time and cost to the target. Across the objectives
    the user gave: the fastest without prices; with prices the cheapest (within the budget, if given)."""
    picks = {pick.objective.key: pick for pick in recommendation.picks if pick.workload == workload}
    key = "cheapest" if recommendation.priced and picks.get("cheapest") and picks["cheapest"].best else "fastest"
    pick = picks.get(key)
    if pick is None or pick.best is None:
        reason = NOT_JUDGED_TEXT[pick.not_judged] if pick is not None and pick.not_judged else "nothing measured"
        return f"No choice: {reason.format(budget=fmt_money(context.budget, context.currency))}."
    best = pick.best
    if key == "fastest":
        why = f"the fastest at {fmt_number(best['samples_per_s'])} samples/s"
        if pick.next_clearly_worse is not None:
            ratio = best["samples_per_s"] / pick.next_clearly_worse["samples_per_s"]
            why += f", {fmt_number(ratio)}× the next clearly slower setup"
    else:
        why = (f"the cheapest per sample at {fmt_money(best['cost_per_million_samples'], context.currency)} per "
               f"million samples")
        if context.budget is not None:
            fits = best["cost_to_target"] <= context.budget
            why += (f", within the budget of {fmt_money(context.budget, context.currency)}" if fits else
                    f", but even it costs more than the budget of {fmt_money(context.budget, context.currency)}")
    if pick.tied:
        why += f" (not distinguishable from {_count(len(pick.tied), 'other setup')})"
    text = f"Choose {best['label']}: {why}; {to_target_text(best, context)}"
    if "unstable" in best.get("flags", []):
        text += "; but it was measured on an unstable machine, so this choice is not confirmed"
    return text + "."


def withheld_sentence(pick: Pick) -> str | None:
    """Which comparisons were not made, and why (the setups measured on an unstable machine)."""
    if not pick.withheld:
        return None
    names = ", ".join(row["label"] for row in pick.withheld)
    return (f"Comparisons withheld: {names} {'was' if len(pick.withheld) == 1 else 'were'} measured on an unstable "
            f"machine (see the warnings), so {'it is' if len(pick.withheld) == 1 else 'they are'} not ranked as "
            f"clearly better or worse than any other setup.")


def _count(n: int, noun: str) -> str:
    """``1 result file``, ``2 result files``: counts agree in number."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def answer_notes(recommendation: Recommendation, context: ReportContext) -> list[str]:
    """What a reader needs once to read the answer right: ranks, one machine, CPU processes."""
    notes = [("Rank N means N-1 setups are clearly better (their 95% intervals do not overlap): rank 1 = none is, "
              "rank 2 = one setup is clearly faster (or cheaper). Setups sharing a rank are not distinguishable.")]
    if context.machines == 1:
        notes.append("One machine measured; to choose between GPUs, run `pytest bench/` on each candidate and pass "
                     "all the files.")
    setups = recommendation.setups
    if not setups.empty and (setups["device_type"] == "cpu").any():
        notes.append("On a CPU, world size N means N worker processes sharing the same cores, not N devices; "
                     "\"(proc)\" in a setup's name marks this.")
    return notes


def _caution(best: dict) -> str:
    """A winner with a warning against it says so in its own sentence, not only in the warnings list."""
    concerns = [flag.replace("_", " ") for flag in best.get("flags", []) if flag != "baseline_only"]
    if best.get("scaling_efficiency", 0.0) > SUPERLINEAR_EFFICIENCY:
        concerns.insert(0, "scaling above 105% of perfect is suspicious")
    return f" (caution: {'; '.join(concerns)}; see the warnings)" if concerns else ""


def tie_sentence(pick: Pick) -> str | None:
    if not pick.tied:
        return None
    names = ", ".join(row["label"] for row in pick.tied)
    return f"Not distinguishable from {names}: their intervals overlap, so choose among them on other grounds."


def runner_up_text(row: dict, pick: Pick, currency: str | None) -> str:
    column = pick.objective.column
    rank = row.get(f"rank_{pick.objective.key}", math.nan)
    value = (fmt_money(row[column], currency) if column.startswith("cost") else fmt_number(row[column]))
    rank_text = f"rank {rank:.0f}" if math.isfinite(rank) else "unranked"
    return (f"{row['label']} — {value} {pick.objective.unit} "
            f"({rank_text}; {fmt_interval(row[f'{column}_low'], row[f'{column}_high'])})")


# A flag this report has no words for yet (a newer benchmark's) is still shown, under its own name.
GENERIC_FLAG_TEXT = ("Flagged by the benchmark: {kind}",
                     "{subject}: the benchmark flagged it `{kind}` (docs/record.md says what that means)")


def _finding_words(kind: str) -> tuple[str, str]:
    if kind in FINDING_TEXT:
        return FINDING_TEXT[kind]
    title, text = GENERIC_FLAG_TEXT
    safe = kind.replace("{", "{{").replace("}", "}}")  # the text is formatted again with the finding's values
    return title.format(kind=kind), text.replace("{kind}", safe)


def finding_text(finding: Finding) -> str:
    value = finding.value
    return _finding_words(finding.kind)[1].format(
        subject=finding.subject, detail=finding.detail or "no reason recorded",
        value_pct=fmt_pct(value) if value is not None else "n/a",
        value_plain=fmt_number(value) if value is not None else "n/a")


def grouped_findings(findings: tuple[Finding, ...]) -> list[tuple[str, list[Finding]]]:
    groups: dict[str, list[Finding]] = {}
    for finding in findings:
        groups.setdefault(finding.kind, []).append(finding)
    kinds = [kind for kind in FINDING_TEXT if kind in groups] + [kind for kind in groups if kind not in FINDING_TEXT]
    return [(_finding_words(kind)[0], groups[kind]) for kind in kinds]


# -- the table -----------------------------------------------------------------------------------


def display_table(setups: pd.DataFrame, currency: str | None) -> pd.DataFrame:
    """The setups table as a reader sees it: formatted text, one row per setup."""
    def rank(value) -> str:
        return "" if not math.isfinite(value) else f"{value:.0f}"

    rows = []
    ordered = setups.sort_values(["preset", "rank_fastest", "samples_per_s"], ascending=[True, True, False],
                                 na_position="last")
    for row in ordered.drop(columns=["round_throughputs", "round_times_s", "run_ids"]).to_dict("records"):
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


CSV_DROP = ("round_throughputs", "round_times_s", "candidate")


def write_csv(setups: pd.DataFrame, path: Path) -> None:
    """Every setup with raw, unrounded numbers; lists joined with ';'."""
    table = setups.drop(columns=[c for c in CSV_DROP if c in setups]).copy()
    for column in ("flags", "run_ids"):
        table[column] = table[column].map(lambda items: ";".join(map(str, items)))
    table.to_csv(path, index=False)


# -- HTML ----------------------------------------------------------------------------------------


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


def render_html(recommendation: Recommendation, charts: list[Chart], context: ReportContext,
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
        _html_picks(recommendation, context),
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
        ("from", (f"{_count(context.files, 'result file')} ({_shortened(context.inputs)}), "
                 f"{_count(context.machines, 'machine')}, {_count(context.cases, 'measured case')}")),
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


def _html_picks(recommendation: Recommendation, context: ReportContext) -> str:
    if not recommendation.picks:
        return "<p>No case passed in these files, so there is nothing to recommend; see the warnings.</p>"
    workloads = list(dict.fromkeys(pick.workload for pick in recommendation.picks))
    parts = []
    for workload in workloads:
        prefix = f"Model preset {workload}: " if len(workloads) > 1 else ""
        parts.append(f'<p class="bottom"><b>{html.escape(prefix)}</b>'
                     f"{html_text(bottom_line(recommendation, context, workload))}</p>")
    parts.append('<ul class="note">' + "".join(f"<li>{html_text(note)}</li>"
                                               for note in answer_notes(recommendation, context)) + "</ul>")
    for workload in workloads:
        parts.append(f"<h3>Workload: model preset {html.escape(workload)}</h3><ul>")
        for pick in (p for p in recommendation.picks if p.workload == workload):
            parts.append(f'<li class="pick"><b>{html.escape(pick.objective.title)}:</b> '
                         f"{html_text(pick_sentence(pick, context))}")
            for extra in (tie_sentence(pick), withheld_sentence(pick)):
                if extra:
                    parts.append(f"<br><i>{html_text(extra)}</i>")
            if pick.runners_up:
                items = "".join(f"<li>{html_text(runner_up_text(row, pick, context.currency))}</li>"
                                for row in pick.runners_up)
                parts.append(f"<br>Runners-up, by {html.escape(pick.objective.unit)}:<ul>{items}</ul>")
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
        "median round; runs of the same setup on the same machine are pooled."),
        ("Intervals: 95% percentile bootstrap of the median per-round throughput; cost and time intervals follow "
        "from it, and so does the energy interval (power taken as its mean over the measured rounds)."),
        ("Cost: price per hour (per GPU used, or per instance) over throughput; time and cost to train the target "
        f"of {context.target_samples:,.0f} samples."),
        "dp (DataParallel) is shown as a baseline only and is never recommended.",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


# -- Markdown ------------------------------------------------------------------------------------


def render_markdown(recommendation: Recommendation, context: ReportContext, html_name: str) -> str:
    def md(text: str) -> str:  # strings from result files must not become Markdown or HTML
        return html.escape(text, quote=False).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")

    lines = ["# gpusizer report: which GPU and setup to choose", "",
             (f"From {_count(context.files, 'result file')}, {_count(context.machines, 'machine')}, "
              f"{_count(context.cases, 'measured case')}. "
             f"Target: {context.target_samples:,.0f} samples. Prices: "
             f"{md(context.prices_path) if context.prices_path else 'none (cost not judged)'}. "
             f"Full report with charts: {md(html_name)}"), ""]
    workloads = list(dict.fromkeys(pick.workload for pick in recommendation.picks))
    for workload in workloads:
        prefix = f"Model preset {md(workload)}: " if len(workloads) > 1 else ""
        lines.append(f"**{prefix}{md(bottom_line(recommendation, context, workload))}**")
        lines.append("")
    if workloads:
        lines += [f"- {md(note)}" for note in answer_notes(recommendation, context)] + [""]
    for workload in workloads:
        lines += [f"## Workload: {md(workload)}", ""]
        for pick in (p for p in recommendation.picks if p.workload == workload):
            lines.append(f"- **{pick.objective.title}:** {md(pick_sentence(pick, context))}")
            for extra in (tie_sentence(pick), withheld_sentence(pick)):
                if extra:
                    lines.append(f"  - {md(extra)}")
            for row in pick.runners_up:
                lines.append(f"  - runner-up {md(runner_up_text(row, pick, context.currency))}")
        lines.append("")
    if not recommendation.picks:
        lines += ["No case passed in these files, so there is nothing to recommend.", ""]
    lines += ["## Warnings", ""]
    for title, group in grouped_findings(recommendation.findings):
        lines.append(f"- **{md(title)}** ({len(group)})")
        for finding in group[:MARKDOWN_LIST_LIMIT]:
            lines.append(f"  - {md(finding_text(finding))}")
        if len(group) > MARKDOWN_LIST_LIMIT:
            lines.append(f"  - ... and {len(group) - MARKDOWN_LIST_LIMIT} more (see the HTML report)")
    if not recommendation.findings:
        lines.append("None.")
    return "\n".join(lines) + "\n"
