"""The strategy registry: adding a strategy is one module and one line here."""

from __future__ import annotations

from bench.strategies.base import RankContext, Strategy
from bench.strategies.single import Single

REGISTRY: dict[str, Strategy] = {
    "single": Single(),
}

__all__ = ["REGISTRY", "RankContext", "Strategy"]
