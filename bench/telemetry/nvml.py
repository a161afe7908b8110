"""The one door to NVML (``nvidia-ml-py``, imported as ``pynvml``): imported late, every query wrapped.

A query that this GPU or driver does not support gives ``None`` and a one-line reason instead of an
exception, so one missing field never costs the others. A GPU that falls off the bus raises
``DeviceLost``: the caller stops asking that device but keeps what it already has.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

# NVML return codes (nvml.h); the package also exports them, but the codes are needed before it
# is known whether the package imports at all.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
RESET_REQUIRED = 16
_LOST_CODES = (GPU_IS_LOST, RESET_REQUIRED)
MEMORY_INFO = "nvmlDeviceGetMemoryInfo"  # asked as v2 where possible: see Nvml._memory_info


class DeviceLost(RuntimeError):
    """The GPU stopped answering (fell off the bus, needs a reset)."""


def text(value: Any) -> str:
    """NVML strings come back as bytes from some nvidia-ml-py versions and str from others."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """An initialised NVML. Use ``open_nvml`` to get one; call ``close`` (or use ``with``) when done."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self._open = True
        self.memory_info_version: int | None = None  # 2 or 1 once a memory query answered

    def query(self, function: str, *args: Any) -> tuple[Any, str | None]:
        """``(value, None)``, or ``(None, reason)`` when the query cannot be answered here."""
        if function == MEMORY_INFO and len(args) == 1:
            return self._memory_info(args[0])
        return self._query(function, *args)

    def _memory_info(self, handle: Any) -> tuple[Any, str | None]:
        """Memory info from NVML's v2 query where the driver and nvidia-ml-py have it, else v1.

        v1's ``used`` includes the memory the driver reserves for itself (hundreds of MiB on a large
        GPU), which no training can use; v2 reports it apart as ``reserved``."""
        reasons = []
        version = getattr(self.lib, "nvmlMemory_v2", None)
        if self.memory_info_version != 1 and version is not None:
            try:
                value, reason = self._query(MEMORY_INFO, handle, version)
            except TypeError:  # an nvidia-ml-py whose nvmlDeviceGetMemoryInfo takes no version
                value, reason = None, f"{MEMORY_INFO}: this nvidia-ml-py has no version argument"
            if reason is None:
                self.memory_info_version = 2
                return value, None
            if self.memory_info_version == 2:
                return None, reason  # v2 answered before: this is a real failure, not a missing v2
            reasons.append(f"v2: {reason}")
        elif version is None:
            reasons.append("v2: nvidia-ml-py has no nvmlMemory_v2 (pip install -U nvidia-ml-py)")
        value, reason = self._query(MEMORY_INFO, handle)
        if reason is None:
            self.memory_info_version = 1
            return value, None
        return None, "; ".join([*reasons, reason])

    def _query(self, function: str, *args: Any) -> tuple[Any, str | None]:
        fn = getattr(self.lib, function, None)
        if fn is None:
            return None, f"{function}: not in this nvidia-ml-py (pip install -U nvidia-ml-py)"
        try:
            return fn(*args), None
        except self.lib.NVMLError as error:
            code = getattr(error, "value", None)
            if code in _LOST_CODES:
                raise DeviceLost(f"{function}: {error_text(error)}") from None
            if code == NOT_SUPPORTED:
                return None, f"{function}: not supported on this GPU or driver"
            return None, f"{function}: {error_text(error)}"

    def first(self, *functions: str, args: tuple = ()) -> tuple[Any, str | None]:
        """The first of several spellings of one query that answers (NVML renames some)."""
        reasons = []
        for function in functions:
            value, reason = self.query(function, *args)
            if reason is None:
                return value, None
            reasons.append(reason)
        return None, "; ".join(reasons)

    def handle_for(self, ref: DeviceRef) -> tuple[Any, str | None]:
        """The NVML handle of a CUDA device, found by UUID, else by PCI bus id (never by NVML index,
        which ignores CUDA_VISIBLE_DEVICES and may order devices differently from CUDA)."""
        reasons = []
        if ref.uuid:
            handle, reason = self.query("nvmlDeviceGetHandleByUUID", ref.uuid)
            if reason is None:
                return handle, None
            reasons.append(reason)
        if ref.pci_bus_id:
            handle, reason = self.query("nvmlDeviceGetHandleByPciBusId", ref.pci_bus_id)
            if reason is None:
                return handle, None
            reasons.append(reason)
        return None, "; ".join(reasons) or f"CUDA device {ref.index}: neither UUID nor PCI bus id known"

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.lib.nvmlShutdown()  # NVML counts inits; this undoes ours only
            except self.lib.NVMLError:
                pass

    def __enter__(self) -> Nvml:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class DeviceRef:
    """A CUDA device as torch numbers it, with what NVML can find it by."""

    index: int
    uuid: str | None
    pci_bus_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"DeviceRef.index: {self.index!r}; allowed: an integer >= 0")
        if not (self.uuid or self.pci_bus_id):
            raise ValueError("DeviceRef: needs a uuid or a pci_bus_id to find the device in NVML")


def error_text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - pynvml's __str__ calls into the library, which may be gone
        return f"NVML error {getattr(error, 'value', '?')}"


def open_nvml() -> tuple[Nvml | None, str | None]:
    """Initialise NVML, or say in one line why it cannot be and how to fix that."""
    if importlib.util.find_spec("pynvml") is None:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        code = getattr(error, "value", None)
        if code == LIBRARY_NOT_FOUND:
            return None, "no NVML library (libnvidia-ml.so.1): no NVIDIA driver is installed on this machine"
        if code == DRIVER_NOT_LOADED:
            return None, "the NVIDIA driver is not loaded (check nvidia-smi)"
        return None, f"NVML did not start: {error_text(error)}"
    return Nvml(pynvml), None


def cuda_device_refs(indices: list[int]) -> list[DeviceRef]:
    """What NVML can find CUDA devices ``indices`` by (as torch numbers them, so CUDA_VISIBLE_DEVICES
    and CUDA_DEVICE_ORDER are respected). torch is already using these devices in this process
    (the matmul peak runs here), so reading their properties costs no extra CUDA context."""
    import torch

    refs = []
    for index in indices:
        props = torch.cuda.get_device_properties(index)
        uuid = getattr(props, "uuid", None)
        # torch prints the bare UUID; NVML wants the "GPU-" form (MIG devices are found by bus id).
        uuid_text = f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith(("GPU-", "MIG-")) else uuid
        bus = getattr(props, "pci_bus_id", None)
        pci_bus_id = None
        if bus is not None:
            pci_bus_id = f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        refs.append(DeviceRef(index=index, uuid=str(uuid_text) if uuid_text else None, pci_bus_id=pci_bus_id))
    return refs
