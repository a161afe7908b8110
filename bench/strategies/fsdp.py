"""``fsdp``: FSDP2 ``fully_shard`` (parameters, gradients and optimizer state sharded), launched with torchrun."""

from __future__ import annotations

import torch

from bench.strategies import process_group
from bench.strategies.base import RankContext, Strategy
from reference_model import TrainState, make_optimizer
from sizing.sharding import mixed_precision_dtypes, mixed_precision_policy, shard_model

__all__ = ["FSDP", "mixed_precision_policy"]  # the policy a case runs under, as tests/test_gpu_paths.py checks it


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
        # sizing/sharding.py: one shard group per Linear, then the root, under the precision's policy
        # (the memory trace shards its fake ranks with the same function).
        shard_model(state.model, state.precision.name)
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
