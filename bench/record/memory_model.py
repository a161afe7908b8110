"""Predicted beside measured peak memory for every measured case.

Predicted: sizing's trace of train_step (and its formula) for the case's strategy, world size and batch.
Measured: on GPU the busiest rank's ``torch.cuda.max_memory_allocated`` (the record's peak_memory_bytes);
on CPU the same Ledger accounting, run over one more real train_step of every rank after the timed
rounds (in all the case's ranks together: ddp's, fsdp's and horovod's steps are collectives), the busiest rank's
(RSS counts the interpreter, torch's libraries and freed-but-kept pages, so it is no measure of the step).
The Ledger sees what torch's dispatcher returns; what a strategy allocates beside it is named in the
source string (ACCOUNTED_SOURCE).
"""

from __future__ import annotations

from bench.config.cases import BenchCase
from bench.hardware.devices import is_cuda
from sizing.predict import predict
from sizing.step_memory import unseen_by_accounting
from sizing.workload import Workload


def case_workload(case: BenchCase, per_device_batch_size: int | None = None) -> Workload:
    return Workload(case.model_config, case.precision, case.strategy, case.world_size,
                    per_device_batch_size or case.per_device_batch_size)


ACCOUNTED = "ledger accounting of one real train_step (CPU)"
ACCOUNTED_SOURCE = {
    "single": ACCOUNTED,
    # The reducer allocates its buckets at construction, in C++, outside any step; the Ledger sees each
    # only when the reducer writes a gradient into it in backward (mul.out). A peak at the end of backward
    # (small batches) has them; an earlier one (large batches: the activations') misses them, although they
    # are resident all along, as the prediction counts them.
    "ddp": f"{ACCOUNTED}, busiest rank; DDP's gradient buckets only from the reducer's first write into them "
           "in backward (a peak before that misses them)",
    # At world size > 1 on CPU, gloo's reduce-scatter works on a copy of its input (the fp32 gradients of a
    # layer) that NCCL does not make, freed at a moment that depends on thread timing: the measured peak
    # can be that much above the prediction (tests/test_sizing.py bounds it).
    "fsdp": f"{ACCOUNTED}, busiest rank; DTensor shards at their local size, FSDP2's storage resizes followed; "
            "at world size > 1 gloo's reduce-scatter input copy (CPU only) may be counted too",
    "horovod": f"{ACCOUNTED}, busiest rank; not seen: Horovod's fusion buffer (its C++ core allocates it outside "
               "torch's dispatcher), which the prediction counts and the error leaves out",
}


def measured_step_peak(case: BenchCase, group) -> tuple[int | None, str]:
    """(bytes, how measured) of the case's step, or (None, why not)."""
    if is_cuda(case.device_type):
        return int(group.peak_memory_bytes()), "torch.cuda.max_memory_allocated, busiest rank"
    step_peak = getattr(group, "accounted_step_peak_bytes", None)
    if step_peak is None:
        return None, f"not measured: the {type(group).__name__} of {case.strategy} runs no accounted step"
    return int(step_peak()), ACCOUNTED_SOURCE.get(case.strategy, ACCOUNTED)


def memory_record(case: BenchCase, group) -> dict:
    """The record keys comparing the predicted peak with the measured one."""
    workload = case_workload(case)
    traced, formula = predict(workload, "trace"), predict(workload, "formula")
    measured, source = measured_step_peak(case, group)
    # Like with like: the prediction without the parts the measurement cannot see (sizing/step_memory.py).
    comparable = traced.peak_bytes - sum(unseen_by_accounting(case.strategy, case.device_type,
                                                               traced.parts_bytes).values())
    error = None if not measured else (comparable - measured) / measured
    return {
        "predicted_peak_bytes": traced.peak_bytes,
        # "trace"; "formula" only where this torch cannot run the trace (sizing/strategies.py FSDPMemory)
        "predicted_peak_method": traced.method,
        "predicted_peak_parts_bytes": dict(traced.parts_bytes),
        "formula_peak_bytes": formula.peak_bytes,
        "measured_step_peak_bytes": measured,
        "measured_step_peak_source": source,
        "predicted_peak_error_fraction": error,
    }
