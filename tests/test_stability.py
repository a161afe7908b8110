"""The ``unstable`` flag: a busy or drifting machine is caught by the benchmark, and nothing is judged twice.

The end-to-end test runs the real benchmark with a real CPU-burning process outside its process tree
(a sibling, not a child, of ``pytest bench/``), both pinned to one core. The peak-drift logic is
checked with injected peak values; the GPU path through the NVML fake (tests/fake_pynvml.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BENCH_RUN_DEADLINE_S, REPO, _reap
from fake_pynvml import FakeGpu, make_pynvml

from bench.record import flags
from bench.record.flags import apply_stability, round_spread_fraction, unstable_reasons
from bench.telemetry import DeviceRef, Sampler

BURNER_DEADLINE_S = 240  # the burner ends by itself even if this test is killed; reaped in finally


def _pinned_bench(results_dir: Path, core: int, *args: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    pinned = f"import os, sys; os.sched_setaffinity(0, {{{core}}}); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    log = open(results_dir.parent / f"{results_dir.name}.log", "wb")  # noqa: SIM115 - closed by _reap
    process = subprocess.Popen([sys.executable, "-c", pinned, "-m", "pytest", "bench/", "-p", "no:cacheprovider",
                                "-q", *args, "--results-dir", str(results_dir)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log = log
    return process


def _burner(core: int) -> subprocess.Popen:
    """A real CPU-burning process on ``core``: a child of this test, so outside the benchmark's tree."""
    code = (f"import os, time; os.sched_setaffinity(0, {{{core}}}); end = time.monotonic() + {BURNER_DEADLINE_S}\n"
            "while time.monotonic() < end: pass")
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_a_cpu_burner_outside_the_benchmark_flags_its_cases_unstable(tmp_path):
    core = max(os.sched_getaffinity(0))
    results = tmp_path / "busy"
    burner = _burner(core)
    try:
        # Rounds of at least 0.2 s: the outside share is read from 10 ms clock ticks, and a --quick case's
        # ~20 ms of rounds is too short to measure (the record then says so instead of a number).
        bench = _pinned_bench(results, core, "--quick", "--strategies", "single", "--rounds", "5", "--min-round-s", "0.2")
        _reap(bench, time.monotonic() + BENCH_RUN_DEADLINE_S)
    finally:
        burner.kill()
        burner.wait(timeout=30)
    output = Path(bench.log.name).read_text(errors="replace")
    assert bench.returncode == 0, output[-3000:]
    (result,) = results.glob("*.json")
    data = json.loads(result.read_text())
    (entry,) = data["benchmarks"]
    record = entry["extra_info"]
    # The burner shares the benchmark's only core: about half of it is used outside the tree.
    assert record["outside_busy_pct"] > flags.OUTSIDE_BUSY_LIMIT_PCT, record["telemetry"]["outside"]
    assert "unstable" in record["flags"]
    assert any("processes outside the benchmark" in reason for reason in record["unstable_reasons"])
    # Both peaks are in the record and the machine's ceilings, probed at the start and at the end.
    assert record["peak_flops_end_per_s"] > 0
    assert record["peak_end_over_start"] == pytest.approx(record["peak_flops_end_per_s"] / record["peak_flops_per_s"])
    (peak,) = data["machine_info"]["gpusizer"]["ceilings"]["matmul_peak"]
    assert peak["flops_per_s_end"] == record["peak_flops_end_per_s"]
    assert data["gpusizer"]["measured"] == 1
    # pytest bench/ says so in one line at the end, with the two peaks.
    (line,) = [line for line in output.splitlines() if "UNSTABLE machine" in line]
    assert "single-1-tiny-fp32" in line and "GFLOP/s at the start" in line and "at the end" in line


def test_a_run_that_measured_nothing_is_written_with_measured_0(tmp_path):
    """--device cuda without a GPU: every case skipped, the file is still written (the reasons are data)."""
    results = tmp_path / "nothing"
    bench = _pinned_bench(results, max(os.sched_getaffinity(0)), "--quick", "--strategies", "single",
                          "--device", "cuda")
    _reap(bench, time.monotonic() + BENCH_RUN_DEADLINE_S)
    (result,) = results.glob("*.json")
    data = json.loads(result.read_text())
    assert data["gpusizer"]["measured"] == 0 and data["benchmarks"] == []
    import torch

    # A CPU build says so; a CUDA build (torch 2.6 and 2.14.1 from PyPI run here on CPU) finds no device.
    why = "CPU build" if torch.version.cuda is None else "no CUDA device is visible"
    assert data["gpusizer"]["cases"][0]["status"] == "skipped" and why in data["gpusizer"]["cases"][0]["reason"]
    assert "UNSTABLE" not in Path(bench.log.name).read_text(errors="replace")


