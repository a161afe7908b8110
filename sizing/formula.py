"""The analytic memory model of the same step, part by part, for comparison with the trace.

The step's high-water mark is at one of four moments; the formula takes the largest (all sizes per
process, b samples; P parameters in fp32; e bytes per activation element: 2 under autocast, else 4):

- end of forward, inside cross-entropy: saved ReLU outputs (depth x b x hidden x e), two logits
  buffers (2 x b x out x e; the trace shows both live there), log-softmax's output (b x out x 4) and, under autocast, the logits' fp32 copy, the
  input's low-precision copy (b x in x 2) and the weights' low-precision copies (2 P);
- loss backward: the saved activations plus two b x out x 4 gradient buffers;
- the last hidden layer's ReLU backward: saved activations, the last layer's gradients and two
  b x hidden x e gradient buffers;
- end of backward: every gradient (4 P) and the first layer's gradient temporaries.

Parameters, the resident pool of synthetic batches and optimizer state (none: plain SGD) are live at all four.
"""

from __future__ import annotations

from reference_model import ModelConfig
from reference_model.data import DEFAULT_POOL_BATCHES
from sizing.step_memory import StepMemory, StepTimeline

FP32_BYTES = 4
LOW_PRECISION_BYTES = 2
TARGET_BYTES = 8  # int64 class indices
AUTOCAST_PRECISIONS = ("bf16", "fp16")


def data_pool_bytes(config: ModelConfig, batch_size: int) -> int:
    return DEFAULT_POOL_BATCHES * batch_size * (config.input_size * FP32_BYTES + TARGET_BYTES)


def formula_step(config: ModelConfig, precision: str, batch_size: int) -> StepTimeline:
    b, hidden, depth = batch_size, config.hidden_size, config.depth
    autocast = precision in AUTOCAST_PRECISIONS
    e = LOW_PRECISION_BYTES if autocast else FP32_BYTES
    params = config.num_params * FP32_BYTES
    first_in, first_out = config.layer_shapes[0]
    last_in, last_out = config.layer_shapes[-1]
    saved = depth * b * hidden * e + (b * config.input_size * LOW_PRECISION_BYTES if autocast else 0)
    copies = config.num_params * LOW_PRECISION_BYTES if autocast else 0
    logits = b * config.output_size
    moments = {
        "forward": {"activations": saved + logits * (2 * e + FP32_BYTES + (FP32_BYTES if autocast else 0)),
                    "autocast_weight_copies": copies},
        "loss backward": {"activations": saved, "autocast_weight_copies": copies,
                          "temporaries": 2 * logits * FP32_BYTES},
        "last ReLU backward": {"activations": saved, "autocast_weight_copies": copies,
                               "gradients": (last_in * last_out + last_out) * FP32_BYTES,
                               "temporaries": 2 * b * hidden * e},
        "end of backward": {"gradients": params,
                            "temporaries": max(b * first_out * e, first_in * first_out * e if autocast else 0)},
    }
    always = {"parameters": params, "gradients": 0, "optimizer_state": 0, "activations": 0,
              "autocast_weight_copies": 0, "temporaries": 0, "data": data_pool_bytes(config, b)}
    return StepTimeline("formula", tuple(
        StepMemory("formula", {**always, **parts}, "forward" if moment == "forward" else "backward")
        for moment, parts in moments.items()))
