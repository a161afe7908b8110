"""A stand-in for the ``pynvml`` module (nvidia-ml-py), for tests on machines without an NVIDIA GPU.

This is the only faked boundary of the telemetry tests: NVML needs a driver and a GPU, which this
machine does not have. It mimics pynvml's calling convention (module functions taking handles,
``NVMLError`` carrying ``.value``, milliwatts and millijoules) and nothing of gpusizer.
"""

from __future__ import annotations

import importlib.machinery
import time
import types
from dataclasses import dataclass, field

NOT_SUPPORTED, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST = 3, 12, 13, 15
NVML_MEMORY_V2 = 0x02000028  # pynvml.nvmlMemory_v2


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {NOT_SUPPORTED: "Not Supported", LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
                FUNCTION_NOT_FOUND: "Function Not Found", GPU_IS_LOST: "GPU is lost"}.get(self.value, f"error {self.value}")


@dataclass
class FakeGpu:
    uuid: str
    pci_bus_id: str
    name: str = "NVIDIA H200"
    memory_total_bytes: int = 141 * 2**30
    memory_used_bytes: int = 40 * 2**30  # as v2 counts it; v1's "used" adds memory_reserved_bytes
    memory_reserved_bytes: int = 512 * 2**20  # what the driver keeps for itself
    memory_v2: bool = True  # False: a driver without nvmlDeviceGetMemoryInfo_v2
    util_pct: int = 97
    power_mw: int = 600_000
    temperature_c: int = 61
    sm_clock_mhz: int = 1980
    throttle_reasons: int = 0
    unsupported: set[str] = field(default_factory=set)  # NVML function names answering NOT_SUPPORTED
    lost_after_calls: int | None = None  # every call after this many raises GPU_IS_LOST
    nvlink_links: int = 18
    process_sm_util: dict[int, int] = field(default_factory=dict)  # pid -> SM % (nvmlDeviceGetProcessUtilization)
    calls: int = 0
    _t0: float = field(default_factory=time.perf_counter)

    def energy_mj(self) -> int:
        # A counter that grows at the reported power, as the real one does.
        return int(self.power_mw * (time.perf_counter() - self._t0))


def make_pynvml(gpus: list[FakeGpu], *, init_error: int | None = None, cuda_driver_version: int = 12040,
                p2p_nvlink: bool = True, topology_level: int = 40, has_memory_v2: bool = True) -> types.ModuleType:
    """``has_memory_v2=False``: an old nvidia-ml-py (no ``nvmlMemory_v2``, no ``version`` argument)."""
    lib = types.ModuleType("pynvml")
    lib.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
    lib.NVMLError = NVMLError
    lib.NVML_NVLINK_MAX_LINKS = 18
    lib.shutdowns = 0

    def nvmlInit():
        if init_error is not None:
            raise NVMLError(init_error)

    def nvmlShutdown():
        lib.shutdowns += 1

    def device_call(name, answer):
        def call(gpu, *args):
            gpu.calls += 1
            if gpu.lost_after_calls is not None and gpu.calls > gpu.lost_after_calls:
                raise NVMLError(GPU_IS_LOST)
            if name in gpu.unsupported:
                raise NVMLError(NOT_SUPPORTED)
            return answer(gpu, *args)
        call.__name__ = name
        setattr(lib, name, call)

    def by(attribute):
        def find(value):
            for gpu in gpus:
                if getattr(gpu, attribute) == value:
                    return gpu
            raise NVMLError(6)  # NOT_FOUND
        return find

    lib.nvmlInit = nvmlInit
    lib.nvmlShutdown = nvmlShutdown
    lib.nvmlDeviceGetHandleByUUID = by("uuid")
    lib.nvmlDeviceGetHandleByPciBusId = by("pci_bus_id")
    lib.nvmlDeviceGetCount = lambda: len(gpus)
    lib.nvmlDeviceGetHandleByIndex = lambda index: gpus[index]
    lib.nvmlSystemGetDriverVersion = lambda: b"570.86.15"
    lib.nvmlSystemGetCudaDriverVersion = lambda: cuda_driver_version
    lib.nvmlDeviceGetP2PStatus = lambda a, b, index: 0 if p2p_nvlink else 2
    lib.nvmlDeviceGetTopologyCommonAncestor = lambda a, b: topology_level

    device_call("nvmlDeviceGetName", lambda g: g.name.encode())
    device_call("nvmlDeviceGetUUID", lambda g: g.uuid)
    device_call("nvmlDeviceGetPciInfo", lambda g: types.SimpleNamespace(busId=g.pci_bus_id.encode()))
    def memory_info(gpu, version=None):
        # As pynvml: with a version it calls nvmlDeviceGetMemoryInfo_v2, which an old driver lacks.
        if version is None:
            return types.SimpleNamespace(total=gpu.memory_total_bytes,
                                         used=gpu.memory_used_bytes + gpu.memory_reserved_bytes)
        if not gpu.memory_v2:
            raise NVMLError(FUNCTION_NOT_FOUND)
        return types.SimpleNamespace(version=version, total=gpu.memory_total_bytes, used=gpu.memory_used_bytes,
                                     reserved=gpu.memory_reserved_bytes)

    if has_memory_v2:
        lib.nvmlMemory_v2 = NVML_MEMORY_V2
        device_call("nvmlDeviceGetMemoryInfo", memory_info)
    else:
        device_call("nvmlDeviceGetMemoryInfo", lambda g: memory_info(g))
    device_call("nvmlDeviceGetUtilizationRates", lambda g: types.SimpleNamespace(gpu=g.util_pct, memory=30))
    device_call("nvmlDeviceGetPowerUsage", lambda g: g.power_mw)
    device_call("nvmlDeviceGetTemperature", lambda g, sensor: g.temperature_c)
    device_call("nvmlDeviceGetClockInfo", lambda g, clock: g.sm_clock_mhz)
    device_call("nvmlDeviceGetCurrentClocksEventReasons", lambda g: g.throttle_reasons)
    device_call("nvmlDeviceGetTotalEnergyConsumption", lambda g: g.energy_mj())
    device_call("nvmlDeviceGetCudaComputeCapability", lambda g: (9, 0))
    device_call("nvmlDeviceGetEnforcedPowerLimit", lambda g: 700_000)
    device_call("nvmlDeviceGetMaxClockInfo", lambda g, clock: 1980 if clock == 1 else 2619)
    device_call("nvmlDeviceGetCurrPcieLinkGeneration", lambda g: 5)
    device_call("nvmlDeviceGetMaxPcieLinkGeneration", lambda g: 5)
    device_call("nvmlDeviceGetCurrPcieLinkWidth", lambda g: 16)
    device_call("nvmlDeviceGetMaxPcieLinkWidth", lambda g: 16)
    device_call("nvmlDeviceGetMigMode", lambda g: [0, 0])

    def process_utilisation(gpu, last_seen_us):
        if not gpu.process_sm_util:
            raise NVMLError(6)  # NOT_FOUND: no process sample since last_seen_us, as the real call answers
        now_us = int(time.time() * 1e6)
        return [types.SimpleNamespace(pid=pid, smUtil=util, memUtil=0, timeStamp=now_us)
                for pid, util in gpu.process_sm_util.items()]
    device_call("nvmlDeviceGetProcessUtilization", process_utilisation)

    def nvlink_state(gpu, link):
        if link >= gpu.nvlink_links:
            raise NVMLError(2)  # INVALID_ARGUMENT: past the last link
        return 1
    device_call("nvmlDeviceGetNvLinkState", nvlink_state)
    return lib
