"""The step split's interval arithmetic (bench/run/step_breakdown.py) on traces built by hand, the record's
choice of the slowest rank (bench/record/step_split.py), and the report's reading of it."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.record.step_split import OFF_REASON, on_timed_step, step_breakdown_record
from bench.run.step_breakdown import ROUND_MARK, breakdown, events_from_trace, intersect, subtract, union
from reports.errors import InputError
from reports.schema import step_breakdown as check_step_breakdown
from reports.step_breakdown import limiting_part, limiting_sentences

US = 1e-6


def x(name: str, start: float, end: float, *, cat: str = "cpu_op", tid: object = 1) -> dict:
    """One complete event as torch.profiler's Chrome trace writes it (times in microseconds)."""
    return {"ph": "X", "cat": cat, "name": name, "tid": tid, "pid": 1, "ts": start, "dur": end - start}


def parts_sum(split: dict) -> float:
    return split["compute_s"] + split["exposed_comm_s"] + split["other_s"] + split["idle_s"]


def test_interval_arithmetic():
    assert union([(5, 7), (0, 2), (1, 3), (3, 4), (8, 8)]) == [(0, 4), (5, 7)]
    assert intersect([(0, 4), (5, 7)], [(3, 6)]) == [(3, 4), (5, 6)]
    assert subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert subtract([(0, 2)], []) == [(0, 2)]
    assert subtract([(0, 2), (3, 9)], [(1, 4), (5, 6), (8, 20)]) == [(0, 1), (4, 5), (6, 8)]


# A CPU round of 2 steps, 1000 us: forward (addmm), backward (an autograd wrapper around mm) during which
# gloo all-reduces from 500 us to 850 us (also seen on gloo's own thread), the optimizer's Python around
# add_, and 50 us in which no op ran.
CPU_ROUND = [
    x(ROUND_MARK, 0, 1000, cat="user_annotation"),
    x("aten::addmm", 0, 300),
    x("autograd::engine::evaluate_function: AddmmBackward0", 300, 700),
    x("aten::mm", 300, 600),
    x("c10d::allreduce_", 500, 510),  # the call that issues it: nothing of the thread computes in it
    x("aten::empty", 502, 504),
    x("gloo:all_reduce", 500, 850),
    x("gloo:all_reduce", 520, 840, tid=2),
    x("Optimizer.step#SGD.step", 850, 950, cat="user_annotation"),
    x("aten::add_", 860, 900),
    {"ph": "M", "name": "thread_name", "tid": 1},  # metadata and flows are not intervals
    {"ph": "f", "cat": "ac2g", "name": "flow", "ts": 1, "tid": 1},
]


def test_cpu_round_split_by_hand():
    split = breakdown(events_from_trace({"traceEvents": CPU_ROUND}), steps=2)
    # compute: 0-500 and 510-600 (mm minus the issuing call) and 860-900; communication 500-850.
    assert split["compute_s"] == pytest.approx((500 + 90 + 40) / 2 * US)
    assert split["overlapped_comm_s"] == pytest.approx(90 / 2 * US)  # 510-600: mm ran while gloo reduced
    assert split["exposed_comm_s"] == pytest.approx(260 / 2 * US)  # 500-510 and 600-850
    assert split["other_s"] == pytest.approx(60 / 2 * US)  # the optimizer's Python around add_
    assert split["idle_s"] == pytest.approx(50 / 2 * US)  # 950-1000
    assert split["step_s"] == pytest.approx(500 * US)
    assert parts_sum(split) == pytest.approx(split["step_s"])


def test_a_slower_all_reduce_grows_the_exposed_part_and_leaves_compute():
    slowed = [dict(event) for event in CPU_ROUND]
    for event in slowed:
        if event.get("name") == ROUND_MARK:
            event["dur"] += 400
        elif event.get("name") == "gloo:all_reduce":
            event["dur"] += 300
        elif event.get("name") in ("Optimizer.step#SGD.step", "aten::add_"):
            event["ts"] += 400
    before = breakdown(events_from_trace({"traceEvents": CPU_ROUND}), steps=2)
    after = breakdown(events_from_trace({"traceEvents": slowed}), steps=2)
    assert after["compute_s"] == pytest.approx(before["compute_s"])
    assert after["exposed_comm_s"] == pytest.approx(before["exposed_comm_s"] + 300 / 2 * US)
    assert parts_sum(after) == pytest.approx(after["step_s"])


