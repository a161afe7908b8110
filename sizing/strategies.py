"""What each strategy does to one device's memory, applied to a traced (or formula) single-process step.

One small class per strategy, keyed by the strategy's name as bench/strategies names it; nothing here
branches on a strategy's name. Sizes are those of torch 2.13's implementations with default settings.
"""

from __future__ import annotations

from typing import ClassVar

from reference_model import ModelConfig
from sizing.formula import FP32_BYTES, data_pool_bytes
from sizing.step_memory import StepMemory

HOROVOD_FUSION_BYTES = 64 * 2**20  # HOROVOD_FUSION_THRESHOLD's default: one fusion buffer per device
SHARDED_PARTS = ("parameters", "gradients", "optimizer_state")
# FSDP's MixedPrecisionPolicy param_dtype per precision (bench/strategies/fsdp.py); others gather fp32.
LOW_PRECISION_BYTES = {"bf16": 2, "fp16": 2}


class StrategyMemory:
    name: ClassVar[str]
    multi_device: ClassVar[bool] = True  # False: sized at world size 1 only (as bench's Strategy says)

    def process_batch_size(self, per_device_batch_size: int, world_size: int) -> int:
        return per_device_batch_size

    def per_device(self, step: StepMemory, config: ModelConfig, world_size: int, per_device_batch_size: int,
                   precision: str = "fp32") -> StepMemory:
        """The busiest device's memory, given the step one process runs on its batch."""
        return step


class SingleMemory(StrategyMemory):
    name = "single"
    multi_device = False


class DDPMemory(StrategyMemory):
    name = "ddp"

    def per_device(self, step, config, world_size, per_device_batch_size, precision="fp32"):
        # The reducer's flat buckets hold a second copy of every gradient (gradient_as_bucket_view=False),
        # allocated at wrap time and kept: every gradient byte is there twice.
        return step.with_parts(ddp_gradient_buckets=config.num_params * FP32_BYTES)


class HorovodMemory(StrategyMemory):
    name = "horovod"

    def per_device(self, step, config, world_size, per_device_batch_size, precision="fp32"):
        # Gradients are all-reduced in place through one fusion buffer of the threshold's size.
        return step.with_parts(horovod_fusion_buffer=HOROVOD_FUSION_BYTES)


class DataParallelMemory(StrategyMemory):
    """Device 0 holds the module, its gradients, the whole global batch and the gathered outputs."""

    name = "dp"

    def per_device(self, step, config, world_size, per_device_batch_size, precision="fp32"):
        others = world_size - 1
        pool = data_pool_bytes(config, per_device_batch_size) * others
        gathered = 2 * others * per_device_batch_size * config.output_size * FP32_BYTES  # outputs and their gradient
        return step.with_parts(dp_global_batch=pool, dp_gathered_outputs=gathered)


class FSDPMemory(StrategyMemory):
    """FSDP2 with one shard group per Linear (as bench/strategies/fsdp.py wraps it).

    Parameters, gradients and optimizer state are split over the world; each device also holds the
    unsharded parameters of the layer it computes and of the next (prefetched) one, and in backward
    the unsharded gradient of one layer before its reduce-scatter. At world size 1 the buffers exist too.

    At bf16/fp16 bench/strategies/fsdp.py sets ``MixedPrecisionPolicy(param_dtype=<that>, reduce_dtype=fp32)``:
    the all-gathered parameters are 2 bytes each, so autocast finds them already in low precision and
    keeps no weight copies of its own; the unsharded gradient is computed in that dtype and cast to
    fp32 for the reduce-scatter, so both copies of it are live.
    """

    name = "fsdp"

    def per_device(self, step, config, world_size, per_device_batch_size, precision="fp32"):
        sharded = {part: -(-step.parts_bytes.get(part, 0) // world_size) for part in SHARDED_PARTS}
        layer_elements = sorted((i * o + o for i, o in config.layer_shapes), reverse=True)
        low = LOW_PRECISION_BYTES.get(precision)
        gathered = sum(layer_elements[:2]) * (low or FP32_BYTES)
        gradient = layer_elements[0] * (low + FP32_BYTES if low else FP32_BYTES)
        changes = {"autocast_weight_copies": 0} if low else {}
        return step.with_parts(**sharded, **changes, fsdp_unsharded_parameters=gathered,
                               fsdp_unsharded_gradient=gradient)


STRATEGY_MEMORY: dict[str, StrategyMemory] = {
    cls.name: cls() for cls in (SingleMemory, DataParallelMemory, DDPMemory, HorovodMemory, FSDPMemory)
}
