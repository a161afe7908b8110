"""torch.distributed process-group helpers shared by the torchrun strategies (ddp, fsdp).

torchrun sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE; the group joins with the ``env://`` method.
"""

from __future__ import annotations

from datetime import timedelta

import torch

from bench.hardware.devices import is_cuda
from bench.strategies.base import RankContext

# Collectives that wait longer than this abort the rank. The controller's round deadline normally
# fires first; this is the backstop for a rank whose controller is gone.
COLLECTIVE_TIMEOUT = timedelta(minutes=15)


def backend_for(device_type: str) -> str:
    return "nccl" if is_cuda(device_type) else "gloo"


def backend_unavailable_reason(device_type: str) -> str | None:
    import torch.distributed as dist

    if not dist.is_available():
        return f"this torch ({torch.__version__}) is built without torch.distributed; install a standard torch build"
    backend = backend_for(device_type)
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        return f"this torch ({torch.__version__}) has no {backend} backend; install a standard torch build"
    return None


def join(ctx: RankContext) -> None:
    import torch.distributed as dist

    kwargs = {"device_id": ctx.device} if is_cuda(ctx.device.type) else {}
    dist.init_process_group(backend_for(ctx.device.type), rank=ctx.rank, world_size=ctx.world_size,
                            timeout=COLLECTIVE_TIMEOUT, **kwargs)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
