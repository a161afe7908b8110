"""Launchers: how a case's ranks are started. Strategies name theirs; the controller never branches on it."""

from __future__ import annotations

from bench.launch.base import Launcher, WorkerGroup
from bench.launch.horovodrun import launch_horovodrun
from bench.launch.plain import launch_plain
from bench.launch.torchrun import launch_torchrun

LAUNCHERS: dict[str, Launcher] = {
    "python": launch_plain,
    "torchrun": launch_torchrun,
    "horovodrun": launch_horovodrun,
}

__all__ = ["LAUNCHERS", "Launcher", "WorkerGroup"]
