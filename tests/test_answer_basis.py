"""The answer never says more than was measured (issue 22), on result files built for each rule.

Each file is written here from known numbers (``write_run``): which setups, how fast, which flags, so
the wording the report must use is known exactly. Every test reads both outputs a user reads, the
Markdown and the HTML page's text.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

from reports.cli import main as reports_main

CPU_NAME = "Test CPU"
MACHINE = "box"
STEPS_PER_ROUND = 10
# Five rounds close around their median: tight intervals, so steady setups of different speeds are ranked.
ROUND_SPREAD = (1.0, 0.99, 1.01, 0.995, 1.005)
POWER_W = 50.0  # energy = power x time: a faster setup uses less energy per sample
FUSION_BUFFER_BYTES = 64 * 2**20  # Horovod's default fusion threshold, as sizing predicts it


def setup(strategy: str, world_size: int, samples_per_s: float, *flags: str, **extra) -> dict:
    return {"strategy": strategy, "world_size": world_size, "samples_per_s": samples_per_s, "flags": flags, **extra}


def benchmark(spec: dict) -> dict:
    """One benchmark entry as `pytest bench/` writes it on a CPU, with only what the report reads."""
    strategy, world_size = spec["strategy"], spec["world_size"]
    case_id = f"{strategy}-{world_size}-tiny-fp32"
    global_batch = 64 * world_size
    median_s = global_batch * STEPS_PER_ROUND / spec["samples_per_s"]
    round_times_s = [median_s * factor for factor in ROUND_SPREAD]
    record = {
        "schema_version": 1, "case_id": case_id, "strategy": strategy, "world_size": world_size,
        "device_type": "cpu", "preset": "tiny", "precision": "fp32", "per_device_batch_size": 64,
        "scaling": "weak", "global_batch_size": global_batch, "baseline_only": False, "launcher": "torchrun",
        "device_name": CPU_NAME, "steps_per_round": STEPS_PER_ROUND, "rounds": len(round_times_s),
        "round_times_s": round_times_s, "flops_per_sample": 163840, "peak_flops_per_s": 4e10,
        "compute_devices": 1, "timing_gap_fraction": spec.get("timing_gap_fraction", 0.01),
        "flags": list(spec["flags"]),
        "unstable_reasons": ["its rounds spread by 37% of the median"] if "unstable" in spec["flags"] else [],
        "peak_memory_bytes": 300 * 2**20,
        "telemetry": {"source": "cpu", "devices": [], "cpu": {}, "energy_j": POWER_W * sum(round_times_s)},
        **spec.get("memory", {}),
    }
    return {"name": f"test_train[{case_id}]", "extra_info": record, "stats": {"data": list(round_times_s)}}


def write_run(path: Path, setups: list[dict]) -> Path:
    benchmarks = [benchmark(spec) for spec in setups]
    identity = ("case_id", "strategy", "world_size", "device_type", "preset", "precision",
                "per_device_batch_size", "scaling", "global_batch_size")
    cases = [{**{key: entry["extra_info"][key] for key in identity}, "status": "passed", "reason": None}
             for entry in benchmarks]
    payload = {"machine_info": {"node": MACHINE}, "datetime": "2026-12-03T08:00:00+00:00",
               "benchmarks": benchmarks,
               "gpusizer": {"schema_version": 1, "complete": True, "measured": len(cases), "cases": cases}}
    path.write_text(json.dumps(payload))
    return path


def label(strategy: str, world_size: int) -> str:
    """A setup's name as the report writes it (reports/analyse.py)."""
    return f"{MACHINE} · {world_size}× {CPU_NAME} (proc) · {strategy} · fp32 · tiny b64"


def report(tmp_path: Path, result_file: Path, *args: str) -> tuple[str, str]:
    """(Markdown, the HTML page's text with tags dropped): what a reader reads in each."""
    out = tmp_path / "report.html"
    assert reports_main(["report", str(result_file), "-o", str(out), "--force", *args]) == 0
    page = out.read_text()
    return out.with_suffix(".md").read_text(), html.unescape(re.sub(r"<[^>]+>", "", page))


def bottom_lines(markdown: str, page_text: str) -> list[str]:
    """The first line of the answer in the Markdown (bold) and on the page (the line that opens with it)."""
    md = next(line for line in markdown.splitlines() if line.startswith("**")).strip("*")
    opening = md.split(":", 1)[0]
    on_page = next(line for line in page_text.splitlines() if line.startswith(opening))
    return [md.replace("\\_", "_"), on_page]


