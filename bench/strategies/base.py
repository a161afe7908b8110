"""The protocol every parallel strategy implements. One small class per strategy, no branching elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.hardware.devices import torch_device
from reference_model import ModelConfig, TrainState, make_batches


@dataclass(frozen=True)
class RankContext:
    """Where one rank runs: its place in the world and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Strategy:
    """A way to train the reference model on ``world_size`` devices.

    Subclasses set the class attributes and override what differs. Methods named ``rank_*`` and
    ``setup``/``wrap``/``teardown`` run inside each rank's process; ``unavailable_reason`` runs in
    the pytest process and must stay cheap (no process groups, no CUDA context).
    """

    launcher: ClassVar[str] = "python"  # key of bench.launch.LAUNCHERS: "python" starts one plain rank process
    multi_device: ClassVar[bool] = True  # False: world size 1 only
    multi_node: ClassVar[bool] = False  # True: its launcher can spread the ranks over --hosts
    baseline_only: ClassVar[bool] = False  # reported for comparison, never recommended
    # True: weights, gradients and optimizer state are split over the ranks (bench/run/out_of_memory.py).
    shards_training_state: ClassVar[bool] = False
    # What of this strategy's communication torch.profiler cannot see, for the step breakdown's source
    # (bench/run/step_profile.py); "" when it sees all of it. Non-empty: overlapped communication is not measured.
    comm_unseen: ClassVar[str] = ""

    def unavailable_reason(self, device_type: str, world_size: int, precision: str) -> str | None:
        """Why this strategy cannot run that case here (with how to fix it), or None."""
        return None

    def processes(self, world_size: int) -> int:
        """Processes a case of ``world_size`` devices runs; they share the CPU cores between them."""
        return world_size

    def rank_devices(self, ctx: RankContext) -> list[torch.device]:
        """Every device this rank's process computes on (its memory peaks are this rank's)."""
        return [ctx.device]

    def case_facts(self, precision: str) -> dict:
        """Record keys this strategy adds for a case at ``precision`` (docs/record.md), known before it runs."""
        return {}

    def rank_facts(self, state: TrainState) -> dict:
        """Record keys this strategy measured in the rank while it trained (rank 0's go in the record)."""
        return {}

    def rank_device(self, device_type: str, local_rank: int) -> torch.device:
        return torch_device(device_type, local_rank)

    def rank_batches(self, config: ModelConfig, per_device_batch_size: int, *, seed: int,
                     ctx: RankContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the global data. Together, the ranks of one step see exactly
        ``reference_model.global_batches`` (the correctness check trains ``single`` on that)."""
        return make_batches(config, per_device_batch_size, seed=seed, rank=ctx.rank, device=ctx.device)

    def full_parameters(self, state: TrainState) -> list[torch.Tensor]:
        """The whole (unsharded) parameters as CPU fp32 copies; for sharded strategies every rank must call it."""
        return [p.detach().float().cpu().clone() for p in state.model.parameters()]

    def setup(self, ctx: RankContext) -> None:
        """Before the model is built: join the process group, pin the device."""

    def wrap(self, state: TrainState, ctx: RankContext) -> TrainState:
        """Wrap model and optimizer for this strategy; the plain state is the single-device case."""
        return state

    def delay_communication(self, state: TrainState, seconds: float) -> None:
        """The test hook GPUSIZER_FAULT=comm:delay<MS> (bench/launch/worker_main.py): every gradient all-reduce
        finishes ``seconds`` later, as over a slower link. Only where the strategy lets a hook into its all-reduce."""
        raise ValueError(f"GPUSIZER_FAULT comm:delay: {type(self).__name__.lower()} has no hook into its all-reduce; "
                         f"allowed with: ddp")

    def barrier(self, ctx: RankContext) -> None:
        """Wait for every rank: before teardown, so no rank leaves while others still communicate."""

    def teardown(self, ctx: RankContext) -> None:
        """After the last round, model and optimizer dropped: leave the process group cleanly."""
