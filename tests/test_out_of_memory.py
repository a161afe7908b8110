"""Out of memory (bench/run/out_of_memory.py, bench/run/outcome.py): the pre-skip, the fault-hook grammar, and a
single case whose rank process runs out. More real-process runs are in tests/test_faults.py."""

from __future__ import annotations

import pytest
import torch
from conftest import make_bench_options

import bench.run.outcome
from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.launch.worker_main import CeilingFault, Fault, case_faults, parse_faults
from bench.run.controller import skip_reason
from bench.run.out_of_memory import STATE_BYTES_PER_PARAMETER, state_bytes_per_memory, too_large_reason
from bench.run.outcome import measure_or_failure
from reference_model import build_model, make_optimizer, preset


def case(strategy: str = "single", world_size: int = 1, device_type: str = "cpu", **overrides) -> BenchCase:
    values = {"strategy": strategy, "world_size": world_size, "preset": "tiny", "precision": "fp32",
              "device_type": device_type, "per_device_batch_size": 16, "scaling": "weak", "steps_per_round": 2,
              "rounds": 1, "warmup_rounds": 1}
    return BenchCase(**{**values, **overrides})


def options(**overrides) -> BenchOptions:
    return make_bench_options(**{"presets": ("tiny",), "per_device_batch_at_smallest_world": 16, "rounds": 1,
                                 "warmup_rounds": 1, **overrides})


def test_the_optimizer_keeps_no_state_so_the_estimate_counts_none():
    optimizer = make_optimizer(build_model(preset("tiny"), seed=0))
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(group["momentum"] == 0 for group in optimizer.param_groups)
    assert STATE_BYTES_PER_PARAMETER == 8  # fp32 weights + fp32 gradients


