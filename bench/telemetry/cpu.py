"""The host side of a case: CPU time and memory of the process tree (psutil), and RAPL package energy.

The distributed strategies run their ranks as children (and grandchildren, under torchrun or
horovodrun) of the pytest process, so everything is summed over the whole tree, not this process.
"""

from __future__ import annotations

import glob
import os

import psutil

from bench.hardware.devices import usable_cores

POWERCAP_ROOT = "/sys/class/powercap"
# Listing descendants reads /proc/<pid>/stat of every process on the machine (~1 ms with 90
# processes), most of a tick's cost. The ranks start before measuring and live through it, so the
# list is refreshed once a second rather than every tick.
MEMBERSHIP_REFRESH_S = 1.0


class ProcessTreeUsage:
    """CPU seconds and resident memory of this process, its descendants and any extra pids: watched, never
    started or stopped (that is launch/processes.py's LaunchedProcessTree)."""

    def __init__(self, root_pid: int | None = None, extra_pids: tuple[int, ...] = ()) -> None:
        self.root = psutil.Process(root_pid or os.getpid())
        self.extra_pids = tuple(extra_pids)
        self.cores = usable_cores()
        # (pid, create_time) -> last CPU seconds seen; the create time keeps a reused pid apart.
        self._cpu_s: dict[tuple[int, float], float] = {}
        self._last_t: float | None = None
        self._members: list[psutil.Process] = []
        self._listed_t: float | None = None

    def _list_members(self) -> list[psutil.Process]:
        members = {self.root.pid: self.root}
        for proc in self.root.children(recursive=True):
            members[proc.pid] = proc
        for pid in self.extra_pids:
            if pid not in members:
                try:
                    proc = psutil.Process(pid)
                    members[pid] = proc
                    for child in proc.children(recursive=True):
                        members.setdefault(child.pid, child)
                except psutil.Error:
                    continue  # gone already: nothing left to count
        return list(members.values())

    @property
    def pids(self) -> set[int]:
        """The tree's pids as last listed (refreshed every MEMBERSHIP_REFRESH_S)."""
        return {proc.pid for proc in self._members}

    def read(self, t: float) -> tuple[float, float | None, int]:
        """``(CPU seconds the tree used since the last read, wall seconds since it, tree RSS in bytes)``.

        The first read only sets the baseline (wall seconds ``None``). A process seen for the first
        time counts from its first sighting (the ranks exist before measuring starts).
        """
        if self._listed_t is None or t - self._listed_t >= MEMBERSHIP_REFRESH_S:
            self._members, self._listed_t = self._list_members(), t
        busy_s, rss_bytes, seen = 0.0, 0, {}
        for proc in self._members:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss_bytes += proc.memory_info().rss
            except psutil.Error:
                continue  # exited or not ours to read between listing and reading
            cpu_s = times.user + times.system
            busy_s += cpu_s - self._cpu_s.get(key, cpu_s)
            seen[key] = cpu_s
        self._cpu_s = seen
        elapsed_s = t - self._last_t if self._last_t is not None else None
        self._last_t = t
        return busy_s, elapsed_s, rss_bytes


class Rapl:
    """Package energy from the Linux powercap interface (Intel RAPL; AMD exposes it under the same name).

    Read at every sample so a counter wrapping (at ``max_energy_range_uj``) is seen and added back.
    Only top-level package zones are read: their sub-zones (core, dram) are already inside them.
    """

    def __init__(self, root: str = POWERCAP_ROOT) -> None:
        self.reason: str | None = None
        self._zones: list[tuple[str, int]] = []  # (energy_uj path, wrap range)
        self._last_uj: list[int] = []
        self._total_uj = 0
        zones = sorted(z for z in glob.glob(os.path.join(root, "intel-rapl:*")) if z.count(":") == 1)
        if not zones:
            self.reason = f"no RAPL zones under {root} (not an x86 host exposing powercap, or a VM)"
            return
        try:
            for zone in zones:
                with open(os.path.join(zone, "max_energy_range_uj"), encoding="ascii") as handle:
                    wrap = int(handle.read())
                path = os.path.join(zone, "energy_uj")
                self._zones.append((path, wrap))
                self._last_uj.append(self._read(path))
        except PermissionError:
            self.reason = (f"RAPL counters under {root} are readable by root only "
                           "(grant read access to energy_uj to measure CPU energy)")
            self._zones = []
        except (OSError, ValueError) as error:
            self.reason = f"RAPL counters under {root} unreadable: {error}"
            self._zones = []

    @staticmethod
    def _read(path: str) -> int:
        with open(path, encoding="ascii") as handle:
            return int(handle.read())

    @property
    def available(self) -> bool:
        return bool(self._zones)

    def update(self) -> None:
        """Add what each package used since the last update, counting a wrap once."""
        for i, (path, wrap) in enumerate(self._zones):
            try:
                now = self._read(path)
            except (OSError, ValueError) as error:
                self.reason = f"RAPL counter {path} stopped answering: {error}"
                self._zones = []
                return
            delta = now - self._last_uj[i]
            if delta < 0:
                delta += wrap
            self._total_uj += delta
            self._last_uj[i] = now

    def energy_j(self) -> float | None:
        return self._total_uj / 1e6 if self.available else None
