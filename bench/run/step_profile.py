"""One profiled round in a rank: torch.profiler records it, the rank reduces its own trace to the step's
parts (bench/run/step_breakdown.py) and answers numbers only, never the trace.

Run after the timed rounds (the controller asks for it once per case), so the profiler's own cost is
never inside a measured round.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import torch

from bench.hardware.devices import is_cuda, synchronize
from bench.run.step_breakdown import ROUND_MARK, breakdown, events_from_trace

SOURCE_CPU = ("torch.profiler, one round after the timed rounds, this rank's trace: compute = aten ops on the "
              "training thread; communication = gloo/c10d collectives and waits{seen}; idle = no profiled op running")
SOURCE_CUDA = ("torch.profiler, one round after the timed rounds, this rank's trace: compute = device kernels; "
               "communication = NCCL kernels{seen}; other = device copies; idle = the device doing nothing")


def profiled_round(run_steps, steps: int, device: torch.device, *, rank: int, comm_seen: str = "",
                   start_together=lambda: None) -> dict:
    """``run_steps(steps)`` under the profiler; the step's parts in seconds per step, with ``rank``, ``source``
    and ``profile_s`` (the whole profiled round with its reduction, this rank's cost of the split).

    ``start_together()`` (the strategy's barrier) runs with the profiler already started and before the
    marked round: the profiler's first start in a process takes a moment that differs between ranks, and a
    rank that started sooner would otherwise count the wait for the others in its first collective."""
    began = time.perf_counter()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if is_cuda(device.type):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        start_together()
        synchronize(device)
        with torch.profiler.record_function(ROUND_MARK):
            run_steps(steps)
            synchronize(device)
    # The documented way out of the profiler is its Chrome trace; it lives only as long as this call.
    with tempfile.TemporaryDirectory(prefix="gpusizer-profile-") as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = events_from_trace(json.load(handle))
    parts = breakdown(events, steps)
    template = SOURCE_CUDA if is_cuda(device.type) else SOURCE_CPU
    parts.update(rank=rank, source=template.format(seen=f"; {comm_seen}" if comm_seen else ""),
                 profile_s=time.perf_counter() - began)
    return parts
