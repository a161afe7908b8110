"""Time-sized rounds (bench/run/round_sizing.py): the calibration with a fake clock and round function, the
options, and a real `pytest bench/` run on CPU whose steps per round grew."""

from __future__ import annotations

import json

import pytest
from conftest import make_bench_options

from bench.run.round_sizing import MAX_STEPS_PER_ROUND, RoundSizing, calibrate, next_steps, size_rounds
from bench.telemetry.flags import MIN_TELEMETRY_SAMPLES, judged_telemetry_flags
from tests.bench_subprocess import run_bench_cpu


class FakeDevice:
    """A device that takes ``step_s`` per step (``step_s_after_warm`` once ``warm_after_s`` passed),
    with its own clock advanced by the rounds it runs."""

    def __init__(self, step_s: float, *, step_s_after_warm: float | None = None, warm_after_s: float = 0.0):
        self.step_s, self.step_s_after_warm, self.warm_after_s = step_s, step_s_after_warm, warm_after_s
        self.now_s = 0.0
        self.rounds: list[int] = []

    def clock(self) -> float:
        return self.now_s

    def run_round(self, steps: int) -> float:
        warm = self.step_s_after_warm is not None and self.now_s >= self.warm_after_s
        round_s = steps * (self.step_s_after_warm if warm else self.step_s)
        self.now_s += round_s + 0.001  # the controller's own share of a round
        self.rounds.append(steps)
        return round_s


def test_calibration_doubles_then_scales_until_a_round_lasts_long_enough():
    device = FakeDevice(step_s=0.003)  # a 10-step round lasts 30 ms: a GPU's small preset
    steps, rounds, reached = calibrate(device.run_round, 10, min_round_s=1.0)
    assert reached and steps * 0.003 >= 1.0
    # A cold first round, not judged; then 10 -> 20 -> 40 -> 80 -> 160 (0.48 s, still below half)
    # -> 320 (0.96 s: scale) -> ceil(320/0.96*1.1)
    assert device.rounds[:7] == [10, 10, 20, 40, 80, 160, 320]
    assert device.rounds[-1] == steps and rounds == len(device.rounds) == 8
    assert steps < 2 * 334  # scaling, not doubling, finished it


def test_no_sizing_runs_no_round():
    device = FakeDevice(step_s=0.003)
    assert calibrate(device.run_round, 10, min_round_s=0.0) == (10, 0, True)
    sizing = size_rounds(device.run_round, steps_per_round=10, min_round_s=0.0, warmup_rounds=2, warmup_s=0.0,
                         clock=device.clock)
    assert device.rounds == [10, 10] and sizing.steps_per_round == 10 and sizing.calibration_rounds == 0


def test_warm_up_lasts_its_seconds_and_rescales_when_the_device_clocked_up():
    # Cold: 10 ms a step; after 2 s the clocks are up: 5 ms a step.
    device = FakeDevice(step_s=0.010, step_s_after_warm=0.005, warm_after_s=2.0)
    sizing = size_rounds(device.run_round, steps_per_round=10, min_round_s=1.0, warmup_rounds=1, warmup_s=3.0,
                         clock=device.clock)
    assert device.now_s >= 3.0  # warm-up ran until its seconds had passed
    assert sizing.warmup_rounds_run >= 1 and sizing.calibration_rounds >= 1
    assert sizing.calibration_s + sizing.warmup_s_run == pytest.approx(device.now_s)
    # Calibrated on the cold device (100 steps = 1 s), the warm one needs about twice the steps.
    assert sizing.steps_per_round * 0.005 >= 1.0
    assert sizing.steps_per_round_requested == 10 and sizing.reached_min_round_s


def test_growth_stops_at_the_cap_and_says_so():
    device = FakeDevice(step_s=0.0)  # a round that takes no time at all never reaches the target
    steps, _, reached = calibrate(device.run_round, 1, min_round_s=1.0)
    assert not reached and steps <= MAX_STEPS_PER_ROUND
    assert next_steps(MAX_STEPS_PER_ROUND, 0.0, 1.0) == MAX_STEPS_PER_ROUND


