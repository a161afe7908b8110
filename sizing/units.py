"""Byte sizes as people write them ("8GiB", "80GB", "512MiB") and back."""

from __future__ import annotations

import math
import re

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
# The largest size taken: no device or host is near a pebibyte, so more is a typo (1e300 passed before).
MAX_BYTES = 2**50
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(option: str, raw: str) -> int:
    """``raw`` as a positive whole number of bytes; ValueError naming ``option`` and what is allowed."""
    allowed = "a positive size such as 8GiB, 80GB, 512MiB or a number of bytes, up to 1PiB"
    match = _PATTERN.match(str(raw))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"{option}: {raw!r} is not a memory size; allowed: {allowed}")
    value = float(match.group(1)) * _UNITS[unit]
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"{option}: {raw!r} is not positive; allowed: {allowed}")
    if value > MAX_BYTES:
        raise ValueError(f"{option}: {raw!r} is out of range; allowed: {allowed}")
    return int(value)


def format_bytes(value: float) -> str:
    """Binary units, three significant figures: what GPU memory is usually quoted in."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{int(value)} B"
