"""What a launcher gives the controller: a group of ranks that run rounds on command."""

from __future__ import annotations

from typing import Protocol

from bench.config.cases import BenchCase


class WorkerGroup(Protocol):
    """Ranks started once per case. ``launch_s`` is measured by the launcher, outside any round."""

    launch_s: float
    threads_per_rank: int

    @property
    def pids(self) -> list[int]:
        """The rank processes on this machine, in rank order (for telemetry and the record's worker_pids)."""

    def run_round(self, steps: int) -> list[float]:
        """Every rank runs ``steps`` steps; returns each rank's own seconds, in rank order."""

    def peak_memory_bytes(self) -> int:
        """Max over ranks."""

    def reset_peak_memory(self) -> None:
        """Every rank starts its peak-memory count afresh."""

    def full_parameters(self) -> list:
        """Rank 0's full parameters as CPU tensors (for the correctness check)."""

    def profiled_rounds(self, steps: int) -> list[dict]:
        """Every rank runs one more round of ``steps`` steps under torch.profiler (after the timed rounds);
        each rank's step parts in rank order, or ``{"reason": ...}`` where it could not split its trace."""

    def close(self) -> None:
        """Stop every rank and reap its process; safe to call twice."""


class Launcher(Protocol):
    def __call__(self, case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> WorkerGroup: ...
