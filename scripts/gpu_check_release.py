"""GPU check of issue 9 item 8, as issue 23 left it: single and dp train in a rank process of their own
(bench/launch/plain.py), and the process driving them never touches a GPU. While the rank trains, the GPUs
it uses hold its memory; once its group closes the rank is gone and every GPU is back where it was
(NVML's used memory, which sees every process), and this process never initialised CUDA.

    .venv/bin/python scripts/gpu_check_release.py OUT.json

Writes a JSON list of ``{"check", "ok", "detail"}`` that scripts/gpu_check_table.py prints with its
table; exit status 0 when every check passed, 1 when one failed, 2 without a CUDA device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pynvml
import torch

from bench.config.cases import BenchCase
from bench.launch import LAUNCHERS
from bench.strategies import REGISTRY

GIB = 2**30
SLACK_GIB = 0.25  # other processes on a shared GPU move its used memory a little


def used_gib(gpus: int) -> list[float]:
    return [round(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used / GIB, 3)
            for i in range(gpus)]


def check_release(strategy: str, world_size: int, gpus: int) -> dict:
    case = BenchCase(strategy=strategy, world_size=world_size, preset="medium", precision="bf16",
                     device_type="cuda", per_device_batch_size=256, scaling="weak", steps_per_round=5,
                     rounds=1, warmup_rounds=0)
    before = used_gib(gpus)
    group = LAUNCHERS[REGISTRY[strategy].launcher](case, launch_timeout_s=120, round_timeout_s=120)
    try:
        group.run_round(5)
        during, pids = used_gib(gpus), list(group.pids)
    finally:
        group.close()
    after = used_gib(gpus)
    grew = all(during[i] > before[i] + SLACK_GIB for i in range(world_size))
    back = all(abs(after[i] - before[i]) <= SLACK_GIB for i in range(gpus))
    return {"check": f"8 {case.case_id}: its rank process held the GPU memory and gave it all back", "ok": grew and back,
            "detail": f"NVML used GiB per GPU before {before}, during {during} (rank pids {pids}), after close {after}"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check_release.py OUT.json", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check_release: no CUDA device", file=sys.stderr)
        return 2
    pynvml.nvmlInit()
    gpus = torch.cuda.device_count()
    checks = [check_release("single", 1, gpus), check_release("dp", min(2, gpus), gpus)]
    initialised = torch.cuda.is_initialized()
    checks.append({"check": "8 the driving process never initialised CUDA (single and dp train in ranks)",
                   "ok": not initialised, "detail": f"torch.cuda.is_initialized() {initialised}"})
    Path(argv[0]).write_text(json.dumps(checks, indent=1))
    for check in checks:
        print(f"{'ok' if check['ok'] else 'FAILED'}: {check['check']}: {check['detail']}")
    return 0 if all(check["ok"] for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
