"""The memory-sizing options of ``pytest bench/``: --find-max-batch and --max-memory.

Kept apart from bench/config/options.py so the sizing feature is one module to read; validated the same way
(a bad value is a one-line usage error, exit 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sizing.units import parse_bytes

SIZING_KEY = pytest.StashKey["SizingOptions"]()


@dataclass(frozen=True)
class SizingOptions:
    find_max_batch: bool
    max_memory_bytes: int | None  # None: the device's own memory (a GPU); required on CPU

    def __post_init__(self) -> None:
        if self.max_memory_bytes is not None and (not isinstance(self.max_memory_bytes, int) or self.max_memory_bytes < 1):
            raise ValueError(f"--max-memory: {self.max_memory_bytes!r}; allowed: a positive size such as 8GiB")
        if self.max_memory_bytes is not None and not self.find_max_batch:
            raise ValueError("--max-memory: only used by --find-max-batch; add --find-max-batch or drop --max-memory")


def add_sizing_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpusizer")
    group.addoption("--find-max-batch", dest="gs_find_max_batch", action="store_true",
                    help="after each case, search the largest per-device batch that trains without running out of "
                         "memory (from the prediction: double, then bisect); records it with its peak and throughput")
    group.addoption("--max-memory", dest="gs_max_memory", default=None, metavar="SIZE",
                    help="device memory for --find-max-batch, e.g. 8GiB or 80GB; needed on CPU (enforced by the "
                         "traced accounting of the real step); default on GPU: the GPU's total memory")


def sizing_options_from_config(config: pytest.Config) -> SizingOptions:
    raw = config.getoption("gs_max_memory")
    return SizingOptions(
        find_max_batch=bool(config.getoption("gs_find_max_batch")),
        max_memory_bytes=None if raw is None else parse_bytes("--max-memory", raw),
    )
