"""A profiled round's trace reduced to the step's parts, by interval arithmetic (no torch import here).

Input: the events of one profiled round as the PyTorch profiler exports them (Chrome trace format,
``{"ph": "X", "cat", "name", "tid", "ts", "dur"}``, times in microseconds), the round marked by the
``ROUND_MARK`` annotation that bench/run/step_profile.py wraps around it. Output: seconds per step.

- **compute**: on GPU every device kernel that is not communication; on CPU every ``aten::`` op on the
  training thread (the thread that ran the round) outside a communication call (COMM_CALL).
- **communication**: NCCL kernels on GPU; on CPU gloo's collectives (``gloo:*``, recorded on gloo's worker
  thread for as long as the collective runs), the ``c10d`` ops and their waits, and what a strategy
  marks itself (``horovod::synchronize``: the wait for Horovod's all-reduces, which its own thread runs
  where the profiler does not look).
- **overlapped** communication: communication while compute runs; **exposed**: communication while no
  compute runs.
- **other**: on CPU, the training thread's other profiled work (autograd's engine, the optimizer's Python);
  on GPU, memory copies and sets on the device.
- **idle**: the rest of the round: on CPU no profiled op running (Python between ops, waits the profiler
  does not name); on GPU the device doing nothing (waiting for the host).

compute + exposed communication + other + idle is the round, exactly: each moment is counted once, in
that order of precedence. The parts are divided by the round's steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ROUND_MARK = "gpusizer::profiled_round"
# Names of communication: gloo's and NCCL's collectives as the profiler records them (``gloo:all_reduce`` on
# gloo's worker thread, lasting as long as the collective), the c10d ops torch.distributed dispatches and their
# waits (``c10d::allreduce_``, ``c10d::_reduce_scatter_base_``, ``_c10d_functional::wait_tensor``), NCCL's
# kernels, and what a strategy marks itself (``horovod::synchronize``, bench/strategies/horovod.py).
COMM_NAME = re.compile(r"^(gloo:|nccl:|horovod::)|^_?c10d|record_param_comms|^ProcessGroup|nccl(Dev)?Kernel",
                       re.IGNORECASE)
# Of those, the calls that hold the calling thread until they return: no compute of that thread runs inside
# them (an aten op they run is part of the call). gloo's own spans are not calls: they run on its thread
# while the training thread goes on computing, and that is the overlap to measure.
COMM_CALL = re.compile(r"^(_?c10d|horovod::)|record_param_comms|^ProcessGroup", re.IGNORECASE)
DEVICE_COPY_CATEGORIES = ("gpu_memcpy", "gpu_memset")
PARTS = ("compute_s", "exposed_comm_s", "overlapped_comm_s", "other_s", "idle_s")

Interval = tuple[float, float]


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """The same moments as sorted, disjoint intervals (empty ones dropped)."""
    merged: list[list[float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Moments in both (each a union, as ``union`` returns)."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Moments in ``a`` and not in ``b`` (each a union); one pass over both, as a GPU round has thousands."""
    out, first = [], 0
    for start, end in a:
        while first < len(b) and b[first][1] <= start:
            first += 1
        cursor, k = start, first
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def length(intervals: list[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def clip(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    return union((max(s, window[0]), min(e, window[1])) for s, e in intervals)


@dataclass(frozen=True)
class Event:
    """One complete ("X") event of the trace: its category, name, thread (a stream for GPU kernels) and span."""

    cat: str
    name: str
    tid: object
    start_us: float
    end_us: float

    @property
    def span(self) -> Interval:
        return (self.start_us, self.end_us)


def events_from_trace(trace: dict) -> list[Event]:
    """The complete events of a Chrome trace (``prof.export_chrome_trace``); others (flows, metadata) dropped."""
    events = []
    for raw in trace.get("traceEvents", []):
        if raw.get("ph") != "X" or "ts" not in raw or "dur" not in raw:
            continue
        start = float(raw["ts"])
        events.append(Event(str(raw.get("cat", "")), str(raw.get("name", "")), raw.get("tid"), start,
                            start + float(raw["dur"])))
    return events


def is_comm(event: Event) -> bool:
    return bool(COMM_NAME.search(event.name))


def breakdown(events: list[Event], steps: int) -> dict:
    """Seconds per step of each part (PARTS) and ``step_s``; ValueError when the trace has no round mark
    or the round is empty (nothing to divide)."""
    if steps < 1:
        raise ValueError(f"steps: {steps!r}; allowed: an integer >= 1")
    # On GPU the profiler repeats an annotation on the device's timeline (gpu_user_annotation): the host's is the round.
    marks = [e for e in events if e.name == ROUND_MARK and e.cat != "gpu_user_annotation"]
    if len(marks) != 1:
        raise ValueError(f"the trace holds {len(marks)} {ROUND_MARK!r} marks; expected exactly one")
    window, training_thread = marks[0].span, marks[0].tid
    if window[1] <= window[0]:
        raise ValueError(f"the profiled round lasted {window[1] - window[0]} us; expected more than 0")
    kernels = [e for e in events if e.cat == "kernel"]
    if kernels:  # a GPU trace: the device's own timeline says what it did
        comm = clip((e.span for e in kernels if is_comm(e)), window)
        compute = clip((e.span for e in kernels if not is_comm(e)), window)
        busy_other = clip((e.span for e in events if e.cat in DEVICE_COPY_CATEGORIES), window)
    else:  # CPU: the training thread's ops; gloo's collectives on whichever thread ran them
        comm = clip((e.span for e in events if e.cat in ("cpu_op", "user_annotation") and is_comm(e)), window)
        own = [e for e in events if e.tid == training_thread and e.name != ROUND_MARK]
        calls = clip((e.span for e in own if COMM_CALL.search(e.name)), window)
        compute = subtract(clip((e.span for e in own if e.cat == "cpu_op" and e.name.startswith("aten::")
                                 and not is_comm(e)), window), calls)
        busy_other = clip((e.span for e in own if e.cat in ("cpu_op", "user_annotation")), window)
    overlapped = intersect(comm, compute)
    exposed = subtract(comm, compute)
    other = subtract(subtract(busy_other, compute), comm)
    round_us = window[1] - window[0]
    idle_us = round_us - length(compute) - length(exposed) - length(other)
    per_step_s = 1e-6 / steps
    return {"step_s": round_us * per_step_s, "compute_s": length(compute) * per_step_s,
            "exposed_comm_s": length(exposed) * per_step_s, "overlapped_comm_s": length(overlapped) * per_step_s,
            "other_s": length(other) * per_step_s, "idle_s": max(idle_us, 0.0) * per_step_s}
