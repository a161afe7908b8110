"""Faults, for real: `pytest bench/` in a subprocess, real torchrun/horovodrun workers that are really
killed (SIGKILL), really hung (asleep in a round) and a real SIGINT to pytest.

The fault is injected with worker_main's test hook GPUSIZER_FAULT=rank<R>:<kind>@round<N>. Every
process the run starts inherits a marker variable, so leftovers are found by scanning all processes'
environments, even ones orphaned to init (which a children() walk would miss).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from bench.strategies import REGISTRY

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
MARK_ENV = "GPUSIZER_TEST_MARK"
RUN_TIMEOUT_S = 240  # the whole `pytest bench/` run, on a busy 2-core machine


def marked_processes(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK_ENV) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def leftovers(mark: str, grace_s: float = 10.0) -> list[str]:
    """Marked processes still alive after ``grace_s``, as 'pid (parent): command line'.

    The grace covers helpers that end on their own once pytest is gone, e.g. multiprocessing's
    resource tracker (it exits when it reads EOF from its dead parent); a leaked worker outlives it.
    """
    _, alive_procs = psutil.wait_procs(marked_processes(mark), timeout=grace_s)
    alive = []
    for proc in alive_procs:
        try:
            alive.append(f"{proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return alive


def start_bench(tmp_path: Path, fault: str, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    mark = uuid.uuid4().hex
    env = {**os.environ, **(env or {}), MARK_ENV: mark, "GPUSIZER_FAULT": fault}
    command = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider", "-q", "--quick",
               "--device", "cpu", "--results-dir", str(tmp_path / "results"), *args]
    proc = subprocess.Popen([*SIGINT_RESTORED, *command], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, mark


# A test suite started in the background by a non-interactive shell (as CI may be) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler. Reset it before exec'ing pytest, so
# Ctrl-C reaches `pytest bench/` as it would from a terminal (SIGHUP too: under nohup it is ignored).
SIGINT_RESTORED = [sys.executable, "-c",
                   ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                    "signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")]


def finish(proc: subprocess.Popen, timeout_s: float = RUN_TIMEOUT_S) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"`pytest bench/` ran past {timeout_s} s:\n{output[-3000:]}")
    return output


def result_file(tmp_path: Path) -> dict | None:
    files = sorted((tmp_path / "results").glob("*.json"))
    if not files:
        return None
    # The run claims its file name (an empty file, created exclusively) before the first case ends and
    # then replaces it whole after each case: empty means "nothing written yet", never half a file.
    text = files[0].read_text()
    return json.loads(text) if text else None


def cases_by_id(data: dict) -> dict[str, dict]:
    return {case["case_id"]: case for case in data["gpusizer"]["cases"]}


def measured_ids(data: dict) -> set[str]:
    return {entry["extra_info"]["case_id"] for entry in data["benchmarks"]}


def skip_unless_available(strategy: str) -> None:
    reason = REGISTRY[strategy].unavailable_reason("cpu", 2, "fp32")
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("strategy, cause", [("ddp", "killed by SIGKILL"), ("horovod", "killed by SIGKILL")])
def test_killed_worker_fails_only_its_case_naming_rank_and_cause(tmp_path, strategy, cause):
    skip_unless_available(strategy)
    began = time.monotonic()
    # Round 1 is the warm-up, round 2 the first measured one: the rank dies mid-case.
    proc, mark = start_bench(tmp_path, "rank1:crash@round2", "--strategies", strategy, "--world-sizes", "2,1")
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    failed = cases[f"{strategy}-2-tiny-fp32"]
    assert failed["status"] == "failed"
    assert "rank 1 died in round 2" in failed["reason"] and cause in failed["reason"], failed["reason"]
    assert "\n" not in failed["reason"]
    # The next case still ran, and the result file holds it.
    assert cases[f"{strategy}-1-tiny-fp32"]["status"] == "passed"
    assert measured_ids(data) == {f"{strategy}-1-tiny-fp32"}
    assert data["gpusizer"]["complete"] is True
    assert leftovers(mark) == []
    assert time.monotonic() - began < RUN_TIMEOUT_S
    # The failed case's partial statistics are not in pytest-benchmark's terminal table either.
    assert not [line for line in output.splitlines() if line.startswith(f"test_train[{strategy}-2-tiny-fp32]")]


def test_hung_worker_fails_its_case_at_the_round_deadline_naming_where_it_hangs(tmp_path):
    skip_unless_available("fsdp")
    round_timeout_s = 5
    proc, mark = start_bench(tmp_path, "rank1:hang@round2", "--strategies", "fsdp", "--world-sizes", "2,1",
                             "--round-timeout-s", str(round_timeout_s))
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    reason = cases["fsdp-2-tiny-fp32"]["reason"]
    assert cases["fsdp-2-tiny-fp32"]["status"] == "failed"
    assert f"round 2 (--round-timeout-s {round_timeout_s})" in reason, reason
    # Rank 1 sleeps in the fault hook; rank 0 waits for it inside a collective: the message tells them apart.
    assert "rank 1 hung: no answer in round 2" in reason and "rank 1 in fire_if_due (worker_main.py:" in reason
    assert "waiting for it in a collective: rank 0 in " in reason, reason
    assert cases["fsdp-1-tiny-fp32"]["status"] == "passed"
    assert measured_ids(data) == {"fsdp-1-tiny-fp32"}
    assert leftovers(mark) == []


def test_worker_exception_reaches_the_case_as_one_line(tmp_path):
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "rank0:raise@round1", "--strategies", "ddp", "--world-sizes", "2")
    output = finish(proc)
    assert proc.returncode == 1, output
    reason = cases_by_id(result_file(tmp_path))["ddp-2-tiny-fp32"]["reason"]
    assert "rank 0 failed in round 1" in reason and "RuntimeError: injected fault" in reason, reason
    assert leftovers(mark) == []


def worker_processes(mark: str) -> list[psutil.Process]:
    found = []
    for proc in marked_processes(mark):
        try:
            if proc.cmdline()[1:] == ["-u", "-m", "bench.launch.worker_main"]:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _is_launcher_or_rank(proc: psutil.Process) -> bool:
    try:
        command = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "torch.distributed.run" in command or "bench.launch.worker_main" in command


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())}"
    except psutil.Error:
        return str(proc.pid)


def start_until_second_case_hangs(tmp_path: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`pytest bench/` whose case 1 (ddp, world size 1) has finished and whose case 2 (world size 2)
    hangs in its first measured round, with a deadline far away."""
    proc, mark = start_bench(tmp_path, "rank1:hang@round2", "--strategies", "ddp", "--world-sizes", "1,2",
                             "--round-timeout-s", "600", env=env)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        data = result_file(tmp_path)
        if data and "ddp-1-tiny-fp32" in measured_ids(data) and len(worker_processes(mark)) == 2:
            break
        time.sleep(0.5)
    else:
        proc.send_signal(signal.SIGINT)
        pytest.fail(f"the second case never started:\n{finish(proc, timeout_s=60)[-3000:]}")
    time.sleep(3)  # let the second case reach its hanging round
    return proc, mark


