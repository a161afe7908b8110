"""The machine the benchmark ran on, for pytest-benchmark's ``machine_info["gpusizer"]``.

Read from local sources only (NVML, torch, /proc, /sys, the environment); never a network call, so
a cloud instance type is recorded only where the machine states it locally. Every GPU field that
cannot be read is ``None`` with the reason under ``unavailable``.
"""

from __future__ import annotations

import os
import platform

import psutil
import torch

from bench.hardware.devices import cpu_model_name, cuda_unavailable_reason, usable_cores
from bench.hardware.software import nccl_version, package_version, software_stack
from bench.telemetry.nvml import DeviceLost, Nvml, open_nvml, text
from gpusizer_common.cpuinfo import cpuinfo_values

DMI_ROOT = "/sys/class/dmi/id"
# Set by the user (or their provisioning) when the machine does not say what it is.
INSTANCE_TYPE_ENV = "GPUSIZER_INSTANCE_TYPE"
_NVML_CLOCK_SM, _NVML_CLOCK_MEM = 1, 2
_NVML_P2P_CAPS_INDEX_NVLINK, _NVML_P2P_STATUS_OK = 2, 0

# nvmlGpuTopologyLevel_t -> what it means for traffic between the two GPUs.
TOPOLOGY_LEVELS = {
    0: "same_board",  # NVML_TOPOLOGY_INTERNAL: e.g. the two GPUs of one card
    10: "same_switch",  # SINGLE: one PCIe switch
    20: "multiple_switches",  # MULTIPLE: PCIe switches, no host bridge
    30: "same_host_bridge",  # HOSTBRIDGE
    40: "same_cpu",  # NODE: through one CPU socket's root complex
    50: "across_cpus",  # SYSTEM: across the inter-socket link
}


def machine_inventory() -> dict:
    gpu_part = gpu_inventory()
    return {
        "cpu_model": cpu_model_name(),
        "cpu_cores": usable_cores(),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_sockets": cpu_sockets(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,  # the CUDA runtime torch was built with
        "python_version": platform.python_version(),
        "horovod_version": package_version("horovod"),
        "instance": instance_identity(),
        **gpu_part,
        # Every version that can move a number, gpusizer's own commit included (bench/hardware/software.py).
        "software": software_stack(gpu_part["driver_version"]),
        "ceilings": ceilings(),
    }


def cpu_sockets() -> int | None:
    ids = cpuinfo_values("physical id")
    return len(set(ids)) if ids else None


def _read_dmi(name: str, root: str) -> str | None:
    try:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def instance_identity(dmi_root: str = DMI_ROOT, environ: dict | None = None) -> dict:
    """What the machine says it is. AWS puts the instance type in the DMI product name
    (``p5.48xlarge``); other clouds name only themselves there, so the environment variable wins."""
    environ = os.environ if environ is None else environ
    vendor, product = _read_dmi("sys_vendor", dmi_root), _read_dmi("product_name", dmi_root)
    if environ.get(INSTANCE_TYPE_ENV):
        return {"instance_type": environ[INSTANCE_TYPE_ENV], "source": "environment",
                "dmi_vendor": vendor, "dmi_product": product}
    if vendor and "amazon" in vendor.lower() and product:
        return {"instance_type": product, "source": "dmi", "dmi_vendor": vendor, "dmi_product": product}
    return {"instance_type": None, "source": None, "dmi_vendor": vendor, "dmi_product": product}


def gpu_inventory() -> dict:
    """GPUs as NVML sees them (all of them: NVML ignores CUDA_VISIBLE_DEVICES), the driver, and why
    there are none when there are none."""
    torch_reason = cuda_unavailable_reason()
    base = {"nccl_version": nccl_version(), "torch_cuda_reason": torch_reason}
    nvml, nvml_reason = open_nvml()
    if nvml is None:
        reason = nvml_reason if torch_reason is None else f"{nvml_reason}; {torch_reason}"
        return {**base, "driver_version": None, "cuda_driver_version": None,
                "gpus": [], "gpus_reason": reason, "topology": []}
    with nvml:
        driver, _ = nvml.query("nvmlSystemGetDriverVersion")
        cuda_driver, _ = nvml.query("nvmlSystemGetCudaDriverVersion")
        count, reason = nvml.query("nvmlDeviceGetCount")
        handles = []
        for index in range(count or 0):
            handle, _ = nvml.query("nvmlDeviceGetHandleByIndex", index)
            handles.append(handle)
        gpus = [gpu_entry(nvml, index, handle) for index, handle in enumerate(handles)]
        topology = gpu_topology(nvml, handles)
    if not gpus:
        reason = reason or "NVML reports no GPUs"
    return {
        **base,
        "driver_version": text(driver) if driver is not None else None,
        # NVML encodes 12.4 as 12040.
        "cuda_driver_version": f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}" if cuda_driver else None,
        "gpus": gpus,
        "gpus_reason": None if gpus else reason,
        "topology": topology,
    }


