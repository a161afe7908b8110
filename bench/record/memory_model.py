"""Predicted beside measured peak memory for every measured case.

Predicted: sizing's trace of train_step (and its formula) for the case's strategy, world size and batch.
Measured: on GPU the busiest rank's ``torch.cuda.max_memory_allocated`` (the record's peak_memory_bytes);
on CPU the same Ledger accounting, run over one more real train_step of the in-process rank after the
timed rounds (RSS counts the interpreter, torch's libraries and freed-but-kept pages, so it is no
measure of the step). Launched CPU ranks do not run that step: their measured value is null, with why.
"""

from __future__ import annotations

from bench.config.cases import BenchCase
from bench.hardware.devices import is_cuda
from sizing.accounting import Ledger
from sizing.predict import predict
from sizing.trace import run_accounted_step
from sizing.workload import Workload


def case_workload(case: BenchCase, per_device_batch_size: int | None = None) -> Workload:
    return Workload(case.model_config, case.precision, case.strategy, case.world_size,
                    per_device_batch_size or case.per_device_batch_size)


def accounted_step_peak_bytes(worker, limit_bytes: int | None = None) -> int:
    """One real train_step of ``worker`` under the Ledger; its peak live bytes (raises OutOfMemoryError over the limit)."""
    ledger = Ledger(limit_bytes=limit_bytes)
    data = [t for pair in worker.batches for t in pair]
    run_accounted_step(worker.state, *worker.batches[worker.steps_done % len(worker.batches)], ledger=ledger, data=data)
    worker.steps_done += 1
    return ledger.peak_bytes


def measured_step_peak(case: BenchCase, group) -> tuple[int | None, str]:
    """(bytes, how measured) of the case's step, or (None, why not)."""
    if is_cuda(case.device_type):
        return int(group.peak_memory_bytes()), "torch.cuda.max_memory_allocated, busiest rank"
    worker = getattr(group, "accounting_worker", None)
    if worker is None:
        return None, "not measured: launched CPU ranks report RSS only; the step accounting runs in-process (single)"
    return accounted_step_peak_bytes(worker), "ledger accounting of one real train_step (CPU)"


def memory_record(case: BenchCase, group) -> dict:
    """The record keys comparing the predicted peak with the measured one."""
    workload = case_workload(case)
    traced, formula = predict(workload, "trace"), predict(workload, "formula")
    measured, source = measured_step_peak(case, group)
    error = None if not measured else (traced.peak_bytes - measured) / measured
    return {
        "predicted_peak_bytes": traced.peak_bytes,
        "predicted_peak_parts_bytes": dict(traced.parts_bytes),
        "formula_peak_bytes": formula.peak_bytes,
        "measured_step_peak_bytes": measured,
        "measured_step_peak_source": source,
        "predicted_peak_error_fraction": error,
    }