def test_gpu_round_split_by_kernels():
    events = [
        x(ROUND_MARK, 0, 1000, cat="user_annotation"),
        x(ROUND_MARK, 100, 900, cat="gpu_user_annotation", tid=7),  # the device's copy of the mark
        x("aten::mm", 0, 900),  # host ops do not count on a GPU: the device's timeline does
        x("Memcpy HtoD (Pageable -> Device)", 50, 100, cat="gpu_memcpy", tid=7),
        x("ampere_sgemm_128x64_nn", 100, 400, cat="kernel", tid=7),
        x("ampere_sgemm_128x64_tn", 500, 800, cat="kernel", tid=7),
        x("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 350, 900, cat="kernel", tid=20),
    ]
    split = breakdown(events_from_trace({"traceEvents": events}), steps=1)
    assert split["compute_s"] == pytest.approx(600 * US)
    assert split["overlapped_comm_s"] == pytest.approx(350 * US)  # 350-400 and 500-800
    assert split["exposed_comm_s"] == pytest.approx(200 * US)  # 400-500 and 800-900
    assert split["other_s"] == pytest.approx(50 * US)
    assert split["idle_s"] == pytest.approx(150 * US)


def test_a_round_without_communication_records_none():
    events = [x(ROUND_MARK, 0, 100, cat="user_annotation"), x("aten::addmm", 10, 90)]
    split = breakdown(events_from_trace({"traceEvents": events}), steps=1)
    assert split["exposed_comm_s"] == split["overlapped_comm_s"] == 0.0
    assert split["compute_s"] == pytest.approx(80 * US)


def test_the_parts_always_sum_to_the_round():
    rng = random.Random(20)
    for _ in range(200):
        events = [x(ROUND_MARK, 0, 1000, cat="user_annotation")]
        for _ in range(rng.randint(0, 30)):
            start = rng.uniform(-100, 1000)
            name = rng.choice(["aten::mm", "gloo:all_reduce", "c10d::allreduce_", "autograd::x", "horovod::synchronize"])
            events.append(x(name, start, start + rng.uniform(0, 300), tid=rng.choice([1, 1, 2]),
                            cat=rng.choice(["cpu_op", "user_annotation"])))
        split = breakdown(events_from_trace({"traceEvents": events}), steps=3)
        assert parts_sum(split) == pytest.approx(split["step_s"])
        assert min(split[key] for key in ("compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s")) >= 0


@pytest.mark.parametrize("events, steps, message", [
    ([], 1, "holds 0"),
    ([x(ROUND_MARK, 0, 1), x(ROUND_MARK, 2, 3)], 1, "holds 2"),
    ([x(ROUND_MARK, 5, 5)], 1, "lasted 0"),
    ([x(ROUND_MARK, 0, 1)], 0, "steps"),
])
def test_a_trace_it_cannot_split_is_refused(events, steps, message):
    with pytest.raises(ValueError, match=message):
        breakdown(events_from_trace({"traceEvents": events}), steps)


class FakeGroup:
    def __init__(self, ranks):
        self.ranks, self.asked = ranks, []

    def profiled_rounds(self, steps):
        self.asked.append(steps)
        return self.ranks


def _rank(rank: int, step_s: float) -> dict:
    """One rank's answer to the profiled round (bench/run/step_profile.py), and a record's split as well
    (profiled_step_s: the round took the step it is stated on)."""
    return {"step_s": step_s, "compute_s": step_s / 2, "exposed_comm_s": step_s / 4, "overlapped_comm_s": 0.0,
            "other_s": step_s / 8, "idle_s": step_s / 8, "rank": rank, "source": "test", "profile_s": 0.1,
            "profiled_step_s": step_s}


def test_the_record_keeps_the_slowest_rank_on_the_timed_step_and_says_why_not():
    case = SimpleNamespace(steps_per_round=7)  # all the record needs of the case
    group = FakeGroup([_rank(0, 0.010), _rank(1, 0.012)])
    # The timed rounds measured 10 ms a step; the profiled round of the slowest rank took 12 ms (20% dilated).
    keys = step_breakdown_record(case, group, enabled=True, timed_step_s=0.010)
    assert group.asked == [7]
    split = keys["step_breakdown"]
    assert split["rank"] == 1 and split["step_s"] == 0.010 and split["profiled_step_s"] == 0.012
    # The profiled shares (1/2, 1/4, 1/8, 1/8) on the timed step: the parts add up to it.
    assert (split["compute_s"], split["exposed_comm_s"], split["other_s"], split["idle_s"]) == pytest.approx(
        (0.005, 0.0025, 0.00125, 0.00125))
    assert parts_sum(split) == pytest.approx(split["step_s"]) and split["overlapped_comm_s"] == 0.0
    assert "12 ms/step" in split["source"] and "10 ms/step" in split["source"]
    assert "profile_s" not in split and keys["step_breakdown_reason"] is None
    assert keys["step_breakdown_s"] >= 0
    unseen = step_breakdown_record(case, FakeGroup([{**_rank(0, 0.02), "overlapped_comm_s": None}]), enabled=True,
                                   timed_step_s=0.01)
    assert unseen["step_breakdown"]["overlapped_comm_s"] is None  # not seen stays not seen
    off = step_breakdown_record(case, group, enabled=False, timed_step_s=0.010)
    assert off == {"step_breakdown": None, "step_breakdown_reason": OFF_REASON, "step_breakdown_s": None}
    assert group.asked == [7]  # off: no profiled round at all
    failed = step_breakdown_record(case, FakeGroup([_rank(0, 0.01), {"reason": "rank 1: ValueError: no mark"}]),
                                   enabled=True, timed_step_s=0.01)
    assert failed["step_breakdown"] is None and "rank 1: ValueError: no mark" in failed["step_breakdown_reason"]


def test_the_report_refuses_a_broken_split_in_one_line():
    good = _rank(1, 0.01)
    assert check_step_breakdown("w", good)["exposed_comm_s"] == 0.0025
    assert check_step_breakdown("w", None) is None
    with pytest.raises(InputError, match="step_breakdown.idle_s is -1"):
        check_step_breakdown("w", {**good, "idle_s": -1})
    with pytest.raises(InputError, match="step_breakdown.profiled_step_s is 0"):
        check_step_breakdown("w", {**good, "profiled_step_s": 0})
    with pytest.raises(InputError, match="step_breakdown.compute_s is 'fast'"):
        check_step_breakdown("w", {**good, "compute_s": "fast"})
    with pytest.raises(InputError, match="step_breakdown has no 'overlapped_comm_s'"):
        check_step_breakdown("w", {k: v for k, v in good.items() if k != "overlapped_comm_s"})
    assert check_step_breakdown("w", {**good, "overlapped_comm_s": None})["overlapped_comm_s"] != 0  # NaN: not seen
    with pytest.raises(InputError, match="add up to 0.011.*not its step_s 0.01"):
        check_step_breakdown("w", {**good, "idle_s": good["idle_s"] + 0.001})
    with pytest.raises(InputError, match="expected an object or null"):
        check_step_breakdown("w", [1, 2])


def test_the_limiting_part_is_the_largest_beside_compute():
    split = check_step_breakdown("w", {**_rank(1, 0.1), "compute_s": 0.06, "exposed_comm_s": 0.031,
                                       "other_s": 0.005, "idle_s": 0.004})
    assert limiting_part(split) == ("exposed_comm_s", pytest.approx(0.31))
    setups = pd.DataFrame([{"label": "ddp 2", "world_size": 2, "step_breakdown": split},
                           {"label": "single", "world_size": 1, "step_breakdown": None},
                           {"label": "fsdp 2", "world_size": 2, "step_breakdown": None}])
    sentences = limiting_sentences(setups)
    assert sentences[0].startswith("ddp 2: exposed communication is 31.0% of the step at 2 devices (compute 60.0%")
    assert "profiled round ran" not in sentences[0]  # the profiled round took the timed step
    assert sentences[1].startswith("1 multi-device setup(s) have no measured step split")
    slowed = pd.DataFrame([{"label": "fsdp 2", "world_size": 2, "step_breakdown": {**split, "profiled_step_s": 0.115}}])
    compute_only = pd.DataFrame([{"label": "ddp 2", "world_size": 2, "step_breakdown": {
        **split, "compute_s": 0.0995, "exposed_comm_s": 0.0005, "other_s": 0.0, "idle_s": 0.0}}])
    said = "ddp 2: compute is 99.5% of the step at 2 devices; nothing else is 1.0% of it."
    assert limiting_sentences(compute_only) == [said]
    assert limiting_sentences(slowed)[0].endswith(
        "; the profiled round ran 15.0% slower than the timed ones, so these shares are approximate.")


def _projection_record(world_size: int, timed_step_s: float, split: dict | None) -> dict:
    return {"case_id": f"ddp-{world_size}-small-fp32", "strategy": "ddp", "preset": "small", "precision": "fp32",
            "per_device_batch_size": 256, "device_type": "cpu", "scaling": "weak", "world_size": world_size,
            "num_params": 1_000_000, "steps_per_round": 10, "round_times_s": [timed_step_s * 10] * 3,
            "step_breakdown": split}


def test_the_projection_is_built_on_the_measured_split_and_shows_its_error():
    from reports.projection import project, render_projection_markdown, ring_comm_s

    # 2 devices at 1 GB/s: 60 ms compute, 10 ms other, 5 ms idle, 40 ms of communication of which 10 ms hidden.
    # The profiled round took 105 ms a step; the timed rounds 110 ms; the record states the shares on 110 ms.
    profiled = {"step_s": 0.105, "compute_s": 0.060, "exposed_comm_s": 0.030, "overlapped_comm_s": 0.010,
                "other_s": 0.010, "idle_s": 0.005, "rank": 1, "source": "test"}
    timed_s = 0.110
    split = on_timed_step(profiled, timed_s)
    assert split["step_s"] == timed_s and split["compute_s"] == pytest.approx(0.060 * 0.110 / 0.105)
    ceilings = {"allreduce": [{"device_type": "cpu", "world_size": 2, "busbw_bytes_per_s": 1e9}]}
    # The model works in the profiled round's own seconds, so at its own point it predicts 105 ms against the
    # rounds' 110 ms: the error shown there is the profiled round's drift, not a 0 by construction.
    [proj] = project([_projection_record(1, 0.07, None), _projection_record(2, timed_s, split)], ceilings, (8.0,))
    assert proj.split is not None and "measured (step split of ddp-2-small-fp32)" in proj.label
    assert proj.compute_s == 0.060 and proj.overlap == pytest.approx(0.25)  # 10 ms of the shorter 40 ms
    [point] = proj.points
    assert point.predicted_step_s == pytest.approx(0.105)  # the split's own step at its own point
    assert point.error == pytest.approx(abs(0.105 - timed_s) / timed_s)
    # Across nodes at 8 Gbit/s (1 GB/s) with 4 devices: the communication grows by the ring factor 1.5/1.0.
    row = next(r for r in proj.rows if r.devices == 4 and r.internode_gbps == 8.0)
    comm_s = 0.040 * ring_comm_s(4, 1.0, 1e9) / ring_comm_s(2, 1.0, 1e9)
    assert row.step_s == pytest.approx(0.075 + comm_s - 0.25 * min(0.060, comm_s))
    assert "ddp-2-small-fp32" in render_projection_markdown([proj])


def test_without_a_whole_split_the_projection_fits_as_before():
    from reports.projection import project

    ceilings = {"allreduce": [{"device_type": "cpu", "world_size": 2, "busbw_bytes_per_s": 1e9}]}
    [proj] = project([_projection_record(1, 0.07, None), _projection_record(2, 0.08, None)], ceilings, ())
    assert proj.split is None and "compute measured at world size 1" in proj.label
    # Horovod on CPU: the overlapped communication was not seen, only the wait; too little to scale.
    unseen = on_timed_step({**_rank(1, 0.08), "overlapped_comm_s": None}, 0.08)
    [proj] = project([_projection_record(1, 0.07, None), _projection_record(2, 0.08, unseen)], ceilings, ())
    assert proj.split is None and "compute measured at world size 1" in proj.label


def test_the_comm_delay_fault_is_scoped_by_case_and_refused_where_there_is_no_hook():
    from bench.launch.worker_main import Fault, comm_delay_s, parse_faults
    from bench.strategies import REGISTRY

    text = "ddp-2-small-fp32:comm:delay40, rank1:crash@round2"
    assert comm_delay_s("ddp-2-small-fp32", text) == 0.04
    assert comm_delay_s("ddp-1-small-fp32", text) == 0.0
    assert comm_delay_s("fsdp-2-tiny-fp32", "comm:delay5") == 0.005  # without a case id: every case
    assert parse_faults(text)[0] == [Fault(1, "crash", 2)]  # the other faults read as before
    with pytest.raises(ValueError, match="allowed: comma-separated"):
        comm_delay_s("x", "comm:slow5")
    for name in ("single", "fsdp", "horovod"):
        with pytest.raises(ValueError, match=f"{name} has no hook into its all-reduce; allowed with: ddp"):
            REGISTRY[name].delay_communication(None, 0.01)


def _classify_each_microsecond(events: list[dict], steps: int) -> dict:
    """The CPU rules of bench/run/step_breakdown.py applied moment by moment (an oracle that shares none of
    its interval arithmetic): each microsecond of the round is compute, else exposed communication, else
    other, else idle; overlapped is compute and communication at once. Seconds per step."""
    def covering(t, keep):
        return any(e["ts"] <= t < e["ts"] + e["dur"] for e in events if e["name"] != ROUND_MARK and keep(e))

    def is_comm(e):
        return e["name"].startswith(("gloo:", "c10d::", "horovod::"))

    counts = dict.fromkeys(("compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s"), 0)
    for t in range(1000):
        comm = covering(t, is_comm)
        call = covering(t, lambda e: e["tid"] == 1 and e["name"].startswith(("c10d::", "horovod::")))
        compute = not call and covering(t, lambda e: e["tid"] == 1 and e["cat"] == "cpu_op"
                                        and e["name"].startswith("aten::"))
        busy = covering(t, lambda e: e["tid"] == 1)
        part = "compute_s" if compute else "exposed_comm_s" if comm else "other_s" if busy else "idle_s"
        counts[part] += 1
        counts["overlapped_comm_s"] += compute and comm
    return {key: value / steps * US for key, value in counts.items()}


def test_each_part_matches_a_moment_by_moment_count():
    # Whole microseconds, so the oracle's count is exact: any double counting or a moment given to the wrong
    # part shows in that part, not only in the remainder (idle) the sum check would hide it in.
    rng = random.Random(7)
    names = ["aten::mm", "aten::add_", "gloo:all_reduce", "c10d::allreduce_", "autograd::x", "horovod::synchronize"]
    for _ in range(60):
        events = [x(ROUND_MARK, 0, 1000, cat="user_annotation")]
        for _ in range(rng.randint(0, 20)):
            start = rng.randint(-100, 999)
            events.append(x(rng.choice(names), start, start + rng.randint(0, 300), tid=rng.choice([1, 1, 2]),
                            cat=rng.choice(["cpu_op", "cpu_op", "user_annotation"])))
        split = breakdown(events_from_trace({"traceEvents": events}), steps=2)
        expected = _classify_each_microsecond(events, steps=2)
        assert {key: split[key] for key in expected} == pytest.approx(expected, abs=1e-12), events


@pytest.mark.parametrize("device_type, overlap_seen", [("cpu", False), ("cuda", True)])
def test_horovod_overlap_is_unseen_on_cpu_only(monkeypatch, device_type, overlap_seen):
    # The rank's side of the profiled round without a profiler or a GPU: only the choice of what the
    # profiler cannot see (Horovod's all-reduces run on its own thread; on a GPU its NCCL kernels are traced).
    import torch

    from bench.run import worker as worker_module
    from bench.strategies import REGISTRY, RankContext

    seen = {}

    def fake_profiled_round(run_steps, steps, device, *, rank, comm_seen="", start_together=None):
        seen["comm_seen"] = comm_seen
        return _rank(rank, 0.01)

    monkeypatch.setattr(worker_module, "profiled_round", fake_profiled_round)
    rank = object.__new__(worker_module.TrainingWorker)  # no model: the profiler is faked above
    rank.strategy = REGISTRY["horovod"]
    rank.ctx = RankContext(rank=0, local_rank=0, world_size=2, device=torch.device(device_type))
    parts = rank.profiled_round(3)
    assert (parts["overlapped_comm_s"] is not None) is overlap_seen
    assert bool(seen["comm_seen"]) is not overlap_seen
