"""The memory of one training step on one device, broken down by what holds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpusizer_common.device_type import is_cuda

# The parts every method reports; strategies add their own (buckets, all-gather buffers, ...).
BASE_PARTS = ("parameters", "gradients", "optimizer_state", "activations", "autocast_weight_copies",
              "temporaries", "data")
METHODS = ("trace", "formula")
# Predicted parts that the CPU accounting of a real step (sizing/accounting.py) cannot see at all: Horovod's
# C++ core allocates its fusion buffer outside torch's dispatcher. The benchmark's error leaves them out of
# the predicted side, like with like (with the 64 MiB fusion buffer in, a tiny horovod case read +15,600 %),
# and the report says so beside that error.
UNSEEN_BY_ACCOUNTING = {"horovod": ("horovod_fusion_buffer",)}


def unseen_by_accounting(strategy: str, device_type: str, parts_bytes: dict) -> dict:
    """The predicted parts, by name, that the measured side of a case cannot hold: none on a GPU, whose
    allocator sees every byte."""
    if is_cuda(device_type):
        return {}
    return {part: parts_bytes[part] for part in UNSEEN_BY_ACCOUNTING.get(strategy, ()) if part in parts_bytes}


@dataclass(frozen=True)
class StepMemory:
    """Bytes live on one device at the step's high-water mark, by part."""

    method: str
    parts_bytes: dict = field(default_factory=dict)
    peak_phase: str = "backward"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"StepMemory.method: {self.method!r}; allowed: {', '.join(METHODS)}")
        for name, value in self.parts_bytes.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"StepMemory.parts_bytes[{name!r}]: {value!r}; allowed: an integer >= 0")

    @property
    def peak_bytes(self) -> int:
        return sum(self.parts_bytes.values())

    def with_parts(self, **changes: int) -> StepMemory:
        return StepMemory(self.method, {**self.parts_bytes, **changes}, self.peak_phase)


@dataclass(frozen=True)
class StepTimeline:
    """The step's memory at each moment that may be its high-water mark, by part."""

    method: str
    moments: tuple = ()  # of StepMemory

    def __post_init__(self) -> None:
        if not self.moments or not all(isinstance(m, StepMemory) for m in self.moments):
            raise ValueError("StepTimeline.moments: needs at least one StepMemory")
        # A strategy scales parts down or adds to them, never makes a part negative: a moment with no
        # part above another moment's can never be the peak. Dropping those keeps predict() cheap.
        object.__setattr__(self, "moments", _undominated(self.moments))

    def peak(self, transform=lambda moment: moment) -> StepMemory:
        """The largest moment after ``transform`` (a strategy's effect on one device)."""
        return max((transform(moment) for moment in self.moments), key=lambda m: m.peak_bytes)


def _undominated(moments: tuple) -> tuple:
    kept: list[StepMemory] = []
    for moment in sorted(moments, key=lambda m: m.peak_bytes, reverse=True):
        parts = moment.parts_bytes
        if not any(all(parts.get(k, 0) <= other.parts_bytes.get(k, 0) for k in parts) for other in kept):
            kept.append(moment)
    return tuple(kept)
