"""Synthetic data, made on the training device so the timed region never copies from the host."""

from __future__ import annotations

import torch

from reference_model.config import ModelConfig

# A small pool of distinct batches is cycled through: enough that no step sees the same
# tensor twice in a row, small enough to fit beside the largest preset.
DEFAULT_POOL_BATCHES = 4


def rank_seed(seed: int, rank: int) -> int:
    # Distinct, deterministic stream per (seed, rank); the multiplier keeps ranks apart.
    return seed * 100_003 + rank


def make_batches(
    config: ModelConfig,
    batch_size: int,
    *,
    seed: int,
    rank: int,
    device: str | torch.device,
    num_batches: int = DEFAULT_POOL_BATCHES,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` (inputs, class-index targets) pairs for one rank, deterministic per seed and rank."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(rank_seed(seed, rank))
    batches = []
    for _ in range(num_batches):
        inputs = torch.randn(batch_size, config.input_size, generator=generator, device=device)
        targets = torch.randint(0, config.output_size, (batch_size,), generator=generator, device=device)
        batches.append((inputs, targets))
    return batches


def global_batches(
    config: ModelConfig,
    per_rank_batch_size: int,
    *,
    seed: int,
    world_size: int,
    device: str | torch.device,
    num_batches: int = DEFAULT_POOL_BATCHES,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches all ranks together see at each step, in rank order: the reference a
    single device must train on to match a data-parallel run."""
    per_rank = [
        make_batches(config, per_rank_batch_size, seed=seed, rank=rank, device=device, num_batches=num_batches)
        for rank in range(world_size)
    ]
    return [
        (torch.cat([p[i][0] for p in per_rank]), torch.cat([p[i][1] for p in per_rank]))
        for i in range(num_batches)
    ]
