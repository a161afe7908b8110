"""--find-max-batch: the largest per-device batch a case trains at without running out of memory.

Starts from sizing's prediction and moves away from it in doubling steps until the fit changes, then
bisects to within 1/32 of the batch. Each try builds the rank afresh at that batch and runs one train_step: on GPU an
out-of-memory error is the real one (caught, the rank dropped, gc run and the CUDA cache emptied); on CPU
--max-memory is the device memory, enforced by the Ledger over the real step (it raises
torch.OutOfMemoryError the moment live tensors pass the limit). Then the found batch is timed.

Self-contained on purpose: issue 9's out-of-memory handling of launched ranks is separate work, so
the search runs ranks in-process, which the in-process strategies do (single; dp on GPUs).
"""

from __future__ import annotations

import dataclasses
import gc
import time

import torch

from bench.config.cases import BenchCase
from bench.config.sizing_options import SizingOptions
from bench.hardware.devices import is_cuda, synchronize
from bench.record.memory_model import accounted_step_peak_bytes, case_workload
from bench.run.worker import TrainingWorker
from bench.strategies import REGISTRY
from sizing.predict import max_batch_size

RESOLUTION = 32  # stop bisecting when the gap is at most 1/32 of the batch that fits
TIMED_STEPS = 2  # at the found batch: one warm-up step, then these, timed (large batches: seconds each)


def device_memory_bytes(case: BenchCase, options: SizingOptions) -> tuple[int | None, str]:
    if options.max_memory_bytes is not None:
        return options.max_memory_bytes, "--max-memory"
    if is_cuda(case.device_type):
        return int(torch.cuda.get_device_properties(0).total_memory), "torch.cuda total_memory of GPU 0"
    return None, "on CPU --find-max-batch needs --max-memory (the device memory to stand in for)"


def _release(worker: TrainingWorker | None) -> None:
    if worker is not None:
        worker.close()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def try_batch(case: BenchCase, batch: int, limit_bytes: int) -> tuple[bool, int | None]:
    """(fits, peak bytes) of one step at ``batch``; an out-of-memory error means it does not fit."""
    worker = None
    try:
        worker = TrainingWorker(dataclasses.replace(case, per_device_batch_size=batch))
        if is_cuda(case.device_type):
            worker.run_round(1)
            return True, worker.peak_memory_bytes()
        return True, accounted_step_peak_bytes(worker, limit_bytes=limit_bytes)
    except torch.OutOfMemoryError:
        return False, None
    finally:
        _release(worker)


def search(case: BenchCase, start: int, limit_bytes: int) -> tuple[int, list[dict]]:
    """The largest batch that fits (0: not even 1), and every try as {batch, fits, peak_bytes}.

    Exponential search around the prediction: the step away from it doubles (1/32 of it, then 2/32,
    4/32, ... so a prediction that is off by 2x is passed in 6 tries) until the fit changes, then bisection
    to within 1/32. A good prediction costs two tries, and a try that runs out of memory stops at the
    allocation that crosses the limit, so the failing ones are the cheap ones.
    """
    tries: list[dict] = []

    def fits(batch: int) -> bool:
        ok, peak = try_batch(case, batch, limit_bytes)
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


def time_batch(case: BenchCase, batch: int) -> float:
    """Samples per second of this rank at ``batch``, over TIMED_STEPS steps after one warm-up step."""
    sized = dataclasses.replace(case, per_device_batch_size=batch)
    worker = TrainingWorker(sized)
    try:
        worker.run_round(1)
        synchronize(worker.ctx.device)
        seconds = worker.run_round(TIMED_STEPS)
    finally:
        _release(worker)
    # In-process strategies train the global batch in this one process (dp splits it over its GPUs).
    return sized.global_batch_size * TIMED_STEPS / seconds


def find_max_batch(case: BenchCase, options: SizingOptions) -> dict:
    """The record keys of the search; ``max_per_device_batch_size`` is null with the reason when not searched."""
    limit_bytes, limit_source = device_memory_bytes(case, options)
    keys = {"max_per_device_batch_size": None, "max_batch_peak_bytes": None, "max_batch_samples_per_s": None,
            "max_batch_memory_limit_bytes": limit_bytes, "max_batch_reason": None}
    if limit_bytes is None:
        return {**keys, "max_batch_reason": limit_source}
    if REGISTRY[case.strategy].launcher != "inprocess":
        return {**keys, "max_batch_reason": "the search runs in-process ranks only (single, dp); launched ranks' "
                                            "out-of-memory handling is issue 9's"}
    began = time.perf_counter()
    predicted = max_batch_size(case_workload(case), limit_bytes)
    batch, tries = search(case, predicted, limit_bytes)
    keys.update(max_batch_predicted=predicted, max_batch_tries=tries,
                max_batch_memory_limit_source=limit_source)
    if batch == 0:
        return {**keys, "max_per_device_batch_size": 0, "max_batch_reason": "not even one sample fits",
                "max_batch_search_s": time.perf_counter() - began}
    peak = max(t["peak_bytes"] for t in tries if t["fits"] and t["per_device_batch_size"] == batch)
    keys.update(max_per_device_batch_size=batch, max_batch_peak_bytes=peak,
                max_batch_samples_per_s=time_batch(case, batch), max_batch_search_s=time.perf_counter() - began)
    return keys
