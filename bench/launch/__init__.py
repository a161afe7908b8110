"""Launchers: how a case's ranks are started. Strategies name theirs; the controller never branches on it."""

from __future__ import annotations

from bench.launch.base import Launcher, WorkerGroup
from bench.launch.inprocess import launch_inprocess

LAUNCHERS: dict[str, Launcher] = {
    "inprocess": launch_inprocess,
}

__all__ = ["LAUNCHERS", "Launcher", "WorkerGroup"]
