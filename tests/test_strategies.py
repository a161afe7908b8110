"""The parallel strategies for real: 2 CPU worker processes through the real launchers (torchrun,
horovodrun), gloo on loopback, compared with ``single`` on the same global data."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import torch

from bench.config.cases import BenchCase, build_cases
from bench.hardware.devices import threads_per_rank
from bench.launch import LAUNCHERS
from bench.launch.channel import ChannelClosed, ChannelTimeout, Connection, Listener, connect, proof
from bench.launch.diagnosis import describe_exit_code, innermost_frame
from bench.launch.horovodrun import horovodrun_exit_cause
from bench.launch.remote import POLL_S
from bench.launch.torchrun import torchrun_exit_cause
from bench.run.verify import FP32_ABS_TOLERANCE, VerifyError, check_case, max_abs_difference, verify_group
from bench.strategies import REGISTRY
from reference_model import Precision, TrainState, build_model, make_batches, make_optimizer, train_step

LAUNCH_TIMEOUT_S = 120.0  # generous: the CI machine may be busy; a healthy launch takes a few seconds


def cpu_case(strategy: str, world_size: int = 2, **overrides) -> BenchCase:
    values = {"strategy": strategy, "world_size": world_size, "preset": "tiny", "precision": "fp32",
              "device_type": "cpu", "per_device_batch_size": 16, "scaling": "weak", "steps_per_round": 3,
              "rounds": 1, "warmup_rounds": 0}
    return BenchCase(**{**values, **overrides})


def skip_unless_available(case: BenchCase) -> None:
    reason = REGISTRY[case.strategy].unavailable_reason(case.device_type, case.world_size, case.precision)
    if reason:
        pytest.skip(reason)


def single_on_rank0_data_only(case: BenchCase, steps: int) -> list[torch.Tensor]:
    """What a 'data-parallel' run that never averaged gradients would compute on rank 0: the wrong answer."""
    model = build_model(case.model_config, seed=case.seed)
    state = TrainState(model, make_optimizer(model), Precision("fp32", "cpu"))
    batches = make_batches(case.model_config, case.per_device_batch_size, seed=case.seed, rank=0, device="cpu")
    for step in range(steps):
        train_step(state, *batches[step % len(batches)])
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "horovod"])
def test_two_processes_reach_single_parameters(strategy):
    case = cpu_case(strategy)
    skip_unless_available(case)
    group = LAUNCHERS[REGISTRY[strategy].launcher](case, launch_timeout_s=LAUNCH_TIMEOUT_S, round_timeout_s=120)
    try:
        # The cores split between the case's 2 processes, as the ranks were told (OMP_NUM_THREADS).
        assert group.launch_s > 0 and group.threads_per_rank == threads_per_rank("cpu", 2)
        assert len(set(group.pids)) == 2  # the ranks' own processes, for telemetry
        result = verify_group(case, group)
        trained = group.full_parameters()
        # Each rank times its own rounds and sends them back.
        rank_times_s = group.run_round(2)
        assert len(rank_times_s) == 2 and all(t > 0 for t in rank_times_s)
        assert group.peak_memory_bytes() > 0
    finally:
        group.close()
    assert result.max_abs_difference <= FP32_ABS_TOLERANCE, result
    # The check can fail: the steps moved the weights far beyond the tolerance, and rank 0's data
    # alone (no gradient averaging) lands far outside it.
    assert result.max_abs_update > 100 * FP32_ABS_TOLERANCE
    assert max_abs_difference(trained, single_on_rank0_data_only(case, result.steps)) > 100 * FP32_ABS_TOLERANCE


def test_verify_fails_a_run_that_does_not_average_gradients_in_one_line():
    # A real rank of 'single' at world size 2 (one plain process) trains on rank 0's batch alone: exactly
    # a data-parallel run that forgot to average gradients. --verify must reject it.
    case = cpu_case("single", world_size=2)
    group = LAUNCHERS["python"](case, launch_timeout_s=60, round_timeout_s=60)
    try:
        with pytest.raises(VerifyError) as failure:
            check_case(case, group)
    finally:
        group.close()
    message = str(failure.value)
    assert message.startswith("single-2-tiny-fp32: parameters after 3 steps differ from single's")
    assert "max abs difference" in message and "> tolerance 1e-06" in message and "\n" not in message
    assert check_case(replace(case, precision="bf16"), group) is None  # only fp32 is checked


def test_dp_is_skipped_on_cpu_with_the_reason_and_is_a_baseline():
    dp = REGISTRY["dp"]
    reason = dp.unavailable_reason("cpu", 2, "fp32")
    assert "DataParallel needs CUDA" in reason and "silently runs the plain module" in reason
    assert dp.baseline_only


def test_missing_horovod_skips_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod", None)  # how Python itself marks a package as not importable
    reason = REGISTRY["horovod"].unavailable_reason("cpu", 2, "fp32")
    assert reason.startswith("Horovod is not installed") and "make horovod" in reason


def test_every_strategy_names_a_launcher_that_exists():
    for strategy in REGISTRY.values():
        assert strategy.launcher in LAUNCHERS


def test_channel_rejects_a_wrong_token_and_accepts_the_right_one():
    listener = Listener()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the worker's end blocks until the controller answers
        try:
            intruder = pool.submit(connect, listener.address, "00" * 32, 0, {"pid": 1}, 5.0)
            assert listener.accept(time.monotonic() + 5) is None  # failed the HMAC check: dropped unread
            intruder.result().close()
            worker = pool.submit(connect, listener.address, listener.token, 1, {"pid": 2}, 5.0)
            conn, hello = listener.accept(time.monotonic() + 5)
            worker = worker.result()
            assert hello["rank"] == 1 and hello["pid"] == 2
            conn.send({"cmd": "ping"}, b"\x00\x01")
            assert worker.recv(time.monotonic() + 5) == ({"cmd": "ping"}, b"\x00\x01")
            worker.close()
            with pytest.raises(ChannelClosed):
                conn.recv(time.monotonic() + 5)
        finally:
            listener.close()
    host, port = listener.address.split(":")
    assert host == "127.0.0.1"  # loopback only
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)

def _slow_worker(address: str, token: str, rank: int, answer_after_s: float):
    """The worker's end of connect(), but scheduled late: it reads the nonce ``answer_after_s`` after
    connecting, as a rank on a busy 2-core machine may."""
    host, port = address.rsplit(":", 1)
    conn = Connection(socket.create_connection((host, int(port)), timeout=30))
    challenge, _ = conn.recv(time.monotonic() + 30)
    time.sleep(answer_after_s)
    conn.send({"rank": rank, "pid": 3, "proof": proof(token, bytes.fromhex(challenge["nonce"]), rank)})
    return conn


def test_a_rank_that_answers_after_the_controllers_poll_is_still_accepted():
    # The controller waits for connections in 0.2 s polls (remote.POLL_S). A rank that connected
    # inside one poll and answered the challenge after it used to be dropped as silent: its process
    # then exited 1, and the case failed "during start-up" (CI, loaded machine).
    listener = Listener()
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            worker = pool.submit(_slow_worker, listener.address, listener.token, 0, 1.0)
            accepted = None
            deadline = time.monotonic() + 30
            while accepted is None and time.monotonic() < deadline:
                with contextlib.suppress(ChannelTimeout):
                    accepted = listener.accept(min(deadline, time.monotonic() + POLL_S))
                assert not listener.dropped, listener.dropped
            assert accepted is not None and accepted[1]["rank"] == 0
            worker.result().close()
            accepted[0].close()
        finally:
            listener.close()
    # A peer that never answers is still dropped, after the hello timeout and not the poll's: it stays
    # pending across the controller's polls (which time out meanwhile) until its own deadline.
    listener = Listener()
    try:
        host, port = listener.address.rsplit(":", 1)
        silent = socket.create_connection((host, int(port)), timeout=30)
        began = time.monotonic()
        polls = []
        while not polls or polls[-1] == "timeout":
            try:
                polls.append(listener.accept(time.monotonic() + POLL_S, hello_timeout_s=1.5))
            except ChannelTimeout:
                polls.append("timeout")
        assert polls[-1] is None and len(polls) > 1
        assert 1.5 <= time.monotonic() - began < 10, "the silent peer was not given the hello timeout"
        assert listener.dropped and "ChannelTimeout" in listener.dropped[-1]
        silent.close()
    finally:
        listener.close()


def test_launchers_logs_are_read_for_the_cause_of_death():
    torchrun_log = ("Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-28_20:28:23\n"
                    "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 7145)  (SIGKILL)\n")
    assert torchrun_exit_cause(torchrun_log, 1).startswith("killed by SIGKILL")
    assert torchrun_exit_cause(torchrun_log, 0) is None
    horovod_log = "Process 1 exit with status code 137.\nTerminating remaining workers after failure of Process 1.\n"
    assert horovodrun_exit_cause(horovod_log, 1).startswith("killed by SIGKILL")
    assert describe_exit_code(3) == "exited with code 3"
    assert describe_exit_code(-11).startswith("killed by SIGSEGV")
    dump = 'Current thread 0x00007f (most recent call first):\n  File "/x/bench/launch/worker_main.py", line 58 in fire_if_due\n'
    assert innermost_frame(dump) == ("fire_if_due (worker_main.py:58)", False)
    dump = '  File "/v/site-packages/torch/distributed/distributed_c10d.py", line 4394 in all_gather_single\n'
    assert innermost_frame(dump) == ("all_gather_single (distributed_c10d.py:4394)", True)


def test_weak_scaling_fixes_the_per_device_batch_and_strong_the_global_one(bench_options):
    matrix = {"strategies": ("single", "ddp"), "world_sizes": (1, 2, 4), "presets": ("tiny",),
              "precisions": ("fp32",), "per_device_batch_at_smallest_world": 64}
    weak = {c.case_id: c for c in build_cases(bench_options(**matrix), "cpu", 2)}
    assert [weak[i].global_batch_size for i in ("ddp-1-tiny-fp32", "ddp-2-tiny-fp32", "ddp-4-tiny-fp32")] == [
        64, 128, 256]
    strong = {c.case_id: c for c in build_cases(bench_options(**matrix, scaling="strong"), "cpu", 2)}
    assert {c.global_batch_size for c in strong.values()} == {64}
    assert strong["ddp-4-tiny-fp32-strong"].per_device_batch_size == 16


def test_verify_then_measure_through_pytest_bench(pytester, run_bench):
    """`pytest bench/ --verify` on two real torchrun workers; world sizes beyond the cores are skipped, not errors."""
    result = run_bench(
        "--quick", "--device", "cpu", "--strategies", "ddp", "--world-sizes", "2,64", "--verify",
        "--benchmark-json", "out.json")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    data = json.loads((pytester.path / "out.json").read_text())
    (entry,) = data["benchmarks"]
    record = entry["extra_info"]
    assert record["case_id"] == "ddp-2-tiny-fp32" and record["launcher"] == "torchrun"
    # Exit code 0 already says the check passed; the record must still carry what it measured.
    assert isinstance(record["verify_max_abs_difference"], float)
    assert record["launch_s"] > 0 and record["threads_per_rank"] == threads_per_rank("cpu", 2)
    assert len(record["round_times_s"]) == len(entry["stats"]["data"]) == record["rounds"]
    skipped = {c["case_id"]: c for c in data["gpusizer"]["cases"] if c["status"] == "skipped"}
    assert "world size 64 needs 64 CPU cores" in skipped["ddp-64-tiny-fp32"]["reason"]


def test_a_probe_runs_in_rank_processes_of_its_own_with_the_threads_it_is_given():
    import os

    from bench.launch.probe import run_in_ranks

    pids = run_in_ranks("os:getpid", [{}, {}], threads=1, timeout_s=120, what="pids")
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert run_in_ranks("torch:get_num_threads", [{}], threads=1, timeout_s=120, what="threads") == [1]


@pytest.mark.parametrize("kind", ["fail", "hang"])
def test_a_failed_or_late_probe_is_one_line_and_leaves_no_process(monkeypatch, kind):
    import psutil

    from bench.launch.probe import ProbeError, run_in_ranks

    monkeypatch.setenv("GPUSIZER_FAULT", f"allreduce:{kind}")  # the ceiling's fault hook raises or sleeps
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with pytest.raises(ProbeError) as failure:
        run_in_ranks("bench.hardware.bandwidth:_ceiling_fault_hook", [{"world_size": 2}], threads=1,
                     timeout_s=20, what="the probe")
    message = str(failure.value)
    assert "\n" not in message and message.startswith("the probe: probe process 0 ")
    assert ("injected fault" in message) if kind == "fail" else ("gave no result within 20 s" in message)
    assert {child.pid for child in psutil.Process().children(recursive=True)} - before == set()
