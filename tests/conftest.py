"""Fixtures shared by the test files. ``real_result_files`` runs the real benchmark once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

import bench.run.worker
from bench.config.options import BenchOptions

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
BENCH_DEADLINE_S = 300  # one `pytest bench/` run of a test; generous, the machine may be busy

# Each configuration is a real `pytest bench/` run on this machine's CPU, chosen to be quick while
# covering what the reports must handle: several strategies and device counts with a 1-device
# baseline, skipped cases (dp needs CUDA), a second per-device batch, and a case that really fails
# (a launch deadline no torchrun start can meet).
BENCH_RUNS = (
    ("strategies", ("--quick", "--strategies", "single,dp,ddp", "--world-sizes", "1,2", "--step-breakdown")),
    ("batch32", ("--quick", "--strategies", "single", "--batch-size", "32")),
    ("failing-launch", ("--quick", "--strategies", "ddp", "--world-sizes", "2", "--launch-timeout-s", "0.05")),
)
BENCH_RUN_DEADLINE_S = 300


def _start_bench(name: str, args: tuple[str, ...], results_dir: Path) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    log = open(results_dir.parent / f"{name}.log", "wb")  # noqa: SIM115 - closed once the run is reaped
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", *args,
         "--results-dir", str(results_dir)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log = log
    return process


def _reap(process: subprocess.Popen, deadline: float) -> None:
    """Wait until the deadline; past it, kill the run's whole process group (torchrun and its workers)."""
    try:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"`pytest bench/` ran past its {BENCH_RUN_DEADLINE_S} s deadline; see {process.log.name}")
    finally:
        process.log.close()


@pytest.fixture(scope="session")
def real_result_files(tmp_path_factory) -> list[str]:
    """Result files written by really running ``pytest bench/`` (CPU) once per test session.

    Shared by the report tests and the compare tests. Returns the paths in BENCH_RUNS order:
    [0] "strategies": single-1, ddp-1, ddp-2 passed and dp-1, dp-2 skipped (tiny preset, batch 64);
    [1] "batch32": single-1 at per-device batch 32;
    [2] "failing-launch": ddp-2 failed (launch deadline of 0.05 s), no benchmark entries.
    The first run is measured alone; the other two run side by side (neither's numbers are judged).
    """
    root = tmp_path_factory.mktemp("bench-runs")
    folders = {name: root / name for name, _ in BENCH_RUNS}
    deadline = time.monotonic() + BENCH_RUN_DEADLINE_S
    first, *rest = BENCH_RUNS
    _reap(_start_bench(first[0], first[1], folders[first[0]]), deadline)
    for process in [_start_bench(name, args, folders[name]) for name, args in rest]:
        _reap(process, deadline)
    paths = []
    for name, _ in BENCH_RUNS:
        found = sorted(folders[name].glob("*.json"))
        if len(found) != 1:
            log = (root / f"{name}.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"`pytest bench/` run {name!r} wrote {len(found)} result files, expected 1:\n{log}")
        paths.append(str(found[0]))
    return paths


@pytest.fixture
def run_bench(pytester):
    """``run_bench(*args)``: ``pytest bench/ ARGS`` as a user runs it, in a separate process started in
    a fresh folder (``pytester.path``); returns pytest's ``RunResult`` (``ret``, ``stdout``, ``stderr``)."""
    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(str(BENCH_DIR), "-p", "no:cacheprovider", *args,
                                             timeout=BENCH_DEADLINE_S)
    return run


def make_bench_options(**overrides) -> BenchOptions:
    """Valid ``BenchOptions`` of a small CPU run (single, batch 8, 2 rounds of 2 steps), with
    ``overrides``; lists left None take the device's defaults. The one base every test file builds on."""
    values = {"strategies": ("single",), "world_sizes": None, "presets": None, "precisions": None,
              "per_device_batch_at_smallest_world": 8, "steps_per_round": 2, "rounds": 2, "warmup_rounds": 0, "device": "cpu",
              "scaling": "weak", "quick": False, "verify": False, "seed": 0, "results_dir": "results",
              "launch_timeout_s": 60.0, "round_timeout_s": 60.0}
    return BenchOptions(**{**values, **overrides})


@pytest.fixture
def bench_options():
    """``bench_options(**overrides)``: ``make_bench_options`` as a fixture."""
    return make_bench_options


@pytest.fixture
def model_refs(monkeypatch):
    """Weak references to every model the worker builds."""
    refs: list[weakref.ref] = []
    real_build = bench.run.worker.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(bench.run.worker, "build_model", build)
    return refs
