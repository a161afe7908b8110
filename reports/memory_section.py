"""The report's memory section: predicted versus measured peak per case, --find-max-batch's answers,
and (with --fit-gpus) whether each measured workload would fit the GPUs the user names.

An added section: it reads the cases table and renders HTML and Markdown of its own.
"""

from __future__ import annotations

import html
import math

from reports.tables import html_table, markdown_table
from reports.words import memory_error_text
from sizing.step_memory import unseen_by_accounting

COLUMNS = ("case_id", "machine", "predicted_peak_bytes", "measured_step_peak_bytes", "max_per_device_batch_size",
           "max_batch_samples_per_s")


def _gib(value: float) -> str:
    from sizing.units import format_bytes

    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format_bytes(value)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def comparison_rows(cases) -> list[dict]:
    """One row per measured case: predicted and measured peak, their error, and the max batch where searched."""
    rows = []
    for case in cases.to_dict("records"):
        predicted, measured = case.get("predicted_peak_bytes"), case.get("measured_step_peak_bytes")
        if not _present(predicted):
            continue  # a result file from before the memory model
        # The benchmark's error compares like with like (the parts its measurement cannot see left out):
        # the row names those parts, since predicted and measured then differ by them.
        unseen = unseen_by_accounting(case["strategy"], case["device_type"], case["predicted_peak_parts_bytes"])
        rows.append({
            "case": f"{case['machine']} {case['case_id']} (batch {case['per_device_batch_size']})",
            "predicted": _gib(predicted), "measured": _gib(measured) if _present(measured) else "not measured",
            "error": memory_error_text(case.get("predicted_peak_error_fraction"),
                                       predicted - sum(unseen.values()), unseen),
            "max batch": f"{int(case['max_per_device_batch_size'])}" if _present(case.get("max_per_device_batch_size")) else "",
            "samples/s at max batch": (f"{case['max_batch_samples_per_s']:.4g}"
                                       if _present(case.get("max_batch_samples_per_s")) else ""),
        })
    return rows


def fit_table_rows(cases, gpus) -> list[dict]:
    """Each distinct measured workload (preset, strategy, world size, precision, batch) against each GPU."""
    from reference_model import PRESETS
    from sizing.predict import predict, verdict
    from sizing.workload import Workload

    keys = sorted({(c["preset"], c["strategy"], int(c["world_size"]), c["precision"], int(c["per_device_batch_size"]))
                   for c in cases.to_dict("records") if c["preset"] in PRESETS})
    rows = []
    for preset, strategy, world_size, precision, batch in keys:
        peak = predict(Workload(PRESETS[preset], precision, strategy, world_size, batch)).peak_bytes
        row = {"workload": f"{strategy}-{world_size}-{preset}-{precision} batch {batch}", "predicted peak": _gib(peak)}
        for gpu in gpus:
            row[gpu.name] = verdict(peak, gpu.memory_bytes)
        rows.append(row)
    return rows


NOTE = ("Predicted: a trace of the training step (sizing/, FakeTensorMode). Measured: on GPU "
        "torch.cuda.max_memory_allocated of the busiest rank; on CPU the same accounting over one real step "
        "(single only). Error = (predicted - measured) / measured.")
FIT_NOTE = "fits: predicted peak under 85 % of the GPU's memory; tight: under 100 %; GPU memory from the datasheets."


def render_html(cases, gpus=None) -> str:
    comparison = comparison_rows(cases)
    parts = ["<h2>Memory: predicted versus measured</h2>", f'<p class="note">{html.escape(NOTE)}</p>',
             html_table(comparison) or "<p>No case in these files carries a predicted peak.</p>"]
    if gpus:
        parts += ["<h3>Would it fit</h3>", f'<p class="note">{html.escape(FIT_NOTE)}</p>',
                  html_table(fit_table_rows(cases, gpus))]
    return "\n".join(parts)


def render_markdown(cases, gpus=None) -> str:
    lines = ["", "## Memory: predicted versus measured", "", NOTE, ""]
    lines += markdown_table(comparison_rows(cases)) or ["No case in these files carries a predicted peak."]
    if gpus:
        lines += ["", "### Would it fit", "", FIT_NOTE, ""] + markdown_table(fit_table_rows(cases, gpus))
    return "\n".join(lines) + "\n"