# -- the judgement itself, with injected numbers ---------------------------------------------------------


def _record(**values) -> dict:
    base = {"case_id": "single-1-small-fp32", "device_type": "cpu", "flags": ["timing_gap"],
            "peak_flops_per_s": 200e9, "peak_flops_end_per_s": None, "outside_busy_pct": 0.0,
            "round_spread_fraction": 0.01}
    return {**base, **values}


@pytest.mark.parametrize(("end_flops", "unstable"), [(200e9, False), (185e9, False), (170e9, True), (58e9, True),
                                                     (230e9, True), (None, False)])
def test_peaks_that_differ_by_more_than_the_limit_flag_unstable(end_flops, unstable):
    record = apply_stability(_record(), peak_end_flops_per_s=end_flops)
    assert ("unstable" in record["flags"]) is unstable
    assert "timing_gap" in record["flags"]  # other flags are kept
    if end_flops is not None:
        assert record["peak_end_over_start"] == pytest.approx(end_flops / 200e9)
        assert bool(record["unstable_reasons"]) is unstable


def test_outside_load_and_round_spread_each_flag_unstable_and_a_stable_record_loses_the_flag():
    assert unstable_reasons(peak_ratio=1.0, outside_busy_pct=flags.OUTSIDE_BUSY_LIMIT_PCT + 1, round_spread=0.0,
                            device_type="cuda")[0].startswith("processes outside the benchmark kept")
    assert "spread" in unstable_reasons(peak_ratio=None, outside_busy_pct=None,
                                        round_spread=flags.ROUND_SPREAD_LIMIT * 2, device_type="cpu")[0]
    record = apply_stability(_record(flags=["unstable"], outside_busy_pct=1.0), peak_end_flops_per_s=199e9)
    assert record["flags"] == [] and record["unstable_reasons"] == []


def test_round_spread_is_interquartile_range_over_median():
    assert round_spread_fraction([1.0]) is None
    assert round_spread_fraction([1.0, 1.0, 1.0, 1.0]) == 0.0
    # inclusive quartiles of 1..5: q1 = 2, q3 = 4, median 3
    assert round_spread_fraction([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)


def test_every_threshold_lives_in_bench_flags():
    from bench.record import record
    from bench.telemetry import flags as telemetry_flags

    assert record.TIMING_GAP_LIMIT is flags.TIMING_GAP_LIMIT
    assert telemetry_flags.THROTTLED_FRACTION is flags.THROTTLED_FRACTION
    import reports.recommend

    for name in ("THROTTLE_LIMIT", "LOW_UTILISATION_PCT", "TIMING_GAP_LIMIT", "MEMORY_HEADROOM_LIMIT"):
        assert not hasattr(reports.recommend, name), f"reports re-judges with its own {name}"


# -- GPU: other processes on the case's GPU (NVML per-process utilisation, faked) --------------------------


def test_a_gpu_window_too_short_to_sample_raises_no_outside_load_flag():
    from bench.record.record import outside_busy_pct

    telemetry = {"outside": {"gpu_busy_pct": 60.0, "cpu_busy_pct": 55.0}, "samples_too_few": True}
    value, reason = outside_busy_pct(telemetry, "cuda")
    assert value is None and "fewer than 10 telemetry samples" in reason
    assert outside_busy_pct(telemetry, "cpu") == (55.0, None)  # CPU times, not samples: still judged
    assert outside_busy_pct({**telemetry, "samples_too_few": False}, "cuda") == (60.0, None)


def test_other_processes_on_the_gpu_are_measured_and_our_own_are_not(monkeypatch):
    outsider = 1  # init: never in this process's tree
    fake = FakeGpu(uuid="GPU-00000000-aaaa-bbbb-cccc-dddddddddddd", pci_bus_id="00000000:10:00.0",
                   process_sm_util={os.getpid(): 85, outsider: 40})
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml([fake]))
    refs = [DeviceRef(index=0, uuid=fake.uuid, pci_bus_id=fake.pci_bus_id)]
    sampler = Sampler("cuda", [0], interval_s=0.01, device_refs=refs)
    with sampler:
        time.sleep(0.2)
    outside = sampler.summary(samples_trained=100)["outside"]
    assert outside["gpu_busy_pct"] == pytest.approx(40.0)
    assert outside["gpu_busy_max_pct"] == pytest.approx(40.0)

    alone = FakeGpu(uuid=fake.uuid, pci_bus_id=fake.pci_bus_id, process_sm_util={os.getpid(): 85})
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml([alone]))
    sampler = Sampler("cuda", [0], interval_s=0.01, device_refs=refs)
    with sampler:
        time.sleep(0.2)
    assert sampler.summary(samples_trained=100)["outside"]["gpu_busy_pct"] == 0.0
