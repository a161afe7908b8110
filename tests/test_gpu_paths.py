"""The CUDA paths of issue 9, reached on this CPU machine: CPU autocast in fresh threads (DataParallel's
replica threads), a one-process gloo FSDP at bf16, monkeypatched ``torch.cuda`` memory functions where
only the call order and the devices asked matter, and the pure rules (threads, TF32 variables).
What only a GPU can show is checked by scripts/gpu-check.sh."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import bench.run.worker
from bench.config.cases import BenchCase
from bench.hardware import devices
from bench.launch import LAUNCHERS
from bench.record.case_facts import add_case_facts
from bench.run.memory import peak_memory_per_device, release_cached_memory, reset_peak_memory
from bench.run.tf32 import tf32_overridden, tf32_override_env
from bench.strategies import REGISTRY, RankContext
from bench.strategies.fsdp import mixed_precision_policy
from reference_model import AutocastModule, Precision, TrainState, build_model, make_optimizer

REPO = Path(__file__).resolve().parent.parent


def case(strategy: str = "single", world_size: int = 1, precision: str = "fp32", **overrides) -> BenchCase:
    values = {"strategy": strategy, "world_size": world_size, "preset": "tiny", "precision": precision,
              "device_type": "cpu", "per_device_batch_size": 8, "scaling": "weak", "steps_per_round": 2,
              "rounds": 1, "warmup_rounds": 0}
    return BenchCase(**{**values, **overrides})


def in_fresh_thread(function):
    """Call ``function`` in a new thread (as DataParallel runs each replica) and return its result."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()))
    thread.start()
    thread.join(60)
    return result["value"]


# -- 1. dp: each replica enters the case's autocast itself ------------------------------------------


def test_autocast_does_not_reach_a_fresh_thread_but_the_wrapped_forward_brings_it():
    linear, inputs = torch.nn.Linear(8, 4), torch.randn(2, 8)
    wrapped = AutocastModule(linear, Precision("bf16", "cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(inputs).dtype == torch.bfloat16  # the main thread's autocast
        assert in_fresh_thread(lambda: linear(inputs)).dtype == torch.float32  # ... stays in the main thread
        assert in_fresh_thread(lambda: wrapped(inputs)).dtype == torch.bfloat16
    assert wrapped.output_dtypes == {torch.bfloat16}


def test_the_wrapped_forward_overrides_the_replica_threads_default_dtype():
    # DataParallel's replica thread enters torch.autocast(device_type, enabled=True) with no dtype: the
    # thread's default (float16 on cuda, bfloat16 on cpu). The case's own dtype must win inside.
    linear, inputs = torch.nn.Linear(8, 4), torch.randn(2, 8)
    wrapped = AutocastModule(linear, Precision("fp16", "cpu"))

    def like_a_replica(module):
        with torch.amp.autocast("cpu", enabled=True):
            return module(inputs).dtype

    assert in_fresh_thread(lambda: like_a_replica(linear)) == torch.bfloat16  # the thread default
    assert in_fresh_thread(lambda: like_a_replica(wrapped)) == torch.float16


def test_dp_wraps_the_replicated_module_and_its_replicas_share_what_they_saw():
    ctx = RankContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    model = build_model(case().model_config)
    state = TrainState(model, make_optimizer(model), Precision("bf16", "cpu"))
    state = REGISTRY["dp"].wrap(state, ctx)
    replicated = state.model.module
    assert isinstance(replicated, AutocastModule) and replicated.module is model
    # torch.nn.parallel.replicate makes each replica like this: a shallow copy of the module's __dict__.
    replica = replicated._replicate_for_data_parallel()
    inputs = torch.randn(4, case().model_config.input_size)
    assert in_fresh_thread(lambda: replica(inputs)).dtype == torch.bfloat16
    assert REGISTRY["dp"].rank_facts(state) == {"replica_output_dtypes": ["bfloat16"]}


def launched(bench_case: BenchCase):
    """The case's ranks, started as a run starts them (single and dp: one plain rank process)."""
    return LAUNCHERS[REGISTRY[bench_case.strategy].launcher](bench_case, launch_timeout_s=120, round_timeout_s=120)


def test_a_dp_worker_records_the_dtype_its_replicas_computed_in():
    # A real dp rank process; on CPU DataParallel calls the module directly. The dtypes travel back from
    # the rank over the channel (the facts command).
    group = launched(case("dp", precision="bf16"))
    try:
        group.run_round(1)
        assert group.facts()["replica_output_dtypes"] == ["bfloat16"]
    finally:
        group.close()


# -- 2. peaks: reset after build and shard; every device of dp --------------------------------------


def test_peak_memory_is_reset_after_the_model_is_built_wrapped_and_its_data_made(monkeypatch):
    events = []
    strategy = type(REGISTRY["single"])
    real_build, real_wrap, real_batches = bench.run.worker.build_model, strategy.wrap, strategy.rank_batches

    monkeypatch.setattr(bench.run.worker, "build_model", lambda *a, **k: events.append("build") or real_build(*a, **k))
    monkeypatch.setattr(strategy, "wrap", lambda self, *a: events.append("wrap (fsdp: shard)") or real_wrap(self, *a))
    monkeypatch.setattr(strategy, "rank_batches",
                        lambda self, *a, **k: events.append("batches") or real_batches(self, *a, **k))
    monkeypatch.setattr(bench.run.worker, "reset_peak_memory", lambda devices: events.append(f"reset {devices}"))
    worker = bench.run.worker.TrainingWorker(case())
    worker.close()
    assert events == ["build", "wrap (fsdp: shard)", "batches", "reset [device(type='cpu')]"]


def test_dp_resets_and_reports_the_peak_of_every_gpu_it_drives(monkeypatch):
    # torch.cuda's memory statistics, stood in for: this CPU build has none. Only the devices asked matter.
    peaks = {0: 30 * 2**30, 1: 12 * 2**30, 2: 11 * 2**30}
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device.index))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks[device.index])
    ctx = RankContext(rank=0, local_rank=0, world_size=3, device=torch.device("cuda", 0))
    gpus = REGISTRY["dp"].rank_devices(ctx)
    assert gpus == [torch.device("cuda", i) for i in range(3)]
    assert REGISTRY["ddp"].rank_devices(ctx) == [torch.device("cuda", 0)]  # one GPU per rank
    reset_peak_memory(gpus)
    assert resets == [0, 1, 2]
    assert peak_memory_per_device(gpus) == [peaks[0], peaks[1], peaks[2]]


