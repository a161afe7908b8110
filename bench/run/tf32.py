"""Environment variables that decide TF32 behind torch's back (set in some container images).

``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` makes torch let cuBLAS use TF32 for fp32 matmuls whatever
``torch.backends.cuda.matmul.allow_tf32`` and ``set_float32_matmul_precision`` say: an "fp32" case
then measures TF32. ``NVIDIA_TF32_OVERRIDE=0`` makes every NVIDIA library refuse TF32: a "tf32" case
then measures fp32. Other values of it force nothing (NVIDIA documents 0 only).
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.hardware.devices import is_cuda

TORCH_OVERRIDE = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"
NVIDIA_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
OVERRIDE_VARIABLES = (TORCH_OVERRIDE, NVIDIA_OVERRIDE)


def tf32_override_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The TF32 override variables that are set, with their values (for the record)."""
    return {name: environ[name] for name in OVERRIDE_VARIABLES if environ.get(name, "") != ""}


def tf32_overridden(device_type: str, precision: str, environ: Mapping[str, str]) -> bool:
    """Whether the environment changes what ``precision`` computes in on this device type."""
    if not is_cuda(device_type):
        return False  # TF32 is a tensor-core format: CPU matmuls never use it
    if precision == "fp32":
        return environ.get(TORCH_OVERRIDE, "").strip() == "1"
    if precision == "tf32":
        return environ.get(NVIDIA_OVERRIDE, "").strip() == "0"
    return False  # bf16 and fp16 matmuls run in their own dtype
