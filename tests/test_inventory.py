"""Machine inventory and the ceilings stored with it (matmul peak, all-reduce bus bandwidth).

NVML is faked at the ``pynvml`` module boundary only (tests/fake_pynvml.py): this machine has no
NVIDIA driver. The DMI files are a temporary tree for the same reason. The all-reduce runs on two
real gloo processes.
"""

from __future__ import annotations

import multiprocessing
import sys

import pytest
from fake_pynvml import LIBRARY_NOT_FOUND, FakeGpu, make_pynvml

from bench.hardware import bandwidth
from bench.hardware.inventory import ceilings, gpu_inventory, instance_identity, machine_inventory


def fake_gpus(count: int = 2, **kwargs) -> list[FakeGpu]:
    return [FakeGpu(uuid=f"GPU-{n}", pci_bus_id=f"00000000:{n:02X}:00.0", **kwargs) for n in range(count)]


def test_inventory_of_this_machine_is_complete_and_explains_missing_gpus():
    inventory = machine_inventory()
    for key in ("cpu_model", "cpu_cores", "memory_total_bytes", "torch_version", "python_version",
                "horovod_version", "instance", "driver_version", "nccl_version", "gpus", "topology", "ceilings"):
        assert key in inventory, key
    assert inventory["cpu_cores"] >= 1 and inventory["memory_total_bytes"] > 2**30
    if not inventory["gpus"]:
        assert inventory["gpus_reason"]  # never an empty list without the why


def test_gpus_with_their_static_facts_and_topology(monkeypatch):
    gpus = fake_gpus(2)
    gpus[1].unsupported = {"nvmlDeviceGetMaxPcieLinkWidth"}
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(gpus))
    inventory = gpu_inventory()
    assert inventory["driver_version"] == "570.86.15" and inventory["cuda_driver_version"] == "12.4"
    first, second = inventory["gpus"]
    assert first == {
        "nvml_index": 0, "name": "NVIDIA H200", "uuid": "GPU-0", "pci_bus_id": "00000000:00:00.0",
        "memory_total_bytes": 141 * 2**30, "compute_capability": "9.0", "power_limit_w": 700.0,
        "max_sm_clock_mhz": 1980, "max_memory_clock_mhz": 2619, "pcie_generation": 5, "pcie_generation_max": 5,
        "pcie_width": 16, "pcie_width_max": 16, "mig_mode": False, "nvlink_links_up": 18, "unavailable": {},
    }
    assert second["pcie_width_max"] is None and "not supported" in second["unavailable"]["pcie_width_max"]
    assert second["pcie_width"] == 16  # the other fields are unaffected
    assert inventory["topology"] == [{"a": 0, "b": 1, "nvlink": True, "link": "nvlink",
                                      "pcie_path": "same_cpu", "reason": None}]
    assert inventory["gpus_reason"] is None


def test_pcie_only_gpus_across_sockets(monkeypatch):
    gpus = fake_gpus(2, unsupported={"nvmlDeviceGetNvLinkState"})
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(gpus, p2p_nvlink=False, topology_level=50))
    inventory = gpu_inventory()
    assert [g["nvlink_links_up"] for g in inventory["gpus"]] == [0, 0]
    assert inventory["topology"][0]["link"] == "across_cpus"


def test_no_nvml_library_means_no_gpus_and_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml([], init_error=LIBRARY_NOT_FOUND))
    inventory = gpu_inventory()
    assert inventory["gpus"] == [] and "no NVIDIA driver" in inventory["gpus_reason"]


def test_no_nvml_package_means_no_gpus_and_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    inventory = gpu_inventory()
    assert inventory["gpus"] == [] and "pip install nvidia-ml-py" in inventory["gpus_reason"]


def test_instance_type_only_from_what_the_machine_states(tmp_path):
    (tmp_path / "sys_vendor").write_text("Amazon EC2\n")
    (tmp_path / "product_name").write_text("p5.48xlarge\n")
    assert instance_identity(str(tmp_path), environ={})["instance_type"] == "p5.48xlarge"
    stated = instance_identity(str(tmp_path), environ={"GPUSIZER_INSTANCE_TYPE": "my-box"})
    assert stated["instance_type"] == "my-box" and stated["source"] == "environment"
    (tmp_path / "sys_vendor").write_text("Google\n")
    (tmp_path / "product_name").write_text("Google Compute Engine\n")
    google = instance_identity(str(tmp_path), environ={})
    assert google["instance_type"] is None and google["dmi_product"] == "Google Compute Engine"
    assert instance_identity(str(tmp_path / "absent"), environ={})["dmi_vendor"] is None


# -- all-reduce bus bandwidth ----------------------------------------------------------------


