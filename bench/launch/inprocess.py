"""Run the one rank inside the pytest process: ``single`` and ``dp`` (which drives every GPU from one process)."""

from __future__ import annotations

import time

from bench.cases import BenchCase
from bench.worker import TrainingWorker


class InProcessGroup:
    def __init__(self, case: BenchCase) -> None:
        began = time.perf_counter()
        self._worker = TrainingWorker(case)
        # Nothing is launched; building the model and data is set-up, not launch.
        self.setup_s = time.perf_counter() - began
        self.launch_s = 0.0
        self.threads_per_rank = self._worker.threads

    def run_round(self, steps: int) -> list[float]:
        return [self._worker.run_round(steps)]

    def peak_memory_bytes(self) -> int:
        return self._worker.peak_memory_bytes()

    @property
    def accounting_worker(self) -> TrainingWorker | None:
        # The rank itself, for the step-memory accounting of bench/memory_model.py (CPU).
        return self._worker

    def parameters(self) -> list:
        return self._worker.parameters_snapshot()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def launch_inprocess(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> InProcessGroup:
    return InProcessGroup(case)
