"""The report's words: how every number is rounded and every sentence reads, for every output.

The one place numbers become text (the report's HTML and Markdown, compare's tables and Markdown). The
sentences are plain text; escaping for HTML or Markdown is each writer's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpusizer_common.device_type import is_cuda
from reports.analyse import SUPERLINEAR_EFFICIENCY
from reports.recommend import FLAG_VALUES, MIN_STEADY_SHARE, UNSTABLE, Finding, Objective, Pick, Recommendation
from sizing.units import format_bytes

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
    "too_few_steady": ("measure again on a quiet machine: {steady_part} of {pool} {steady_verb} steady ({unsteady} "
                       "measured on an unstable machine; see the warnings), too few to choose from: a choice needs "
                       "at least {min_share} of them steady"),
}

# What each objective judges among, as "<n> <noun> <tail>": "7 setups measured", "7 priced setups".
JUDGED_AMONG = {
    "fastest": ("setup", "measured"),
    "cheapest": ("priced setup", ""),
    "least_energy": ("setup", "that measured energy"),
    "within_budget": ("setup", "within the budget"),
}
# How a withheld setup that beats the choice on its face compares: "ddp-1 (...) measured faster".
COMPARATIVE = {"fastest": "faster", "cheapest": "cheaper", "least_energy": "lower in energy",
               "within_budget": "faster"}
# A flag on the chosen setup, said where the answer names it; the number is the one the flag was judged on.
CAUTION_TEXT = {
    "timing_gap": "a timing gap of {value_pct} between controller and workers",
    "throttled": "throttled {value_pct} of the time",
    "low_utilisation": "devices only {value_plain}% busy",
    "memory_near_capacity": "only {value_pct} of device memory free",
    "mfu_above_peak": "{value_pct} of the measured matmul peak",
    UNSTABLE: "measured on an unstable machine",
}
NAMES_SHOWN = 3  # setups named in one sentence; the rest counted


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


def fmt_tick(value: float) -> str:
    """An axis tick as a reader writes it: 2,000 / 1.5 / 0.2 (no trailing zeros; the axis title has the unit)."""
    return format(value, ",.12g")


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


def fmt_rate(value: float) -> str:
    """Four significant figures with a k/M/G suffix: 35.47k. Compare's tables, where columns stay narrow."""
    if value is None or not math.isfinite(value):
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.4g}{suffix}"
    return f"{value:.4g}"


def fmt_change_pct(fraction: float) -> str:
    """A signed change in percent: +2.5%, -38.8%. Compare's tables."""
    return "-" if not math.isfinite(fraction) else f"{fraction * 100:+.1f}%"


def memory_error_text(error_fraction: float | None, compared_bytes: float, unseen_bytes: dict) -> str:
    """The memory table's error: the benchmark's, like with like. Where the predicted side it compared left
    parts out (``unseen_bytes``, by name), the cell says which and how large, and the predicted size it did
    compare, so +0.0% never stands beside a predicted and a measured size that differ unexplained."""
    if error_fraction is None or not math.isfinite(error_fraction):
        return ""
    text = fmt_change_pct(error_fraction)
    if unseen_bytes:
        names = " and ".join(part.replace("_", " ") for part in unseen_bytes)
        text += (f" like for like: the predicted {format_bytes(compared_bytes)} without the {names} "
                 f"({format_bytes(sum(unseen_bytes.values()))}), which the CPU accounting cannot see")
    return text


# -- sentences -----------------------------------------------------------------------------------


