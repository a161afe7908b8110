"""``single``: one device, no wrapper. The reference every other strategy is measured against."""

from __future__ import annotations

from bench.strategies.base import Strategy


class Single(Strategy):
    launcher = "python"  # one plain rank process (bench/launch/plain.py)
    multi_device = False

    def processes(self, world_size: int) -> int:
        return 1  # one process on one device
