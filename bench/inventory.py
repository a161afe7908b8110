"""The machine the benchmark ran on, for pytest-benchmark's ``machine_info``. No network calls."""

from __future__ import annotations

import os
import platform

import torch

from bench.devices import cpu_model_name, cuda_unavailable_reason, usable_cores


def machine_inventory() -> dict:
    gpus: list[dict] = []
    reason = cuda_unavailable_reason()
    if reason is None:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"index": index, "name": props.name, "memory_total_bytes": int(props.total_memory),
                         "compute_capability": f"{props.major}.{props.minor}"})
    return {
        "cpu_model": cpu_model_name(),
        "cpu_cores": usable_cores(),
        "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "gpus": gpus,
        "gpus_reason": reason,
    }
