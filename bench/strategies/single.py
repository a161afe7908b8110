"""``single``: one device, no wrapper. The reference every other strategy is measured against."""

from __future__ import annotations

from bench.strategies.base import Strategy


class Single(Strategy):
    launcher = "inprocess"
    multi_device = False
