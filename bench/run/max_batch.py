"""--find-max-batch: the largest per-device batch a case trains at without running out of memory.

Starts from sizing's prediction and moves away from it in doubling steps until the fit changes, then
bisects to within 1/32 of the batch. Each try builds the rank afresh at that batch and runs one train_step
(bench/run/batch_try.py): on GPU an out-of-memory error is the real one (caught, the rank dropped, gc run
and the CUDA cache emptied); on CPU --max-memory is the device memory, enforced by the Ledger over the real
step (it raises torch.OutOfMemoryError the moment live tensors pass the limit). Then the found batch is timed.

Every strategy tries in the case's group of rank processes, every rank at once (ddp's, fsdp's and
horovod's steps are collectives; single and dp have one rank): the group is taken from the session's
pool, each rank catches its own out-of-memory error and answers, and the group goes back to the pool.
The limit of that: a rank out of memory while its peers wait in a collective leaves them waiting
(on GPU, where the ranks' real allocations can differ; on CPU every rank of these strategies counts the
same bytes and stops at the same operation), so the try hangs until --round-timeout-s, the group is
killed and the case records why the search failed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable

import torch

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.config.sizing_options import SizingOptions
from bench.hardware.devices import is_cuda
from bench.launch.remote import WorkerError
from bench.record.memory_model import case_workload
from bench.run.group_pool import GroupPool
from gpusizer_common import metrics
from sizing.predict import max_batch_size

RESOLUTION = 32  # stop bisecting when the gap is at most 1/32 of the batch that fits
TIMED_STEPS = 2  # at the found batch: one warm-up step, then these, timed (large batches: seconds each)


def device_memory_bytes(case: BenchCase, options: SizingOptions) -> tuple[int | None, str]:
    if options.max_memory_bytes is not None:
        return options.max_memory_bytes, "--max-memory"
    if is_cuda(case.device_type):
        return int(torch.cuda.get_device_properties(0).total_memory), "torch.cuda total_memory of GPU 0"
    return None, "on CPU --find-max-batch needs --max-memory (the device memory to stand in for)"


def search(start: int, try_at: Callable[[int], tuple[bool, int | None]]) -> tuple[int, list[dict]]:
    """The largest batch that fits (0: not even 1), and every try as {batch, fits, peak_bytes};
    ``try_at(batch)`` is one try, (fits, peak bytes).

    Exponential search around the prediction: the step away from it doubles (1/32 of it, then 2/32,
    4/32, ... so a prediction that is off by 2x is passed in 6 tries) until the fit changes, then bisection
    to within 1/32. A good prediction costs two tries, and a try that runs out of memory stops at the
    allocation that crosses the limit, so the failing ones are the cheap ones.
    """
    tries: list[dict] = []

    def fits(batch: int) -> bool:
        ok, peak = try_at(batch)
        tries.append({"per_device_batch_size": batch, "fits": ok, "peak_bytes": peak})
        return ok

    start = max(1, start)
    step = max(1, start // RESOLUTION)
    if fits(start):
        low, high = start, None
        while high is None:
            batch = low + step
            if fits(batch):
                low, step = batch, step * 2
            else:
                high = batch
    else:
        low, high = 0, start
        while low == 0 and high > 1:
            batch = max(1, high - step)
            if fits(batch):
                low = batch
            else:
                high, step = batch, step * 2
    while low and high - low > max(1, low // RESOLUTION):
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low, tries


def samples_per_s(sized: BenchCase, run_round: Callable[[int], float]) -> float:
    """Throughput at ``sized``'s batch: one warm-up step, then TIMED_STEPS timed (the slowest rank's seconds)."""
    run_round(1)
    seconds = run_round(TIMED_STEPS)
    # One timed round, so its time is the median round's: the one throughput definition.
    return metrics.samples_per_s(metrics.samples_per_round(sized.global_batch_size, TIMED_STEPS), [seconds])


class LaunchedTries:
    """Tries and timing in the case's launched group, every rank at once (bench/launch/remote.py)."""

    def __init__(self, case: BenchCase, group, limit_bytes: int) -> None:
        self.case, self.group, self.limit_bytes = case, group, limit_bytes

    def try_at(self, batch: int) -> tuple[bool, int | None]:
        return self.group.try_batch(batch, self.limit_bytes)

    def samples_per_s(self, batch: int) -> float:
        sized = dataclasses.replace(self.case, per_device_batch_size=batch)
        self.group.start_case(sized)  # every rank builds the found batch: the tries left them no model
        return samples_per_s(sized, lambda steps: max(self.group.run_round(steps)))


def find_max_batch(case: BenchCase, options: SizingOptions, bench_options: BenchOptions, pool: GroupPool) -> dict:
    """The record keys of the search; ``max_per_device_batch_size`` is null with the reason when not searched."""
    limit_bytes, limit_source = device_memory_bytes(case, options)
    keys = {"max_per_device_batch_size": None, "max_batch_peak_bytes": None, "max_batch_samples_per_s": None,
            "max_batch_memory_limit_bytes": limit_bytes, "max_batch_reason": None}
    if limit_bytes is None:
        return {**keys, "max_batch_reason": limit_source}
    began = time.perf_counter()
    predicted = max_batch_size(case_workload(case), limit_bytes)
    keys.update(max_batch_predicted=predicted, max_batch_memory_limit_source=limit_source)
    # The group that just ran the case, kept by the pool (or a fresh launch); it goes back there after.
    group = pool.acquire(case, launch_timeout_s=bench_options.launch_timeout_s,
                         round_timeout_s=bench_options.round_timeout_s).group
    clean = False
    try:
        found = _search_and_time(keys, predicted, LaunchedTries(case, group, limit_bytes), began)
        clean = True
        return found
    except WorkerError as error:  # the group is killed already; the case itself was measured
        print(f"gpusizer: --find-max-batch of {case.case_id} failed: {error}", file=sys.stderr)
        return {**keys, "max_batch_reason": f"the search failed: {error}",
                "max_batch_search_s": time.perf_counter() - began}
    except KeyboardInterrupt:
        group.abort()
        raise
    finally:
        pool.release(case, group, clean=clean)


def _search_and_time(keys: dict, predicted: int, tries: LaunchedTries, began: float) -> dict:
    batch, tried = search(predicted, tries.try_at)
    keys = {**keys, "max_batch_tries": tried}
    if batch == 0:
        return {**keys, "max_per_device_batch_size": 0, "max_batch_reason": "not even one sample fits",
                "max_batch_search_s": time.perf_counter() - began}
    peak = max(t["peak_bytes"] for t in tried if t["fits"] and t["per_device_batch_size"] == batch)
    return {**keys, "max_per_device_batch_size": batch, "max_batch_peak_bytes": peak,
            "max_batch_samples_per_s": tries.samples_per_s(batch), "max_batch_search_s": time.perf_counter() - began}
