"""The one reader of /proc/cpuinfo: the CPU's model name and sockets (bench's inventory) and its
feature flags (reference_model's native-precision check) come from here."""

from __future__ import annotations

CPUINFO_PATH = "/proc/cpuinfo"


def cpuinfo_values(field: str, path: str = CPUINFO_PATH) -> list[str] | None:
    """Every value of ``field`` in /proc/cpuinfo (one per logical CPU that states it), in file order;
    None where the file cannot be read (not Linux)."""
    try:
        with open(path, encoding="utf-8") as cpuinfo:
            return [line.split(":", 1)[1].strip() for line in cpuinfo
                    if ":" in line and line.split(":", 1)[0].strip() == field]
    except OSError:
        return None
