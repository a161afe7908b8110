"""Numeric precisions: what each needs from the device, and how a step uses it."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from gpusizer_common.cpuinfo import cpuinfo_values
from gpusizer_common.device_type import is_cuda

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}

# CPU instruction-set flags (as /proc/cpuinfo names them) that give a precision native matmuls.
_CPU_NATIVE_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; the first CPU's line); empty where /proc/cpuinfo is not readable."""
    flags = cpuinfo_values("flags")
    return frozenset(flags[0].split()) if flags else frozenset()


def unsupported_reason(precision: str, device_type: str) -> str | None:
    """Why ``precision`` cannot run on this device, or None when it can."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}"
    if device_type == "cpu":
        if precision == "tf32":
            return "tf32 is a tensor-core format: it needs an NVIDIA GPU of compute capability >= 8.0"
        native = _CPU_NATIVE_FLAGS.get(precision)
        if native and not (native & cpu_flags()):
            # Without these units torch emulates the format: measured here, fp16 ran ~30x slower
            # than fp32, which says nothing about training speed anyone would choose.
            return (
                f"{precision} has no native support on this CPU (needs one of the flags "
                f"{', '.join(sorted(native))}); emulated it is not a meaningful benchmark"
            )
        return None
    if is_cuda(device_type):
        major, _ = torch.cuda.get_device_capability()
        if precision == "tf32" and major < 8:
            return f"tf32 needs compute capability >= 8.0; this GPU has {major}.x"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "bf16 is not supported by this GPU (needs compute capability >= 8.0)"
        return None
    return f"unknown device type {device_type!r}; allowed: cpu, cuda"


@dataclass(frozen=True)
class Precision:
    """How a training step runs at one precision on one device type."""

    name: str
    device_type: str

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(f"Precision.name must be one of {', '.join(PRECISIONS)}, got {self.name!r}")
        if self.device_type not in ("cpu", "cuda"):
            raise ValueError(f"Precision.device_type must be cpu or cuda, got {self.device_type!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPE.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    @contextlib.contextmanager
    def matmul_mode(self):
        """tf32 is a global switch in torch; set it for the run and restore it afterwards."""
        if not is_cuda(self.device_type):
            yield
            return
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        allow = self.name == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
