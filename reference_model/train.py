"""The one training step every strategy, test and peer script uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reference_model.precision import Precision

LEARNING_RATE = 0.01  # the seed's SGD learning rate


def make_optimizer(model: nn.Module, lr: float = LEARNING_RATE) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr)


@dataclass
class TrainState:
    """Everything a step needs. Strategies may replace ``model`` and ``optimizer`` with wrapped ones."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    grad_scaler: torch.amp.GradScaler | None = None


class AutocastModule(nn.Module):
    """Runs ``module``'s forward inside ``precision``'s autocast in whichever thread calls it.

    Autocast state is per thread. DataParallel's replica threads enter ``torch.autocast(device_type,
    enabled=...)`` with no dtype, and a new thread's cuda autocast dtype is float16: the main thread's
    bf16 autocast never reaches them. Entering the autocast inside the replicated module's own forward
    does. ``output_dtypes`` (one set shared by every replica: DataParallel copies the module's
    ``__dict__`` shallowly) collects the dtype each forward returned, so a run can show what it computed in.
    """

    def __init__(self, module: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.module = module
        self.precision = precision
        self.output_dtypes: set[torch.dtype] = set()

    def forward(self, *args, **kwargs):
        with self.precision.autocast():
            output = self.module(*args, **kwargs)
        self.output_dtypes.add(output.dtype)
        return output


def train_step(state: TrainState, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """zero_grad, forward, loss, backward, step. Returns the loss without synchronising."""
    state.optimizer.zero_grad(set_to_none=True)
    with state.precision.autocast():
        loss = F.cross_entropy(state.model(inputs), targets)
    if state.grad_scaler is None:
        loss.backward()
        state.optimizer.step()
    else:
        state.grad_scaler.scale(loss).backward()
        state.grad_scaler.step(state.optimizer)
        state.grad_scaler.update()
    return loss