def test_ctrl_c_leaves_no_process_and_keeps_finished_cases(tmp_path):
    skip_unless_available("ddp")
    proc, mark = start_until_second_case_hangs(tmp_path)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    # Between rounds a clean close may take up to CLOSE_TIMEOUT_S (30 s) plus reaping; on a loaded
    # CI machine that has been seen to pass 60 s once, so the bound is 120 s.
    output = finish(proc, timeout_s=120)
    assert time.monotonic() - interrupted < 120
    assert proc.returncode == 2, output  # pytest's "interrupted"
    assert leftovers(mark) == []
    data = result_file(tmp_path)
    assert "ddp-1-tiny-fp32" in measured_ids(data)
    assert cases_by_id(data)["ddp-1-tiny-fp32"]["status"] == "passed"
    # The case cut short is in the file as failed, with why, and the file says the run is incomplete.
    assert cases_by_id(data)["ddp-2-tiny-fp32"]["status"] == "failed"
    assert "interrupted" in cases_by_id(data)["ddp-2-tiny-fp32"]["reason"]
    assert data["gpusizer"]["complete"] is False


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(tmp_path, signal_number):
    """A CI cancel (SIGTERM) or a closed terminal (SIGHUP) mid-case: every worker tree is gone within
    10 s, the finished case is kept, the cut one is marked interrupted, no temporary file is left."""
    skip_unless_available("ddp")
    temp = tmp_path / "tmp"  # the run's temporary files land here, so leftovers are this run's own
    temp.mkdir()
    proc, mark = start_until_second_case_hangs(tmp_path, env={"TMPDIR": str(temp)})
    tree = {p.pid: p for p in marked_processes(mark) if _is_launcher_or_rank(p)}
    assert len(tree) >= 3, "expected torchrun and its 2 ranks"  # 2 ranks + torchrun
    signalled = time.monotonic()
    proc.send_signal(signal_number)
    _, alive = psutil.wait_procs(list(tree.values()), timeout=10.0)
    assert alive == [], f"alive 10 s after {signal_number.name}: {[_describe(p) for p in alive]}"
    output = finish(proc, timeout_s=120)
    assert time.monotonic() - signalled < 120
    assert proc.returncode == 2, output  # pytest's "interrupted", as for Ctrl-C
    assert leftovers(mark) == []
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    assert "ddp-1-tiny-fp32" in measured_ids(data) and cases["ddp-1-tiny-fp32"]["status"] == "passed"
    assert cases["ddp-2-tiny-fp32"]["status"] == "failed"
    assert f"interrupted ({signal_number.name})" in cases["ddp-2-tiny-fp32"]["reason"]
    assert data["gpusizer"]["complete"] is False
    # Launcher logs, stack dumps and torchrun's own temporary folders are all removed.
    # torch's own persistent compile cache (torch._dynamo creates $TMPDIR/torchinductor_<user> when it is
    # imported, as by the memory model's FakeTensorMode) is a cache every torch program shares, not a
    # temporary file of this run: it is meant to stay.
    assert sorted(path.name for path in temp.iterdir() if not path.name.startswith("torchinductor_")) == []


