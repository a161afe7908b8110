"""`pytest bench/` as a user runs it, through pytester in a separate process, plus its parts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench.config.cases import build_cases
from bench.record.results import ResultFile

# DESIGN.md's record table: every key must be in every benchmark's extra_info.
RECORD_KEYS = {
    "schema_version", "strategy", "world_size", "device_type", "preset", "model_config", "num_params",
    "flops_per_sample", "precision", "per_device_batch_size", "global_batch_size", "scaling",
    "steps_per_round", "round_times_s", "samples_per_s", "peak_flops_per_s", "launch_s",
    "peak_memory_bytes", "telemetry", "skipped_reason", "flags",
}


def only_result_file(directory: Path) -> dict:
    files = sorted(directory.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_quick_run_writes_a_complete_result_file(pytester, run_bench):
    result = run_bench("--quick", "--strategies", "single", "--precisions", "fp32,tf32")
    assert result.ret == 0, result.stdout.str()
    data = only_result_file(pytester.path / "results")
    result.stdout.fnmatch_lines(["*result file: results/*.json*"])

    (bench,) = data["benchmarks"]
    record = bench["extra_info"]
    assert RECORD_KEYS <= set(record)
    assert record["strategy"] == "single" and record["preset"] == "tiny" and record["device_type"] == "cpu"
    assert bench["name"] == "test_train[single-1-tiny-fp32]"
    # single trained in a launched rank process of its own, not in the pytest process (issue 23).
    assert record["launcher"] == "python" and record["launch_s"] > 0 and len(record["worker_pids"]) == 1
    assert record["group_reused"] is False and record["case_setup_s"] is None
    assert [peak["processes"] for peak in data["machine_info"]["gpusizer"]["ceilings"]["matmul_peak"]] == [1]
    # Per-round data kept; throughput from the median round of the ranks' own times (the controller's
    # stats.data is the check, timing_gap_fraction).
    rounds = bench["stats"]["data"]
    assert len(rounds) == record["rounds"] == 3
    assert len(record["round_times_s"]) == 3
    expected = record["global_batch_size"] * record["steps_per_round"] / statistics.median(record["round_times_s"])
    assert record["samples_per_s"] == pytest.approx(expected)
    # MFU against the measured peak cannot exceed 1.
    assert 0 < record["samples_per_s"] * record["flops_per_sample"] <= record["peak_flops_per_s"]

    section = data["gpusizer"]
    assert section["complete"] is True
    statuses = {case["case_id"]: case for case in section["cases"]}
    assert statuses["single-1-tiny-fp32"]["status"] == "passed"
    assert statuses["single-1-tiny-tf32"]["status"] == "skipped"
    assert "GPU" in statuses["single-1-tiny-tf32"]["reason"]


def test_existing_result_file_is_never_overwritten(tmp_path):
    taken = tmp_path / "run.json"
    taken.write_text("precious")
    result_file = ResultFile(tmp_path, name="run.json")
    result_file.write({"x": 1})
    assert taken.read_text() == "precious"
    assert result_file.path == tmp_path / "run-1.json"
    assert json.loads(result_file.path.read_text()) == {"x": 1}


def test_benchmark_json_option_is_respected(pytester, run_bench):
    result = run_bench("--quick", "--strategies", "single", "--benchmark-json", "mine.json")
    assert result.ret == 0, result.stdout.str()
    data = json.loads((pytester.path / "mine.json").read_text())
    assert data["benchmarks"][0]["extra_info"]["schema_version"] == 1
    assert data["gpusizer"]["cases"][0]["status"] == "passed"
    assert data["gpusizer"]["complete"] is True
    assert not (pytester.path / "results").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "single,zero"], "--strategies: unknown value 'zero'; allowed: single"),
        (["--presets", "huge"], "--presets: unknown value 'huge'; allowed: tiny, small, medium, large, xl"),
        (["--precisions", "fp8"], "--precisions: unknown value 'fp8'; allowed: fp32, tf32, bf16, fp16"),
        (["--batch-size", "0"], "--batch-size: 0 is not a positive integer; allowed: an integer >= 1"),
        (["--batch-size", "lots"], "--batch-size: 'lots' is not a positive integer"),
        (["--world-sizes", "1,-2"], "--world-sizes: -2 is not a positive integer"),
        (["--world-sizes", "two"], "--world-sizes: 'two' is not a positive integer"),
        (["--world-sizes", "0"], "--world-sizes: 0 is not a positive integer; allowed: an integer >= 1"),
        (["--world-sizes", "2,x"], "--world-sizes: 'x' is not a positive integer; allowed: an integer >= 1"),
        (["--steps-per-round", "0"], "--steps-per-round: 0 is not a positive integer"),
        (["--rounds", "1.5"], "--rounds: '1.5' is not a positive integer"),
        (["--scaling", "diagonal"], "--scaling: unknown value 'diagonal'; allowed: weak, strong"),
        (["--device", "tpu"], "--device: unknown value 'tpu'; allowed: auto, cpu, cuda"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(pytester, run_bench, args, message):
    result = run_bench(*args)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.lines
    assert message in errors[0]
    assert not (pytester.path / "results").exists()


def test_help_lists_every_option_with_allowed_values(run_bench):
    result = run_bench("--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())  # argparse wraps long help lines
    for option in ("--strategies", "--world-sizes", "--presets", "--precisions", "--batch-size",
                   "--steps-per-round", "--rounds", "--device", "--quick"):
        assert option in text
    assert "allowed: tiny, small, medium, large, xl" in text


def test_matrix_has_single_only_at_world_size_one_and_readable_ids(bench_options):
    cases = build_cases(bench_options(world_sizes=(1, 2, 4), presets=("tiny", "small")), "cpu", 2)
    assert [c.case_id for c in cases] == ["single-1-tiny-fp32", "single-1-small-fp32"]


def test_cpu_defaults(bench_options):
    options = bench_options()
    assert options.resolved_presets("cpu") == ("small",)
    assert options.resolved_world_sizes("cpu", 16) == (1, 2)
    assert options.resolved_world_sizes("cuda", 8) == (1, 2, 4, 8)
    assert options.resolved_world_sizes("cuda", 6) == (1, 2, 4)
