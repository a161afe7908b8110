"""The analytic memory model of the same step, part by part, for comparison with the trace.

One process (``formula_step``): the step's high-water mark is at one of four moments; the formula takes
the largest (all sizes per process, b samples; P parameters in fp32; e bytes per activation element: 2
under autocast, else 4):

- end of forward, inside cross-entropy: saved ReLU outputs (depth x b x hidden x e), two logits
  buffers (2 x b x out x e; the trace shows both live there), log-softmax's output (b x out x 4) and, under autocast, the logits' fp32 copy, the
  input's low-precision copy (b x in x 2) and the weights' low-precision copies (2 P);
- loss backward: the saved activations plus two b x out x 4 gradient buffers;
- the last hidden layer's ReLU backward: saved activations, the last layer's gradients and two
  b x hidden x e gradient buffers;
- end of backward: every gradient (4 P) and the first layer's gradient temporaries.

Parameters, the resident pool of synthetic batches and optimizer state (none: plain SGD) are live at all four.

One FSDP2 rank of W (``fsdp_step``; sizing/sharding.py: a shard group per Linear, parameters gathered in
the autocast dtype, so p = e bytes each, gradients reduced in fp32), as its trace (sizing/fsdp_trace.py)
shows it. Each rank keeps its shard of every parameter and, once made, of every gradient: the Linear's
rows padded to a multiple of W, ceil(out / W) x (in + 1) elements, in fp32. Forward and loss backward
are the single process's moments with those shards and no autocast weight copies (the gathered weights
are in the autocast dtype already; FSDP's cast of the input replaces autocast's). Backward goes layer by
layer, last to first; at layer k, with the activations saved for the layers before it still live and the
gradients of the layers after it made, it holds at most (G_k = W x its padded shard, E_k its elements):

- while gathering: the all-gather buffer (G_k x p) and the unsharded parameters copied out of it (G_k x p);
- while computing: the unsharded parameters, the unsharded gradients (E_k x p) and the all-gather buffer
  of layer k-1, prefetched (G_(k-1) x p; none at world size 1, which gathers nothing: it copies the shard,
  or under autocast its cast copy, into the unsharded parameters);
- after computing: the reduce-scatter input (G_k x 4, the gradients cast to fp32 and padded), the
  sharded gradient it leaves, and the prefetched buffer.

The reduce-scatter input of layer k+1 is kept until layer k's replaces it. Sizes are torch 2.13's FSDP2.
"""

from __future__ import annotations

from reference_model import ModelConfig
from reference_model.data import DEFAULT_POOL_BATCHES
from sizing.step_memory import BASE_PARTS, StepMemory, StepTimeline

FP32_BYTES = 4
LOW_PRECISION_BYTES = 2
TARGET_BYTES = 8  # int64 class indices
AUTOCAST_PRECISIONS = ("bf16", "fp16")


def data_pool_bytes(config: ModelConfig, batch_size: int) -> int:
    return DEFAULT_POOL_BATCHES * batch_size * (config.input_size * FP32_BYTES + TARGET_BYTES)


def formula_step(config: ModelConfig, precision: str, batch_size: int) -> StepTimeline:
    moments = _single_moments(config, precision, batch_size)
    return _timeline({"parameters": config.num_params * FP32_BYTES, "data": data_pool_bytes(config, batch_size)},
                     [("forward" if name == "forward" else "backward", parts) for name, parts in moments.items()])


def _single_moments(config: ModelConfig, precision: str, batch_size: int) -> dict[str, dict]:
    b, hidden, depth = batch_size, config.hidden_size, config.depth
    autocast = precision in AUTOCAST_PRECISIONS
    e = LOW_PRECISION_BYTES if autocast else FP32_BYTES
    params = config.num_params * FP32_BYTES
    first_in, first_out = config.layer_shapes[0]
    last_in, last_out = config.layer_shapes[-1]
    saved = depth * b * hidden * e + (b * config.input_size * LOW_PRECISION_BYTES if autocast else 0)
    copies = config.num_params * LOW_PRECISION_BYTES if autocast else 0
    logits = b * config.output_size
    return {
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


def fsdp_step(config: ModelConfig, precision: str, batch_size: int, world_size: int) -> StepTimeline:
    """One of ``world_size`` FSDP2 ranks, each feeding ``batch_size`` samples (the module docstring's model)."""
    b, w = batch_size, world_size
    autocast = precision in AUTOCAST_PRECISIONS
    e = LOW_PRECISION_BYTES if autocast else FP32_BYTES  # activations, gathered parameters and their gradients
    shapes = config.layer_shapes
    elements = [(fan_in + 1) * fan_out for fan_in, fan_out in shapes]
    shard = [-(-fan_out // w) * (fan_in + 1) for fan_in, fan_out in shapes]
    gathered = [w * rows for rows in shard]
    single = _single_moments(config, precision, b)
    moments = [(phase, {**single[name], "autocast_weight_copies": 0})
               for phase, name in (("forward", "forward"), ("backward", "loss backward"))]
    input_copy = b * config.input_size * LOW_PRECISION_BYTES if autocast else 0
    for k, (fan_in, fan_out) in enumerate(shapes):
        made = sum(shard[k + 1:]) * FP32_BYTES
        reduce_scatter = gathered[k] * FP32_BYTES
        live = {"activations": input_copy + sum(b * out * e for _, out in shapes[:k]),
                "temporaries": b * (max(2 * fan_in, fan_in + fan_out) if k else fan_out) * e,
                "fsdp_all_gather_buffers": gathered[k - 1] * e if w > 1 and k else 0}  # layer k-1's, prefetched
        kept = {"gradients": made, "fsdp_reduce_scatter_buffers": gathered[k + 1] * FP32_BYTES if k + 1 < len(shapes) else 0}
        unsharded = {**live, **kept, "fsdp_unsharded_parameters": gathered[k] * e}
        moments += [("backward", parts) for parts in (
            {**unsharded, "fsdp_all_gather_buffers": gathered[k] * e if w > 1 or autocast else 0},
            {**unsharded, "fsdp_unsharded_gradients": elements[k] * e},
            {**live, "gradients": made, "fsdp_unsharded_gradients": elements[k] * e,
             "fsdp_reduce_scatter_buffers": reduce_scatter},
            {**live, "gradients": made + shard[k] * FP32_BYTES, "fsdp_reduce_scatter_buffers": reduce_scatter},
        )]
    return _timeline({"parameters": sum(shard) * FP32_BYTES, "data": data_pool_bytes(config, b)}, moments)


def _timeline(always: dict, moments: list[tuple[str, dict]]) -> StepTimeline:
    """``always`` (parameters, data) at every moment, each (phase, parts) on top; unnamed parts are 0."""
    base = {**dict.fromkeys(BASE_PARTS, 0), **always}
    return StepTimeline("formula", tuple(StepMemory("formula", {**base, **parts}, phase) for phase, parts in moments))
