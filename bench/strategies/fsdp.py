"""``fsdp``: FSDP2 ``fully_shard`` (parameters, gradients and optimizer state sharded), launched with torchrun."""

from __future__ import annotations

import torch

from bench.strategies import process_group
from bench.strategies.base import RankContext, Strategy
from reference_model import Precision, TrainState, make_optimizer

# Gradients are reduced in fp32 whatever the compute dtype: summing N ranks' bf16 gradients loses
# bits that fp32 keeps, and this is how FSDP users configure it.
REDUCE_DTYPE = torch.float32


def mixed_precision_dtypes(precision: str) -> tuple[torch.dtype, torch.dtype] | None:
    """(param_dtype, reduce_dtype) of the case's MixedPrecisionPolicy; None (all fp32) for fp32 and tf32."""
    compute = Precision(precision, "cpu").autocast_dtype  # the dtype does not depend on the device type
    return None if compute is None else (compute, REDUCE_DTYPE)


def mixed_precision_policy(precision: str):
    """The MixedPrecisionPolicy for ``precision``: parameters all-gathered and used in the compute dtype
    (bf16/fp16), gradients reduced in fp32; the default (everything in fp32) for fp32 and tf32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtypes = mixed_precision_dtypes(precision)
    if dtypes is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtypes[0], reduce_dtype=dtypes[1])


class FSDP(Strategy):
    launcher = "torchrun"
    shards_training_state = True  # fully_shard splits parameters, gradients and optimizer state
    multi_node = True

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        reason = process_group.backend_unavailable_reason(device_type)
        if reason:
            return reason
        try:
            from torch.distributed.fsdp import fully_shard  # noqa: F401  (public since torch 2.6)
        except ImportError:
            return f"FSDP2 (torch.distributed.fsdp.fully_shard) needs torch >= 2.6; this is {torch.__version__}"
        return None

    def setup(self, ctx: RankContext) -> None:
        process_group.join(ctx)

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        from torch.distributed.fsdp import fully_shard

        # One shard group per Linear, so each layer's all-gather overlaps the previous layer's compute,
        # then the root for what is left. Parameters become DTensors: the optimizer must be made anew.
        # Without a policy FSDP gathers and reduces in fp32 even when the step autocasts to bf16/fp16.
        policy = mixed_precision_policy(state.precision.name)
        for layer in state.model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mp_policy=policy)
        fully_shard(state.model, mp_policy=policy)
        state.optimizer = make_optimizer(state.model)
        return state

    def case_facts(self, precision: str) -> dict:
        dtypes = mixed_precision_dtypes(precision)
        names = (None, None) if dtypes is None else [str(dtype).removeprefix("torch.") for dtype in dtypes]
        return {"mixed_precision_policy": {"param_dtype": names[0], "reduce_dtype": names[1]}}

    def full_parameters(self, state: TrainState) -> list[torch.Tensor]:
        # full_tensor() all-gathers the shards: a collective every rank takes part in.
        return [p.full_tensor().detach().float().cpu().clone() for p in state.model.parameters()]

    def barrier(self, ctx: RankContext) -> None:
        process_group.barrier()

    def teardown(self, ctx: RankContext) -> None:
        process_group.leave()