@pytest.mark.parametrize(("world_size", "factor"), [(2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_bandwidth_follows_nccl_tests(world_size, factor):
    assert bandwidth.bus_bandwidth_bytes_per_s(1000, 0.5, world_size) == pytest.approx(2000 * factor)


def test_allreduce_ceiling_on_two_real_gloo_processes(monkeypatch):
    monkeypatch.setattr(bandwidth, "_CACHE", {})
    monkeypatch.setitem(bandwidth.SIZES_BYTES, "cpu", (1 << 16, 1 << 20))  # quick: two sizes
    result = bandwidth.allreduce_ceiling("cpu", 2, timeout_s=120)
    assert result["reason"] is None and result["backend"] == "gloo"
    assert [s["size_bytes"] for s in result["sizes"]] == [1 << 16, 1 << 20]
    for size in result["sizes"]:
        assert size["time_s"] > 0 and size["busbw_bytes_per_s"] == pytest.approx(size["algbw_bytes_per_s"])
    assert result["busbw_bytes_per_s"] == max(s["busbw_bytes_per_s"] for s in result["sizes"])
    assert multiprocessing.active_children() == []  # every rank reaped
    assert bandwidth.allreduce_ceiling("cpu", 2) is result  # once per session
    assert ceilings()["allreduce"] == [result]


def test_allreduce_past_its_deadline_is_reaped_and_reported(monkeypatch):
    monkeypatch.setattr(bandwidth, "_CACHE", {})
    result = bandwidth.allreduce_ceiling("cpu", 2, timeout_s=0.05)  # torch alone takes longer to import
    assert result["busbw_bytes_per_s"] is None
    assert "gave no result within 0.05 s" in result["reason"]
    assert multiprocessing.active_children() == []


def test_allreduce_needs_two_devices():
    with pytest.raises(ValueError, match="world_size 1.*allowed: an integer >= 2"):
        bandwidth.allreduce_ceiling("cpu", 1)


def test_matmul_peaks_of_the_session_are_listed(monkeypatch):
    from bench.hardware import peak

    monkeypatch.setattr(peak, "_CACHE", {("cpu", "fp32", 2, 1): 1.5e11})
    monkeypatch.setattr(peak, "_END", {})
    assert ceilings()["matmul_peak"] == [{"device": "cpu", "precision": "fp32", "processes": 2, "threads": 1,
                                          "flops_per_s": 1.5e11, "flops_per_s_end": None}]
    monkeypatch.setattr(peak, "_END", {("cpu", "fp32", 2, 1): 1.2e11})  # the same probe at the session's end
    assert ceilings()["matmul_peak"][0]["flops_per_s_end"] == 1.2e11


INVENTORY_QUERIES = {
    "nvmlDeviceGetName": "name", "nvmlDeviceGetUUID": "uuid", "nvmlDeviceGetPciInfo": "pci_bus_id",
    "nvmlDeviceGetMemoryInfo": "memory_total_bytes", "nvmlDeviceGetCudaComputeCapability": "compute_capability",
    "nvmlDeviceGetEnforcedPowerLimit": "power_limit_w", "nvmlDeviceGetCurrPcieLinkGeneration": "pcie_generation",
    "nvmlDeviceGetMaxPcieLinkGeneration": "pcie_generation_max", "nvmlDeviceGetCurrPcieLinkWidth": "pcie_width",
    "nvmlDeviceGetMaxPcieLinkWidth": "pcie_width_max", "nvmlDeviceGetMigMode": "mig_mode",
}


@pytest.mark.parametrize("function", sorted(INVENTORY_QUERIES))
def test_each_unsupported_inventory_query_costs_only_its_field(monkeypatch, function):
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(fake_gpus(1, unsupported={function})))
    entry = gpu_inventory()["gpus"][0]
    field = INVENTORY_QUERIES[function]
    assert entry[field] is None and "not supported" in entry["unavailable"][field]
    assert set(entry["unavailable"]) == {field}
    others = [key for key in entry if key not in (field, "unavailable")]
    assert all(entry[key] is not None for key in others), {key: entry[key] for key in others}


def test_max_clocks_unsupported_leaves_both_clock_fields_empty(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(fake_gpus(1, unsupported={"nvmlDeviceGetMaxClockInfo"})))
    entry = gpu_inventory()["gpus"][0]
    assert entry["max_sm_clock_mhz"] is None and entry["max_memory_clock_mhz"] is None
    assert set(entry["unavailable"]) == {"max_sm_clock_mhz", "max_memory_clock_mhz"}


def test_gpu_lost_during_inventory_is_recorded_not_raised(monkeypatch):
    gpus = fake_gpus(1, lost_after_calls=2)
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(gpus))
    entry = gpu_inventory()["gpus"][0]
    assert "GPU is lost" in entry["lost"]
