"""The fit table: GPUs against one workload, per strategy and precision. Pure data; callers render it."""

from __future__ import annotations

from reference_model import ModelConfig
from sizing.gpus import GPU
from sizing.predict import max_batch_size, min_fsdp_world_size, predict, verdict
from sizing.strategies import STRATEGY_MEMORY
from sizing.workload import Workload


def strategy_world_size(strategy: str, world_size: int) -> int:
    return world_size if STRATEGY_MEMORY[strategy].multi_device else 1


def fit_rows(config: ModelConfig, gpus: tuple[GPU, ...], strategies: tuple[str, ...], precisions: tuple[str, ...],
             world_size: int, per_device_batch_size: int) -> list[dict]:
    rows = []
    for gpu in gpus:
        for precision in precisions:
            for strategy in strategies:
                workload = Workload(config, precision, strategy, strategy_world_size(strategy, world_size),
                                    per_device_batch_size)
                traced = predict(workload, "trace")
                formula = predict(workload, "formula")
                rows.append({
                    "gpu": gpu.name,
                    "gpu_memory_bytes": gpu.memory_bytes,
                    "strategy": strategy,
                    "precision": precision,
                    "world_size": workload.world_size,
                    "per_device_batch_size": per_device_batch_size,
                    "predicted_peak_bytes": traced.peak_bytes,
                    "formula_peak_bytes": formula.peak_bytes,
                    "predicted_parts_bytes": dict(traced.parts_bytes),
                    "verdict": verdict(traced.peak_bytes, gpu.memory_bytes),
                    "max_per_device_batch_size": max_batch_size(workload, gpu.memory_bytes),
                })
    return rows


def fsdp_rows(config: ModelConfig, gpus: tuple[GPU, ...], precisions: tuple[str, ...],
              per_device_batch_size: int) -> list[dict]:
    """Per GPU and precision, the smallest FSDP world size whose per-device peak fits the memory."""
    if "fsdp" not in STRATEGY_MEMORY:
        return []
    rows = []
    for gpu in gpus:
        for precision in precisions:
            workload = Workload(config, precision, "fsdp", 1, per_device_batch_size)
            rows.append({"gpu": gpu.name, "precision": precision,
                         "min_fsdp_world_size": min_fsdp_world_size(workload, gpu.memory_bytes)})
    return rows
