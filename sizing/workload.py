"""What is sized: a model shape, a precision, a strategy, a world size and a per-device batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reference_model import PRECISIONS, ModelConfig
from reference_model.config import WIDTH_MULTIPLE

MAX_PARAMS = 10**13  # beyond any model anyone trains as one MLP; a typo more likely than a wish


@dataclass(frozen=True)
class Workload:
    config: ModelConfig
    precision: str
    strategy: str
    world_size: int
    per_device_batch_size: int

    def __post_init__(self) -> None:
        from sizing.strategies import STRATEGY_MEMORY  # late: that module imports this one

        if not isinstance(self.config, ModelConfig):
            raise TypeError(f"Workload.config must be a ModelConfig, got {self.config!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Workload.precision: {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGY_MEMORY:
            raise ValueError(f"Workload.strategy: {self.strategy!r}; allowed: {', '.join(STRATEGY_MEMORY)}")
        for name in ("world_size", "per_device_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Workload.{name}: {value!r}; allowed: an integer >= 1")


def config_for_params(num_params: float) -> ModelConfig:
    """The square MLP (input = hidden = output width, a multiple of 128) nearest ``num_params``.

    Every depth from 1 to 64 is tried with its nearest width; the shallowest shape within 1 % of the
    best is kept, since wide layers are what the presets grow.
    """
    if not (isinstance(num_params, (int, float)) and math.isfinite(num_params) and 1 <= num_params <= MAX_PARAMS):
        raise ValueError(f"--params: {num_params!r}; allowed: a number of parameters from 1 to {MAX_PARAMS:.0e}")
    shapes = []
    for depth in range(1, 65):
        width = math.sqrt(num_params / (depth + 1))  # depth + 1 Linear layers of width x width
        width = max(WIDTH_MULTIPLE, round(width / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)
        config = ModelConfig(width, width, depth, width)
        shapes.append((abs(config.num_params - num_params) / num_params, depth, config))
    best_error = min(error for error, _, _ in shapes)
    return min((depth, config) for error, depth, config in shapes if error <= best_error + 0.01)[1]
