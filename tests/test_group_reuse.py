"""A launched worker group kept up across the cases of its strategy and world size (bench/run/group_pool.py):
real `pytest bench/` runs with real torchrun ranks, in a subprocess, checked through the result file."""

from __future__ import annotations

import time

import pytest
from test_faults import cases_by_id, finish, leftovers, result_file, skip_unless_available, start_bench

from bench.config.cases import BenchCase, build_cases
from bench.config.options import BenchOptions
from bench.run.group_pool import GroupPool, group_key


def records(data: dict) -> dict[str, dict]:
    return {entry["extra_info"]["case_id"]: entry["extra_info"] for entry in data["benchmarks"]}


def test_one_launch_serves_every_preset_of_a_strategy_and_world_size(tmp_path):
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "", "--presets", "tiny,small", "--strategies", "ddp", "--world-sizes", "2")
    output = finish(proc)
    assert proc.returncode == 0, output
    measured = records(result_file(tmp_path))
    first, second = measured["ddp-2-tiny-fp32"], measured["ddp-2-small-fp32"]
    # The same two rank processes trained both cases: one launch.
    assert first["worker_pids"] == second["worker_pids"] and len(first["worker_pids"]) == 2
    assert first["group_reused"] is False and first["case_setup_s"] is None
    assert second["group_reused"] is True and second["case_setup_s"] > 0
    assert second["launch_s"] == first["launch_s"]  # the group's launch, paid once
    # The second case is the small model, trained and timed as its own case.
    assert second["preset"] == "small" and second["num_params"] > first["num_params"]
    assert second["samples_per_s"] > 0 and second["rounds"] == len(second["round_times_s"])
    assert len(second["peak_memory_bytes_per_device"]) == 2
    assert leftovers(mark) == []


def test_a_failed_case_is_never_followed_by_its_group(tmp_path):
    """The fault counts rounds per case: round 1 of the second case fires on the kept group (its ranks
    ran rounds for the first case already). That case fails; the third launches a fresh group.
    fp32 only: bf16 is skipped on CPUs without native bf16 units, which would leave nothing after the
    failure to check."""
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "ddp-2-small-fp32:rank0:raise@round1", "--presets", "tiny,small,medium",
                             "--precisions", "fp32", "--strategies", "ddp", "--world-sizes", "2")
    output = finish(proc)
    assert proc.returncode == 1, output
    data = result_file(tmp_path)
    cases = cases_by_id(data)
    failed = cases["ddp-2-small-fp32"]
    assert failed["status"] == "failed"
    assert "rank 0 failed in round 1" in failed["reason"] and "injected fault" in failed["reason"], failed["reason"]
    measured = records(data)
    assert set(measured) == {"ddp-2-tiny-fp32", "ddp-2-medium-fp32"}
    after = measured["ddp-2-medium-fp32"]
    assert after["group_reused"] is False and after["case_setup_s"] is None
    assert set(after["worker_pids"]).isdisjoint(measured["ddp-2-tiny-fp32"]["worker_pids"])
    assert leftovers(mark) == []


def test_the_matrix_puts_the_cases_of_one_group_next_to_each_other():
    options = BenchOptions(strategies=("single", "ddp", "fsdp"), world_sizes=(1, 2), presets=("tiny", "small"),
                           precisions=("fp32", "bf16"), per_device_batch_at_smallest_world=8, steps_per_round=2, rounds=2,
                           warmup_rounds=0, device="cpu", scaling="weak", quick=False, verify=False, seed=0,
                           results_dir="results", launch_timeout_s=60.0, round_timeout_s=60.0)
    cases = build_cases(options, "cpu", 2)
    keys = [group_key(case) for case in cases]
    runs = [key for index, key in enumerate(keys) if index == 0 or keys[index - 1] != key]
    assert len(runs) == len(set(keys))  # every key appears in one unbroken run
    assert len({case.case_id for case in cases}) == len(cases)


