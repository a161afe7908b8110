"""Telemetry: the NVML sampler, its fallbacks, the CPU path and the flags.

NVML is faked at the ``pynvml`` module boundary only (tests/fake_pynvml.py), because this machine
has no NVIDIA driver or GPU. psutil, the threads and the child processes are real. RAPL is read
from a temporary powercap tree: the sysfs files do not exist here either.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import psutil
import pytest
from fake_pynvml import GPU_IS_LOST, LIBRARY_NOT_FOUND, FakeGpu, make_pynvml

from bench.telemetry import DeviceRef, Sampler, telemetry_flags
from bench.telemetry.cpu import Rapl
from bench.telemetry.nvml import cuda_device_refs, open_nvml
from bench.telemetry.sampler import SAMPLED_FIELDS
from bench.telemetry.summary import power_cap_fraction, throttle_fraction, trapezoid_j

INTERVAL_S = 0.01
RUN_S = 0.3


def gpu(n: int = 0, **kwargs) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-0000000{n}-aaaa-bbbb-cccc-dddddddddddd", pci_bus_id=f"00000000:1{n}:00.0", **kwargs)


def ref(fake: FakeGpu, index: int = 0) -> DeviceRef:
    return DeviceRef(index=index, uuid=fake.uuid, pci_bus_id=fake.pci_bus_id)


@pytest.fixture
def nvml(monkeypatch):
    """Install a fake pynvml with the given GPUs; returns the module."""
    def install(gpus, **kwargs):
        lib = make_pynvml(gpus, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", lib)
        return lib
    return install


def sample(gpus_refs: list[DeviceRef], run_s: float = RUN_S, samples_trained: int = 1000) -> dict:
    sampler = Sampler("cuda", [r.index for r in gpus_refs], interval_s=INTERVAL_S, device_refs=gpus_refs)
    with sampler:
        time.sleep(run_s)
    assert not sampler.thread.is_alive()
    return sampler.summary(samples_trained=samples_trained)


# -- NVML present ----------------------------------------------------------------------------


def test_every_field_is_sampled_and_energy_comes_from_the_counter(nvml):
    fake = gpu()
    nvml([fake])
    telemetry = sample([ref(fake)], samples_trained=2000)
    assert telemetry["source"] == "nvml"
    assert telemetry["samples"] >= 5  # ~30 at 10 ms; a loaded machine may manage fewer
    device = telemetry["devices"][0]
    assert device["uuid"] == fake.uuid and device["name"] == "NVIDIA H200"
    assert device["util_mean_pct"] == 97 and device["util_max_pct"] == 97
    assert device["memory_used_peak_bytes"] == fake.memory_used_bytes
    assert device["memory_total_bytes"] == fake.memory_total_bytes
    assert device["power_mean_w"] == 600.0
    assert device["temperature_max_c"] == 61 and device["sm_clock_mean_mhz"] == 1980
    assert device["throttle_fraction"] == {"thermal": 0.0, "power": 0.0, "other": 0.0}
    assert device["energy_source"] == "counter"
    # The fake counter grows at 600 W: energy must match 600 W over the sampled window.
    assert device["energy_j"] == pytest.approx(600.0 * telemetry["duration_s"], rel=0.05)
    assert device["joules_per_sample"] == pytest.approx(device["energy_j"] / 2000)
    assert telemetry["energy_j"] == device["energy_j"]
    assert device["unavailable"] == {} and device["lost"] is None
    assert telemetry_flags(telemetry) == []


def test_devices_are_found_by_uuid_not_by_nvml_index(nvml):
    # CUDA_VISIBLE_DEVICES=1: torch's cuda:0 is NVML's second GPU.
    first, second = gpu(0, name="first"), gpu(1, name="second")
    nvml([first, second])
    telemetry = sample([ref(second, index=0)], run_s=0.05)
    assert [d["name"] for d in telemetry["devices"]] == ["second"]
    assert telemetry["devices"][0]["index"] == 0


def test_pci_bus_id_is_the_fallback_when_the_uuid_is_unknown(nvml):
    fake = gpu(name="by-bus")
    nvml([fake])
    refs = [DeviceRef(index=0, uuid="MIG-not-known-to-nvml", pci_bus_id=fake.pci_bus_id)]
    assert sample(refs, run_s=0.05)["devices"][0]["name"] == "by-bus"


@pytest.mark.parametrize("field", sorted(SAMPLED_FIELDS))
def test_one_unsupported_query_costs_only_its_own_field(nvml, field):
    functions = SAMPLED_FIELDS[field][0]
    fake = gpu(unsupported=set(functions))
    nvml([fake])
    device = sample([ref(fake)])["devices"][0]
    assert "not supported" in device["unavailable"][field]
    assert set(device["unavailable"]) == {field}
    summary_key = {"util_pct": "util_mean_pct", "memory_used_bytes": "memory_used_peak_bytes",
                   "power_w": "power_mean_w", "temperature_c": "temperature_max_c",
                   "sm_clock_mhz": "sm_clock_mean_mhz", "throttle_reasons": "throttle_fraction",
                   "energy_mj": "energy_source"}
    for other, key in summary_key.items():
        value = device[key]
        if other == field:
            assert value in (None, {"thermal": None, "power": None, "other": None}, "power_integral")
        else:
            assert value not in (None, {"thermal": None, "power": None, "other": None}), key
    # Energy survives any one missing field: the counter, or the power integral without it.
    assert device["energy_j"] is not None


def test_missing_energy_counter_falls_back_to_integrating_power(nvml):
    fake = gpu(unsupported={"nvmlDeviceGetTotalEnergyConsumption"}, power_mw=250_000)
    nvml([fake])
    telemetry = sample([ref(fake)])
    device = telemetry["devices"][0]
    assert device["energy_source"] == "power_integral"
    assert device["energy_j"] == pytest.approx(250.0 * telemetry["duration_s"], rel=0.10)


def test_no_counter_and_no_power_gives_no_energy_and_says_why(nvml):
    fake = gpu(unsupported={"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"})
    nvml([fake])
    telemetry = sample([ref(fake)])
    device = telemetry["devices"][0]
    assert device["energy_j"] is None and telemetry["energy_j"] is None
    assert "no energy counter and no power readings" in device["energy_reason"]


def test_device_lost_mid_run_keeps_earlier_samples_and_the_other_device(nvml):
    lost, healthy = gpu(0, lost_after_calls=40), gpu(1)  # ~5 rows of 7 queries, then gone
    nvml([lost, healthy])
    telemetry = sample([ref(lost, 0), ref(healthy, 1)])
    gone, fine = telemetry["devices"]
    assert "GPU is lost" in gone["lost"]
    assert 0 < gone["samples"] < fine["samples"]
    assert gone["util_mean_pct"] == 97  # what was read before the loss is kept
    assert gone["energy_j"] is None and "lost" in gone["energy_reason"]
    assert fine["lost"] is None and fine["energy_j"] > 0
    assert telemetry["energy_j"] is None  # a total missing one GPU would understate the energy


def test_throttling_low_utilisation_and_full_memory_raise_flags(nvml):
    fake = gpu(throttle_reasons=0x80, util_pct=20, memory_used_bytes=int(0.95 * 141 * 2**30))  # power brake
    nvml([fake])
    telemetry = sample([ref(fake)])
    assert telemetry["devices"][0]["throttle_fraction"]["power"] == 1.0
    assert telemetry_flags(telemetry) == ["low_utilisation", "memory_near_capacity", "throttled"]


def test_idle_and_application_clock_reasons_are_not_throttling():
    assert throttle_fraction([0x01, 0x02, 0x100, 0x10]) == {"thermal": 0.0, "power": 0.0, "other": 0.0}
    assert throttle_fraction([0x20, 0x40, 0x00, 0x08]) == {"thermal": 0.5, "power": 0.0, "other": 0.25}


def test_running_at_the_software_power_cap_is_recorded_apart_and_is_not_throttling(nvml):
    # A heavy case on an H100/H200 sits at its power cap (NVML's SW power cap bit) most of the time.
    fake = gpu(throttle_reasons=0x04)
    nvml([fake])
    device = sample([ref(fake)])["devices"][0]
    assert device["power_cap_fraction"] == 1.0
    assert device["throttle_fraction"] == {"thermal": 0.0, "power": 0.0, "other": 0.0}
    assert "throttled" not in telemetry_flags({"devices": [device]})
    assert power_cap_fraction([0x04, 0x04 | 0x20, 0x00, None]) == pytest.approx(2 / 3)
    assert power_cap_fraction([None]) is None


def test_memory_used_comes_from_nvml_v2_which_leaves_out_reserved_memory(nvml):
    fake = gpu(memory_used_bytes=30 * 2**30, memory_reserved_bytes=2**30)
    nvml([fake])
    device = sample([ref(fake)])["devices"][0]
    assert device["memory_info_version"] == 2
    assert device["memory_used_peak_bytes"] == 30 * 2**30  # v1 would say 31 GiB


@pytest.mark.parametrize("old", ["driver", "nvidia-ml-py"])
def test_memory_used_falls_back_to_nvml_v1_where_v2_is_missing(nvml, old):
    fake = gpu(memory_used_bytes=30 * 2**30, memory_reserved_bytes=2**30, memory_v2=old != "driver")
    nvml([fake], has_memory_v2=old != "nvidia-ml-py")
    device = sample([ref(fake)])["devices"][0]
    assert device["memory_info_version"] == 1
    assert device["memory_used_peak_bytes"] == 31 * 2**30  # v1: reserved memory counted as used
    assert device["memory_total_bytes"] == fake.memory_total_bytes
    assert "memory_used_bytes" not in device["unavailable"]


def test_trapezoid_integrates_power_over_time():
    assert trapezoid_j([0.0, 1.0, 3.0], [100.0, 200.0, 200.0]) == pytest.approx(150.0 + 400.0)
    assert trapezoid_j([0.0, 1.0], [100.0, None]) is None


def test_cuda_devices_are_named_as_nvml_spells_them(monkeypatch):
    # torch here is a CPU build: its device properties are the stand-in (fields as torch reports them).
    import torch

    props = {0: types.SimpleNamespace(uuid="0b42632a-bc5c-f731-724b-6936a19c4b24", pci_bus_id=0x17,
                                      pci_device_id=0, pci_domain_id=0)}
    monkeypatch.setattr(torch.cuda, "get_device_properties", props.__getitem__)
    assert cuda_device_refs([0]) == [DeviceRef(index=0, uuid="GPU-0b42632a-bc5c-f731-724b-6936a19c4b24",
                                               pci_bus_id="00000000:17:00.0")]


# -- NVML absent -----------------------------------------------------------------------------


def test_nvml_package_missing_gives_cpu_telemetry_and_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now fails as if not installed
    nvml_handle, reason = open_nvml()
    assert nvml_handle is None and "pip install nvidia-ml-py" in reason
    sampler = Sampler("cuda", [0], interval_s=INTERVAL_S)
    with sampler:
        time.sleep(0.05)
    telemetry = sampler.summary(samples_trained=10)
    assert telemetry["source"] == "cpu" and telemetry["devices"] == []
    assert "nvidia-ml-py" in telemetry["reason"]
    assert telemetry["cpu"]["peak_rss_bytes"] > 0


def test_nvml_library_missing_says_no_driver(nvml):
    nvml([], init_error=LIBRARY_NOT_FOUND)
    handle, reason = open_nvml()
    assert handle is None and "no NVIDIA driver" in reason


def test_lost_device_error_code_is_the_one_pynvml_uses():
    # The installed package, not the fake: the codes must agree.
    real = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed (pip install nvidia-ml-py)")

    assert real.NVML_ERROR_GPU_IS_LOST == GPU_IS_LOST and real.NVML_ERROR_LIBRARY_NOT_FOUND == LIBRARY_NOT_FOUND


# -- the thread always stops -----------------------------------------------------------------


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpusizer-sampler"]


def test_thread_stops_when_the_case_raises(nvml):
    fake = gpu()
    nvml([fake])
    sampler = Sampler("cuda", [0], interval_s=INTERVAL_S, device_refs=[ref(fake)])
    with pytest.raises(RuntimeError, match="round failed"), sampler:
        time.sleep(0.05)
        raise RuntimeError("round failed")
    assert not sampler.thread.is_alive()
    assert _sampler_threads() == []
    assert sampler.summary(samples_trained=1)["samples"] >= 2


def test_thread_stops_and_reports_when_sampling_itself_breaks(nvml):
    fake = gpu()
    lib = nvml([fake])
    sampler = Sampler("cuda", [0], interval_s=INTERVAL_S, device_refs=[ref(fake)])
    with sampler:
        time.sleep(0.03)
        lib.nvmlDeviceGetUtilizationRates = 42  # not callable: a TypeError inside the thread
        time.sleep(0.05)
        assert not sampler.thread.is_alive()  # it ended itself, before stop was asked
    assert "sampler stopped early: TypeError" in sampler.summary(samples_trained=1)["reason"]


def test_bad_sampler_config_is_one_clear_error():
    with pytest.raises(ValueError, match="interval_s.*allowed: a number of seconds > 0"):
        Sampler("cpu", [0], interval_s=0)
    with pytest.raises(ValueError, match="device_type.*allowed: cpu, cuda"):
        Sampler("tpu", [0])
    with pytest.raises(ValueError, match="needs a uuid or a pci_bus_id"):
        DeviceRef(index=0, uuid=None)


# -- the CPU path: real psutil, real child process -------------------------------------------

CHILD = """
import time
ballast = bytearray(200 * 2**20)  # resident: every page written
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
print("ready", flush=True)
end = time.perf_counter() + SPIN_S
while time.perf_counter() < end:
    pass
