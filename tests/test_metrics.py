"""One definition per number (gpusizer_common/metrics.py): the definitions themselves, and one real
single-run setup read through every output (record, CSV, Markdown, HTML table, compare's history),
which must all show the same throughput."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import statistics

import pytest
from bench_subprocess import run_bench_cpu

from gpusizer_common import metrics
from reports.cli import main
from reports.compare import COMPARISON_COLUMNS
from reports.words import fmt_number

# -- the definitions -------------------------------------------------------------------------------


def test_throughput_is_the_samples_over_the_median_round_not_the_median_of_rates():
    # Four rounds: the median round time is 2.5 s, so 10 samples a round are 4 samples/s; the median
    # of the per-round rates (10, 5, 3.33, 2.5) would be 4.17.
    assert metrics.samples_per_s(10, [1.0, 2.0, 3.0, 4.0]) == 4.0
    assert metrics.samples_per_s(metrics.samples_per_round(5, 2), [4.0, 1.0, 2.0]) == 5.0


def test_pooled_runs_count_each_round_by_its_samples_and_one_run_is_left_as_measured():
    # The second run's rounds train twice the samples: on the first run's footing they last half as long.
    samples, times_s = metrics.pooled_rounds([(10, [1.0, 3.0]), (20, [4.0, 8.0])])
    assert (samples, times_s) == (10, [1.0, 3.0, 2.0, 4.0])
    assert metrics.samples_per_s(samples, times_s) == 4.0
    measured = [0.1, 0.7, 0.3, 0.2]
    assert metrics.pooled_rounds([(64 * 5, measured)]) == (64 * 5, measured)  # exactly, not approximately


def test_the_numbers_derived_from_the_throughput():
    assert metrics.mfu(320.0, 1e6, 1e9, 1) == pytest.approx(0.32)
    assert metrics.mfu(320.0, 1e6, 1e9, 2) == pytest.approx(0.16)  # the peak of every device that trained
    assert metrics.scaling_efficiency(320.0, 2, 256.0) == pytest.approx(0.625)
    assert metrics.joules_per_sample(50.0, 1000) == 0.05
    assert metrics.seconds_to_train(1e6, 320.0) == pytest.approx(3125.0)
    assert metrics.cost_of(0.5, 7200.0) == 1.0
    assert metrics.cost_per_million_samples(0.5, 320.0) == pytest.approx(0.5 / 3600 / 320 * 1e6)


# -- one setup, every output -----------------------------------------------------------------------


def _html_setups_cell(page: str, column: str) -> list[str]:
    """The cells of ``column`` in the HTML report's setups table (the table with that header)."""
    for table in re.findall(r"<table><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody></table>", page, re.DOTALL):
        headers = [html.unescape(cell) for cell in re.findall(r"<th>(.*?)</th>", table[0])]
        if column in headers:
            rows = re.findall(r"<tr>(.*?)</tr>", table[1])
            return [html.unescape(re.findall(r"<td[^>]*>(.*?)</td>", row)[headers.index(column)]) for row in rows]
    raise AssertionError(f"no table with a {column!r} column in the HTML report")


def _values_of(key: str, tree: object) -> list:
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        return [value for k, v in tree.items() for value in ([v] if k == key else []) + _values_of(key, v)]
    if isinstance(tree, list):
        return [value for item in tree for value in _values_of(key, item)]
    return []


def test_a_single_run_setup_shows_one_throughput_in_every_output(tmp_path):
    # A real run with an even number of rounds: there the median of per-round rates (the setups table's
    # old number) and the median round's rate (the record's) part.
    result = run_bench_cpu(tmp_path, "--quick", "--strategies", "single", "--world-sizes", "1", "--rounds", "4")
    assert result.returncode == 0, result.stdout[-3000:]
    (run,) = (tmp_path / "results").glob("*.json")
    record = json.loads(run.read_text())["benchmarks"][0]["extra_info"]
    round_times_s, samples = record["round_times_s"], record["global_batch_size"] * record["steps_per_round"]
    assert len(round_times_s) == 4
    throughput = record["samples_per_s"]
    # The record holds DESIGN.md's definition, written out here rather than called.
    assert throughput == samples / statistics.median(round_times_s)
    # The test can tell the two apart on this run: the other statistic is another number.
    assert statistics.median(samples / t for t in round_times_s) != pytest.approx(throughput, rel=1e-9)

    report = tmp_path / "report" / "r.html"
    assert main(["report", str(run), "-o", str(report)]) == 0
    with open(report.with_suffix(".csv"), newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["samples_per_s"]) == throughput  # the CSV's raw number is the record's, to the bit
    shown = fmt_number(throughput)  # how the HTML and the Markdown write it
    assert _html_setups_cell(report.read_text(), "samples/s") == [shown]
    # The Markdown names a throughput only in its answer, and only when the setup was steady (an unstable
    # one gets "measure again"); whatever rate it writes is the record's.
    markdown = report.with_suffix(".md").read_text()
    rates_in_markdown = re.findall(r"([0-9][0-9,.]*[kMG]?) samples/s", markdown)
    if "unstable" in record["flags"]:
        assert rates_in_markdown == [], markdown
    else:
        assert rates_in_markdown and set(rates_in_markdown) == {shown}, markdown

    # compare's history (a folder baseline holding a copy of the run), and no other samples_per_s in its
    # JSON: the verdict's rates, at the compared round-time quantile, are named for it.
    folder = tmp_path / "baseline"
    folder.mkdir()
    shutil.copy(run, folder / "copy.json")
    verdicts = tmp_path / "verdicts.json"
    assert main(["compare", str(folder), str(run), "--json", str(verdicts)]) in (0, 1, 3)
    payload = json.loads(verdicts.read_text())
    assert [entry["samples_per_s"] for entry in payload["history"]] == [throughput, throughput]
    assert _values_of("samples_per_s", payload) == [throughput, throughput]
    (case,) = payload["cases"]
    quartile_s = statistics.quantiles(round_times_s, n=4, method="inclusive")[0]
    assert case["current_samples_per_s_at_round_quantile"] == pytest.approx(samples / quartile_s, rel=1e-12)


def test_compares_rates_at_another_round_time_carry_a_name_of_their_own():
    # Compare's verdict rates are at the compared round-time quantile (p25 by default), not the median
    # round: no column of its table may be called samples_per_s or end in it.
    assert not [column for column in COMPARISON_COLUMNS if column.endswith("samples_per_s")]
