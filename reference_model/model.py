"""The seed's multilayer perceptron, generalised by depth."""

from __future__ import annotations

import torch
from torch import nn

from reference_model.config import ModelConfig


def build_model(config: ModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> nn.Sequential:
    """Linear, ReLU, (Linear, ReLU) * (depth - 1), Linear, with weights fixed by ``seed``.

    Initialisation runs on the CPU with its own generator so that every rank, every strategy
    and every device starts from exactly the same weights.
    """
    layers: list[nn.Module] = []
    shapes = config.layer_shapes
    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for index, (fan_in, fan_out) in enumerate(shapes):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < len(shapes) - 1:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)
