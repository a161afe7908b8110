"""Run the one rank inside the pytest process: ``single`` and ``dp`` (which drives every GPU from one process).

The rounds run on a training thread of the case's own so that ``--round-timeout-s`` holds here too: a round that
never ends (a stuck kernel, a deadlock) cannot be interrupted from outside, so at the deadline the
case fails as hung, naming where the training thread is, and the thread is abandoned with all of the
case's state. Nothing of it is reused: the next case builds a fresh TrainingWorker; the process-wide
switches the abandoned one had set are put back.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback

from bench.config.cases import BenchCase
from bench.hardware.devices import is_cuda
from bench.launch.remote import WorkerError
from bench.launch.worker_main import Fault, case_faults
from bench.run.memory import release_cached_memory
from bench.run.worker import TrainingWorker

# Abandoned training threads (daemons: they do not hold up the exit). Kept so a later case or a
# test can see that the process carries one; their cases' state is never touched again.
ABANDONED: list[threading.Thread] = []
_fault_fired = False  # in-process, the test hook fires once per pytest process (see _fire_fault)


def _fire_faults(faults: list[Fault], round_number: int) -> None:
    """GPUSIZER_FAULT (worker_main's test hook) for rank 0 in-process, in the training thread: ``oom``
    raises torch.OutOfMemoryError in every case it names (the plain form: every case); ``hang`` sleeps
    forever and ``raise`` raises. A plain-form ``hang``/``raise`` fires in the first in-process case
    reaching round N only, so the run's later cases show that it goes on; ``crash`` is never fired
    here (it would kill pytest)."""
    global _fault_fired
    for fault in faults:
        if fault.kind == "crash" or fault.rank != 0 or fault.round != round_number:
            continue
        if fault.kind in ("hang", "raise") and fault.case_id is None:
            if _fault_fired:
                continue
            _fault_fired = True
        fault.fire_if_due(0, round_number)


class _TrainingThread(threading.Thread):
    """The case's one training thread: runs each round it is handed. One thread for the whole case, so
    its per-thread CUDA state (current device, cuBLAS handle) is set up once, outside the rounds."""

    def __init__(self, worker: TrainingWorker, name: str, faults: list[Fault]) -> None:
        super().__init__(name=name, daemon=True)
        self.worker = worker
        self.faults = faults
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Event()
        self.round_number = 0
        self.seconds: float | None = None
        self.error: BaseException | None = None

    def request(self, steps: int, round_number: int) -> None:
        self.round_number, self.seconds, self.error = round_number, None, None
        self._done.clear()
        self._requests.put(steps)

    def wait(self, timeout_s: float | None) -> bool:
        return self._done.wait(timeout_s)

    def stop(self) -> None:
        self._requests.put(None)

    def run(self) -> None:
        device = self.worker.ctx.device
        if is_cuda(device.type):
            import torch

            torch.cuda.set_device(device)  # the current device is per thread
        while (steps := self._requests.get()) is not None:
            try:
                _fire_faults(self.faults, self.round_number)
                self.seconds = self.worker.run_round(steps)
            except BaseException as error:  # noqa: BLE001 - re-raised in the controller's thread
                self.error = error
            self._done.set()


def thread_stack(thread: threading.Thread) -> list[traceback.FrameSummary]:
    frame = sys._current_frames().get(thread.ident)
    return traceback.extract_stack(frame) if frame is not None else []


class InProcessGroup:
    def __init__(self, case: BenchCase, round_timeout_s: float | None = None) -> None:
        self.case = case
        self.round_timeout_s = round_timeout_s
        self._worker = TrainingWorker(case)
        self.launch_s = 0.0  # nothing is launched; building the model and data is set-up, not launch
        self.threads_per_rank = self._worker.threads
        self.rounds_started = 0
        self._thread = _TrainingThread(self._worker, name=f"gpusizer-train-{case.case_id}",
                                      faults=case_faults(case.case_id))
        self._thread.start()

    @property
    def pids(self) -> list[int]:
        return []  # the rank is the pytest process, which telemetry counts anyway

    def run_round(self, steps: int) -> list[float]:
        if self._worker is None:
            raise WorkerError(f"{self.case.case_id}: the training state was abandoned after a hung round")
        self.rounds_started += 1
        round_thread = self._thread
        round_thread.request(steps, self.rounds_started)
        try:
            finished = round_thread.wait(self.round_timeout_s)
        except KeyboardInterrupt:
            # Ctrl-C, SIGTERM, SIGHUP reach this (main) thread only: the round runs on, so its state is
            # left to it rather than torn down under it; the process is about to end anyway.
            self._release(round_thread)
            raise
        if not finished:
            self._abandon(round_thread)
        if round_thread.error is not None:
            raise round_thread.error
        return [round_thread.seconds]

    def _abandon(self, round_thread: _TrainingThread) -> None:
        """The round is past its deadline: fail the case as hung, naming the training thread's frame."""
        stack = thread_stack(round_thread)
        self._release(round_thread)
        print(f"--- stack of the hung training thread ({round_thread.name}, round {self.rounds_started}) ---",
              file=sys.stderr)
        print("".join(traceback.format_list(stack)), file=sys.stderr)
        where = (f"{stack[-1].name} ({os.path.basename(stack[-1].filename)}:{stack[-1].lineno})"
                 if stack else "unknown code")
        raise WorkerError(f"{self.case.case_id}: hung: no answer in round {self.rounds_started} "
                          f"(--round-timeout-s {self.round_timeout_s:g}); training thread in {where}; "
                          "its state is abandoned, later cases start afresh")

    def _release(self, round_thread: _TrainingThread) -> None:
        """Leave the case's state to a round thread that did not end; never touch it again."""
        worker, self._worker = self._worker, None
        ABANDONED.append(round_thread)
        # tf32 is a process-wide switch the case set; later cases must start from the usual setting.
        # Nothing else of the abandoned state is touched: the thread may still be using it.
        mode = getattr(worker, "_matmul_mode", None)
        if mode is not None:
            mode.__exit__(None, None, None)

    def reset_peak_memory(self) -> None:
        self._worker.reset_peak_memory()

    def peak_memory_bytes(self) -> int:
        return self._worker.peak_memory_bytes()

    def accounted_step_peak_bytes(self) -> int:
        """One more step of the rank under the Ledger (bench/record/memory_model.py, CPU); in this
        thread, not the training thread: the timed rounds are over."""
        return self._worker.accounted_step_peak_bytes()

    def full_parameters(self) -> list:
        return self._worker.full_parameters()

    def facts(self) -> dict:
        return self._worker.facts()

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._thread.stop()  # idle between rounds: it ends at once
            self._thread.join(timeout=10.0)
            self._thread.worker = None
            self._worker.close()
            self._worker = None
            # Nothing of the case may stay alive in the pytest process: the next case's torchrun ranks
            # use the same GPUs (dp-8 of `xl` would otherwise leave ~42 GB cached on GPU 0).
            release_cached_memory()


def launch_inprocess(case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> InProcessGroup:
    return InProcessGroup(case, round_timeout_s=round_timeout_s)
