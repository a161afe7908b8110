"""Allocation accounting of one training step on the dispatch hooks torch provides.

``Ledger`` is a TorchDispatchMode that sees every tensor an operator returns, keeps each distinct
storage alive in its books until Python frees it (weakref.finalize on the storage), and remembers the
live set at the high-water mark. The books key each storage by a serial number of its own, never by
``id()``: CPython reuses a freed object's id, so a temporary freed early in the step and a gradient
made later could share one, and the temporary was then counted as a gradient at the moments it lived
(how often depended on the allocator's layout: about one process in three mis-sized FSDP). It works on fake tensors (FakeTensorMode: nothing is allocated, the
sizes are exact) and on real ones (then ``limit_bytes`` makes an over-limit step raise
torch.OutOfMemoryError, the stand-in for device memory on a CPU).

Why our own and not torch.distributed._tools.mem_tracker.MemTracker: MemTracker refuses a second
tracked call of the same modules and files activations under the module whose forward was running,
while the breakdown here needs the phase of the step (forward, backward, optimizer) and which tensors
ended up as gradients, and an enforceable limit.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

PHASES = ("before", "forward", "backward", "optimizer")


class Ledger(TorchDispatchMode):
    def __init__(self, limit_bytes: int | None = None, healthy_scalars: bool = False,
                 keep_history: bool = False) -> None:
        super().__init__()
        self.limit_bytes = limit_bytes
        # Fake tensors have no values: GradScaler's "any inf?" .item() is answered "none", as in a healthy step.
        self.healthy_scalars = healthy_scalars
        self.phase = "before"
        self.live: dict[int, tuple[int, str, str]] = {}  # storage serial -> (bytes, phase born, op name)
        self._serial_of: dict[int, int] = {}  # id() of each live tracked storage -> its serial
        self._serials = itertools.count()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_live: dict[int, tuple[int, str, str]] = {}
        self.peak_phase = "before"
        # Every moment's live set: a strategy that shards some parts moves the high-water mark elsewhere
        # (FSDP: from the end of backward to the activations' peak), so the prediction needs all of them.
        self.history: list[tuple[str, dict]] | None = [] if keep_history else None
        self.weight_ids: set[int] = set()  # serials of the parameters' storages, for telling autocast copies apart

    def adopt(self, tensors, phase: str = "before") -> None:
        """Count tensors that already exist (parameters, data) as live from now on."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, phase, "existing")
        self._check_peak()

    def _track(self, tensor: torch.Tensor, phase: str, op: str) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return  # sparse or other storage-less tensors: none in this workload
        key = id(storage)
        if key in self._serial_of:
            return
        serial = next(self._serials)
        nbytes = storage.nbytes()
        self._serial_of[key] = serial
        self.live[serial] = (nbytes, phase, op)
        self.live_bytes += nbytes
        weakref.finalize(storage, self._release, key, serial, nbytes)

    def _release(self, key: int, serial: int, nbytes: int) -> None:
        if self._serial_of.get(key) == serial:
            del self._serial_of[key]
        if self.live.pop(serial, None) is not None:
            self.live_bytes -= nbytes

    def _check_peak(self) -> None:
        if self.history is not None:
            self.history.append((self.phase, dict(self.live)))
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_live = dict(self.live)
            self.peak_phase = self.phase
        if self.limit_bytes is not None and self.live_bytes > self.limit_bytes:
            raise torch.OutOfMemoryError(
                f"out of memory: the step needs more than the {self.limit_bytes} bytes allowed "
                f"(--max-memory); {self.live_bytes} bytes live in {self.phase}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.healthy_scalars and func is torch.ops.aten._local_scalar_dense.default:
            return 0
        out = func(*args, **(kwargs or {}))
        op = func.__name__
        if func is torch.ops.aten._to_copy.default and self._is_weight(args[0]):
            op = "weight_copy"  # autocast's low-precision copy of a parameter
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, self.phase, op)
        self._check_peak()
        return out

    def _is_weight(self, tensor) -> bool:
        return isinstance(tensor, torch.Tensor) and self._serial_of.get(id(tensor.untyped_storage())) in self.weight_ids

    def storage_ids(self, tensors) -> set[int]:
        """The serials of the live tracked storages of ``tensors`` (the keys of ``live``); untracked ones are left out."""
        serials = (self._serial_of.get(id(t.untyped_storage())) for t in tensors if isinstance(t, torch.Tensor))
        return {serial for serial in serials if serial is not None}
