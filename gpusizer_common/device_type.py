"""The one place a device type's spelling is compared ("cuda": NVIDIA GPUs, "cpu": the host's cores),
for bench/ and reports/ alike. ``torch.device.type`` and a case's ``device_type`` use the same words."""

from __future__ import annotations

CUDA = "cuda"


def is_cuda(device_type: str) -> bool:
    """Whether work of ``device_type`` runs on CUDA GPUs (else on the host's CPU cores)."""
    return device_type == CUDA
