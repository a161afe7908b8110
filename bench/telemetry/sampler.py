"""A background thread that samples the case's GPUs (NVML) and the host process tree while rounds run.

Started right before the measured rounds and stopped right after, warm-up excluded. The thread
waits on an Event, so stopping is immediate; ``stop`` always joins it, and the thread is a daemon
so even a join that times out cannot keep the interpreter alive. A failure inside the thread is
kept as a reason in the summary: telemetry never fails a case.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.hardware.devices import is_cuda
from bench.telemetry.cpu import POWERCAP_ROOT, ProcessTreeUsage, Rapl
from bench.telemetry.nvml import DeviceLost, DeviceRef, Nvml, cuda_device_refs, open_nvml, text
from bench.telemetry.outside import OutsideLoad
from bench.telemetry.summary import summarise

DEFAULT_INTERVAL_S = 0.1
JOIN_TIMEOUT_S = 5.0  # one tick is a few NVML and /proc reads: milliseconds, not seconds

# field -> (NVML functions to try in order, extra arguments, conversion of the answer)
_NVML_TEMPERATURE_GPU = 0
_NVML_CLOCK_SM = 1
SAMPLED_FIELDS: dict[str, tuple[tuple[str, ...], tuple, Any]] = {
    "util_pct": (("nvmlDeviceGetUtilizationRates",), (), lambda v: float(v.gpu)),
    "memory_used_bytes": (("nvmlDeviceGetMemoryInfo",), (), lambda v: int(v.used)),
    "power_w": (("nvmlDeviceGetPowerUsage",), (), lambda mw: mw / 1000.0),
    "temperature_c": (("nvmlDeviceGetTemperature",), (_NVML_TEMPERATURE_GPU,), float),
    "sm_clock_mhz": (("nvmlDeviceGetClockInfo",), (_NVML_CLOCK_SM,), float),
    # Renamed "event reasons" in newer drivers; the bits are the same.
    "throttle_reasons": (("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
                         (), int),
    "energy_mj": (("nvmlDeviceGetTotalEnergyConsumption",), (), float),
}


@dataclass
class DeviceTrace:
    """Everything sampled from one GPU, aligned by sample: ``values[field][i]`` was read at ``times_s[i]``."""

    ref: DeviceRef
    handle: Any = None
    name: str | None = None
    memory_total_bytes: int | None = None
    times_s: list[float] = field(default_factory=list)
    values: dict[str, list] = field(default_factory=lambda: {name: [] for name in SAMPLED_FIELDS})
    unavailable: dict[str, str] = field(default_factory=dict)  # field -> why it is None
    lost: str | None = None
    memory_info_version: int | None = None  # NVML memory query version that answered (2: ``used`` excludes reserved)

    def open(self, nvml: Nvml) -> None:
        self.handle, reason = nvml.handle_for(self.ref)
        if reason:
            self.lost = f"not found in NVML: {reason}"
            return
        try:
            name, reason = nvml.query("nvmlDeviceGetName", self.handle)
            self.name = text(name) if reason is None else None
            memory, reason = nvml.query("nvmlDeviceGetMemoryInfo", self.handle)
            self.memory_total_bytes = int(memory.total) if reason is None else None
        except DeviceLost as lost:
            self.lost = str(lost)

    def sample(self, nvml: Nvml, t: float) -> None:
        if self.lost:
            return
        row = {}
        try:
            for name, (functions, args, convert) in SAMPLED_FIELDS.items():
                if name in self.unavailable:
                    row[name] = None
                    continue
                value, reason = nvml.first(*functions, args=(self.handle, *args))
                if reason:
                    # Not supported now means not supported for the whole case: stop asking.
                    self.unavailable[name] = reason
                    row[name] = None
                else:
                    row[name] = convert(value)
        except DeviceLost as lost:
            self.lost = f"{lost} at {t:.3f} s"
            return  # a half-read row would misalign the fields
        if row["memory_used_bytes"] is not None:
            self.memory_info_version = nvml.memory_info_version
        self.times_s.append(t)
        for name, value in row.items():
            self.values[name].append(value)


class Sampler:
    """Samples every ``interval_s`` between ``start`` and ``stop``; ``summary`` reduces it for the record."""

    def __init__(
        self,
        device_type: str,
        device_indices: list[int],
        *,
        pids: tuple[int, ...] = (),
        interval_s: float = DEFAULT_INTERVAL_S,
        device_refs: list[DeviceRef] | None = None,
        powercap_root: str = POWERCAP_ROOT,
    ) -> None:
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"Sampler.device_type: {device_type!r}; allowed: cpu, cuda")
        if not interval_s > 0:
            raise ValueError(f"Sampler.interval_s: {interval_s!r}; allowed: a number of seconds > 0")
        self.device_type = device_type
        self.device_indices = list(device_indices)
        self.interval_s = float(interval_s)
        self._pids = tuple(pids)
        self._device_refs = device_refs
        self._powercap_root = powercap_root
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Nvml | None = None
        self.devices: list[DeviceTrace] = []
        self.nvml_reason: str | None = None
        self.error: str | None = None
        self.ticks = 0
        self.thread_cpu_s: float | None = None
        self.began_s = self.ended_s = None
        self.cpu_intervals: list[tuple[float, float]] = []  # (CPU seconds of the tree, wall seconds)
        self.tree_rss_bytes: list[int] = []
        self._tree: ProcessTreeUsage | None = None
        self._rapl: Rapl | None = None
        self.outside = OutsideLoad()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("Sampler.start: already started; a Sampler measures one case once")
        if is_cuda(self.device_type):
            try:
                self._open_devices()
            except Exception as error:  # noqa: BLE001 - no GPU telemetry is a reason, not a failed case
                self.nvml_reason = f"could not map CUDA devices to NVML: {type(error).__name__}: {error}"
                self.devices = []
        self._tree = ProcessTreeUsage(extra_pids=self._pids)
        self._rapl = Rapl(self._powercap_root)
        self.began_s = time.perf_counter()
        self._tick(self.began_s)  # the baseline: energy counters, CPU times
        self._thread = threading.Thread(target=self._run, name="gpusizer-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and join the thread, then take the closing sample. Safe to call twice."""
        if self._thread is None or self.ended_s is not None:
            return
        self._stop_event.set()
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            self.error = self.error or f"sampler thread did not stop within {JOIN_TIMEOUT_S} s"
        else:
            self.ended_s = time.perf_counter()
            self._safe_tick(self.ended_s)  # closes the energy window at the end of the rounds
        self.ended_s = self.ended_s or time.perf_counter()
        if self._nvml is not None:
            self._nvml.close()

    def __enter__(self) -> Sampler:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sampling --------------------------------------------------------------------------

    def _open_devices(self) -> None:
        self._nvml, self.nvml_reason = open_nvml()
        if self._nvml is None:
            return
        refs = self._device_refs if self._device_refs is not None else cuda_device_refs(self.device_indices)
        self.devices = [DeviceTrace(ref) for ref in refs]
        for trace in self.devices:
            trace.open(self._nvml)

    def _run(self) -> None:
        # Ticks on a fixed grid from the start, so a slow tick does not shift every later one.
        tick = 1
        try:
            while not self._stop_event.wait(max(0.0, self.began_s + tick * self.interval_s - time.perf_counter())):
                if not self._safe_tick(time.perf_counter()):
                    return
                tick += 1
        finally:
            # The sampler's own cost: CPU seconds this thread used (the record keeps it per case).
            self.thread_cpu_s = time.thread_time()

    def _safe_tick(self, t: float) -> bool:
        try:
            self._tick(t)
            return True
        except Exception as error:  # noqa: BLE001 - kept as a reason: telemetry never fails a case
            self.error = f"sampler stopped early: {type(error).__name__}: {error}"
            return False

    def _tick(self, t: float) -> None:
        for trace in self.devices:
            trace.sample(self._nvml, t)
        busy_s, elapsed_s, rss_bytes = self._tree.read(t)
        if elapsed_s:
            self.cpu_intervals.append((busy_s, elapsed_s))
        # Outside the tree: the system's busy time less the tree's; on GPU, other processes' SM share.
        self.outside.cpu_tick(busy_s, elapsed_s)
        if self.devices:
            self.outside.gpu_tick(self._nvml, self.devices, self._tree.pids)
        self.tree_rss_bytes.append(rss_bytes)
        self._rapl.update()
        self.ticks += 1

    # -- result ----------------------------------------------------------------------------

    def summary(self, *, samples_trained: int) -> dict:
        return summarise(self, samples_trained=samples_trained)

    @property
    def rapl(self) -> Rapl | None:
        return self._rapl

    @property
    def cores(self) -> int | None:
        return self._tree.cores if self._tree is not None else None