def pick_sentence(pick: Pick, context: ReportContext) -> str:
    """One plain-text sentence: the best setup and why, opened by what it is the best of when setups were
    withheld. Escaping is the caller's job."""
    if pick.best is None:
        return not_judged_text(pick, context)
    best, key = pick.best, pick.objective.key
    subject = best["label"] + _caution(best)
    target = f"{context.target_samples:,.0f}"
    if key in ("fastest", "within_budget"):
        text = (f"{subject} trains {fmt_number(best['samples_per_s'])} samples/s "
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
        text = (f"{subject} costs {fmt_money(best['cost_per_million_samples'], context.currency)} per "
                f"million samples ({interval}) "
                f"at {fmt_money(best['price_per_hour'], context.currency)}/h (price '{best['price_match']}', "
                f"{best['price_date']}); {target} samples take {fmt_duration(best['time_to_target_s'])} and cost "
                f"{fmt_money(best['cost_to_target'], context.currency)}")
    else:
        text = (f"{subject} uses {fmt_number(best['joules_per_sample'])} J/sample "
                f"({fmt_interval(best['joules_per_sample_low'], best['joules_per_sample_high'])}); "
                + to_target_text(best, context))
    if pick.withheld:  # the title alone ("Fastest") would claim more than was compared
        text = f"{_capitalised(basis_text(pick))}: {text}"
    return text + "."


def not_judged_text(pick: Pick, context: ReportContext) -> str:
    """Why an objective has no best setup, lower case: it follows "No choice: " or an objective's title."""
    unsteady = pick.candidates - pick.steady
    return NOT_JUDGED_TEXT[pick.not_judged].format(
        budget=fmt_money(context.budget, context.currency),
        steady_part=f"only {pick.steady}" if pick.steady else "none",
        pool=judged_among(pick.objective, pick.candidates),
        steady_verb="was" if pick.steady <= 1 else "were",
        unsteady=f"{unsteady} {'was' if unsteady == 1 else 'were'}",
        min_share=f"{MIN_STEADY_SHARE:.0%}")


def judged_among(objective: Objective, count: int) -> str:
    """``7 setups measured``, ``1 priced setup``: the setups an objective was judged among."""
    noun, tail = JUDGED_AMONG[objective.key]
    return f"{counted(count, noun)} {tail}".strip()


def basis_text(pick: Pick) -> str:
    """What the best is the best of: "the fastest" only when nothing was withheld; else "of all" when no
    withheld setup beats it on its face, and otherwise of the steady setups only, counted."""
    superlative = f"the {pick.objective.title.lower()}"
    if not pick.withheld:
        return superlative
    among = judged_among(pick.objective, pick.candidates)
    if pick.best_of_all:
        return f"{superlative} of all {among}"
    if pick.steady == 1:
        return f"the only steady one of {among}"
    return f"{superlative} of the {pick.steady} steady setups (of {among})"


def objective_value_text(row: dict, objective: Objective, currency: str | None) -> str:
    """A setup's value for an objective with its unit: ``69,608 samples/s``, ``0.12 USD per million samples``."""
    value = row[objective.column]
    shown = fmt_money(value, currency) if objective.column.startswith("cost") else fmt_number(value)
    return f"{shown} {objective.unit}"


def to_target_text(row: dict, context: ReportContext) -> str:
    """``1,000,000,000 samples take 3.2 h (and cost 41 USD)``: what the pick means for the user's target."""
    text = f"{context.target_samples:,.0f} samples take {fmt_duration(row['time_to_target_s'])}"
    cost = row.get("cost_to_target", math.nan)
    if context.currency and cost is not None and math.isfinite(cost):
        text += f" and cost {fmt_money(cost, context.currency)}"
    return text


def bottom_line(recommendation: Recommendation, context: ReportContext, workload: str) -> str:
    """One sentence first: which setup, of what it is the best, and its time and cost to the target; then
    what was withheld, if anything. Across the objectives the user gave: the fastest without prices; with
    prices the cheapest (within the budget, if given)."""
    picks = {pick.objective.key: pick for pick in recommendation.picks if pick.workload == workload}
    cheapest = picks.get("cheapest")
    priced_answer = cheapest is not None and (cheapest.best is not None or cheapest.not_judged == "too_few_steady")
    pick = picks.get("cheapest" if recommendation.priced and priced_answer else "fastest")
    if pick is None or pick.best is None:
        reason = not_judged_text(pick, context) if pick is not None and pick.not_judged else "nothing measured"
        return f"No choice: {reason}."
    best = pick.best
    why = f"{basis_text(pick)} at {objective_value_text(best, pick.objective, context.currency)}"
    if pick.objective.key == "fastest":
        if pick.next_clearly_worse is not None:
            ratio = best["samples_per_s"] / pick.next_clearly_worse["samples_per_s"]
            why += f", {fmt_number(ratio)}× the next clearly slower setup"
    elif context.budget is not None:
        fits = best["cost_to_target"] <= context.budget
        why += (f", within the budget of {fmt_money(context.budget, context.currency)}" if fits else
                f", but even it costs more than the budget of {fmt_money(context.budget, context.currency)}")
    if pick.tied:
        why += f" (not distinguishable from {counted(len(pick.tied), 'other setup')})"
    text = f"Choose {best['label']}{_caution(best)}: {why}; {to_target_text(best, context)}."
    withheld = withheld_sentence(pick, context.currency)
    return f"{text} {withheld}" if withheld else text


def withheld_sentence(pick: Pick, currency: str | None) -> str | None:
    """Which comparisons were not made, and why (the setups measured on an unstable machine); those that
    beat the choice on their face come first, with their values, so the choice never reads as the best
    measured."""
    if not pick.withheld:
        return None
    better = {row["label"] for row in pick.withheld_better}
    comparative = COMPARATIVE[pick.objective.key]
    names = [f"{row['label']} ({objective_value_text(row, pick.objective, currency)}, {comparative} than the choice)"
             for row in pick.withheld_better]
    names += [row["label"] for row in pick.withheld if row["label"] not in better]
    one = len(pick.withheld) == 1
    text = (f"Comparisons withheld: {_named(names)} {'was' if one else 'were'} measured on an unstable machine "
            f"(see the warnings), so {'it is' if one else 'they are'} not ranked as clearly better or worse than "
            f"any other setup")
    return text + ("; measure again on a quiet machine to compare." if better else ".")


def _named(names) -> str:
    """``a, b and c``; beyond NAMES_SHOWN, ``a, b, c and 4 more``."""
    names = list(names)
    if len(names) > NAMES_SHOWN:
        return f"{', '.join(names[:NAMES_SHOWN])} and {len(names) - NAMES_SHOWN} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def counted(n: int, noun: str) -> str:
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
    if not setups.empty and (~setups["device_type"].map(is_cuda)).any():
        notes.append("On a CPU, world size N means N worker processes sharing the same cores, not N devices; "
                     "\"(proc)\" in a setup's name marks this.")
    return notes


def _caution(best: dict) -> str:
    """A winner with a warning against it says so where it is named, not only in the warnings list:
    ``ddp-2 (caution: a timing gap of 4.1% between controller and workers; see the warnings)``."""
    concerns = [_flag_phrase(flag, best) for flag in best.get("flags", []) if flag != "baseline_only"]
    if best.get("scaling_efficiency", 0.0) > SUPERLINEAR_EFFICIENCY:
        concerns.insert(0, "scaling above 105% of perfect is suspicious")
    return f" (caution: {'; '.join(concerns)}; see the warnings)" if concerns else ""


def _flag_phrase(flag: str, row: dict) -> str:
    """The flag in words with the number it was judged on; a flag without words (or number) by its name."""
    value = row.get(FLAG_VALUES.get(flag, ""), math.nan)
    if flag not in CAUTION_TEXT or (flag in FLAG_VALUES and not (value is not None and math.isfinite(value))):
        return flag.replace("_", " ")
    return CAUTION_TEXT[flag].format(value_pct=fmt_pct(value), value_plain=fmt_number(value))


def tie_sentence(pick: Pick) -> str | None:
    if not pick.tied:
        return None
    names = ", ".join(row["label"] for row in pick.tied)
    return f"Not distinguishable from {names}: their intervals overlap, so choose among them on other grounds."


def runner_up_text(row: dict, pick: Pick, currency: str | None) -> str:
    column = pick.objective.column
    rank = row.get(f"rank_{pick.objective.key}", math.nan)
    rank_text = f"rank {rank:.0f}" if math.isfinite(rank) else "unranked"
    return (f"{row['label']} — {objective_value_text(row, pick.objective, currency)} "
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
