"""Memory of the GPUs people rent or buy for training, each with where the figure comes from.

``memory_bytes`` reads the datasheet's "GB" as 10^9 bytes, the smaller of the two readings: what a
program can allocate is lower still (the CUDA/ROCm context takes a few hundred MiB, ECC where enabled
reserves some), which the 85 % headroom of `gpusizer fit` is there to cover. The figures were taken from
the vendors' datasheets as named; this project's machine has no network, so they were not re-fetched
when this table was written (2026-12).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    memory_type: str
    source: str  # vendor datasheet or specification page, with its date

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.memory_bytes, int) or self.memory_bytes < 1:
            raise ValueError(f"GPU {self.name!r}: memory_bytes must be a positive integer, got {self.memory_bytes!r}")
        if not self.source:
            raise ValueError(f"GPU {self.name!r}: a source (datasheet and date) is required")


_TABLE = (
    GPU("H100-80GB", 80 * GB, "HBM3", "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM 80GB), 2023"),
    GPU("H100-94GB-NVL", 94 * GB, "HBM3", "NVIDIA H100 Tensor Core GPU datasheet (H100 NVL 94GB), 2023"),
    GPU("H200-141GB", 141 * GB, "HBM3e", "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM 141GB), 2024"),
    GPU("A100-40GB", 40 * GB, "HBM2", "NVIDIA A100 Tensor Core GPU datasheet (A100 40GB PCIe/SXM), Jun 2021"),
    GPU("A100-80GB", 80 * GB, "HBM2e", "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB PCIe/SXM), Jun 2021"),
    GPU("L4", 24 * GB, "GDDR6", "NVIDIA L4 Tensor Core GPU datasheet, 2023"),
    GPU("L40S", 48 * GB, "GDDR6 (ECC)", "NVIDIA L40S GPU datasheet, 2023"),
    GPU("A10G", 24 * GB, "GDDR6", "AWS Amazon EC2 G5 instances page (NVIDIA A10G, 24 GB per GPU), 2021"),
    GPU("V100-16GB", 16 * GB, "HBM2", "NVIDIA Tesla V100 GPU datasheet (16GB), Jan 2020"),
    GPU("V100-32GB", 32 * GB, "HBM2", "NVIDIA Tesla V100 GPU datasheet (32GB), Jan 2020"),
    GPU("RTX-4090", 24 * GB, "GDDR6X", "NVIDIA GeForce RTX 4090 specifications page, Oct 2022"),
    GPU("MI300X", 192 * GB, "HBM3", "AMD Instinct MI300X accelerator data sheet, Dec 2023"),
)
GPUS: dict[str, GPU] = {gpu.name: gpu for gpu in _TABLE}


def parse_gpu_names(option: str, raw: str) -> tuple[GPU, ...]:
    """Comma-separated names (case-insensitive) -> GPUs; ValueError naming the unknown one and the known names."""
    by_lower = {name.lower(): gpu for name, gpu in GPUS.items()}
    names = [part.strip() for part in str(raw).split(",") if part.strip()]
    if not names:
        raise ValueError(f"{option}: no GPU named; allowed: {', '.join(GPUS)}")
    chosen = []
    for name in names:
        gpu = by_lower.get(name.lower())
        if gpu is None:
            raise ValueError(f"{option}: unknown GPU {name!r}; known: {', '.join(GPUS)}")
        if gpu not in chosen:
            chosen.append(gpu)
    return tuple(chosen)
