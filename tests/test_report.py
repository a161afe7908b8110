"""`gpusizer report` on result files from real `pytest bench/` runs (see ``real_result_files``).

Where a test needs something a CPU run cannot produce (a second machine, GPU telemetry, a hostile
hostname), it copies a real file and changes only that, and says so at the change.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.analyse import summarise
from reports.compare import hardware_fingerprint
from reports.errors import InputError
from reports.load import load_results
from reports.prices import load_prices
from reports.recommend import dominance_ranks, recommend
from reports.schema import CASE_COLUMNS
from reports.words import FINDING_TEXT

REPO = Path(__file__).resolve().parent.parent
REPORT_DEADLINE_S = 120
TARGET_SAMPLES = 1e9


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports", "report", *map(str, args)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=REPORT_DEADLINE_S)


def report_ok(out: Path, *args) -> Path:
    """Run the command writing ``out``; it must succeed. Returns the HTML path."""
    result = run_report(*args, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


def copy_with(source: str, target: Path, change) -> Path:
    data = json.loads(Path(source).read_text())
    change(data)
    target.write_text(json.dumps(data))
    return target


def rename_machine(name: str):
    """A second machine made from a real run: only the hostname changes (marked wherever used)."""
    def change(data: dict) -> None:
        data["machine_info"]["node"] = name
    return change


def mark_steady(data: dict) -> None:
    """Every case marked steady (each test that does this says so): this shared machine's load often
    flags a real run's cases unstable, and with fewer than half of them steady the report makes no choice."""
    for bench in data["benchmarks"]:
        bench["extra_info"]["flags"] = [f for f in bench["extra_info"]["flags"] if f != "unstable"]
        bench["extra_info"]["unstable_reasons"] = []


def cpu_model(result_file: str) -> str:
    """The CPU the real run used: what a CPU run's prices match (the test machine's, whatever it is)."""
    return json.loads(Path(result_file).read_text())["machine_info"]["gpusizer"]["cpu_model"]


def write_prices(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["match", "price_per_hour", "per", "currency", "source", "date"])
        writer.writerows(rows)
    return path


def entry(data: dict, case_id: str) -> dict:
    return next(b for b in data["benchmarks"] if b["extra_info"]["case_id"] == case_id)


def set_round_times(bench: dict, *, ranks_s: list[float], controller_s: list[float], steps_per_round: int) -> None:
    """Known round times in place of measured ones (the tests that do this say so)."""
    bench["extra_info"]["round_times_s"] = list(ranks_s)
    bench["extra_info"]["rounds"] = len(ranks_s)
    bench["extra_info"]["steps_per_round"] = steps_per_round
    bench["stats"]["data"] = list(controller_s)


