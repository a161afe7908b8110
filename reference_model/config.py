"""What is trained: the MLP's shape and the named size presets.

The seed model is Linear -> ReLU -> Linear. ``depth`` counts hidden layers, so depth 1 is
exactly the seed; each extra hidden layer adds one hidden_size x hidden_size Linear + ReLU.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

WIDTH_MULTIPLE = 128  # tensor-core and vector-unit friendly widths


@dataclass(frozen=True)
class ModelConfig:
    input_size: int
    hidden_size: int
    depth: int
    output_size: int

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "depth", "output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of every Linear, first to last."""
        widths = [self.input_size] + [self.hidden_size] * self.depth + [self.output_size]
        return list(itertools.pairwise(widths))

    @property
    def num_params(self) -> int:
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in self.layer_shapes)

    @property
    def flops_per_sample(self) -> int:
        """Training matmul FLOPs per sample: forward + backward.

        Each Linear costs 2*in*out forward, 2*in*out for the weight gradient and 2*in*out
        for the input gradient, except the first layer: its input is data, which needs no
        gradient, so autograd skips that matmul. Element-wise work (bias, ReLU, loss, SGD)
        is not counted, as in the usual MFU convention.
        """
        matmul = [2 * fan_in * fan_out for fan_in, fan_out in self.layer_shapes]
        forward = sum(matmul)
        weight_grad = sum(matmul)
        input_grad = sum(matmul[1:])
        return forward + weight_grad + input_grad

    def as_dict(self) -> dict[str, int]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "depth": self.depth,
            "output_size": self.output_size,
        }


# Named sizes. Widths are multiples of 128; parameter counts are in the comments and checked
# by tests against the built module.
PRESETS: dict[str, ModelConfig] = {
    # ~33k params: fast enough for unit tests and --quick.
    "tiny": ModelConfig(input_size=128, hidden_size=128, depth=1, output_size=128),
    # ~8.4M params.
    "small": ModelConfig(input_size=1024, hidden_size=2048, depth=2, output_size=1024),
    # ~84M params.
    "medium": ModelConfig(input_size=4096, hidden_size=4096, depth=4, output_size=4096),
    # ~0.6B params: GPU choice starts to matter.
    "large": ModelConfig(input_size=8192, hidden_size=8192, depth=8, output_size=8192),
    # ~3.5B params: for memory sizing on big GPUs (fp32 weights + grads alone are ~28 GB).
    "xl": ModelConfig(input_size=16384, hidden_size=16384, depth=12, output_size=16384),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}") from None