def gpu_entry(nvml: Nvml, index: int, handle) -> dict:
    """One GPU's static facts; a field this GPU cannot report is None, with why under ``unavailable``."""
    unavailable: dict[str, str] = {}

    def ask(field: str, function: str, *args, convert=lambda v: v):
        if handle is None:
            unavailable[field] = "no NVML handle"
            return None
        value, reason = nvml.query(function, handle, *args)
        if reason:
            unavailable[field] = reason
            return None
        return convert(value)

    entry = {"nvml_index": index}
    try:
        entry.update(
            name=ask("name", "nvmlDeviceGetName", convert=text),
            uuid=ask("uuid", "nvmlDeviceGetUUID", convert=text),
            pci_bus_id=ask("pci_bus_id", "nvmlDeviceGetPciInfo", convert=lambda v: text(v.busId)),
            memory_total_bytes=ask("memory_total_bytes", "nvmlDeviceGetMemoryInfo", convert=lambda v: int(v.total)),
            compute_capability=ask("compute_capability", "nvmlDeviceGetCudaComputeCapability",
                                   convert=lambda v: f"{v[0]}.{v[1]}"),
            power_limit_w=ask("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", convert=lambda mw: mw / 1000.0),
            max_sm_clock_mhz=ask("max_sm_clock_mhz", "nvmlDeviceGetMaxClockInfo", _NVML_CLOCK_SM),
            max_memory_clock_mhz=ask("max_memory_clock_mhz", "nvmlDeviceGetMaxClockInfo", _NVML_CLOCK_MEM),
            pcie_generation=ask("pcie_generation", "nvmlDeviceGetCurrPcieLinkGeneration"),
            pcie_generation_max=ask("pcie_generation_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
            pcie_width=ask("pcie_width", "nvmlDeviceGetCurrPcieLinkWidth"),
            pcie_width_max=ask("pcie_width_max", "nvmlDeviceGetMaxPcieLinkWidth"),
            mig_mode=ask("mig_mode", "nvmlDeviceGetMigMode", convert=lambda modes: bool(modes[0])),
            nvlink_links_up=nvlink_links_up(nvml, handle, unavailable) if handle is not None else None,
        )
    except DeviceLost as lost:
        entry["lost"] = str(lost)
    entry["unavailable"] = unavailable
    return entry


def nvlink_links_up(nvml: Nvml, handle, unavailable: dict) -> int | None:
    """Links in the active state. A GPU without NVLink answers "not supported" for link 0."""
    up = 0
    for link in range(getattr(nvml.lib, "NVML_NVLINK_MAX_LINKS", 18)):
        state, reason = nvml.query("nvmlDeviceGetNvLinkState", handle, link)
        if reason:
            if link > 0 or "not supported" in reason:
                break  # past this GPU's last link, or a GPU without NVLink: zero links is the fact
            unavailable["nvlink_links_up"] = reason
            return None
        up += int(bool(state))
    return up


def gpu_topology(nvml: Nvml, handles: list) -> list[dict]:
    """For each pair of GPUs: NVLink if peer-to-peer runs over it, else the closest common PCIe
    ancestor (switch, host bridge, CPU socket, or across sockets)."""
    pairs = []
    for a in range(len(handles)):
        for b in range(a + 1, len(handles)):
            if handles[a] is None or handles[b] is None:
                continue
            try:
                p2p, _ = nvml.query("nvmlDeviceGetP2PStatus", handles[a], handles[b], _NVML_P2P_CAPS_INDEX_NVLINK)
                level, reason = nvml.query("nvmlDeviceGetTopologyCommonAncestor", handles[a], handles[b])
            except DeviceLost:
                continue
            pcie = TOPOLOGY_LEVELS.get(level) if reason is None else None
            pairs.append({"a": a, "b": b, "nvlink": p2p == _NVML_P2P_STATUS_OK,
                          "link": "nvlink" if p2p == _NVML_P2P_STATUS_OK else pcie,
                          "pcie_path": pcie, "reason": reason})
    return pairs


def ceilings() -> dict:
    """Ceilings measured so far in this session: the matmul peaks and all-reduce bus bandwidths.
    Called again whenever the result file is written, so later measurements are included."""
    from bench.hardware.bandwidth import measured_ceilings
    from bench.hardware.peak import session_peaks

    matmul = [{"device": device, "precision": precision, "processes": processes, "threads": threads,
               "flops_per_s": flops, "flops_per_s_end": end_flops}
              for (device, precision, processes, threads), (flops, end_flops) in session_peaks().items()]
    return {"matmul_peak": matmul, "allreduce": measured_ceilings()}
