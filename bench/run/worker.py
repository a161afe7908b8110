"""One rank's training loop: builds the wrapped model and its data once, then runs timed rounds.

Used inside every rank process (bench/launch/worker_main.py), whichever launcher started it, so every
strategy times exactly the same loop in the same kind of process.
"""

from __future__ import annotations

import time

import torch

from bench.config.cases import BenchCase
from bench.hardware.allocator import this_process as allocator_this_process
from bench.hardware.devices import is_cuda, set_current_cuda_device, synchronize, threads_per_rank
from bench.run.memory import peak_memory_per_device, reset_peak_memory
from bench.run.step_profile import profiled_round
from bench.strategies import REGISTRY, RankContext
from reference_model import Precision, TrainState, build_model, make_optimizer, train_step
from sizing.accounting import Ledger
from sizing.trace import run_accounted_step


class TrainingWorker:
    def __init__(self, case: BenchCase, rank: int = 0, local_rank: int = 0, *, join: bool = True,
                 comm_delay_s: float = 0.0) -> None:
        """``join=False``: the process already belongs to the strategy's group (a launched group kept
        up for the next case of its strategy and world size); only the model, optimizer and data are new.
        ``comm_delay_s``: the test hook's slower all-reduce (GPUSIZER_FAULT comm:delay, worker_main.py)."""
        self.case = case
        self.strategy = REGISTRY[case.strategy]
        # This process's share of the cores, on GPU as on CPU (dp's one process gets them all).
        torch.set_num_threads(threads_per_rank(case.device_type, self.strategy.processes(case.world_size)))
        self.threads = torch.get_num_threads()  # what this rank's torch then uses, as it reports it
        device = self.strategy.rank_device(case.device_type, local_rank)
        set_current_cuda_device(device)
        self.ctx = RankContext(rank=rank, local_rank=local_rank, world_size=case.world_size, device=device)
        if join:
            self.strategy.setup(self.ctx)
        self.precision = Precision(case.precision, case.device_type)
        self._matmul_mode = self.precision.matmul_mode()
        self._matmul_mode.__enter__()
        try:
            model = build_model(case.model_config, seed=case.seed, device=device)
            state = TrainState(model, make_optimizer(model), self.precision, self.precision.make_grad_scaler())
            self.state = self.strategy.wrap(state, self.ctx)
            if comm_delay_s > 0:
                self.strategy.delay_communication(self.state, comm_delay_s)
            self.batches = self.strategy.rank_batches(case.model_config, case.per_device_batch_size,
                                                      seed=case.seed, ctx=self.ctx)
        except BaseException:
            # Out of memory while building (or anything else): the global matmul mode must not outlive
            # this failed set-up (a --find-max-batch try goes on in the same rank).
            self.state = self.batches = None
            self._matmul_mode.__exit__(None, None, None)
            raise
        # After build, wrap (FSDP: shard) and data: the peak is what training needs (bench/run/memory.py).
        self.devices = self.strategy.rank_devices(self.ctx)
        reset_peak_memory(self.devices)
        self.steps_done = 0

    def run_round(self, steps: int) -> float:
        """Run ``steps`` training steps and return this rank's own seconds for them, device-synchronised."""
        device = self.ctx.device
        if is_cuda(device.type):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self._steps(steps)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        synchronize(device)
        began = time.perf_counter()
        self._steps(steps)
        return time.perf_counter() - began

    def _steps(self, steps: int) -> None:
        batches, count = self.batches, len(self.batches)
        for _ in range(steps):
            train_step(self.state, *batches[self.steps_done % count])
            self.steps_done += 1

    def profiled_round(self, steps: int) -> dict:
        """One more round of ``steps`` steps under torch.profiler (never a timed one): this rank's step split
        into compute, exposed and overlapped communication, other and idle (bench/run/step_profile.py)."""
        # What a strategy's communication hides from the profiler is a CPU matter (Horovod's all-reduces on its
        # own thread); on a GPU the profiler records every kernel of the process, NCCL's included.
        unseen = "" if is_cuda(self.ctx.device.type) else self.strategy.comm_unseen
        parts = profiled_round(self._steps, steps, self.ctx.device, rank=self.ctx.rank, comm_seen=unseen,
                               start_together=lambda: self.strategy.barrier(self.ctx))
        if unseen:  # the profiler cannot see what overlaps: not measured rather than 0
            parts["overlapped_comm_s"] = None
        return parts

    def peak_memory_bytes(self) -> int:
        return max(peak_memory_per_device(self.devices))

    def accounted_step_peak_bytes(self, limit_bytes: int | None = None) -> int:
        """One more real train_step under the Ledger (sizing/accounting.py): the peak bytes of the tensors
        live in it. Over ``limit_bytes`` it raises torch.OutOfMemoryError, the CPU's stand-in for device
        memory. Collective strategies (ddp, fsdp) need every rank to run it together."""
        ledger = Ledger(limit_bytes=limit_bytes, follow_resizes=True)
        data = [t for pair in self.batches for t in pair]
        run_accounted_step(self.state, *self.batches[self.steps_done % len(self.batches)], ledger=ledger, data=data)
        self.steps_done += 1
        return ledger.peak_bytes

    def facts(self) -> dict:
        """Record keys measured in this rank (docs/record.md): every device's peak, and the strategy's own."""
        return {"peak_memory_bytes_per_device": peak_memory_per_device(self.devices),
                # As this rank's own environment has it: proof the launcher passed it on (or the user's).
                "host_allocator": allocator_this_process(),
                **self.strategy.rank_facts(self.state)}

    def reset_peak_memory(self) -> None:
        """Start the peak count afresh (after --verify's extra work, which is not the case's training)."""
        reset_peak_memory(self.devices)

    def full_parameters(self) -> list[torch.Tensor]:
        """The full (unsharded) parameters on the CPU, for the correctness check."""
        return self.strategy.full_parameters(self.state)

    def release(self) -> None:
        """Drop this case's model, optimizer and batches and its matmul mode; the process group stays.
        Idempotent (a kept group's ranks release at the end of a case, close releases again)."""
        self.state = None
        self.batches = None
        if self._matmul_mode is not None:
            self._matmul_mode.__exit__(None, None, None)
            self._matmul_mode = None

    def close(self) -> None:
        # Model and optimizer go first: DDP and FSDP hold the process group that teardown destroys.
        self.release()
        self.strategy.teardown(self.ctx)