def write_prices(path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["match", "price_per_hour", "per", "currency", "source", "date"])
        writer.writerow([CPU_NAME, "1.00", "instance", "USD", "test", "2026-12-01"])
    return path


# The run: the two fastest setups measured on an unstable machine, three steady ones slower.
WITHHELD_FASTER = [
    setup("ddp", 1, 69_608, "unstable"),
    setup("ddp", 2, 38_145, "unstable"),
    setup("fsdp", 1, 26_849),
    setup("fsdp", 4, 20_000),
    setup("fsdp", 2, 15_000),
]


def test_a_withheld_faster_setup_is_named_and_the_choice_is_the_fastest_only_of_the_steady(tmp_path):
    markdown, page = report(tmp_path, write_run(tmp_path / "run.json", WITHHELD_FASTER))
    for line in bottom_lines(markdown, page):
        assert line.startswith(f"Choose {label('fsdp', 1)}: the fastest of the 3 steady setups (of 5 setups "
                               f"measured) at 26,849 samples/s"), line
        assert "the fastest at" not in line
        # In the same paragraph: what was withheld, why, and that it measured faster.
        assert (f"Comparisons withheld: {label('ddp', 1)} (69,608 samples/s, faster than the choice) and "
                f"{label('ddp', 2)} (38,145 samples/s, faster than the choice) were measured on an unstable "
                "machine (see the warnings)") in line
        assert line.endswith("measure again on a quiet machine to compare.")
    for text in (markdown, page):
        assert f"Fastest: The fastest of the 3 steady setups (of 5 setups measured): {label('fsdp', 1)} trains" \
            in text.replace("**", "")
        assert "the fastest at" not in text


def test_withheld_setups_that_measured_slower_leave_the_choice_the_fastest_of_all(tmp_path):
    slower_withheld = [setup("ddp", 1, 9_000, "unstable"), setup("fsdp", 1, 26_849), setup("fsdp", 2, 20_000)]
    markdown, page = report(tmp_path, write_run(tmp_path / "run.json", slower_withheld))
    for line in bottom_lines(markdown, page):
        assert line.startswith(f"Choose {label('fsdp', 1)}: the fastest of all 3 setups measured at 26,849 "
                               "samples/s"), line
        assert f"Comparisons withheld: {label('ddp', 1)} was measured on an unstable machine" in line
        assert "faster than the choice" not in line


def test_with_nothing_withheld_the_answer_says_the_fastest(tmp_path):
    steady = [setup(spec["strategy"], spec["world_size"], spec["samples_per_s"]) for spec in WITHHELD_FASTER]
    markdown, page = report(tmp_path, write_run(tmp_path / "run.json", steady))
    for line in bottom_lines(markdown, page):
        assert line.startswith(f"Choose {label('ddp', 1)}: the fastest at 69,608 samples/s"), line
        assert "withheld" not in line


def test_a_chosen_setup_with_a_warning_says_so_where_it_is_named(tmp_path):
    flagged = [setup("fsdp", 1, 26_849, "timing_gap", timing_gap_fraction=0.041), setup("fsdp", 2, 20_000)]
    markdown, page = report(tmp_path, write_run(tmp_path / "run.json", flagged))
    caution = "(caution: a timing gap of 4.1% between controller and workers; see the warnings)"
    for line in bottom_lines(markdown, page):
        assert line.startswith(f"Choose {label('fsdp', 1)} {caution}: the fastest at 26,849 samples/s"), line
    for text in (markdown, page):
        assert f"Fastest: {label('fsdp', 1)} {caution} trains 26,849 samples/s" in text.replace("**", "")


def test_one_steady_setup_of_seven_is_no_choice_but_measure_again(tmp_path):
    busy = [setup("ddp", world_size, 10_000 * world_size, "unstable") for world_size in (1, 2, 3)]
    busy += [setup("fsdp", world_size, 9_000 * world_size, "unstable") for world_size in (1, 2, 3)]
    markdown, page = report(tmp_path, write_run(tmp_path / "run.json", [*busy, setup("single", 1, 5_000)]))
    reason = ("measure again on a quiet machine: only 1 of 7 setups measured was steady (6 were measured on an "
              "unstable machine; see the warnings), too few to choose from: a choice needs at least 50% of them "
              "steady")
    for line in bottom_lines(markdown, page):
        assert line == f"No choice: {reason}.", line
    for text in (markdown, page):
        answer = text.split("Warnings", 1)[0]
        assert "Choose " not in answer and "the fastest" not in answer
        assert f"Fastest: {reason}" in answer.replace("**", "")


