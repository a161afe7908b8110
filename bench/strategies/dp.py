"""``dp``: ``torch.nn.DataParallel``, one rank process driving every GPU. A baseline, never recommended.

On CPU DataParallel silently runs the plain module on one device, which would report ``single``
under another name, so it is skipped there.
"""

from __future__ import annotations

import torch

from bench.hardware.devices import is_cuda
from bench.strategies.base import RankContext, Strategy
from reference_model import AutocastModule, ModelConfig, TrainState, global_batches


class DataParallel(Strategy):
    launcher = "python"  # one plain rank process drives every GPU of the case (bench/launch/plain.py)
    baseline_only = True  # PyTorch itself recommends DDP over it

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        if not is_cuda(device_type):
            return ("DataParallel needs CUDA GPUs: on CPU it silently runs the plain module on one device "
                    "(that is `single`); run on a machine with GPUs")
        return None

    def processes(self, world_size: int) -> int:
        return 1  # one process drives every GPU: it gets every core

    def rank_devices(self, ctx: RankContext) -> list[torch.device]:
        if not is_cuda(ctx.device.type):
            return [ctx.device]
        return [torch.device("cuda", index) for index in range(ctx.world_size)]

    def rank_batches(self, config: ModelConfig, per_device_batch_size: int, *, seed: int,
                     ctx: RankContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The one process holds the whole global batch, exactly what the data-parallel ranks see together.
        return global_batches(config, per_device_batch_size, seed=seed, world_size=ctx.world_size, device=ctx.device)

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        # The replicas' forwards run in DataParallel's own threads, where the step's autocast does not
        # reach: each replica enters the case's autocast itself (reference_model.AutocastModule).
        replicated = AutocastModule(state.model, state.precision)
        state.model = torch.nn.DataParallel(replicated, device_ids=list(range(ctx.world_size)))
        return state

    def rank_facts(self, state: TrainState) -> dict:
        # What the replicas' forwards actually returned: bfloat16 for bf16, not DataParallel's float16 default.
        dtypes = state.model.module.output_dtypes
        return {"replica_output_dtypes": sorted(str(dtype).removeprefix("torch.") for dtype in dtypes)}
