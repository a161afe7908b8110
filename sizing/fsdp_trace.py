"""FSDP2 traced for real: the project's own ``train_step`` on the model sharded as the benchmark shards it,
at the workload's world size, on fake tensors over a fake process group, counted by the Ledger.

Nothing of FSDP is modelled here. ``fully_shard`` (sizing/sharding.py, the function bench/strategies/fsdp.py
wraps its ranks with) splits the parameters over a device mesh of ``world_size`` ranks; this process plays
rank 0, and torch's ``FakeProcessGroup`` answers every all-gather and reduce-scatter without communicating
(the results' sizes are exact, their values meaningless, and nothing here reads them). FSDP2 frees and
re-allocates its unsharded parameters by resizing their storages, which fake storages do too: the Ledger
follows them (``follow_resizes``). Its own buffers are named by the ``torch.ops.fsdp`` operator that fills
them (``FSDPLedger``): the all-gather buffers, the unsharded parameters, the unsharded gradients and the
reduce-scatter buffers each are a part of their own. Every rank holds the same sizes (even shards, padded
alike), so rank 0 is the busiest.

The process group: ``torch.distributed.init_process_group("fake")`` would make it this process's default
group, which a launched rank (or a pytest process) calling ``predict`` already has, and which nothing could
take back without breaking that rank. So the fake group is built beside it: a ``ProcessGroup`` with a
``FakeProcessGroup`` backend, registered under a name of its own (FSDP looks its mesh's group up by name)
and unregistered when the trace ends, and a ``DeviceMesh`` that names it and says this is rank 0 (a mesh
built the public way asks the default group for the rank). The default group, if any, is neither used nor
changed; tests/test_sizing.py traces beside one. The mesh is built outside FakeTensorMode (inside it, the
mesh's own rank arithmetic needs real values).

Fake tensors allocate nothing: the 3.5 B-parameter ``xl`` step traces in 0.5 to 1 s on a 2-core CPU at any
world size, a few times the single-process trace (FSDP's hooks and collectives are Python).
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from reference_model import ModelConfig, build_model
from sizing.accounting import Ledger
from sizing.sharding import shard_model
from sizing.step_memory import StepTimeline
from sizing.trace import fake_step_timeline

_group_serials = itertools.count()


class FSDPLedger(Ledger):
    """The Ledger, following FSDP2's storage resizes and naming its buffers by the operator that fills them:

    - ``aten::copy_(unsharded, shard)``: at world size 1 nothing is gathered; each shard (or, under a
      low-precision policy, its cast copy: buffer) is copied into the unsharded parameter;
    - ``fsdp::all_gather_copy_in(inputs, output)``: ``output`` is a layer's flat all-gather buffer (world size x
      its padded shard); ``inputs`` are the shards themselves (parameters) or, under a low-precision policy,
      their cast copy (buffer too);
    - ``fsdp::split_with_sizes_copy(buffer, out=...)``: ``out`` are the layer's unsharded parameters;
    - ``fsdp::chunk_cat(grads, out=...)``: ``grads`` are the layer's unsharded gradients, ``out`` the
      reduce-scatter input (in the reduce dtype). The reduce-scatter's output becomes the sharded gradient.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(follow_resizes=True, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        kwargs = kwargs or {}
        fsdp = torch.ops.fsdp
        if func is torch.ops.aten.copy_.default and self._is_shard(args[1]):
            self.label([args[0]], "fsdp_unsharded_parameters")
            self.label([args[1]], "fsdp_all_gather_buffers")
        elif func is fsdp.all_gather_copy_in.default:
            self.label([args[1], *args[0]], "fsdp_all_gather_buffers")
        elif func is fsdp.split_with_sizes_copy.default:
            self.label(kwargs["out"], "fsdp_unsharded_parameters")
        elif func is fsdp.chunk_cat.default:
            self.label(args[0], "fsdp_unsharded_gradients")
            self.label([kwargs["out"]], "fsdp_reduce_scatter_buffers")
        return out

    def _is_shard(self, tensor) -> bool:
        """A parameter's shard, or the low-precision cast of one."""
        return any(serial in self.weight_ids or self.live[serial][2] == "weight_copy"
                   for serial in self.storage_ids([tensor]))


class FakeGroupUnavailable(RuntimeError):
    """This torch lacks what the fake process group is built on (torch internals: another version)."""


@contextlib.contextmanager
def fake_device_mesh(world_size: int):
    """A 1-D DeviceMesh of ``world_size`` ranks over a fake process group, this process rank 0; the default
    process group, if this process has one, is neither needed nor touched. Raises FakeGroupUnavailable
    where this torch cannot build it (only that: an error of the trace itself is not hidden)."""
    name = f"gpusizer-fsdp-trace-{next(_group_serials)}"
    try:
        from torch._C._distributed_c10d import FakeProcessGroup, HashStore, ProcessGroup
        from torch.distributed import distributed_c10d as c10d
        from torch.distributed.device_mesh import DeviceMesh

        group = ProcessGroup(HashStore(), 0, world_size)
        group._set_default_backend(ProcessGroup.BackendType.CUSTOM)
        group._register_backend(torch.device("cpu"), ProcessGroup.BackendType.CUSTOM,
                                FakeProcessGroup._create_internal(0, world_size))
        group._set_group_name(name)
        c10d._register_process_group(name, group)
    except (ImportError, AttributeError, TypeError, RuntimeError) as error:
        raise FakeGroupUnavailable(f"{type(error).__name__}: {error}") from error
    try:
        try:
            mesh = DeviceMesh("cpu", torch.arange(world_size), _init_backend=False, _rank=0)
            mesh._dim_group_names = [name]
            mesh._pg_registry[name] = group
        except (AttributeError, TypeError) as error:
            raise FakeGroupUnavailable(f"{type(error).__name__}: {error}") from error
        yield mesh
    finally:
        c10d._unregister_process_group(name)


@functools.lru_cache(maxsize=256)
def trace_fsdp_step(config: ModelConfig, precision: str, batch_size: int, world_size: int) -> StepTimeline:
    """One FSDP rank's memory at every moment of its second train_step (``batch_size`` samples, the pool
    of synthetic batches resident), sharded over ``world_size`` ranks."""
    with torch.device("meta"):
        model = build_model(config, device="meta")
    with fake_device_mesh(world_size) as mesh:
        shard_model(model, precision, mesh)
        # Non-fake inputs allowed: to_empty makes each fake shard from its meta one (empty_like of a meta tensor).
        with FakeTensorMode(allow_non_fake_inputs=True):
            model.to_empty(device="cpu")
            return fake_step_timeline(model, config, precision, batch_size, FSDPLedger)
