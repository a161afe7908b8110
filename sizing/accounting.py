"""Allocation accounting of one training step on the dispatch hooks torch provides.

``Ledger`` is a TorchDispatchMode that sees every tensor an operator returns, keeps each distinct
storage alive in its books until Python frees it (weakref.finalize on the storage), and remembers the
live set at the high-water mark. The books key each storage by a serial number of its own, never by
``id()``: CPython reuses a freed object's id, so a temporary freed early in the step and a gradient
made later could share one, and the temporary was then counted as a gradient at the moments it lived
(how often depended on the allocator's layout: about one process in three mis-sized FSDP). It works on fake tensors (FakeTensorMode: nothing is allocated, the
sizes are exact) and on real ones (then ``limit_bytes`` makes an over-limit step raise
torch.OutOfMemoryError, the stand-in for device memory on a CPU). On FSDP ranks, real (launched) or
fake (sizing/fsdp_trace.py): a wrapper subclass (FSDP2's DTensor) is counted by its local tensor, and
``follow_resizes`` follows the storages FSDP2 frees and re-allocates in place. What no dispatched operator
returns is not seen: DDP's gradient buckets until the reducer writes into them, Horovod's fusion buffer.
``labels`` names storages by what they are (a subclass's choice) where the phase they were born in would not.

Why our own and not torch.distributed._tools.mem_tracker.MemTracker: MemTracker refuses a second
tracked call of the same modules and files activations under the module whose forward was running,
while the breakdown here needs the phase of the step (forward, backward, optimizer) and which tensors
ended up as gradients, and an enforceable limit.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten

PHASES = ("before", "forward", "backward", "optimizer")


class Ledger(TorchDispatchMode):
    def __init__(self, limit_bytes: int | None = None, healthy_scalars: bool = False,
                 keep_history: bool = False, follow_resizes: bool = False) -> None:
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
        # FSDP2 frees an unsharded parameter or gradient by resizing its storage to 0 and allocates it
        # again by resizing it back (UntypedStorage.resize_, no dispatched op): with this on, every
        # live storage's size is read again at each moment (real tensors and fake ones alike: a fake
        # tensor's storage resizes too, which is how the FSDP trace, sizing/fsdp_trace.py, sees it).
        self.follow_resizes = follow_resizes
        self._storage_refs: dict[int, weakref.ref] = {}  # serial -> storage (follow_resizes only)
        # serial -> part, for storages named by what they are rather than when they were born (a subclass
        # names FSDP2's buffers by the operator that fills them); kept after the storage is freed.
        self.labels: dict[int, str] = {}

    def adopt(self, tensors, phase: str = "before") -> None:
        """Count tensors that already exist (parameters, data) as live from now on."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, phase, "existing")
        self._check_peak()

    def _track(self, tensor: torch.Tensor, phase: str, op: str) -> None:
        for storage in _storages(tensor):
            self._track_storage(storage, phase, op)

    def _track_storage(self, storage, phase: str, op: str) -> None:
        key = id(storage)
        if key in self._serial_of:
            return
        serial = next(self._serials)
        nbytes = storage.nbytes()
        self._serial_of[key] = serial
        self.live[serial] = (nbytes, phase, op)
        self.live_bytes += nbytes
        if self.follow_resizes:
            self._storage_refs[serial] = weakref.ref(storage)
        weakref.finalize(storage, self._release, key, serial)

    def _release(self, key: int, serial: int) -> None:
        if self._serial_of.get(key) == serial:
            del self._serial_of[key]
        entry = self.live.pop(serial, None)
        self._storage_refs.pop(serial, None)
        if entry is not None:
            self.live_bytes -= entry[0]

    def _reread_sizes(self) -> None:
        for key, ref in list(self._storage_refs.items()):
            storage = ref()
            nbytes, phase, op = self.live[key]
            if storage is not None and storage.nbytes() != nbytes:
                self.live[key] = (storage.nbytes(), phase, op)
                self.live_bytes += storage.nbytes() - nbytes

    def _check_peak(self) -> None:
        if self.follow_resizes:
            self._reread_sizes()
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
        return isinstance(tensor, torch.Tensor) and any(self._serial_of.get(id(s)) in self.weight_ids
                                                        for s in _storages(tensor))

    def label(self, tensors, part: str) -> None:
        """Name the live tracked storages of ``tensors`` as ``part``; the first name given stays."""
        for serial in self.storage_ids(tensors):
            self.labels.setdefault(serial, part)

    def storage_ids(self, tensors) -> set[int]:
        """The serials of the live tracked storages of ``tensors`` (the keys of ``live``); untracked ones are left out."""
        serials = (self._serial_of.get(id(s)) for t in tensors if isinstance(t, torch.Tensor) for s in _storages(t))
        return {serial for serial in serials if serial is not None}


def _storages(tensor: torch.Tensor) -> list:
    """The storages that hold ``tensor``'s bytes. A wrapper subclass (FSDP2's DTensor parameters and
    gradients) reports a storage of its logical, unsharded size that allocates nothing: what this rank
    holds is its inner local tensor, so that one is counted."""
    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        inner = (getattr(tensor, name) for name in names)  # DTensor names its device mesh too
        return [s for part in inner if isinstance(part, torch.Tensor) for s in _storages(part)]
    try:
        return [tensor.untyped_storage()]
    except (RuntimeError, NotImplementedError):
        return []  # sparse or other storage-less tensors: none in this workload
