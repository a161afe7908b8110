"""What each strategy does to one device's memory: the peak predict() asks for, by trace or by formula.

One small class per strategy, keyed by the strategy's name as bench/strategies names it; nothing here
branches on a strategy's name. Sizes are those of torch 2.13's implementations with default settings.
By default (``StrategyMemory.peak``) a strategy's effect is modelled: ``per_device`` is applied at every
moment of the single-process step, traced (sizing/trace.py) or by formula (sizing/formula.py). FSDP is
not modelled on that step: its trace runs FSDP2 itself on fake ranks (sizing/fsdp_trace.py) and its
formula is its own (``fsdp_step``). DDP stays modelled: its constructor checks the parameters across
the ranks with a collective that reads their data, which fake tensors have not ("data is not allocated
yet"); with ``init_sync=False`` it builds, but its backward then fails in the fake group's all-reduce (its
future carries no tensor) unless a stand-in comm hook replaces the real one, and its gradient buckets are
allocated in C++ at construction, outside the step. Such a trace would be no less modelled than
``DDPMemory``, which agrees exactly with the accounting of real CPU ranks. Horovod's fusion buffer and
DataParallel's replica threads are modelled too.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, ClassVar

from reference_model import ModelConfig
from sizing.formula import FP32_BYTES, data_pool_bytes, formula_step, fsdp_step
from sizing.fsdp_trace import FakeGroupUnavailable, trace_fsdp_step
from sizing.step_memory import StepMemory
from sizing.trace import trace_step

if TYPE_CHECKING:
    from sizing.workload import Workload

SINGLE_PROCESS_STEPS = {"trace": trace_step, "formula": formula_step}

HOROVOD_FUSION_BYTES = 64 * 2**20  # HOROVOD_FUSION_THRESHOLD's default: one fusion buffer per device


class StrategyMemory:
    name: ClassVar[str]
    multi_device: ClassVar[bool] = True  # False: sized at world size 1 only (as bench's Strategy says)

    def process_batch_size(self, per_device_batch_size: int, world_size: int) -> int:
        return per_device_batch_size

    def peak(self, workload: Workload, method: str) -> StepMemory:
        """The busiest device's memory at the step's high-water mark: one process's step (``method``:
        trace or formula) with ``per_device`` applied at every moment, the largest after it."""
        config, world_size, batch = workload.config, workload.world_size, workload.per_device_batch_size
        timeline = SINGLE_PROCESS_STEPS[method](config, workload.precision, self.process_batch_size(batch, world_size))
        return timeline.peak(lambda moment: self.per_device(moment, config, world_size, batch))

    def per_device(self, step: StepMemory, config: ModelConfig, world_size: int,
                   per_device_batch_size: int) -> StepMemory:
        """The busiest device's memory, given the step one process runs on its batch."""
        return step


class SingleMemory(StrategyMemory):
    name = "single"
    multi_device = False


class DDPMemory(StrategyMemory):
    name = "ddp"

    def per_device(self, step, config, world_size, per_device_batch_size):
        # The reducer's flat buckets hold a second copy of every gradient (gradient_as_bucket_view=False),
        # allocated at wrap time and kept: every gradient byte is there twice.
        return step.with_parts(ddp_gradient_buckets=config.num_params * FP32_BYTES)


class HorovodMemory(StrategyMemory):
    name = "horovod"

    def per_device(self, step, config, world_size, per_device_batch_size):
        # Gradients are all-reduced in place through one fusion buffer of the threshold's size.
        return step.with_parts(horovod_fusion_buffer=HOROVOD_FUSION_BYTES)


class DataParallelMemory(StrategyMemory):
    """Device 0 holds the module, its gradients, the whole global batch and the gathered outputs."""

    name = "dp"

    def per_device(self, step, config, world_size, per_device_batch_size):
        others = world_size - 1
        pool = data_pool_bytes(config, per_device_batch_size) * others
        gathered = 2 * others * per_device_batch_size * config.output_size * FP32_BYTES  # outputs and their gradient
        return step.with_parts(dp_global_batch=pool, dp_gathered_outputs=gathered)


class FSDPMemory(StrategyMemory):
    """FSDP2 with one shard group per Linear under the precision's MixedPrecisionPolicy (sizing/sharding.py,
    as bench/strategies/fsdp.py wraps its ranks).

    Not modelled on the single-process step: the trace runs FSDP2 itself on fake ranks at the workload's
    world size (sizing/fsdp_trace.py), and the formula is FSDP's own, layer by layer (sizing/formula.py).
    """

    name = "fsdp"
    trace_unavailable: str | None = None  # why this torch cannot trace FSDP, once found

    def peak(self, workload, method):
        args = (workload.config, workload.precision, workload.per_device_batch_size, workload.world_size)
        if method == "trace" and self.trace_unavailable is None:
            try:
                return trace_fsdp_step(*args).peak()
            except FakeGroupUnavailable as error:
                # The fake process group is built on torch internals (sizing/fsdp_trace.py) that another
                # torch version may lack: the formula (within 10 % of the trace by test) answers then, and
                # the StepMemory says so (method "formula"), rather than a benchmark case failing. Once
                # per process: the next predictions do not retry it.
                self.trace_unavailable = str(error)
                warnings.warn(f"gpusizer: FSDP cannot be traced with this torch ({error}); its predicted "
                              "memory comes from the formula", RuntimeWarning, stacklevel=2)
        return fsdp_step(*args).peak()


STRATEGY_MEMORY: dict[str, StrategyMemory] = {
    cls.name: cls() for cls in (SingleMemory, DataParallelMemory, DDPMemory, HorovodMemory, FSDPMemory)
}
