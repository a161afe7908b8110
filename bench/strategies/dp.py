"""``dp``: ``torch.nn.DataParallel``, one process driving every GPU. A baseline, never recommended.

On CPU DataParallel silently runs the plain module on one device, which would report ``single``
under another name, so it is skipped there.
"""

from __future__ import annotations

import torch

from bench.strategies.base import RankContext, Strategy
from reference_model import ModelConfig, TrainState, global_batches


class DataParallel(Strategy):
    name = "dp"
    launcher = "inprocess"
    baseline_only = True  # PyTorch itself recommends DDP over it

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        if device_type != "cuda":
            return ("DataParallel needs CUDA GPUs: on CPU it silently runs the plain module on one device "
                    "(that is `single`); run on a machine with GPUs")
        return None

    def process_batch_size(self, per_device_batch_size: int, world_size: int) -> int:
        return per_device_batch_size * world_size  # the one process feeds all devices; DP scatters it

    def rank_batches(self, config: ModelConfig, per_device_batch_size: int, *, seed: int,
                     ctx: RankContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The one process holds the whole global batch, exactly what the data-parallel ranks see together.
        return global_batches(config, per_device_batch_size, seed=seed, world_size=ctx.world_size, device=ctx.device)

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        state.model = torch.nn.DataParallel(state.model, device_ids=list(range(ctx.world_size)))
        return state