def test_three_steady_of_seven_is_no_choice_and_four_is(tmp_path):
    """The threshold: at least half of the setups steady (reports/recommend.py MIN_STEADY_SHARE)."""
    busy = [setup("ddp", world_size, 10_000 * world_size, "unstable") for world_size in (1, 2, 3, 4)]
    steady = [setup("fsdp", world_size, 9_000 * world_size) for world_size in (1, 2, 3)]
    markdown, _ = report(tmp_path, write_run(tmp_path / "three.json", [*busy, *steady]))
    assert "**No choice: measure again on a quiet machine: only 3 of 7 setups measured were steady" in markdown
    markdown, _ = report(tmp_path, write_run(tmp_path / "four.json", [*busy[1:], *steady, setup("fsdp", 4, 100)]))
    assert f"**Choose {label('fsdp', 3)}: the fastest of the 4 steady setups (of 7 setups measured)" in markdown


def test_cheapest_energy_and_budget_answers_state_their_basis_too(tmp_path):
    prices = write_prices(tmp_path / "prices.csv")
    run = write_run(tmp_path / "run.json", WITHHELD_FASTER)
    markdown, page = report(tmp_path, run, "--prices", str(prices), "--budget", "1000000")
    # Priced: the bottom line is the cheapest per sample (one price for the machine: the fastest is cheapest).
    for line in bottom_lines(markdown, page):
        assert line.startswith(f"Choose {label('fsdp', 1)}: the cheapest per sample of the 3 steady setups "
                               "(of 5 priced setups) at "), line
        assert "cheaper than the choice" in line and "the cheapest per sample at" not in line
    for text in (markdown, page):
        plain = text.replace("**", "")
        assert ("Cheapest per sample: The cheapest per sample of the 3 steady setups (of 5 priced setups): "
                f"{label('fsdp', 1)} costs") in plain
        assert ("Least energy per sample: The least energy per sample of the 3 steady setups (of 5 setups that "
                f"measured energy): {label('fsdp', 1)} uses") in plain
        assert ("Fastest within the budget: The fastest within the budget of the 3 steady setups (of 5 setups "
                f"within the budget): {label('fsdp', 1)} trains") in plain
        assert f"{label('ddp', 1)} (" in plain and "lower in energy than the choice" in plain


def test_a_horovod_memory_row_says_what_its_like_for_like_error_left_out(tmp_path):
    # As bench/record/memory_model.py writes a CPU horovod case: the fusion buffer predicted, not measured,
    # and the error computed without it.
    seen_parts = {"parameters": 132096, "gradients": 132096, "temporaries": 32768, "data": 133120}
    measured = sum(seen_parts.values())
    memory = {"predicted_peak_parts_bytes": {**seen_parts, "horovod_fusion_buffer": FUSION_BUFFER_BYTES},
              "predicted_peak_bytes": measured + FUSION_BUFFER_BYTES, "measured_step_peak_bytes": measured,
              "predicted_peak_error_fraction": 0.0}
    single = {**memory, "predicted_peak_parts_bytes": seen_parts, "predicted_peak_bytes": measured}
    run = write_run(tmp_path / "run.json", [setup("horovod", 1, 20_000, memory=memory),
                                            setup("single", 1, 21_000, memory=single)])
    markdown, page = report(tmp_path, run)
    horovod_error = ("+0.0% like for like: the predicted 420 KiB without the horovod fusion buffer (64 MiB), which "
                     "the CPU accounting cannot see")
    assert f"| {MACHINE} horovod-1-tiny-fp32 (batch 64) | 64.4 MiB | 420 KiB | {horovod_error} |" \
        in markdown.replace("\\_", "_")
    assert f"{MACHINE} horovod-1-tiny-fp32 (batch 64)64.4 MiB420 KiB{horovod_error}" in page
    # No row shows a bare error beside a predicted and a measured size that differ.
    rows = [line.split(" | ") for line in markdown.splitlines() if "-tiny-fp32 (batch" in line]
    assert len(rows) == 2
    for _, predicted, measured_text, error, *_ in rows:
        assert error.startswith("+0.0%")
        assert predicted == measured_text or "like for like" in error, (predicted, measured_text, error)