"""


def test_cpu_telemetry_sums_the_process_tree():
    child = subprocess.Popen([sys.executable, "-c", CHILD.replace("SPIN_S", "1.5")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        own_rss = psutil.Process().memory_info().rss
        sampler = Sampler("cpu", [0], interval_s=0.05)
        with sampler:
            time.sleep(0.8)  # this process sleeps; only the child works
        telemetry = sampler.summary(samples_trained=100)
    finally:
        child.kill()
        child.wait(timeout=10)
    cpu = telemetry["cpu"]
    assert telemetry["source"] == "cpu" and telemetry["devices"] == []
    assert cpu["peak_rss_bytes"] > own_rss + 150 * 2**20  # the child's 200 MiB are counted
    one_core_pct = 100.0 / len(psutil.Process().cpu_affinity())
    # The child spins one core while this process sleeps (the sampler thread alone uses ~0.2%).
    # On a shared machine the child may get a fraction of its core: ask for a tenth of it.
    assert cpu["util_mean_pct"] > 0.1 * one_core_pct
    assert cpu["util_max_pct"] > 0.1 * one_core_pct
    assert telemetry_flags(telemetry) == []  # the flags are about GPUs


def test_rapl_counts_a_wraparound_once_and_ignores_subzones(tmp_path):
    package = tmp_path / "intel-rapl:0"
    subzone = tmp_path / "intel-rapl:0:0"
    for zone, energy in ((package, 900), (subzone, 5)):
        zone.mkdir()
        (zone / "max_energy_range_uj").write_text("1000\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
    rapl = Rapl(str(tmp_path))
    assert rapl.available and rapl.reason is None
    (package / "energy_uj").write_text("100\n")  # wrapped: 900 -> 1000 -> 100
    (subzone / "energy_uj").write_text("999\n")
    rapl.update()
    assert rapl.energy_j() == pytest.approx(200e-6)


def test_rapl_absent_or_unreadable_gives_none_and_the_reason(tmp_path):
    assert Rapl(str(tmp_path)).energy_j() is None
    assert "no RAPL zones" in Rapl(str(tmp_path)).reason
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000\n")
    (zone / "energy_uj").mkdir()  # unreadable as a file (root ignores chmod, so use a directory)
    rapl = Rapl(str(tmp_path))
    assert rapl.energy_j() is None and "unreadable" in rapl.reason


def test_rapl_energy_reaches_the_cpu_summary(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000000\n")
    sampler = Sampler("cpu", [0], interval_s=INTERVAL_S, powercap_root=str(tmp_path))
    with sampler:
        (zone / "energy_uj").write_text("4000000\n")  # 3 J while measuring
        time.sleep(0.05)
    telemetry = sampler.summary(samples_trained=30)
    assert telemetry["cpu"]["energy_j"] == pytest.approx(3.0)
    assert telemetry["energy_j"] == pytest.approx(3.0) and telemetry["joules_per_sample"] == pytest.approx(0.1)


# -- end to end: the real benchmark writes it, the gpu-check table reads it -------------------


def test_bench_run_records_telemetry_ceilings_and_the_table_reads_them(tmp_path):
    out = tmp_path / "run.json"
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pytest", str(root / "bench"), "-q", "-p", "no:cacheprovider", "--quick",
                    "--strategies", "single", "--device", "cpu", "--rounds", "10", "--benchmark-json", str(out)],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    payload = json.loads(out.read_text())
    telemetry = payload["benchmarks"][0]["extra_info"]["telemetry"]
    assert telemetry["source"] == "cpu" and telemetry["samples"] >= 2
    assert telemetry["cpu"]["peak_rss_bytes"] > 0 and telemetry["sampler_cpu_s"] is not None
    ceilings = payload["machine_info"]["gpusizer"]["ceilings"]
    assert [p["precision"] for p in ceilings["matmul_peak"]] == ["fp32"]
    table = subprocess.run([sys.executable, str(root / "scripts" / "gpu_check_table.py"), str(out)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "single-1-tiny-fp32" in table.stdout and "MFU %" in table.stdout


def test_gpu_check_refuses_to_run_without_a_gpu():
    root = Path(__file__).resolve().parent.parent
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: run scripts/gpu-check.sh itself")
    done = subprocess.run(["bash", str(root / "scripts" / "gpu-check.sh")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no NVIDIA GPU" in done.stderr


ORPHAN_STARTER = ("import subprocess, sys; "
                  "print(subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")


def test_named_pids_outside_the_tree_are_counted():
    # An orphan: started by a middle process that exits at once, so it is not our descendant
    # (as with a launcher that daemonises its ranks); the sampler counts it because it is named.
    middle = subprocess.run(
        [sys.executable, "-c", ORPHAN_STARTER, CHILD.replace("SPIN_S", "30")],
        capture_output=True, text=True, check=True, timeout=30)
    orphan = psutil.Process(int(middle.stdout.strip()))
    try:
        assert orphan.pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        deadline = time.monotonic() + 20
        while orphan.memory_info().rss < 150 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for its ballast to be resident
        own_rss = psutil.Process().memory_info().rss
        sampler = Sampler("cpu", [0], interval_s=0.05, pids=(orphan.pid,))
        with sampler:
            time.sleep(0.2)
        peak_rss = sampler.summary(samples_trained=1)["cpu"]["peak_rss_bytes"]
    finally:
        orphan.kill()
        orphan.wait(timeout=10)
    assert peak_rss > own_rss + 150 * 2**20
