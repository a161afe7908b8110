"""What the hardware did while a case trained: NVML sampling of its GPUs, the host process tree,
RAPL energy, and the flags that follow from them. See docs/telemetry.md."""

from __future__ import annotations

from bench.telemetry.flags import telemetry_flags
from bench.telemetry.nvml import DeviceRef
from bench.telemetry.sampler import DEFAULT_INTERVAL_S, Sampler

__all__ = ["DEFAULT_INTERVAL_S", "DeviceRef", "Sampler", "telemetry_flags"]