def test_training_state_that_exceeds_the_memory_is_skipped_in_one_line():
    xl = case("ddp", 2, device_type="cuda", preset="xl")
    need = preset("xl").num_params * STATE_BYTES_PER_PARAMETER
    assert state_bytes_per_memory(xl) == need
    assert state_bytes_per_memory(case("fsdp", 2, device_type="cuda", preset="xl")) == -(-need // 2)
    assert state_bytes_per_memory(case("ddp", 2, preset="xl")) == 2 * need  # CPU ranks share the host's memory
    assert too_large_reason(xl, need) is None
    reason = too_large_reason(xl, need - 1)
    assert reason.startswith("does not fit: xl fp32 ddp at batch 16 on ") and " GiB)" in reason
    assert "weights, gradients and optimizer state alone need" in reason and "\n" not in reason
    assert too_large_reason(xl, None) is None


def test_skip_reason_checks_the_memory_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr("bench.run.controller.device_memory_bytes", lambda device_type: 1024)
    assert skip_reason(case()).startswith("does not fit: tiny fp32 single at batch 16 on ")
    monkeypatch.setattr("bench.run.controller.device_memory_bytes", lambda device_type: 1 << 40)
    assert skip_reason(case()) is None


def test_fault_grammar_scopes_by_case_and_keeps_the_plain_form():
    text = "ddp-2-tiny-fp32:rank0:oom@round1, rank1:crash@round2, allreduce2:hang, allreduce:fail"
    rank_faults, ceiling_faults = parse_faults(text)
    assert rank_faults == [Fault(0, "oom", 1, "ddp-2-tiny-fp32"), Fault(1, "crash", 2, None)]
    assert ceiling_faults == [CeilingFault("hang", 2), CeilingFault("fail", None)]
    assert case_faults("ddp-2-tiny-fp32", text) == rank_faults
    assert case_faults("ddp-1-tiny-fp32", text) == [Fault(1, "crash", 2, None)]  # the plain form: every case
    assert Fault.parse("rank0:raise@round3") == Fault(0, "raise", 3)
    for bad in ("rank0:explode@round1", "ddp-2:rank0", "allreduce2:melt"):
        with pytest.raises(ValueError, match="allowed: comma-separated"):
            parse_faults(bad)
    with pytest.raises(torch.OutOfMemoryError, match="injected out of memory"):
        Fault(0, "oom", 1).fire_if_due(0, 1)


class FakeBenchmark:
    """Enough of pytest-benchmark's fixture for a case that fails before its measured rounds."""

    def __init__(self) -> None:
        self.extra_info: dict = {}
        self.has_error = False

    def pedantic(self, *args, **kwargs):
        raise AssertionError("an injected out-of-memory in round 1 must stop the case before measuring")


def test_out_of_memory_in_a_single_rank_fails_one_line_and_nothing_trains_here(monkeypatch, model_refs):
    # single trains in a rank process of its own: the injected error is that rank's, it reaches the case as
    # the rank's one line, and no model was ever built in this (the pytest) process.
    monkeypatch.setenv("GPUSIZER_FAULT", "single-1-tiny-fp32:rank0:oom@round1")
    benchmark = FakeBenchmark()
    failure = measure_or_failure(case(), benchmark, options())
    assert failure.startswith("does not fit: tiny fp32 single at batch 16 on ") and "\n" not in failure
    assert "rank 0 failed in round 1: OutOfMemoryError: injected out of memory (GPUSIZER_FAULT) in round 1" in failure
    assert benchmark.has_error
    assert model_refs == [], "a model was built in the pytest process"


@pytest.mark.parametrize("cause", ["OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                                   "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"])
def test_a_rank_out_of_memory_in_set_up_or_in_cublas_is_does_not_fit(monkeypatch, cause):
    # On a full GPU cuBLAS fails to allocate its workspace with a plain RuntimeError, not OutOfMemoryError.
    from bench.launch.remote import WorkerError

    def out_of_memory(*args, **kwargs):
        raise WorkerError(f"single-1-tiny-fp32: rank 0 failed in start-up: {cause}")

    monkeypatch.setattr(bench.run.outcome, "measure_case", out_of_memory)
    failure = measure_or_failure(case(), FakeBenchmark(), options())
    assert failure.startswith("does not fit: tiny fp32 single at batch 16 on ")
    assert failure.endswith(f"; rank 0 failed in start-up: {cause}")


def test_a_rank_failure_stays_one_line_though_worker_error_is_a_runtime_error(monkeypatch):
    from bench.launch.remote import WorkerError

    def failed_rank(*args, **kwargs):
        raise WorkerError("single-1-tiny-fp32: rank 1 failed first: ValueError: bad input")

    monkeypatch.setattr(bench.run.outcome, "measure_case", failed_rank)
    assert measure_or_failure(case(), FakeBenchmark(), options()) == \
        "single-1-tiny-fp32: rank 1 failed first: ValueError: bad input"


def test_the_plain_form_of_another_rank_or_case_does_not_touch_a_single_case(monkeypatch):
    monkeypatch.setenv("GPUSIZER_FAULT", "ddp-2-tiny-fp32:rank0:oom@round1,rank1:oom@round1")
    assert measure_or_failure(case(), MeasuringBenchmark(), options()) is None


class MeasuringBenchmark(FakeBenchmark):
    def pedantic(self, target, rounds, warmup_rounds, iterations):
        for _ in range(rounds):
            target()
        self.stats = type("S", (), {"stats": type("D", (), {"data": [0.01] * rounds})()})()


def test_verify_trains_its_reference_before_the_case_and_restarts_the_peak_after(monkeypatch, model_refs):
    import bench.run.controller
    from bench.launch.remote import RemoteGroup

    monkeypatch.delenv("GPUSIZER_FAULT", raising=False)
    events: list[str] = []
    real_reference, real_init = bench.run.controller.case_reference, RemoteGroup.__init__
    real_reset = RemoteGroup.reset_peak_memory

    def reference(case, **kwargs):
        events.append("reference")
        return real_reference(case, **kwargs)

    def init(self, case, *args, **kwargs):
        events.append("case set-up")
        real_init(self, case, *args, **kwargs)

    def reset(self):
        events.append("peak reset")
        real_reset(self)

    monkeypatch.setattr(bench.run.controller, "case_reference", reference)
    monkeypatch.setattr(RemoteGroup, "__init__", init)
    monkeypatch.setattr(RemoteGroup, "reset_peak_memory", reset)
    record = bench.run.controller.measure_case(case(), MeasuringBenchmark(), options(verify=True))
    assert events == ["reference", "case set-up", "peak reset"]
    assert record["verify_max_abs_difference"] <= 1e-6 and record["peak_memory_bytes"] > 0
    assert model_refs == [], "the reference or the case trained in the pytest process"
