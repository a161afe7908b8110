"""The traced memory model: the project's own ``train_step`` run under FakeTensorMode, counted by the Ledger.

FakeTensorMode allocates nothing, so the 3.5 B-parameter ``xl`` traces in about a second on a CPU.
The fake tensors live on the ``cpu`` device: in the CPU build of torch 2.13 fake ``cuda`` tensors
can be made, but autograd aborts the process on them (no CUDA device guard, in grad_accumulator), and
autocast(cuda) disables itself without CUDA. Tensor sizes do not depend on the device; CPU autocast
casts the same ops of this model (Linear to low precision, cross-entropy in fp32) as CUDA autocast.
"""

from __future__ import annotations

import functools
import gc
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from reference_model import ModelConfig, Precision, TrainState, build_model, make_batches, make_optimizer, train_step
from sizing.accounting import Ledger
from sizing.step_memory import BASE_PARTS, StepMemory, StepTimeline


def _fake_parameters(model: nn.Module) -> None:
    # Built on "meta" (no memory, no values), then given fake storage; .to() cannot swap fake tensors in.
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            module._parameters[name] = nn.Parameter(torch.empty(param.shape, dtype=param.dtype),
                                                    requires_grad=param.requires_grad)


def _state_tensors(state: TrainState) -> list[torch.Tensor]:
    tensors = [t for per_param in state.optimizer.state.values() for t in per_param.values()
               if isinstance(t, torch.Tensor)]
    scaler = state.grad_scaler
    if scaler is not None:
        tensors += [t for t in (getattr(scaler, "_scale", None), getattr(scaler, "_growth_tracker", None))
                    if isinstance(t, torch.Tensor)]
    return tensors


def run_accounted_step(state: TrainState, inputs: torch.Tensor, targets: torch.Tensor,
                       ledger: Ledger, data: list[torch.Tensor]) -> list[tuple[str, dict]]:
    """One train_step under ``ledger``; returns (phase, parts) live at its high-water mark, then at every
    recorded moment when the ledger keeps its history.

    Works on fake and on real tensors. The phase is set by hooks on the root module and the optimizer.
    """
    model, optimizer = state.model, state.optimizer
    params = list(model.parameters())
    ledger.adopt(params + data + _state_tensors(state))
    param_ids = ledger.storage_ids(params)  # serials: known once adopted
    ledger.weight_ids = param_ids

    def set_phase(phase: str):
        def hook(*_args, **_kwargs):
            ledger.phase = phase
        return hook

    handles = [
        # prepend: before FSDP2's root pre-forward hook, whose cast of the inputs is the forward's.
        model.register_forward_pre_hook(set_phase("forward"), prepend=True),
        model.register_full_backward_pre_hook(set_phase("backward")),
        optimizer.register_step_pre_hook(set_phase("optimizer")),
    ]
    # Cyclic garbage from before the step is collected first, and none is collected during it, so the
    # count does not depend on when the garbage collector happens to run (the test compares exact bytes).
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with ledger, warnings.catch_warnings():
            # The root's inputs need no gradient, so torch warns the backward pre-hook fires at its
            # outputs: that is the start of backward, which is all the phase hook needs.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            train_step(state, inputs, targets)
    finally:
        if gc_was_enabled:
            gc.enable()
        for handle in handles:
            handle.remove()
        ledger.phase = "before"
    # Later entries win: a parameter's storage is a parameter whatever label the ledger gave it.
    named = dict(ledger.labels)
    for part, tensors in (("data", data), ("optimizer_state", _state_tensors(state)),
                          ("gradients", (p.grad for p in params if p.grad is not None))):
        named.update(dict.fromkeys(ledger.storage_ids(tensors), part))
    named.update(dict.fromkeys(param_ids, "parameters"))
    sets = [(ledger.peak_phase, ledger.peak_live)] + list(ledger.history or ())
    return [(phase, _classify(live, named)) for phase, live in sets]


def _classify(live: dict, named: dict[int, str]) -> dict:
    """Bytes per part: a storage's name if it has one, else by how and when it was born."""
    parts = dict.fromkeys(BASE_PARTS, 0)
    for key, (nbytes, phase, op) in live.items():
        part = named.get(key)
        if part is None:
            part = ("autocast_weight_copies" if op == "weight_copy" else
                    "activations" if phase == "forward" else "temporaries")
        parts[part] = parts.get(part, 0) + nbytes
    return parts


@functools.lru_cache(maxsize=64)
def trace_step(config: ModelConfig, precision: str, batch_size: int) -> StepTimeline:
    """Peak memory of the second train_step (the first creates optimizer and scaler state) for one
    process feeding ``batch_size`` samples, with the benchmark's pool of synthetic batches resident."""
    with torch.device("meta"):
        model = build_model(config, device="meta")
    with FakeTensorMode():
        _fake_parameters(model)
        return fake_step_timeline(model, config, precision, batch_size, Ledger)


def fake_step_timeline(model: nn.Module, config: ModelConfig, precision: str, batch_size: int,
                       ledger_type: Callable[..., Ledger]) -> StepTimeline:
    """Inside a FakeTensorMode, on ``model`` (fake parameters, wrapped or not): a warm-up train_step,
    then the second one counted by a ``ledger_type`` at every moment."""
    batches = make_batches(config, batch_size, seed=0, rank=0, device="cpu")
    prec = Precision(precision, "cpu")
    state = TrainState(model, make_optimizer(model), prec, prec.make_grad_scaler())
    with ledger_type(healthy_scalars=True):
        train_step(state, *batches[0])  # warm-up: optimizer and scaler state (and FSDP's lazy set-up) now exist
    ledger = ledger_type(healthy_scalars=True, keep_history=True)
    data = [t for pair in batches for t in pair]
    moments = run_accounted_step(state, *batches[1], ledger=ledger, data=data)
    return StepTimeline("trace", tuple(StepMemory("trace", parts, phase) for phase, parts in moments))
