"""scripts/gpu-check.sh, scripts/gpu_check_table.py and scripts/install-horovod.sh without a GPU: their
syntax, the prerequisite checks (a python without torch, an old python, a CPU torch behind a fake
nvidia-smi), the verdicts of the table on records shaped as a GPU run writes them, and the Horovod
script's CUDA detection through its documented test variables (a fake nvcc on PATH, no real build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GPU_CHECK = REPO / "scripts" / "gpu-check.sh"
INSTALL_HOROVOD = REPO / "scripts" / "install-horovod.sh"
TABLE = REPO / "scripts" / "gpu_check_table.py"
SYSTEM_PATH = "/usr/bin:/bin"  # no /usr/local/bin: this machine has a real nvcc there


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def run(command: list[str], env: dict, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.mark.parametrize("script", [GPU_CHECK, INSTALL_HOROVOD])
def test_scripts_parse(script):
    assert run(["bash", "-n", str(script)], dict(os.environ)).returncode == 0


# -- gpu-check.sh prerequisites ---------------------------------------------------------------------


def test_gpu_check_names_every_missing_import_with_its_fix(tmp_path):
    # A python that sees no site-packages: the standard library only, as on a fresh cloud image.
    bare = executable(tmp_path / "python", f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    done = run(["bash", str(GPU_CHECK)], {"PATH": SYSTEM_PATH, "PYTHON": str(bare), "HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    for module in ("torch", "pytest", "pytest_benchmark", "psutil", "pynvml", "horovod.torch"):
        assert f"missing: the Python module {module}\n" in done.stderr
    assert "fix: " + str(bare) + " -m pip install nvidia-ml-py" in done.stderr
    assert "fix: make horovod" in done.stderr
    assert "pytest" not in done.stdout  # nothing was run


def test_gpu_check_refuses_an_old_python_with_the_command_that_fixes_it(tmp_path):
    old = executable(tmp_path / "python", "#!/bin/sh\ncase \"$*\" in *python_version*) echo 3.9.18;; esac\nexit 1\n")
    done = run(["bash", str(GPU_CHECK)], {"PATH": SYSTEM_PATH, "PYTHON": str(old), "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "missing: Python >= 3.10 (this is 3.9.18)" in done.stderr
    assert "fix: apt-get install -y python3.11" in done.stderr


def test_gpu_check_refuses_a_cpu_torch_behind_a_gpu(tmp_path):
    # nvidia-smi answers (a stand-in), but this torch is a CPU build: nothing may run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-fake)'\n")
    env = {"PATH": f"{bin_dir}:{SYSTEM_PATH}", "PYTHON": sys.executable, "HOME": str(tmp_path),
           "GPU_CHECK_PREREQS_ONLY": "1"}
    done = run(["bash", str(GPU_CHECK)], env)
    assert done.returncode == 2
    horovod = run([sys.executable, "-c", "import horovod.torch"], dict(os.environ)).returncode == 0
    if horovod:
        assert "missing: a CUDA torch that sees the GPUs" in done.stderr and "fix: " in done.stderr
    else:
        assert "missing: the Python module horovod.torch" in done.stderr


# -- gpu_check_table.py verdicts --------------------------------------------------------------------


def gpu_record(strategy: str, world_size: int, precision: str, **extra) -> dict:
    record = {
        "case_id": f"{strategy}-{world_size}-medium-{precision}", "strategy": strategy, "world_size": world_size,
        "preset": "medium", "precision": precision, "device_type": "cuda", "samples_per_s": 1e5,
        "flops_per_sample": 1e8, "peak_flops_per_s": 7e14, "compute_devices": world_size, "flags": [],
        "round_times_s": [1.1, 1.2, 1.1], "peak_memory_bytes": 4 * 2**30, "tf32_override": False,
        "threads_per_rank": 16 if strategy in ("single", "dp") else 16 // world_size,
        "launcher": {"single": "python", "dp": "python", "horovod": "horovodrun"}.get(strategy, "torchrun"),
        "launch_s": 9.0, "worker_pids": [100] if strategy in ("single", "dp") else list(range(100, 100 + world_size)),
        "telemetry": {"source": "nvml", "energy_j": 900.0, "devices": [
            {"util_mean_pct": 95.0, "power_mean_w": 600.0, "samples": 33, "power_cap_fraction": 0.4,
             "memory_info_version": 2}]}}
    if strategy == "dp":
        record.update(replica_output_dtypes=["bfloat16" if precision == "bf16" else "float32"],
                      peak_memory_bytes_per_device=[4 * 2**30] + [2**30] * (world_size - 1))
    if strategy == "fsdp":
        record["mixed_precision_policy"] = ({"param_dtype": "bfloat16", "reduce_dtype": "float32"}
                                            if precision == "bf16" else {"param_dtype": None, "reduce_dtype": None})
    record.update(extra)
    return record


def payload(recs: list[dict], failed: dict[str, str] | None = None, skipped: dict[str, str] | None = None) -> dict:
    cases = [{"case_id": r["case_id"], "status": "passed", "reason": None} for r in recs]
    cases += [{"case_id": case_id, "status": "failed", "reason": reason} for case_id, reason in (failed or {}).items()]
    cases += [{"case_id": case_id, "status": "skipped", "reason": reason} for case_id, reason in (skipped or {}).items()]
    return {"benchmarks": [{"extra_info": r} for r in recs], "gpusizer": {"cases": cases},
            "machine_info": {"gpusizer": {"cpu_cores": 16}}}


def table(tmp_path: Path, main: dict, oom: dict | None = None, release: list | None = None):
    args = [sys.executable, str(TABLE), str(tmp_path / "main.json")]
    (tmp_path / "main.json").write_text(json.dumps(main))
    if oom is not None:
        (tmp_path / "oom.json").write_text(json.dumps(oom))
        args += ["--oom-run", str(tmp_path / "oom.json"), "--expect-fail", "single-1-medium-bf16:does not fit"]
    if release is not None:
        (tmp_path / "release.json").write_text(json.dumps(release))
        args += ["--checks", str(tmp_path / "release.json")]
    return run(args, dict(os.environ), timeout_s=60)


GOOD = [gpu_record(s, 1, p) for s in ("single", "dp", "ddp", "fsdp", "horovod") for p in ("fp32", "bf16")]
OOM_RUN = payload([gpu_record("dp", 1, "bf16"), gpu_record("ddp", 1, "bf16")],
                  failed={"single-1-medium-bf16": "does not fit: medium bf16 single at batch 256 on NVIDIA H200 (139 GiB)"})
RELEASED = [{"check": "8 single-1: memory released", "ok": True, "detail": "after close [0.0]"}]


def test_a_good_gpu_run_passes_every_check_and_says_what_needs_two_gpus(tmp_path):
    done = table(tmp_path, payload(GOOD), OOM_RUN, RELEASED)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("check ok:") == 8
    assert "check n/a: 2 fsdp peak < ddp peak at world size 2" in done.stdout
    # At dp-1 no replica thread runs, so the replicas' dtype cannot be shown on one GPU.
    assert "check n/a: 1 dp bf16: the replicas computed in bfloat16: needs 2 GPUs" in done.stdout
    assert "single-1-medium-bf16" in done.stdout and "dp-1-medium-bf16 (oom run)" in done.stdout
    assert done.stdout.rstrip().endswith("gpu-check: passed")


@pytest.mark.parametrize(("change", "failure"), [
    (lambda recs: recs.append(gpu_record("dp", 2, "bf16", replica_output_dtypes=["float16"])),
     "check failed: 1 dp bf16"),
    (lambda recs: recs[7].update(mixed_precision_policy={"param_dtype": None, "reduce_dtype": None}),
     "check failed: 3 fsdp bf16"),
    (lambda recs: recs[0].update(tf32_override=True), "check failed: 5 fp32 is fp32"),
    (lambda recs: recs[4].update(threads_per_rank=16 * 8), "check failed: 6 threads per rank"),
    (lambda recs: recs[4]["telemetry"]["devices"][0].pop("power_cap_fraction"), "check failed: 7 NVML"),
    (lambda recs: recs[4]["telemetry"]["devices"][0].pop("memory_info_version"), "check failed: 7 NVML"),
    (lambda recs: recs[1].update(round_times_s=[0.004, 0.004]), "check failed: 4 time-sized rounds"),
    (lambda recs: recs[0].update(launcher="inprocess", launch_s=0.0, worker_pids=[]), "check failed: 9 every case"),
    (lambda recs: recs.extend([gpu_record("fsdp", 2, "bf16", peak_memory_bytes=9 * 2**30),
                               gpu_record("ddp", 2, "bf16", peak_memory_bytes=8 * 2**30)]),
     "check failed: 2 fsdp peak < ddp peak"),
])
def test_each_mechanism_check_fails_when_its_record_says_so(tmp_path, change, failure):
    recs = json.loads(json.dumps(GOOD))
    change(recs)
    done = table(tmp_path, payload(recs), OOM_RUN, RELEASED)
    assert done.returncode == 1 and failure in done.stderr, done.stdout + done.stderr


def test_an_unplanned_skip_fails_the_check_and_too_few_gpus_does_not(tmp_path):
    two_gpus = {"ddp-2-medium-bf16": "world size 2 needs 2 GPUs; this machine has 1"}
    done = table(tmp_path, payload(GOOD, skipped=two_gpus), OOM_RUN, RELEASED)
    assert done.returncode == 0, done.stdout + done.stderr
    ceiling = {"ddp-2-medium-bf16": "the all-reduce ceiling at world size 2 failed: its ranks failed, so every "
                                    "case of world size 2 is skipped: NCCL error"}
    done = table(tmp_path, payload(GOOD, skipped=ceiling), OOM_RUN, RELEASED)
    assert done.returncode == 1 and "ddp-2-medium-bf16 skipped: the all-reduce ceiling" in done.stderr


def test_the_out_of_memory_case_must_fail_in_one_line_and_the_next_ones_pass(tmp_path):
    passed_anyway = payload([gpu_record("single", 1, "bf16"), gpu_record("dp", 1, "bf16")])
    done = table(tmp_path, payload(GOOD), passed_anyway, RELEASED)
    assert done.returncode == 1 and "single-1-medium-bf16 should have failed with 'does not fit'" in done.stderr
    next_failed = payload([gpu_record("dp", 1, "bf16")], failed={"single-1-medium-bf16": "does not fit: ...",
                                                                  "ddp-1-medium-bf16": "rank 0 failed: CUDA error"})
    done = table(tmp_path, payload(GOOD), next_failed, RELEASED)
    assert done.returncode == 1 and "out-of-memory run: ddp-1-medium-bf16 failed" in done.stderr
    done = table(tmp_path, payload(GOOD), OOM_RUN, [{"check": "8 dp-1: released", "ok": False, "detail": "1.5 GiB"}])
    assert done.returncode == 1 and "check failed: 8 dp-1: released" in done.stderr


# -- install-horovod.sh on a CUDA torch -------------------------------------------------------------


def horovod_env(tmp_path: Path, *, nvcc: bool, nccl: bool, torch_cuda: str = "12.4", **extra) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvcc:
        executable(bin_dir / "nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    env = {"PATH": f"{bin_dir}:{SYSTEM_PATH}", "PYTHON": sys.executable, "HOME": str(tmp_path),
           "GPUSIZER_CACHE_DIR": str(tmp_path / "cache"), "GPUSIZER_TORCH_CUDA": torch_cuda,
           "GPUSIZER_CUDA_SEARCH_DIRS": "", "GPUSIZER_NCCL_SEARCH_DIRS": "", "GPUSIZER_HOROVOD_PLAN_ONLY": "1"}
    if nccl:
        (tmp_path / "nccl" / "include").mkdir(parents=True, exist_ok=True)
        (tmp_path / "nccl" / "include" / "nccl.h").write_text("/* stand-in */\n")
        env["HOROVOD_NCCL_HOME"] = str(tmp_path / "nccl")
    return {**env, **extra}


def test_install_horovod_on_a_cuda_torch_without_nvcc_fails_loudly_saying_why(tmp_path):
    done = run(["bash", str(INSTALL_HOROVOD)], horovod_env(tmp_path, nvcc=False, nccl=True), timeout_s=300)
    assert done.returncode == 1
    assert "ERROR: torch is a CUDA 12.4 build but nvcc was not found" in done.stderr
    assert "cuda-toolkit-12-4" in done.stderr and "GPUSIZER_HOROVOD_CPU_ONLY=1" in done.stderr
    assert "building horovod" not in done.stdout


def test_install_horovod_on_a_cuda_torch_without_nccl_headers_fails_loudly_saying_why(tmp_path):
    done = run(["bash", str(INSTALL_HOROVOD)], horovod_env(tmp_path, nvcc=True, nccl=False), timeout_s=300)
    assert done.returncode == 1
    assert "ERROR: torch is a CUDA 12.4 build but NCCL's header nccl.h was not found" in done.stderr
    assert f"{sys.executable} -m pip install nvidia-nccl-cu12" in done.stderr


def test_install_horovod_on_a_cuda_torch_builds_nccl_operations_and_replaces_a_cpu_only_horovod(tmp_path):
    done = run(["bash", str(INSTALL_HOROVOD)], horovod_env(tmp_path, nvcc=True, nccl=True), timeout_s=300)
    assert done.returncode == 0, done.stderr
    assert "plan: HOROVOD_GPU_OPERATIONS=NCCL" in done.stdout
    assert f"nvcc: {tmp_path}/bin/nvcc" in done.stdout and f"nccl.h in: {tmp_path}/nccl/include" in done.stdout
    if run([sys.executable, "-c", "import horovod.torch"], dict(os.environ)).returncode == 0:
        # The CPU-only Horovod installed here is not kept on a CUDA torch: it is rebuilt with NCCL.
        assert "the installed horovod was built without NCCL" in done.stdout


def test_install_horovod_on_a_cpu_torch_ignores_a_stray_nvcc(tmp_path):
    # With a (CPU-only) Horovod installed here, a CPU torch, or a CPU-only build asked for, keeps it.
    installed = run([sys.executable, "-c", "import horovod.torch"], dict(os.environ)).returncode == 0
    done = run(["bash", str(INSTALL_HOROVOD)], horovod_env(tmp_path, nvcc=True, nccl=False, torch_cuda="cpu"),
               timeout_s=300)
    assert done.returncode == 0, done.stderr
    assert ("already installed and working" if installed else "gpu ops: none") in done.stdout
    cpu_only = horovod_env(tmp_path, nvcc=False, nccl=False, GPUSIZER_HOROVOD_CPU_ONLY="1")
    done = run(["bash", str(INSTALL_HOROVOD)], cpu_only, timeout_s=300)
    assert done.returncode == 0, done.stderr
    assert ("already installed and working" if installed else "building without NCCL") in done.stdout
