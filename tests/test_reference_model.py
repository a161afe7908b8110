"""The workload: presets, parameter and FLOP counts, data determinism, the one train step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from reference_model import (
    PRESETS,
    ModelConfig,
    Precision,
    TrainState,
    build_model,
    global_batches,
    make_batches,
    make_optimizer,
    preset,
    train_step,
    unsupported_reason,
)
from reference_model.config import WIDTH_MULTIPLE


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_widths_are_multiples_of_128(name):
    config = PRESETS[name]
    for width in (config.input_size, config.hidden_size, config.output_size):
        assert width % WIDTH_MULTIPLE == 0


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("small", 6e6, 10e6), ("medium", 50e6, 100e6), ("large", 0.5e9, 1e9), ("xl", 2e9, 9e9)],
)
def test_preset_sizes_match_their_promise(name, low, high):
    assert low <= PRESETS[name].num_params <= high


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_num_params_matches_the_built_module(name):
    model = build_model(PRESETS[name])
    assert sum(p.numel() for p in model.parameters()) == PRESETS[name].num_params


def test_depth_one_is_the_seed_model():
    model = build_model(ModelConfig(input_size=128, hidden_size=256, depth=1, output_size=128))
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_flops_per_sample_matches_torch_flop_counter(name):
    config = PRESETS[name]
    model = build_model(config)
    state = TrainState(model, make_optimizer(model), Precision("fp32", "cpu"))
    batch_size = 8
    inputs, targets = make_batches(config, batch_size, seed=0, rank=0, device="cpu", num_batches=1)[0]
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(state, inputs, targets)
    assert counter.get_total_flops() == config.flops_per_sample * batch_size


def test_model_config_rejects_bad_fields_naming_them():
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig(input_size=128, hidden_size=0, depth=1, output_size=128)
    with pytest.raises(ValueError, match="allowed: tiny, small"):
        preset("huge")


def test_same_seed_same_weights_and_data():
    a, b = build_model(PRESETS["tiny"], seed=3), build_model(PRESETS["tiny"], seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    first = make_batches(PRESETS["tiny"], 4, seed=1, rank=0, device="cpu")
    again = make_batches(PRESETS["tiny"], 4, seed=1, rank=0, device="cpu")
    other_rank = make_batches(PRESETS["tiny"], 4, seed=1, rank=1, device="cpu")
    assert torch.equal(first[0][0], again[0][0]) and torch.equal(first[0][1], again[0][1])
    assert not torch.equal(first[0][0], other_rank[0][0])


def test_global_batches_are_the_ranks_batches_in_order():
    config = PRESETS["tiny"]
    merged = global_batches(config, 4, seed=0, world_size=2, device="cpu")
    rank1 = make_batches(config, 4, seed=0, rank=1, device="cpu")
    assert merged[0][0].shape[0] == 8
    assert torch.equal(merged[2][0][4:], rank1[2][0])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_learns(precision):
    config = PRESETS["tiny"]
    model = build_model(config)
    mode = Precision(precision, "cpu")
    state = TrainState(model, make_optimizer(model, lr=0.1), mode, mode.make_grad_scaler())
    inputs, targets = make_batches(config, 32, seed=0, rank=0, device="cpu", num_batches=1)[0]
    first = train_step(state, inputs, targets).item()
    for _ in range(30):
        last = train_step(state, inputs, targets).item()
    assert last < first * 0.9


def test_precision_reasons():
    assert unsupported_reason("fp32", "cpu") is None
    assert "GPU" in unsupported_reason("tf32", "cpu")
    assert "allowed" in unsupported_reason("fp8", "cpu")
    with pytest.raises(ValueError, match="Precision.name"):
        Precision("fp8", "cpu")