def digest(paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


# -- loading -------------------------------------------------------------------------------------


def test_load_makes_one_typed_row_per_case_with_throughput_recomputed(real_result_files):
    results = load_results(real_result_files)
    cases = results.cases
    assert list(cases.columns) == list(CASE_COLUMNS)
    for column, dtype in CASE_COLUMNS.items():
        assert str(cases[column].dtype).split("[")[0] == dtype.split("[")[0], column
    raw = json.loads(Path(real_result_files[0]).read_text())
    assert sorted(cases[cases["run_id"] == real_result_files[0]]["case_id"]) == sorted(
        b["extra_info"]["case_id"] for b in raw["benchmarks"])
    for bench in raw["benchmarks"]:
        record = bench["extra_info"]
        row = cases[(cases["run_id"] == real_result_files[0]) & (cases["case_id"] == record["case_id"])].iloc[0]
        assert row["round_times_s"] == record["round_times_s"]  # the ranks' own times: the measurement
        assert row["controller_round_times_s"] == bench["stats"]["data"]  # the controller's: the check
        assert row["machine"] == raw["machine_info"]["node"]
    assert (cases["device_type"] == "cpu").all() and cases["gpu_name"].isna().all()
    assert cases["run_datetime"].notna().all()


def test_throughput_is_the_batch_over_the_median_of_the_ranks_round_times(real_result_files, tmp_path):
    # Round times set to known values (marked): the ranks' own times are the measurement, the
    # controller's (stats.data) only check them. 64 samples x 2 steps / median 0.5 s = 256 samples/s.
    def known_times(data: dict) -> None:
        bench = entry(data, "single-1-tiny-fp32")
        set_round_times(bench, ranks_s=[0.5, 0.25, 1.0], controller_s=[0.6, 0.3, 1.1], steps_per_round=2)
    copy = copy_with(real_result_files[0], tmp_path / "known.json", known_times)
    cases = load_results([str(copy)]).cases.set_index("case_id")
    assert cases.loc["single-1-tiny-fp32", "global_batch_size"] == 64
    assert cases.loc["single-1-tiny-fp32", "samples_per_s"] == pytest.approx(256.0, rel=1e-12)


def test_outcomes_keep_skipped_and_failed_cases_with_their_reasons(real_result_files):
    outcomes = load_results(real_result_files).outcomes
    by_case = {(row.run_id, row.case_id): row for row in outcomes.itertuples()}
    skipped = by_case[(real_result_files[0], "dp-2-tiny-fp32")]
    assert skipped.status == "skipped" and "CUDA" in skipped.reason
    failed = by_case[(real_result_files[2], "ddp-2-tiny-fp32")]
    assert failed.status == "failed" and failed.reason
    assert set(outcomes["status"]) == {"passed", "skipped", "failed"}


def test_folders_are_read_in_name_order_and_each_file_once(real_result_files):
    folder = str(Path(real_result_files[0]).parent)
    results = load_results([folder, real_result_files[0]])
    assert results.paths == [real_result_files[0]]


def test_a_pytest_benchmark_autosave_file_without_the_gpusizer_section_loads(real_result_files, tmp_path):
    # --benchmark-autosave files carry the record in extra_info but may lack the top-level section.
    copy = copy_with(real_result_files[0], tmp_path / "autosave.json", lambda data: data.pop("gpusizer"))
    results = load_results([str(copy)])
    assert len(results.cases) == len(json.loads(Path(real_result_files[0]).read_text())["benchmarks"])
    assert set(results.outcomes["status"]) == {"passed"}


def test_hardware_fingerprint_of_a_cpu_machine_names_the_cpu(real_result_files):
    machine_info = json.loads(Path(real_result_files[0]).read_text())["machine_info"]
    fingerprint = hardware_fingerprint(machine_info)
    assert fingerprint["gpu_count"] == 0 and fingerprint["gpu_model"] is None
    assert fingerprint["cpu_model"] == machine_info["gpusizer"]["cpu_model"]
    assert fingerprint["torch_version"] == machine_info["gpusizer"]["torch_version"]


# -- analysis and recommendation -----------------------------------------------------------------


def test_scaling_efficiency_mfu_and_cost_follow_from_the_raw_numbers(real_result_files, tmp_path):
    # Known numbers in place of measured ones (marked): single-1 trains 64 x 2 samples in 0.5 s
    # rounds (256 samples/s), ddp-2 128 x 2 in 0.8 s rounds (320 samples/s); 1e6 FLOPs a sample
    # against a 1e9 FLOP/s peak.
    def known_numbers(data: dict) -> None:
        for case_id, round_s in (("single-1-tiny-fp32", 0.5), ("ddp-2-tiny-fp32", 0.8)):
            bench = entry(data, case_id)
            set_round_times(bench, ranks_s=[round_s] * 3, controller_s=[round_s] * 3, steps_per_round=2)
            bench["extra_info"]["flops_per_sample"] = 1e6
            bench["extra_info"]["peak_flops_per_s"] = 1e9
    copy = copy_with(real_result_files[0], tmp_path / "known.json", known_numbers)
    results = load_results([str(copy)])
    rows = [(cpu_model(real_result_files[0]), "0.50", "instance", "USD", "test", "2026-11-28")]
    prices = load_prices(str(write_prices(tmp_path / "p.csv", rows)))
    setups = summarise(results, prices, target_samples=1e6).set_index("label")
    row = setups[(setups["strategy"] == "ddp") & (setups["world_size"] == 2)].iloc[0]
    assert row["samples_per_s"] == pytest.approx(320.0)
    assert row["scaling_efficiency"] == pytest.approx(0.625)  # 320 / (2 x 256)
    assert row["mfu"] == pytest.approx(0.32)  # 320 x 1e6 / 1e9
    # On a CPU the instance price is paid once, however many worker processes share it:
    # 0.50 USD/h / 3600 s/h / 320 samples/s x 1e6 samples.
    assert row["cost_per_million_samples"] == pytest.approx(0.4340277777777778)
    assert row["time_to_target_s"] == pytest.approx(3125.0)  # 1e6 samples / 320 samples/s
    assert row["samples_per_s_low"] <= row["samples_per_s"] <= row["samples_per_s_high"]


def test_identical_runs_on_two_machines_are_not_distinguishable(real_result_files, tmp_path):
    # Second machine = the same real run with its hostname changed: same numbers, so no winner. Both
    # copies are marked steady (an "unstable" flag from this shared machine's load would withhold them).
    original = copy_with(real_result_files[1], tmp_path / "original.json", mark_steady)
    twin = copy_with(str(original), tmp_path / "twin.json", rename_machine("twin-of-vm"))
    results = load_results([str(original), str(twin)])
    recommendation = recommend(summarise(results, None, TARGET_SAMPLES), results, priced=False)
    fastest = next(p for p in recommendation.picks if p.objective.key == "fastest")
    assert fastest.best is not None and len(fastest.tied) == 1
    real_machine = json.loads(Path(real_result_files[1]).read_text())["machine_info"]["node"]
    assert {fastest.best["machine"], fastest.tied[0]["machine"]} == {real_machine, "twin-of-vm"}
    assert (recommendation.setups["rank_fastest"] == 1).all()


def test_dominance_ranks_share_a_rank_only_when_intervals_overlap():
    value = pd.Series([100.0, 95.0, 50.0, 40.0])
    low = pd.Series([90.0, 85.0, 45.0, np.nan])  # the last has one round: no interval
    high = pd.Series([110.0, 105.0, 55.0, np.nan])
    assert dominance_ranks(value, low, high, higher_is_better=True).tolist() == [1, 1, 3, 1]
    assert dominance_ranks(value, low, high, higher_is_better=False).tolist() == [2, 2, 1, 1]


def test_dp_is_never_recommended_and_warnings_name_skips_and_failures(real_result_files):
    results = load_results(real_result_files)
    recommendation = recommend(summarise(results, None, TARGET_SAMPLES), results, priced=False)
    kinds = {finding.kind for finding in recommendation.findings}
    # The failing-launch run measured nothing: it is set aside whole, and said so.
    assert {"ignored_run", "failed", "skipped", "no_prices", "no_energy"} <= kinds
    (ignored,) = [f for f in recommendation.findings if f.kind == "ignored_run"]
    assert ignored.subject.startswith(real_result_files[2]) and "1 failed" in ignored.subject
    skipped = [f for f in recommendation.findings if f.kind == "skipped"]
    assert all(" on cpu" in f.subject for f in skipped)  # the id carries the device type
    cheapest = next(p for p in recommendation.picks if p.objective.key == "cheapest")
    assert cheapest.best is None and cheapest.not_judged == "no_prices"


def test_a_measured_dp_is_never_recommended_even_when_it_is_the_fastest(real_result_files, tmp_path):
    # dp is skipped on CPU, so a measured dp is made from the real ddp-2 record (marked): renamed to
    # dp-2 and given rounds ten times shorter, which makes it the fastest setup by far.
    def measured_dp(data: dict) -> None:
        mark_steady(data)  # the others steady (marked): a choice is made, and it must not be dp
        bench = entry(data, "ddp-2-tiny-fp32")
        # What bench/record/record.py writes for dp: the strategy's baseline_only, also as a flag.
        bench["extra_info"].update(strategy="dp", case_id="dp-2-tiny-fp32", launcher="inprocess", baseline_only=True)
        bench["extra_info"]["flags"] = [*bench["extra_info"]["flags"], "baseline_only"]
        bench["extra_info"]["round_times_s"] = [t / 10 for t in bench["extra_info"]["round_times_s"]]
        bench["stats"]["data"] = [t / 10 for t in bench["stats"]["data"]]
        # The run's case list: the skipped dp-2 is gone, the measured one passed.
        cases = [c for c in data["gpusizer"]["cases"] if c["case_id"] != "dp-2-tiny-fp32"]
        for case in cases:
            if case["case_id"] == "ddp-2-tiny-fp32":
                case["case_id"] = "dp-2-tiny-fp32"
        data["gpusizer"]["cases"] = cases
    copy = copy_with(real_result_files[0], tmp_path / "measured-dp.json", measured_dp)
    results = load_results([str(copy)])
    setups = summarise(results, None, TARGET_SAMPLES)
    assert setups.iloc[setups["samples_per_s"].idxmax()]["strategy"] == "dp"  # the fastest: would win
    recommendation = recommend(setups, results, priced=False)
    fastest = next(p for p in recommendation.picks if p.objective.key == "fastest")
    assert fastest.best is not None
    for pick in recommendation.picks:
        assert pick.best is None or pick.best["strategy"] != "dp"


def test_an_unstable_setup_is_warned_first_withheld_and_never_ranked(real_result_files, tmp_path):
    # The real ddp-2 record, flagged unstable as bench/record/flags.py writes it, with rounds ten times
    # shorter (marked): the fastest setup by far, which must still not win nor get a rank of its own.
    def unstable_ddp2(data: dict) -> None:
        mark_steady(data)  # the others steady, whatever this machine did: ddp-2 is the subject
        bench = entry(data, "ddp-2-tiny-fp32")
        record = bench["extra_info"]
        record["flags"] = [*record["flags"], "unstable"]
        record["unstable_reasons"] = ["peaks differ: end/start 0.62"]
        record["round_times_s"] = [t / 10 for t in record["round_times_s"]]
        bench["stats"]["data"] = [t / 10 for t in bench["stats"]["data"]]
    copy = copy_with(real_result_files[0], tmp_path / "unstable.json", unstable_ddp2)
    results = load_results([str(copy)])
    setups = summarise(results, None, TARGET_SAMPLES)
    assert setups.loc[setups["samples_per_s"].idxmax(), "strategy"] == "ddp"
    fastest = next(p for p in recommend(setups, results, priced=False).picks if p.objective.key == "fastest")
    assert fastest.best["label"] != fastest.withheld[0]["label"] and len(fastest.withheld) == 1
    assert "ddp" in fastest.withheld[0]["label"] and np.isnan(fastest.withheld[0]["rank_fastest"])
    assert all(np.isfinite(row["rank_fastest"]) for row in (fastest.best, *fastest.tied))

    html = report_ok(tmp_path / "unstable.html", copy)
    markdown = html.with_suffix(".md").read_text()
    warnings = markdown.split("Unstable machine: comparisons withheld", 1)
    assert len(warnings) == 2 and "peaks differ" in warnings[1]
    # First among the warnings: no other warning title comes before it.
    assert not any(title in warnings[0] for title, _ in FINDING_TEXT.values() if title != FINDING_TEXT["unstable"][0])
    assert "Comparisons withheld:" in markdown and "unranked" in markdown


def test_energy_and_throttling_come_from_gpu_telemetry(real_result_files, tmp_path):
    # NVML cannot exist on this CPU machine: the telemetry block is given NVML-shaped values here,
    # the boundary the telemetry tests fake too. Everything else is the real record.
    def gpu_telemetry(energy_j: float, throttle: float):
        def change(data: dict) -> None:
            mark_steady(data)  # steady (marked): an unstable pair would be no choice, and energy is the subject
            for bench in data["benchmarks"]:
                # The benchmark judges throttling when it writes the record (bench/record/flags.py: above 10%).
                if throttle > 0.10:
                    bench["extra_info"]["flags"] = sorted({*bench["extra_info"]["flags"], "throttled"})
                bench["extra_info"]["telemetry"] = {
                    "source": "nvml", "devices": [{"util_mean_pct": 97.0, "memory_total_bytes": 8 * 1024**3,
                                                   "throttle_fraction": {"thermal": 0.0, "power": 0.0, "other": throttle}}],
                    "cpu": {}, "energy_j": energy_j}
        return change

    cool = copy_with(real_result_files[1], tmp_path / "cool.json", gpu_telemetry(50.0, 0.0))
    hot = copy_with(real_result_files[1], tmp_path / "hot.json", gpu_telemetry(500.0, 0.4))
    hot_data = json.loads(hot.read_text())
    hot_data["machine_info"]["node"] = "hot-machine"  # a second machine from the same real run (marked)
    hot.write_text(json.dumps(hot_data))
    results = load_results([str(cool), str(hot)])
    recommendation = recommend(summarise(results, None, TARGET_SAMPLES), results, priced=False)
    energy = next(p for p in recommendation.picks if p.objective.key == "least_energy")
    assert energy.best["machine"] != "hot-machine"  # 10x less energy for the same work
    (bench,) = json.loads(cool.read_text())["benchmarks"]
    trained = bench["extra_info"]["global_batch_size"] * bench["extra_info"]["steps_per_round"] * len(
        bench["stats"]["data"])
    assert energy.best["joules_per_sample"] == pytest.approx(50.0 / trained)
    # Both intervals come from the same real round times, so they overlap only if those rounds spread
    # more than tenfold (a loaded machine can do that); either way the tie must follow the intervals.
    hot_row = recommendation.setups[recommendation.setups["machine"] == "hot-machine"].iloc[0]
    assert bool(energy.tied) == bool(hot_row["joules_per_sample_low"] <= energy.best["joules_per_sample_high"])
    assert not energy.withheld
    throttled = [f for f in recommendation.findings if f.kind == "throttled"]
    assert [f.subject.split(" ·")[0] for f in throttled] == ["hot-machine"]
    assert throttled[0].value == pytest.approx(0.4)


def test_the_report_reads_flags_and_never_re_judges(real_result_files, tmp_path):
    """A throttle share the benchmark did not flag raises no warning; any flag it did set is shown,
    also one this report has no words for (a newer benchmark's), through the generic path."""
    def change(data: dict) -> None:
        for bench in data["benchmarks"]:
            record = bench["extra_info"]
            record["flags"] = ["tf32_override"]  # as a newer benchmark might write
            record["unstable_reasons"] = []
            record["telemetry"] = {"source": "nvml", "cpu": {}, "energy_j": None,
                                   "devices": [{"util_mean_pct": 20.0, "memory_total_bytes": 8 * 1024**3,
                                                "throttle_fraction": {"thermal": 0.07, "power": 0.0}}]}
    source = copy_with(real_result_files[1], tmp_path / "flags.json", change)
    results = load_results([str(source)])
    recommendation = recommend(summarise(results, None, TARGET_SAMPLES), results, priced=False)
    kinds = [finding.kind for finding in recommendation.findings]
    assert "throttled" not in kinds and "low_utilisation" not in kinds and "unstable" not in kinds
    assert "tf32_override" in kinds
    out = report_ok(tmp_path / "r.html", source)
    page = out.read_text()
    assert "Flagged by the benchmark: tf32_override" in page and "<code>tf32_override</code>" in page


def test_a_flag_is_shown_with_the_number_it_was_judged_on(real_result_files, tmp_path):
    """memory_near_capacity is judged on NVML's used over total (other processes and the allocator's
    cache count); the training's own peak (peak_memory_bytes) is far lower here. The warning must
    show the first, not a second measure that would contradict it. Throttling likewise counts the
    hardware slowdown. NVML values are given here (no GPU on this machine); the rest is the real record."""
    def change(data: dict) -> None:
        for bench in data["benchmarks"]:
            record = bench["extra_info"]
            record["flags"] = ["memory_near_capacity", "throttled"]
            record["unstable_reasons"] = []
            record["peak_memory_bytes"] = 2**30  # 1 GiB of 80: the training alone leaves 99% free
            record["telemetry"] = {"source": "nvml", "cpu": {}, "energy_j": None, "devices": [
                {"util_mean_pct": 97.0, "memory_total_bytes": 80 * 2**30, "memory_used_peak_bytes": 78 * 2**30,
                 "throttle_fraction": {"thermal": 0.0, "power": 0.0, "other": 0.3}}]}
    source = copy_with(real_result_files[1], tmp_path / "full.json", change)
    results = load_results([str(source)])
    setups = summarise(results, None, TARGET_SAMPLES)
    findings = {f.kind: f for f in recommend(setups, results, priced=False).findings}
    assert findings["memory_near_capacity"].value == pytest.approx(2 / 80)
    assert findings["throttled"].value == pytest.approx(0.3)
    # The table's headroom column stays the training's own peak against the device: a different fact.
    assert setups["memory_headroom_fraction"].iloc[0] > 0.9


def test_log_axes_label_every_tick_in_full_at_1_2_5_steps(real_result_files, tmp_path):
    from reports.figures import build_charts, log_ticks

    # Less than a decade of data (a CPU run's 1.5k-3.5k samples/s): plotly's own 1-2-5 ticks left a lone
    # "2" there; every tick now carries its whole number, and there are at least two.
    assert log_ticks([1500, 3500]) == ([1500.0, 2000.0, 3000.0], ["1,500", "2,000", "3,000"])
    assert log_ticks([0.3, 80])[1] == ["0.5", "1", "2", "5", "10", "20", "50"]
    assert log_ticks([120, 1.5e7])[1] == ["100", "1,000", "10,000", "100,000", "1,000,000", "10,000,000"]
    assert log_ticks([1.1, 1.3]) == ([1.0, 1.5], ["1", "1.5"]) and log_ticks([]) == ([], [])
    # On the real report's chart: the y axis is log, its ticks are the ones above for the measured values.
    results = load_results([real_result_files[0]])
    setups = summarise(results, None, TARGET_SAMPLES)
    (throughput,) = [chart for chart in build_charts(setups, target_samples=TARGET_SAMPLES, currency=None)
                     if chart.key == "throughput"]
    axis = throughput.figure["layout"]["yaxis"]  # a plain figure dict (one panel per machine)
    assert axis["type"] == "log" and list(axis["ticktext"]) == log_ticks(setups["samples_per_s"])[1]
    assert len(axis["tickvals"]) >= 2 and "log scale" in axis["title"]["text"]


# -- the command ---------------------------------------------------------------------------------


def test_report_fit_gpus_adds_the_fit_table_for_the_measured_workloads(real_result_files, tmp_path):
    # As a user runs it: the real result file, two GPUs named; every measured workload gets a row and
    # one verdict per GPU, in the Markdown and the HTML (an unknown name is the bad-input test's).
    html = report_ok(tmp_path / "fit.html", real_result_files[0], "--fit-gpus", "H100-80GB,L4")
    markdown = html.with_suffix(".md").read_text()
    fit = markdown.split("### Would it fit", 1)[1]
    assert "| workload | predicted peak | H100-80GB | L4 |" in fit
    rows = [line for line in fit.splitlines() if line.startswith("| ") and "batch 64" in line]
    measured = {record["extra_info"]["case_id"] for record in json.loads(Path(real_result_files[0]).read_text())["benchmarks"]}
    assert len(rows) == len(measured) and all(("fits" in row) for row in rows)  # tiny fits any GPU
    assert "Would it fit" in html.read_text() and "H100-80GB" in html.read_text()
    plain = report_ok(tmp_path / "plain.html", real_result_files[0])
    assert "Would it fit" not in plain.with_suffix(".md").read_text()


def test_report_command_writes_html_markdown_and_csv(real_result_files, tmp_path):
    prices = write_prices(tmp_path / "prices.csv",
                          [(cpu_model(real_result_files[0]), "0.40", "instance", "USD", "test quote", "2026-11-28")])
    out = tmp_path / "out" / "report.html"
    before = digest(real_result_files)
    result = run_report(*real_result_files, "--prices", prices, "-o", out, "--target-samples", "2e6",
                        "--budget", "1000")
    assert result.returncode == 0, result.stderr
    assert f"report: {out}" in result.stdout
    assert digest(real_result_files) == before
    page = out.read_text()
    assert page.count("Plotly.newPlot") >= 4  # one per chart drawn
    assert page.count("plotly.js v") == 1  # the library itself, embedded once
    assert "http://" not in page.split("<body>", 1)[1].split("Plotly.newPlot", 1)[0]  # no fetched assets
    markdown = out.with_suffix(".md").read_text()
    assert "**Fastest:**" in markdown and "2,000,000 samples" in markdown
    assert "Fastest within the budget" in markdown and "not asked" not in markdown
    table = pd.read_csv(out.with_suffix(".csv"))
    results = load_results(real_result_files)
    assert len(table) == len(summarise(results, None, TARGET_SAMPLES))
    assert np.allclose(table["cost_per_million_samples"], 0.40 / 3600 / table["samples_per_s"] * 1e6)


def test_the_answer_reads_at_a_glance(real_result_files, tmp_path):
    prices = write_prices(tmp_path / "prices.csv",
                          [(cpu_model(real_result_files[0]), "0.40", "instance", "USD", "test quote", "2026-11-28")])
    # Marked steady: the reading of a choice is the subject (tests/test_answer_basis.py has the withheld ones).
    steady = copy_with(real_result_files[0], tmp_path / "steady.json", mark_steady)
    out = report_ok(tmp_path / "report.html", steady, "--prices", prices)
    markdown = out.with_suffix(".md").read_text()
    lines = markdown.splitlines()
    # One bottom line first (priced, no budget: the cheapest), with time and cost to the target.
    bottom = next(line for line in lines if line.startswith("**"))
    assert bottom.startswith("**Choose ") and "cheapest per sample" in bottom and "samples take" in bottom
    assert "and cost" in bottom
    assert lines.index(bottom) < lines.index("## Workload: tiny")
    # Every judged pick carries time (and cost) to the target.
    answer = lines[:lines.index("## Warnings")]
    picks = [line for line in answer if line.startswith("- **") and "not judged" not in line and "not asked" not in line]
    assert picks and all("samples take" in line and "and cost" in line for line in picks), picks
    assert "From 1 result file, 1 machine," in markdown  # counts agree in number
    assert "One machine measured" in markdown and "(proc)" in markdown and "rank 2 = one setup" in markdown
    # Runners-up by point estimate, rank beside each.
    results = load_results([str(steady)])
    recommendation = recommend(summarise(results, load_prices(str(prices)), TARGET_SAMPLES), results, priced=True)
    fastest = next(p for p in recommendation.picks if p.objective.key == "fastest")
    speeds = [row["samples_per_s"] for row in fastest.runners_up]
    assert speeds == sorted(speeds, reverse=True)
    page = out.read_text()
    assert "<code>pytest bench/</code>" in page and "`pytest bench/`" not in page  # code marks rendered
    charts = page.split('class="plotly-graph-div"')[1:]
    assert charts and all('<p class="caption">' in chunk for chunk in charts)  # a caption beneath every chart
    assert 'td class="setup"' in page


def test_without_prices_the_report_says_cost_was_not_judged(real_result_files, tmp_path):
    out = report_ok(tmp_path / "report.html", real_result_files[0])
    markdown = out.with_suffix(".md").read_text()
    assert "Cheapest per sample:** not judged: no --prices file was given" in markdown
    assert "cost was not judged" in markdown
    assert pd.read_csv(out.with_suffix(".csv"))["cost_per_million_samples"].isna().all()


def test_a_run_that_measured_nothing_is_ignored_and_said_so(real_result_files, tmp_path):
    out = report_ok(tmp_path / "report.html", real_result_files[2])
    markdown = out.with_suffix(".md").read_text()
    assert "nothing to recommend" in markdown
    assert "Result files ignored" in markdown and "1 failed" in markdown and "measured nothing" in markdown
    assert "ddp-2-tiny-fp32 on cpu failed:" in markdown  # its reasons are still data
    assert 'data-plots-expected="0"' in out.read_text()


def test_strings_from_result_files_are_escaped(real_result_files, tmp_path):
    # A hostile hostname, made by renaming a real run's machine (marked).
    hostile = copy_with(real_result_files[1], tmp_path / "hostile.json",
                        rename_machine("<script>alert(1)</script>"))
    out = report_ok(tmp_path / "report.html", hostile)
    page = out.read_text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in out.with_suffix(".md").read_text()


# -- bad input -----------------------------------------------------------------------------------


def _with_first_record(data: dict, **changes) -> dict:
    data = json.loads(json.dumps(data))
    data["benchmarks"][0]["extra_info"].update(changes)
    return data


def _with_first_stats(data: dict, round_times_s: list) -> dict:
    data = json.loads(json.dumps(data))
    data["benchmarks"][0]["stats"]["data"] = round_times_s
    return data


def _bad_inputs(real: str, folder: Path) -> dict:
    good = json.loads(Path(real).read_text())
    made = {
        "empty": ("", "is empty"),
        "not-json": ("hello, world\n", "is not JSON"),
        "truncated": (Path(real).read_text()[:500], "truncated JSON"),
        "other-tool": (json.dumps({"benchmarks": [{"name": "test_sort", "stats": {"data": [0.1]},
                                                   "extra_info": {}}], "machine_info": {}}),
                       "another tool's pytest-benchmark file"),
        "not-benchmark": (json.dumps({"name": "package", "version": "1.0"}), "not a pytest-benchmark result"),
        "future-schema": (json.dumps({**good, "gpusizer": {**good["gpusizer"], "schema_version": 99}}),
                          "unknown schema_version 99"),
        "deeply-nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "huge-batch": (json.dumps(_with_first_record(good, global_batch_size=10**400)), "expected an integer 1 to 2**53"),
        "huge-flops": (json.dumps(_with_first_record(good, flops_per_sample=10**400)), "expected a finite"),
        "subnormal-round": (json.dumps(_with_first_stats(good, [1e-320])), "expected round times in seconds >= 1e-09"),
    }
    cases = {}
    for name, (text, message) in made.items():
        path = folder / f"{name}.json"
        path.write_text(text)
        cases[name] = ([str(path)], message, str(path))
    cases["missing"] = ([str(folder / "nope.json")], "does not exist", str(folder / "nope.json"))
    return cases


def test_every_bad_result_file_gives_exit_2_and_one_line(real_result_files, tmp_path):
    for name, (paths, message, named) in _bad_inputs(real_result_files[1], tmp_path).items():
        before = digest(p for p in paths if Path(p).exists())
        result = run_report(*paths, "-o", tmp_path / "out" / "r.html")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and "Traceback" not in result.stderr, (name, result.stderr)
        assert named in lines[0] and message in lines[0], (name, lines[0])
        assert digest(p for p in paths if Path(p).exists()) == before
        assert not (tmp_path / "out").exists(), name


@pytest.mark.parametrize(("rows", "message"), [
    ("match,price_per_hour,per,source\nA10G,1.0,gpu,x\n", "missing column date"),
    ("match,price_per_hour,per,source,date\nA10G,-1.0,gpu,x,2026-01-01\n", "negative"),
    ("match,price_per_hour,per,source,date\nA10G,cheap,gpu,x,2026-01-01\n", "is not a number"),
    ("match,price_per_hour,per,source,date\nA10G,1.0,hour,x,2026-01-01\n", "allowed: gpu, instance"),
])
def test_a_bad_prices_file_gives_exit_2_and_names_the_problem(real_result_files, tmp_path, rows, message):
    prices = tmp_path / "prices.csv"
    prices.write_text(rows)
    result = run_report(real_result_files[1], "--prices", prices, "-o", tmp_path / "r.html")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert str(prices) in line and message in line


@pytest.mark.parametrize(("rows", "message"), [
    # Comments and blank lines count: the error names the line a person sees in an editor.
    ("# prices\n# read 2026-01-01\nmatch,price_per_hour,per,source,date\n\nA10G,cheap,gpu,x,2026-01-01\n",
     "line 5: price_per_hour 'cheap' is not a number"),
    ("# exported\nmatch;price_per_hour;per;source;date\nA10G;1,0;gpu;x;2026-01-01\n", "semicolon-separated"),
    (("match,price_per_hour,per,source,date\nH100,2.0,gpu,a,2026-01-01\n# other quote\nA10G,1.0,gpu,b,2026-01-01\n"
     "h100,2.5,gpu,c,2026-01-02\n"), "lines 2 and 5 both have match 'h100'"),
])
def test_price_errors_name_the_real_line_the_delimiter_and_duplicate_rows(tmp_path, rows, message):
    from reports.errors import InputError

    prices = tmp_path / "prices.csv"
    prices.write_text(rows)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as error:
        load_prices(str(prices))
    assert str(prices) in str(error.value) and "\n" not in str(error.value)


def test_an_output_path_that_is_an_input_is_refused(real_result_files, tmp_path):
    source = copy_with(real_result_files[1], tmp_path / "run.html", lambda data: None)  # an input named .html
    before = digest([source])
    result = run_report(source, "-o", source)
    assert result.returncode == 2 and "is one of the input files" in result.stderr
    assert digest([source]) == before


def test_a_prices_error_names_the_line_of_the_file_not_the_row(tmp_path):
    prices = tmp_path / "prices.csv"
    # Line 1 a comment, line 2 the header, line 3 blank, line 4 a good row, line 5 another comment, line 6 bad.
    prices.write_text("# my prices\nmatch,price_per_hour,per,source,date\n\nA10G,1.0,gpu,x,2026-01-01\n"
                      "# the next one is wrong\nH100,-2.0,gpu,x,2026-01-01\n")
    with pytest.raises(InputError, match=r"prices\.csv: line 6\b"):
        load_prices(str(prices))


def test_the_example_prices_file_loads_and_says_it_is_an_example():
    example = REPO / "examples" / "prices.example.csv"
    table = load_prices(str(example))
    assert table.currency == "USD" and len(table.prices) >= 3
    assert example.read_text().startswith("# EXAMPLE ONLY")
    assert all("check before use" in price.source for price in table.prices)


def test_a_preset_measured_at_different_batches_is_warned_about():
    import pandas as pd

    from reports.recommend import _mixed_workload_findings

    same = pd.DataFrame({"preset": ["tiny", "tiny"], "per_device_batch_size": [32, 16], "scaling": ["strong"] * 2,
                         "world_size": [1, 2]})
    assert list(_mixed_workload_findings(same)) == []  # strong scaling: one global batch of 32
    mixed = pd.DataFrame({"preset": ["tiny", "tiny"], "per_device_batch_size": [64, 32], "scaling": ["weak"] * 2,
                          "world_size": [1, 1]})
    (finding,) = _mixed_workload_findings(mixed)
    assert finding.kind == "mixed_workload" and "32 per device" in finding.detail and "64 per device" in finding.detail


def test_a_missing_report_package_is_one_line_exit_2(monkeypatch, capsys):
    # Which packages are installed is probed (find_spec); here the probe says plotly is missing.
    from reports import cli, report_cmd

    monkeypatch.setattr(report_cmd, "missing_packages", lambda: ["plotly"])
    assert cli.main(["report", "results/"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs the Python package(s) 'plotly'" in lines[0]
    assert "pip install 'gpusizer[report]'" in lines[0]


def test_the_report_shows_the_step_split_and_what_limits_each_multi_device_setup(real_result_files, tmp_path):
    import html

    from reports.step_breakdown import PART_WORDS, limiting_part
    from reports.words import fmt_pct

    out = report_ok(tmp_path / "report.html", real_result_files[0])
    page, markdown = html.unescape(out.read_text()), out.with_suffix(".md").read_text()
    cases = load_results([real_result_files[0]]).cases.set_index("case_id")
    split = cases.loc["ddp-2-tiny-fp32", "step_breakdown"]
    assert split["exposed_comm_s"] + np.nan_to_num(split["overlapped_comm_s"]) > 0  # the real run communicated
    part, share = limiting_part(split)
    said = f"{PART_WORDS[part]} is {fmt_pct(share)} of the step at 2 devices"
    assert 'id="chart-step_breakdown"' in page  # the stacked bar per setup
    # Under the scaling chart (its caption) and in the Markdown's own section, the same sentence.
    scaling_caption = page.split('id="chart-scaling"', 1)[1].split('<p class="caption">', 1)[1].split("</p>", 1)[0]
    assert "What limits each multi-device setup:" in scaling_caption and said in scaling_caption
    section = markdown.split("## Scaling: what limits each multi-device setup", 1)[1]
    assert said in section
    # The projection is built on the measured split, with its error at the measured point.
    assert "compute and communication measured (step split of ddp-2-tiny-fp32)" in markdown
    projection = markdown.split("compute and communication measured (step split of ddp-2-tiny-fp32): projection", 1)[1]
    assert "| ddp-2-tiny-fp32 |" in projection and "%" in projection.split("| ddp-2-tiny-fp32 |", 1)[1].split("\n")[0]
