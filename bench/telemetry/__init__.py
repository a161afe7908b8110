"""What the hardware did while a case trained. Minimal CPU summary for now; NVML arrives with the telemetry work."""

from __future__ import annotations

import time


class Sampler:
    """Started right before the measured rounds and stopped right after, even when a round fails."""

    def __init__(self, device_type: str, device_indices: list[int]) -> None:
        self.device_type = device_type
        self.device_indices = device_indices
        self._began = None
        self.duration_s = 0.0

    def start(self) -> "Sampler":
        self._began = time.perf_counter()
        return self

    def stop(self) -> None:
        if self._began is not None:
            self.duration_s = time.perf_counter() - self._began
            self._began = None

    def summary(self, *, samples_trained: int, peak_memory_bytes: int) -> dict:
        return {
            "source": "cpu",
            "interval_s": None,
            "samples": 0,
            "devices": [],
            "cpu": {"peak_rss_bytes": peak_memory_bytes, "energy_j": None,
                    "energy_reason": "energy measurement not implemented yet"},
            "energy_j": None,
            "joules_per_sample": None,
        }

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
