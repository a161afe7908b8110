"""`pytest bench/ --plan` and the progress line (bench/run/plan.py)."""

from __future__ import annotations

import pytest
from conftest import make_bench_options

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.hardware.peak import peak_key
from bench.run.plan import (
    CALIBRATION_ROUNDS_EQUIVALENT,
    CEILING_S,
    LAUNCH_S,
    PEAK_S,
    Progress,
    estimate_case,
    make_plan,
)
from tests.bench_subprocess import run_bench_cpu


def case(strategy: str = "ddp", world_size: int = 2, device_type: str = "cuda", **overrides) -> BenchCase:
    values = {"strategy": strategy, "world_size": world_size, "preset": "tiny", "precision": "fp32",
              "device_type": device_type, "per_device_batch_size": 64, "scaling": "weak", "steps_per_round": 10,
              "rounds": 10, "warmup_rounds": 2}
    return BenchCase(**{**values, **overrides})


def options(**overrides) -> BenchOptions:
    return make_bench_options(**{"strategies": ("single", "ddp"), "per_device_batch_at_smallest_world": 64,
                                 "steps_per_round": 10, "rounds": 10, "warmup_rounds": 2, "device": "cuda", **overrides})


def test_a_sized_gpu_case_is_estimated_from_its_round_length_and_launch():
    estimate = estimate_case(case(), options(), None)  # tiny on a GPU: a natural round of microseconds
    assert estimate.launch_s == LAUNCH_S["cuda"]
    assert estimate.calibration_s == CALIBRATION_ROUNDS_EQUIVALENT * 1.0
    assert estimate.warmup_s == 3.0 and estimate.rounds_s == 10 * 1.0
    single = estimate_case(case("single", 1), options(), None)  # a launched rank process, like the others
    assert single.launch_s == LAUNCH_S["cuda"]
    assert estimate_case(case(), options(), "no GPU").total_s == 0.0


def test_the_plan_adds_ceilings_and_peaks_once_and_prices_the_hour():
    cases = [case("single", 1), case("ddp", 1), case("ddp", 2), case("ddp", 4)]
    plan = make_plan(cases, options(), lambda c: "4 GPUs needed" if c.world_size == 4 else None)
    assert plan.ceilings_s == CEILING_S["cuda"]  # world size 2 only: 4 is skipped, 1 needs none
    # One peak per precision and thread layout: single-1 and ddp-1 share one (one process with every
    # core), ddp-2's ranks get half the cores each wherever there are two or more.
    layouts = {peak_key("cuda", "fp32", processes) for processes in (1, 2)}
    assert plan.peaks_s == PEAK_S["cuda"] * len(layouts)
    lines = plan.lines(price_per_hour=36.0)
    assert any("ddp-4-tiny-fp32" in line and "skip: 4 GPUs needed" in line for line in lines)
    assert "3 case(s) to run, 1 skipped" in lines[-3]
    assert lines[-2] == f"gpusizer plan: estimated cost {36.0 * plan.total_s / 3600:.2f} at 36 per hour"


def test_progress_scales_what_is_left_by_how_the_run_compares_with_the_plan():
    plan = make_plan([case("single", 1), case("ddp", 1)], options(), lambda c: None)
    now = [0.0]
    progress = Progress(plan, lambda: now[0])
    first, second = (e.total_s for e in plan.estimates)
    now[0] = 2 * first  # the first case took twice its estimate
    line = progress.line("single-1-tiny-fp32", "passed")
    assert line.startswith("gpusizer: 1/2 single-1-tiny-fp32 passed; elapsed ")
    assert line.endswith(f"estimated remaining {2 * second:.0f} s")


run_bench = run_bench_cpu  # tests/bench_subprocess.py


def test_plan_lists_cases_and_skips_runs_nothing_and_writes_nothing(tmp_path):
    result = run_bench(tmp_path, "--plan", "--price-per-hour", "2.5", "--strategies", "single,dp,ddp")
    assert result.returncode == 0 and "no tests ran" in result.stdout, result.stdout[-3000:]
    out = result.stdout
    assert "single-1-small-fp32" in out and "ddp-2-small-fp32" in out
    assert "skip: DataParallel needs CUDA GPUs" in out
    assert "gpusizer plan: 3 case(s) to run, 2 skipped; estimated wall time" in out
    assert "launches " in out and "ceilings " in out and "estimated cost " in out and "at 2.5 per hour" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("value", ["-1", "cheap"])
def test_a_bad_price_is_a_one_line_usage_error(tmp_path, value):
    result = run_bench(tmp_path, "--plan", "--price-per-hour", value)
    assert result.returncode == 4
    assert "--price-per-hour" in result.stderr and "allowed: a number from 0 to 1e+06" in result.stderr


def test_progress_is_not_thrown_by_one_odd_case():
    from bench.run.plan import MAX_SCALE, _duration

    plan = make_plan([case("single", 1), case("ddp", 1)], options(), lambda c: None)
    now = [0.0]
    progress = Progress(plan, lambda: now[0])
    first, second = (e.total_s for e in plan.estimates)
    now[0] = 1000 * first  # e.g. a first case that hung until its deadline
    line = progress.line("single-1-tiny-fp32", "passed")
    # At most MAX_SCALE times the plan, not 1000 times.
    assert line.endswith(f"estimated remaining {_duration(MAX_SCALE * second)}")
