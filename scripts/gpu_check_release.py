"""GPU check of issue 9 item 8: an in-process case (single, then dp over up to 2 GPUs) leaves nothing
behind in this process. After its group closes, the model is gone (a weak reference to it is dead) and
``torch.cuda.memory_reserved`` is 0 on every GPU: the next case's torchrun ranks find them free.

    .venv/bin/python scripts/gpu_check_release.py OUT.json

Writes a JSON list of ``{"check", "ok", "detail"}`` that scripts/gpu_check_table.py prints with its
table; exit status 0 when every check passed, 1 when one failed, 2 without a CUDA device.
"""

from __future__ import annotations

import json
import sys
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import bench.run.worker
from bench.config.cases import BenchCase
from bench.launch.inprocess import InProcessGroup

GIB = 2**30


def reserved_gib(gpus: int) -> list[float]:
    return [round(torch.cuda.memory_reserved(index) / GIB, 3) for index in range(gpus)]


def check_release(strategy: str, world_size: int, gpus: int) -> dict:
    models = []
    build = bench.run.worker.build_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        models.append(weakref.ref(model))
        return model

    bench.run.worker.build_model = build_and_watch
    try:
        case = BenchCase(strategy=strategy, world_size=world_size, preset="medium", precision="bf16",
                         device_type="cuda", per_device_batch_size=256, scaling="weak", steps_per_round=5,
                         rounds=1, warmup_rounds=0)
        group = InProcessGroup(case)
        group.run_round(5)
        during = reserved_gib(gpus)
        group.close()
    finally:
        bench.run.worker.build_model = build
    after = reserved_gib(gpus)
    alive = bool(models and models[0]() is not None)
    ok = not alive and all(value == 0 for value in after) and any(value > 0 for value in during)
    return {"check": f"{case.case_id}: in-process case releases its GPU memory (item 8)", "ok": ok,
            "detail": f"memory_reserved GiB per GPU during {during}, after close {after}; model alive: {alive}"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check_release.py OUT.json", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check_release: no CUDA device", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    checks = [check_release("single", 1, gpus), check_release("dp", min(2, gpus), gpus)]
    Path(argv[0]).write_text(json.dumps(checks, indent=1))
    for check in checks:
        print(f"{'ok' if check['ok'] else 'FAILED'}: {check['check']}: {check['detail']}")
    return 0 if all(check["ok"] for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