def test_a_hung_single_rank_is_stopped_at_its_deadline_and_the_run_goes_on(tmp_path):
    """single trains in a rank process of its own: a round that never ends fails its case at
    --round-timeout-s naming where the rank is, the rank is killed, and the next case launches afresh."""
    round_timeout_s = 3
    proc, mark = start_bench(tmp_path, "single-1-tiny-fp32:rank0:hang@round2", "--strategies", "single",
                             "--presets", "tiny,small", "--round-timeout-s", str(round_timeout_s))
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    hung = cases["single-1-tiny-fp32"]
    assert hung["status"] == "failed"
    assert f"rank 0 hung: no answer in round 2 (--round-timeout-s {round_timeout_s})" in hung["reason"], hung["reason"]
    assert "rank 0 in fire_if_due (worker_main.py:" in hung["reason"], hung["reason"]
    assert cases["single-1-small-fp32"]["status"] == "passed"
    assert measured_ids(data) == {"single-1-small-fp32"}
    small = data["benchmarks"][0]["extra_info"]
    assert small["group_reused"] is False  # a failed case's rank is never reused
    assert data["gpusizer"]["complete"] is True
    assert leftovers(mark) == []


def test_a_crashed_single_rank_fails_its_case_naming_the_signal(tmp_path):
    proc, mark = start_bench(tmp_path, "single-1-tiny-fp32:rank0:crash@round1", "--strategies", "single",
                             "--presets", "tiny")
    output = finish(proc)
    assert proc.returncode == 1, output
    reason = cases_by_id(result_file(tmp_path))["single-1-tiny-fp32"]["reason"]
    assert "rank 0 died in round 1: killed by SIGKILL" in reason and "\n" not in reason, reason
    assert leftovers(mark) == []


def test_ctrl_c_in_the_first_case_ends_as_interrupted_with_the_case_in_the_file(tmp_path):
    """Before any case finished no result file name is claimed yet; the summary must still name it."""
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "rank1:hang@round2", "--strategies", "ddp", "--world-sizes", "2",
                             "--round-timeout-s", "600")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None and len(worker_processes(mark)) < 2:
        time.sleep(0.5)
    time.sleep(3)  # into the hanging round
    proc.send_signal(signal.SIGINT)
    output = finish(proc, timeout_s=120)
    assert proc.returncode == 2, output
    assert "AttributeError" not in output and "INTERNALERROR" not in output, output
    data = result_file(tmp_path)
    assert f"result file: {next((tmp_path / 'results').glob('*.json'))}" in output
    case = cases_by_id(data)["ddp-2-tiny-fp32"]
    assert case["status"] == "failed" and "interrupted (Ctrl-C)" in case["reason"]
    assert data["gpusizer"]["complete"] is False and data["benchmarks"] == []
    assert leftovers(mark) == []


