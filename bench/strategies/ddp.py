"""``ddp``: DistributedDataParallel, one process per device, launched with torchrun; NCCL on GPU, gloo on CPU."""

from __future__ import annotations

import time

from bench.hardware.devices import is_cuda
from bench.strategies import process_group
from bench.strategies.base import RankContext, Strategy
from reference_model import TrainState


class DDP(Strategy):
    launcher = "torchrun"
    multi_node = True

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        return process_group.backend_unavailable_reason(device_type)

    def setup(self, ctx: RankContext) -> None:
        process_group.join(ctx)

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        from torch.nn.parallel import DistributedDataParallel

        # The optimizer keeps working on the same parameter tensors: DDP wraps, it does not copy.
        # DDP broadcasts rank 0's parameters on construction; gradients are averaged in backward.
        device_ids = [ctx.device] if is_cuda(ctx.device.type) else None
        state.model = DistributedDataParallel(state.model, device_ids=device_ids)
        return state

    def delay_communication(self, state: TrainState, seconds: float) -> None:
        import torch.distributed as dist
        from torch.profiler import record_function

        def delayed_allreduce(process_group, bucket):
            # DDP's default (all-reduce, then average), finishing later: the wait runs in the future's
            # callback on the collective's side (gloo's thread), so backward goes on meanwhile as over a slow link.
            group = process_group or dist.group.WORLD
            future = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()

            def late(done):
                with record_function("c10d::injected_delay"):  # the profiler counts it as communication
                    time.sleep(seconds)
                return done.value()[0].div_(dist.get_world_size(group))

            return future.then(late)

        state.model.register_comm_hook(None, delayed_allreduce)

    def barrier(self, ctx: RankContext) -> None:
        process_group.barrier()

    def teardown(self, ctx: RankContext) -> None:
        process_group.leave()
