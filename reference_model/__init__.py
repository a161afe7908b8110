"""The workload gpusizer trains: the seed MLP, its size presets, synthetic data and the one train step.

Pure PyTorch; knows nothing of strategies, launchers or result files.
"""

from reference_model.config import PRESETS, ModelConfig, preset
from reference_model.data import global_batches, make_batches
from reference_model.model import build_model
from reference_model.precision import PRECISIONS, Precision, unsupported_reason
from reference_model.train import LEARNING_RATE, AutocastModule, TrainState, make_optimizer, train_step

__all__ = [
    "LEARNING_RATE",
    "PRECISIONS",
    "PRESETS",
    "AutocastModule",
    "ModelConfig",
    "Precision",
    "TrainState",
    "build_model",
    "global_batches",
    "make_batches",
    "make_optimizer",
    "preset",
    "train_step",
    "unsupported_reason",
]