def test_a_case_failing_after_measured_rounds_keeps_no_partial_statistics(tmp_path):
    """Round 1 is the warm-up, round 2 is measured, round 3 raises: the one measured round is neither
    in pytest-benchmark's terminal table nor in the result file."""
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "rank1:raise@round3", "--strategies", "ddp", "--world-sizes", "2")
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    assert "rank 1 failed in round 3" in cases_by_id(data)["ddp-2-tiny-fp32"]["reason"]
    assert data["benchmarks"] == []
    assert not [line for line in output.splitlines() if line.startswith("test_train[ddp-2-tiny-fp32]")], output
    assert leftovers(mark) == []


def test_out_of_memory_in_a_rank_fails_only_its_case_in_one_line(tmp_path):
    skip_unless_available("ddp")
    # single-1's rank runs out in its first round, so does ddp-2's rank 0; ddp-1 (same fault
    # items, another case id) must still pass, and so must every case after a failed one.
    faults = "single-1-tiny-fp32:rank0:oom@round1,ddp-2-tiny-fp32:rank0:oom@round1"
    proc, mark = start_bench(tmp_path, faults, "--strategies", "single,ddp", "--world-sizes", "2,1")
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    for case_id, strategy, where in (("single-1-tiny-fp32", "single", "rank 0 failed in round 1: OutOfMemoryError"),
                                     ("ddp-2-tiny-fp32", "ddp", "rank 0 failed in round 1: OutOfMemoryError")):
        reason = cases[case_id]["reason"]
        assert cases[case_id]["status"] == "failed"
        assert reason.startswith(f"does not fit: tiny fp32 {strategy} at batch 64 on "), reason
        assert " GiB)" in reason and where in reason and "\n" not in reason, reason
    # The traceback is dropped: pytest shows the one line, not the frames of the harness.
    assert "Traceback" not in output.split("short test summary")[0].split("Captured")[0]
    assert cases["ddp-1-tiny-fp32"]["status"] == "passed", cases["ddp-1-tiny-fp32"]["reason"]
    assert measured_ids(data) == {"ddp-1-tiny-fp32"}
    assert leftovers(mark) == []



@pytest.mark.parametrize("kind", ["hang", "fail"])
def test_a_broken_interconnect_skips_every_case_of_its_world_size_at_once(tmp_path, kind):
    skip_unless_available("ddp")
    skip_unless_available("fsdp")
    # A healthy ceiling here answers within ~10 s (spawning two ranks that import torch, on a busy
    # machine): 20 s tells the injected hang from that; the failure comes before any deadline.
    ceiling_timeout_s = 20 if kind == "hang" else 60
    began = time.monotonic()
    proc, mark = start_bench(tmp_path, f"allreduce2:{kind}", "--strategies", "ddp,fsdp", "--world-sizes", "2",
                             "--ceiling-timeout-s", str(ceiling_timeout_s))
    output = finish(proc)
    elapsed_s = time.monotonic() - began
    assert proc.returncode == 0, output
    cases = cases_by_id(result_file(tmp_path))
    for case_id in ("ddp-2-tiny-fp32", "fsdp-2-tiny-fp32"):
        reason = cases[case_id]["reason"]
        assert cases[case_id]["status"] == "skipped", reason
        assert "every case of world size 2 is skipped" in reason, reason
        expected = f"gave no result within {ceiling_timeout_s} s" if kind == "hang" else "injected fault"
        assert expected in reason, reason
    # One ceiling deadline at most, not a launch (120 s) or round (600 s) timeout per case. The bound
    # covers pytest's and torch's start-up on a busy 2-core machine.
    assert elapsed_s < 100, elapsed_s
    assert leftovers(mark) == []

