"""One rank's try of --find-max-batch: build the case at a batch, run one step, say whether it fit.

Run by the ranks (bench/launch/worker_main.py's ``try_batch`` command, every rank of the group at once,
for bench/run/max_batch.py's search), so every strategy decides "fits" the same way. An out-of-memory error is caught here, in the rank, and the try's memory is given
back, so a launched group survives a batch that does not fit and answers the next try.
"""

from __future__ import annotations

import gc

import torch

from bench.config.cases import BenchCase
from bench.hardware.devices import is_cuda
from bench.run.memory import release_cached_memory
from bench.run.worker import TrainingWorker


def release(worker: TrainingWorker | None, *, join: bool) -> None:
    """Drop a try's rank and collect it; a rank that did not join its process group keeps the group."""
    if worker is not None:
        if join:
            worker.close()
        else:
            worker.release()
    gc.collect()
    release_cached_memory()


def try_batch(case: BenchCase, limit_bytes: int | None, *, rank: int = 0, local_rank: int = 0,
              join: bool = True) -> tuple[bool, int | None]:
    """(fits, peak bytes) of one step of ``case`` (at its per-device batch); an out-of-memory error means
    it does not fit. GPU: a real step, its max_memory_allocated. CPU: the step under the Ledger with
    ``limit_bytes`` as the device memory (it raises torch.OutOfMemoryError when live tensors pass it).
    ``join=False``: a launched rank already in the strategy's process group (see TrainingWorker)."""
    worker = None
    fits, peak = False, None
    try:
        worker = TrainingWorker(case, rank=rank, local_rank=local_rank, join=join)
        if is_cuda(case.device_type):
            worker.run_round(1)
            peak = worker.peak_memory_bytes()
        else:
            peak = worker.accounted_step_peak_bytes(limit_bytes=limit_bytes)
        fits = True
    except torch.OutOfMemoryError:
        peak = None
    finally:
        # After the except block: the exception, and the frames that hold the try's tensors, are gone.
        release(worker, join=join)
    return fits, peak