class FakeGroup:
    """Stands in for a RemoteGroup: records what the pool asked of it."""

    def __init__(self, fail_release: bool = False) -> None:
        self.calls: list[str] = []
        self.closed = False
        self.fail_release = fail_release
        self.pids = [1, 2]

    def start_case(self, case: BenchCase) -> float:
        self.calls.append(f"start {case.case_id}")
        return 0.5

    def release_case(self) -> None:
        from bench.launch.remote import WorkerError

        self.calls.append("release")
        if self.fail_release:
            self.closed = True
            raise WorkerError("rank 1 died")

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closed = True


def ddp_case(preset: str, world_size: int = 2) -> BenchCase:
    return BenchCase(strategy="ddp", world_size=world_size, preset=preset, precision="fp32", device_type="cpu",
                     per_device_batch_size=8, scaling="weak", steps_per_round=2, rounds=2, warmup_rounds=1)


@pytest.mark.parametrize("clean", [True, False])
def test_the_pool_keeps_only_a_group_whose_case_ended_cleanly(clean):
    pool, group = GroupPool(), FakeGroup()
    pool.release(ddp_case("tiny"), group, clean=clean)
    assert pool.held_key == (group_key(ddp_case("tiny")) if clean else None)
    assert group.calls == (["release"] if clean else ["close"])
    pool.close_held(abort=True)
    assert pool.held_key is None and group.closed


def test_the_pool_drops_a_group_that_failed_to_release_and_closes_one_of_another_key(monkeypatch):
    pool = GroupPool()
    pool.release(ddp_case("tiny"), FakeGroup(fail_release=True), clean=True)
    assert pool.held_key is None  # dead: never handed to the next case
    kept = FakeGroup()
    pool.release(ddp_case("tiny"), kept, clean=True)
    acquired = pool.acquire(ddp_case("small"), launch_timeout_s=1.0, round_timeout_s=1.0)
    assert acquired.group is kept and acquired.reused and acquired.case_setup_s == 0.5
    assert acquired.record_keys()["group_reused"] is True
    pool.release(ddp_case("small"), kept, clean=True)
    launched = []
    monkeypatch.setitem(__import__("bench.launch", fromlist=["LAUNCHERS"]).LAUNCHERS, "torchrun",
                        lambda case, **_: launched.append(case.case_id) or FakeGroup())
    began = time.monotonic()
    fresh = pool.acquire(ddp_case("tiny", world_size=4), launch_timeout_s=1.0, round_timeout_s=1.0)
    assert time.monotonic() - began < 60
    assert "close" in kept.calls and launched == ["ddp-4-tiny-fp32"] and not fresh.reused


def test_the_plan_counts_one_launch_per_group():
    from bench.run.plan import CASE_SETUP_S, LAUNCH_S, make_plan

    cases = [ddp_case("tiny"), ddp_case("small"), ddp_case("tiny", world_size=4), ddp_case("small", world_size=4)]
    skipped = {"ddp-4-tiny-fp32"}  # a skipped case leaves the group of the case before it held
    options = BenchOptions(strategies=("ddp",), world_sizes=(2, 4), presets=("tiny", "small"), precisions=("fp32",),
                           per_device_batch_at_smallest_world=8, steps_per_round=2, rounds=2, warmup_rounds=1, device="cpu", scaling="weak",
                           quick=False, verify=False, seed=0, results_dir="results", launch_timeout_s=60.0,
                           round_timeout_s=60.0)
    plan = make_plan(cases, options, lambda case: "skipped here" if case.case_id in skipped else None)
    assert [e.launch_s for e in plan.estimates] == [LAUNCH_S["cpu"], CASE_SETUP_S["cpu"], 0.0, LAUNCH_S["cpu"]]


def test_a_held_group_that_died_while_waiting_is_replaced_not_blamed(monkeypatch):
    pool, dead = GroupPool(), FakeGroup()
    pool.release(ddp_case("tiny"), dead, clean=True)
    dead.alive = lambda: False  # e.g. its ranks were killed from outside between the cases
    monkeypatch.setitem(__import__("bench.launch", fromlist=["LAUNCHERS"]).LAUNCHERS, "torchrun",
                        lambda case, **_: FakeGroup())
    acquired = pool.acquire(ddp_case("small"), launch_timeout_s=1.0, round_timeout_s=1.0)
    assert not acquired.reused and acquired.group is not dead and "close" in dead.calls
