"""How the reference model is sharded with FSDP2: one shard group per Linear, then the root, under the
precision's MixedPrecisionPolicy.

bench/strategies/fsdp.py shards its real ranks with ``shard_model`` and sizing/fsdp_trace.py its fake
ones, so the trace shards exactly what the benchmark runs.
"""

from __future__ import annotations

import torch
from torch import nn

from reference_model import Precision

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


def shard_model(model: nn.Sequential, precision: str, mesh=None) -> None:
    """``fully_shard`` ``model`` in place over ``mesh`` (None: the default process group's world).

    One shard group per Linear, so each layer's all-gather overlaps the previous layer's compute, then
    the root for what is left. Parameters become DTensors: an optimizer must be made afresh. Without a
    policy FSDP gathers and reduces in fp32 even when the step autocasts to bf16/fp16.
    """
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision_policy(precision)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