def test_the_record_keeps_every_devices_peak(monkeypatch):
    group = launched(case())
    try:
        group.run_round(1)
        peak = group.peak_memory_bytes()
        record = add_case_facts({"flags": []}, case(), group, environ={})
    finally:
        group.close()
    assert len(record["peak_memory_bytes_per_device"]) == 1 and max(record["peak_memory_bytes_per_device"]) >= peak


# -- 3. FSDP mixed precision ------------------------------------------------------------------------


def test_fsdp_policy_computes_in_the_case_dtype_and_reduces_in_fp32():
    bf16, fp16, fp32 = (mixed_precision_policy(p) for p in ("bf16", "fp16", "fp32"))
    assert (bf16.param_dtype, bf16.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert (fp16.param_dtype, fp16.reduce_dtype) == (torch.float16, torch.float32)
    assert (fp32.param_dtype, fp32.reduce_dtype) == (None, None)  # FSDP's default: everything in fp32
    assert REGISTRY["fsdp"].case_facts("bf16") == {
        "mixed_precision_policy": {"param_dtype": "bfloat16", "reduce_dtype": "float32"}}
    assert REGISTRY["fsdp"].case_facts("tf32") == {"mixed_precision_policy": {"param_dtype": None, "reduce_dtype": None}}
    assert REGISTRY["ddp"].case_facts("bf16") == {}


FSDP_BF16_SCRIPT = textwrap.dedent("""
    import json, torch
    from bench.strategies import REGISTRY, RankContext
    from reference_model import Precision, TrainState, build_model, make_optimizer, preset, train_step, make_batches
    ctx = RankContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    fsdp = REGISTRY["fsdp"]
    fsdp.setup(ctx)
    config = preset("tiny")
    model = build_model(config)
    state = fsdp.wrap(TrainState(model, make_optimizer(model), Precision("bf16", "cpu")), ctx)
    seen = []
    first = next(m for m in state.model if isinstance(m, torch.nn.Linear))
    first.register_forward_pre_hook(lambda module, args: seen.append((str(module.weight.dtype), str(args[0].dtype))))
    train_step(state, *make_batches(config, 8, seed=0, rank=0, device="cpu")[0])
    grads = sorted({str(p.grad.dtype) for p in state.model.parameters()})
    params = sorted({str(p.dtype) for p in state.model.parameters()})
    fsdp.teardown(ctx)
    print(json.dumps({"forward": seen, "grads": grads, "params": params}))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fsdp_at_bf16_gathers_and_computes_in_bf16_and_keeps_fp32_gradients():
    # A real one-rank FSDP2 on gloo: inside the forward the unsharded weight is bf16 (the all-gather
    # dtype); the sharded parameters the optimizer steps and their reduced gradients stay fp32.
    reason = REGISTRY["fsdp"].unavailable_reason("cpu", 1, "fp32")
    if reason:
        pytest.skip(reason)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GLOO_SOCKET_IFNAME": "lo",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FSDP_BF16_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["forward"] == [["torch.bfloat16", "torch.bfloat16"]]
    assert seen["grads"] == ["torch.float32"] and seen["params"] == ["torch.float32"]


# -- 5. TF32 override variables ---------------------------------------------------------------------


def test_tf32_override_variables_are_recorded_and_flag_the_rows_they_change():
    forced_on = {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}
    forced_off = {"NVIDIA_TF32_OVERRIDE": "0"}
    assert tf32_overridden("cuda", "fp32", forced_on) and not tf32_overridden("cuda", "bf16", forced_on)
    assert tf32_overridden("cuda", "tf32", forced_off) and not tf32_overridden("cuda", "fp32", forced_off)
    assert not tf32_overridden("cpu", "fp32", forced_on)  # no TF32 on a CPU
    assert not tf32_overridden("cuda", "fp32", {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "0"})
    assert tf32_override_env({**forced_on, "NVIDIA_TF32_OVERRIDE": "", "HOME": "/x"}) == forced_on

    fp32 = case(device_type="cuda")
    record = add_case_facts({"flags": ["baseline_only"]}, fp32, None, environ=forced_on)
    assert record["tf32_override"] is True and record["tf32_override_env"] == forced_on
    assert record["flags"] == ["baseline_only", "tf32_override"]
    clean = add_case_facts({"flags": []}, fp32, None, environ={})
    assert clean["tf32_override"] is False and clean["flags"] == [] and clean["tf32_override_env"] == {}


# -- 6. threads per rank ----------------------------------------------------------------------------


def test_gpu_ranks_share_the_cores_like_cpu_ranks(monkeypatch):
    monkeypatch.setattr(devices, "usable_cores", lambda: 96)
    assert devices.threads_per_rank("cuda", 8) == 12  # not 96 threads in each of 8 ranks
    assert devices.threads_per_rank("cpu", 8) == 12
    assert devices.threads_per_rank("cuda", REGISTRY["dp"].processes(8)) == 96  # dp: one process, all GPUs
    assert devices.threads_per_rank("cuda", REGISTRY["ddp"].processes(8)) == 12
    assert devices.threads_per_rank("cuda", 200) == 1
    with pytest.raises(ValueError, match="allowed: cpu, cuda"):
        devices.threads_per_rank("tpu", 1)


# -- 8. single and dp train in a rank process, which ends with the case --------------------------------


@pytest.mark.parametrize("strategy", ["single", "dp"])
def test_single_and_dp_train_in_a_rank_process_that_is_gone_after_the_case(model_refs, strategy):
    import os

    import psutil

    group = launched(case(strategy))
    try:
        (rank_pid,) = group.pids
        assert rank_pid != os.getpid() and psutil.Process(rank_pid).ppid() == os.getpid()
        assert group.launch_s > 0 and len(group.run_round(2)) == 1
        assert group.facts()["peak_memory_bytes_per_device"][0] > 0
    finally:
        group.close()
    assert not psutil.pid_exists(rank_pid) or psutil.Process(rank_pid).status() == psutil.STATUS_ZOMBIE
    assert model_refs == [], "a model was built in the pytest process"


def test_release_empties_the_cuda_cache_of_every_device_in_one_call(monkeypatch):
    # The caching allocator's empty_cache frees every device's cached blocks; looping with
    # torch.cuda.device(i) would create CUDA contexts on GPUs the pytest process never used.
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(f"set_device {device}"))
    release_cached_memory()
    assert calls == ["empty_cache"]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # never touched CUDA: nothing to free
    release_cached_memory()
    assert calls == ["empty_cache"]


def test_the_report_shows_the_tf32_override_flag_on_the_rows_it_changes(real_result_files, tmp_path):
    # reports/ surfaces record flags generically (setups table, CSV); a real run's record gets the flag
    # as add_case_facts sets it on a CUDA fp32 case under TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1.
    import json

    data = json.loads(Path(real_result_files[1]).read_text())
    for entry in data["benchmarks"]:
        entry["extra_info"]["flags"] = sorted({*entry["extra_info"]["flags"], "tf32_override"})
    source = tmp_path / "override.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "reports", "report", str(source), "-o", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "tf32_override" in out.read_text()
    assert "tf32_override" in out.with_suffix(".csv").read_text()
