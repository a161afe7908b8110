"""``horovod``: ``hvd.DistributedOptimizer`` with parameter and optimizer-state broadcast, launched with horovodrun.

Gloo on CPU; on GPU the collectives use NCCL when Horovod was built with it (scripts/install-horovod.sh
builds it so where nvcc is present).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from bench.hardware.devices import is_cuda, set_current_cuda_device
from bench.strategies.base import RankContext, Strategy
from reference_model import TrainState

INSTALL_HINT = "run `make horovod` (PYTHON=.venv/bin/python scripts/install-horovod.sh)"


def horovodrun_path() -> Path:
    """The horovodrun installed beside this interpreter (the venv's bin), not whatever PATH finds first.
    Here rather than in bench/launch/horovodrun.py: the launcher imports the strategies, not the reverse."""
    return Path(sys.executable).parent / "horovodrun"


def _accepting_set_to_none(horovod_zero_grad):
    """Horovod 0.28's zero_grad() predates the set_to_none keyword the shared train step passes; its
    parent's default already sets gradients to None, which is what the step asks for."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            raise ValueError("horovod: zero_grad(set_to_none=False) is not supported by Horovod's optimizer")
        horovod_zero_grad(self)

    return zero_grad


def _marked_synchronize(horovod_synchronize):
    """Horovod all-reduces on a thread of its own, outside torch's dispatcher, so torch.profiler sees none
    of it; the wait for it in the optimizer's step is what it can see, marked here as communication."""

    def synchronize(self):
        from torch.profiler import record_function

        with record_function("horovod::synchronize"):
            return horovod_synchronize(self)

    return synchronize


class Horovod(Strategy):
    launcher = "horovodrun"
    multi_node = True
    # On CPU only (bench/run/worker.py): on a GPU its NCCL kernels are in the trace like any other kernel.
    comm_unseen = ("Horovod: only the wait in its optimizer's synchronize() (marked horovod::synchronize); the "
                   "all-reduces its own thread runs during backward are not seen, so overlapped communication "
                   "is not measured (null)")

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        if importlib.util.find_spec("horovod") is None:
            return f"Horovod is not installed: {INSTALL_HINT}"
        if not os.access(horovodrun_path(), os.X_OK):
            return f"horovodrun is missing beside {horovodrun_path().parent}/python: {INSTALL_HINT}"
        if is_cuda(device_type):
            import horovod.torch as hvd  # loads the extension only; no process group, no CUDA context

            if not hvd.nccl_built():
                return (f"this Horovod was built without NCCL, so it cannot all-reduce GPU tensors; rebuild it "
                        f"on a machine with nvcc: {INSTALL_HINT}")
        if precision == "fp16":
            # GradScaler would unscale gradients while Horovod's allreduce still writes them; the
            # shared train step has no optimizer.synchronize() before unscale_, so the result would be wrong.
            return "horovod with fp16 loss scaling needs optimizer.synchronize() before unscaling; not supported"
        return None

    def setup(self, ctx: RankContext) -> None:
        import horovod.torch as hvd

        hvd.init()
        if (hvd.rank(), hvd.size()) != (ctx.rank, ctx.world_size):
            raise RuntimeError(f"horovod sees rank {hvd.rank()} of {hvd.size()}, the launcher said "
                               f"{ctx.rank} of {ctx.world_size}")
        set_current_cuda_device(ctx.device)

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        import horovod.torch as hvd

        optimizer = hvd.DistributedOptimizer(state.optimizer, named_parameters=state.model.named_parameters())
        # DistributedOptimizer builds a class of its own for this optimizer, so patching it touches nothing else.
        type(optimizer).zero_grad = _accepting_set_to_none(type(optimizer).zero_grad)
        type(optimizer).synchronize = _marked_synchronize(type(optimizer).synchronize)
        hvd.broadcast_parameters(state.model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        state.optimizer = optimizer
        return state

    def barrier(self, ctx: RankContext) -> None:
        import horovod.torch as hvd

        hvd.barrier()

    def teardown(self, ctx: RankContext) -> None:
        import horovod.torch as hvd

        hvd.shutdown()
