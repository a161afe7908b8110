"""Run the one rank inside the pytest process: ``single`` and ``dp`` (which drives every GPU from one process)."""

from __future__ import annotations

from bench.cases import BenchCase
from bench.launch.worker_main import case_faults
from bench.memory import release_cached_memory
from bench.worker import TrainingWorker


class InProcessGroup:
    def __init__(self, case: BenchCase) -> None:
        self._worker = TrainingWorker(case)
        self.launch_s = 0.0  # nothing is launched; building the model and data is set-up, not launch
        self.threads_per_rank = self._worker.threads
        # The test hook: only an injected out-of-memory; a crash or hang here would end the whole run.
        self._faults = [fault for fault in case_faults(case.case_id) if fault.kind == "oom"]
        self._rounds = 0

    @property
    def pids(self) -> list[int]:
        return []  # the rank is the pytest process, which telemetry counts anyway

    def run_round(self, steps: int) -> list[float]:
        self._rounds += 1
        for fault in self._faults:
            fault.fire_if_due(0, self._rounds)
        return [self._worker.run_round(steps)]

    def reset_peak_memory(self) -> None:
        self._worker.reset_peak_memory()

    def peak_memory_bytes(self) -> int:
        return self._worker.peak_memory_bytes()

    def parameters(self) -> list:
        return self._worker.parameters_snapshot()

    def facts(self) -> dict:
        return self._worker.facts()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
            # Nothing of the case may stay alive in the pytest process: the next case's torchrun ranks
            # use the same GPUs (dp-8 of `xl` would otherwise leave ~42 GB cached on GPU 0).
            release_cached_memory()


def launch_inprocess(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> InProcessGroup:
    return InProcessGroup(case)
