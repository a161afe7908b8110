"""The strategy registry: adding a strategy is one module and one line here."""

from __future__ import annotations

from bench.strategies.base import RankContext, Strategy
from bench.strategies.ddp import DDP
from bench.strategies.dp import DataParallel
from bench.strategies.fsdp import FSDP
from bench.strategies.horovod import Horovod
from bench.strategies.single import Single

REGISTRY: dict[str, Strategy] = {
    "single": Single(),
    "dp": DataParallel(),
    "ddp": DDP(),
    "horovod": Horovod(),
    "fsdp": FSDP(),
}

__all__ = ["REGISTRY", "RankContext", "Strategy"]
