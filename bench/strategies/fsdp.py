"""``fsdp``: FSDP2 ``fully_shard`` (parameters, gradients and optimizer state sharded), launched with torchrun."""

from __future__ import annotations

import torch

from bench.strategies import process_group
from bench.strategies.base import RankContext, Strategy
from reference_model import TrainState, make_optimizer


class FSDP(Strategy):
    name = "fsdp"
    launcher = "torchrun"
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
        for layer in state.model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(state.model)
        state.optimizer = make_optimizer(state.model)
        return state

    def full_parameters(self, state: TrainState) -> list[torch.Tensor]:
        # full_tensor() all-gathers the shards: a collective every rank takes part in.
        return [p.full_tensor().detach().float().cpu().clone() for p in state.model.parameters()]

    def barrier(self, ctx: RankContext) -> None:
        process_group.barrier()

    def teardown(self, ctx: RankContext) -> None:
        process_group.leave()