def test_round_sizing_is_validated():
    with pytest.raises(ValueError, match="steps_per_round"):
        RoundSizing(10, 0, 1.0, 3.0, 1, 0.1, 1, 0.1, True)
    with pytest.raises(ValueError, match="calibration_s"):
        RoundSizing(10, 10, 1.0, 3.0, 1, float("nan"), 1, 0.1, True)


base_options = make_bench_options


def test_defaults_depend_on_the_device_type():
    options = base_options()
    assert (options.resolved_min_round_s("cuda"), options.resolved_warmup_s("cuda")) == (1.0, 3.0)
    assert (options.resolved_min_round_s("cpu"), options.resolved_warmup_s("cpu")) == (0.0, 0.0)
    assert base_options(min_round_s=0.2).resolved_min_round_s("cuda") == 0.2
    for bad in (-1.0, 1e9):
        with pytest.raises(ValueError, match="--min-round-s"):
            base_options(min_round_s=bad)
        with pytest.raises(ValueError, match="--warmup-s"):
            base_options(warmup_s=bad)


def test_too_few_telemetry_samples_are_said_and_raise_no_flag():
    def telemetry(samples: int) -> dict:
        device = {"throttle_fraction": {"thermal": 1.0}, "util_mean_pct": 5.0, "memory_used_peak_bytes": None,
                  "memory_total_bytes": None}
        return {"samples": samples, "devices": [device]}

    short = telemetry(MIN_TELEMETRY_SAMPLES - 1)
    assert judged_telemetry_flags(short) == [] and short["samples_too_few"] is True
    enough = telemetry(MIN_TELEMETRY_SAMPLES)
    assert judged_telemetry_flags(enough) == ["low_utilisation", "throttled"] and enough["samples_too_few"] is False


run_bench = run_bench_cpu  # tests/bench_subprocess.py


def test_a_real_cpu_run_grows_its_steps_and_records_both(tmp_path):
    result = run_bench(tmp_path, "--quick", "--strategies", "single", "--steps-per-round", "1",
                       "--min-round-s", "0.5")
    assert result.returncode == 0, result.stdout[-3000:]
    data = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    record = data["benchmarks"][0]["extra_info"]
    sizing = record["round_sizing"]
    # A warm step of `tiny` lasts milliseconds here (~0.1 s under a load of 9), below 0.5 s: it had to grow.
    assert record["steps_per_round_requested"] == 1 and record["steps_per_round"] > 1
    assert sizing["steps_per_round"] == record["steps_per_round"] and sizing["calibration_rounds"] >= 2
    assert sizing["min_round_s"] == 0.5 and sizing["reached_min_round_s"] is True
    # Throughput is the ranks' own: samples per step x the steps actually used / their median round.
    times = sorted(record["round_times_s"])
    median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1:][:2]) / 2
    assert record["samples_per_s"] == pytest.approx(record["global_batch_size"] * record["steps_per_round"] / median)
    assert isinstance(record["telemetry"]["samples_too_few"], bool)
    # The progress line follows the case.
    assert "gpusizer: 1/1 single-1-tiny-fp32 passed; elapsed " in result.stdout, result.stdout[-3000:]
    assert "estimated remaining 0 s" in result.stdout


@pytest.mark.parametrize("value", ["-1", "inf", "abc"])
def test_a_bad_min_round_s_is_a_one_line_usage_error(tmp_path, value):
    result = run_bench(tmp_path, "--min-round-s", value, "--collect-only")
    assert result.returncode == 4, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "--min-round-s" in line]
    assert lines and "allowed: a number of seconds from 0 to 3600" in lines[0], result.stderr
    assert not (tmp_path / "results").exists()


def test_a_slow_cold_first_round_is_not_taken_for_the_round_size():
    calls: list[int] = []

    def run_round(steps: int) -> float:
        calls.append(steps)
        return 2.0 if len(calls) == 1 else steps * 0.01  # cold: 2 s for one step; warm: 10 ms a step

    steps, rounds, reached = calibrate(run_round, 1, min_round_s=1.0)
    assert reached and steps * 0.01 >= 1.0 and rounds == len(calls) > 2
