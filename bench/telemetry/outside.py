"""Load from processes OUTSIDE the benchmark's own process tree while a case's rounds run.

A neighbour on a shared machine, a background job or another tenant's work on the same GPU slows a
case without it showing in the case's own numbers. On CPU: the busy time of the usable cores
(``/proc/stat`` through psutil, steal time included: a hypervisor giving the core to another VM is a
neighbour too) minus what the benchmark's tree used. On GPU: NVML's per-process SM utilisation, summed
over the processes that are not in the tree. The flag it feeds is judged in bench/record/flags.py.
"""

from __future__ import annotations

import os

import psutil

from bench.hardware.devices import is_cuda

_NVML_NOT_FOUND = 6  # nvmlDeviceGetProcessUtilization: no process sample since the timestamp given
# /proc/stat and a process's CPU times count 10 ms clock ticks: a window of a few ticks cannot show 10% of a
# core (a --quick case's rounds last ~20 ms; a burner taking half the core read 0.000%). Below this the
# CPU share is not measured, and says so, rather than read as "no outside load".
MIN_CPU_WINDOW_S = 0.5


def _busy_s(times) -> float:
    # guest time is already inside user time on Linux; idle and iowait are the only idle states.
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _usable_cpu_ids() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: every CPU
        return list(range(psutil.cpu_count() or 1))


class OutsideLoad:
    """Fed by the sampler at each tick: the tree's CPU seconds since the last tick and its pids."""

    def __init__(self) -> None:
        self.cpu_ids = _usable_cpu_ids()
        self._system_busy_s: float | None = None
        self.system_busy_s = 0.0  # over the sampled window, on the usable cores
        self.tree_busy_s = 0.0
        self.elapsed_s = 0.0
        self.cpu_reason: str | None = None
        self._gpu_last_us: dict[int, int] = {}
        self.gpu_samples: dict[int, list[float]] = {}  # CUDA index -> outside SM % per tick
        self.gpu_reason: str | None = None

    def _system_busy_now(self) -> float | None:
        try:
            per_cpu = psutil.cpu_times(percpu=True)
            return sum(_busy_s(per_cpu[i]) for i in self.cpu_ids if i < len(per_cpu))
        except (OSError, psutil.Error) as error:
            self.cpu_reason = f"system CPU times unreadable: {error}"
            return None

    def cpu_tick(self, tree_busy_s: float, elapsed_s: float | None) -> None:
        now = self._system_busy_now()
        if now is None:
            return
        if elapsed_s and self._system_busy_s is not None:
            self.system_busy_s += now - self._system_busy_s
            self.tree_busy_s += tree_busy_s
            self.elapsed_s += elapsed_s
        self._system_busy_s = now

    def gpu_tick(self, nvml, traces, tree_pids: set[int]) -> None:
        """Per GPU, the SM utilisation of the processes outside the tree in the samples since last tick."""
        fn = getattr(nvml.lib, "nvmlDeviceGetProcessUtilization", None) if nvml is not None else None
        if fn is None:
            self.gpu_reason = self.gpu_reason or "nvmlDeviceGetProcessUtilization: not in this nvidia-ml-py"
            return
        for trace in traces:
            if trace.lost or trace.handle is None or self.gpu_reason:
                continue
            index = trace.ref.index
            try:
                samples = fn(trace.handle, self._gpu_last_us.get(index, 0))
            except nvml.lib.NVMLError as error:
                if getattr(error, "value", None) == _NVML_NOT_FOUND:
                    samples = []  # nothing ran on this GPU since the last tick
                else:
                    self.gpu_reason = f"nvmlDeviceGetProcessUtilization: error {getattr(error, 'value', error)}"
                    continue
            by_pid: dict[int, float] = {}
            for sample in samples:
                self._gpu_last_us[index] = max(self._gpu_last_us.get(index, 0), int(sample.timeStamp))
                if int(sample.pid) not in tree_pids:
                    by_pid[int(sample.pid)] = max(by_pid.get(int(sample.pid), 0.0), float(sample.smUtil))
            self.gpu_samples.setdefault(index, []).append(min(100.0, sum(by_pid.values())))

    def summary(self, device_type: str) -> dict:
        cpu_pct = None
        reason = self.cpu_reason
        if reason is None and self.elapsed_s >= MIN_CPU_WINDOW_S and self.cpu_ids:
            outside_s = max(0.0, self.system_busy_s - self.tree_busy_s)
            cpu_pct = 100.0 * outside_s / (self.elapsed_s * len(self.cpu_ids))
        elif reason is None:
            reason = (f"the sampled window ({self.elapsed_s:.2f} s) was too short to measure CPU load "
                      f"(under {MIN_CPU_WINDOW_S:g} s of 10 ms clock ticks)")
        gpu_pct = gpu_max_pct = None
        if is_cuda(device_type):
            # The busiest of the case's GPUs: one shared GPU slows every rank of a synchronous step.
            means = [sum(values) / len(values) for values in self.gpu_samples.values() if values]
            if means and self.gpu_reason is None:
                gpu_pct = max(means)
                gpu_max_pct = max(max(values) for values in self.gpu_samples.values() if values)
            else:
                reason = "; ".join(r for r in (reason, self.gpu_reason or "no GPU process samples") if r)
        return {"cpu_busy_pct": cpu_pct, "gpu_busy_pct": gpu_pct, "gpu_busy_max_pct": gpu_max_pct,
                "cores": len(self.cpu_ids), "reason": reason}
