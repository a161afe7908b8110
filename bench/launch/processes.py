"""Launcher processes: started in their own session, logged to a file, always killed and reaped.

torchrun and horovodrun each put their workers in yet another session (torch's subprocess handler
and Horovod's safe_shell_exec call setsid), so killing the launcher's process group is not enough:
the whole tree is collected with psutil (plus the worker pids the workers reported themselves)
and every process in it is killed and waited for.

Every live tree is kept in a registry so that pytest's exit, an exception or Ctrl-C that skips the
normal close still kills them (``kill_all``, called from atexit and from the pytest hooks).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import tempfile
import weakref
from pathlib import Path

import psutil

REAP_TIMEOUT_S = 10.0

_LIVE: weakref.WeakSet = weakref.WeakSet()


class LaunchedProcessTree:
    """A launcher process and everything it starts: started, logged, killed and reaped here (its CPU
    use is watched by telemetry/cpu.py's ProcessTreeUsage)."""

    def __init__(self, command: list[str], env: dict[str, str], log_prefix: str) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix=f"gpusizer-{log_prefix}-", suffix=".log")[1])
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches pytest only; pytest then reaps
            )
        self.extra_procs: list[psutil.Process] = []  # workers that reported their pid
        self._killed = False
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        """Everything under the launcher, plus the workers it may have orphaned."""
        found = {proc.pid: proc for proc in self.extra_procs if proc.is_running()}
        # Once the launcher is reaped its pid may belong to someone else: only ask while it is ours.
        if self.popen.poll() is None:
            try:
                found.update({child.pid: child for child in psutil.Process(self.pid).children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def kill(self) -> None:
        """SIGKILL the launcher's group and every process under it, then reap all of them."""
        if self._killed:
            return
        self._killed = True
        procs = self.descendants()  # before killing: afterwards orphans are harder to find
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.wait(REAP_TIMEOUT_S)
        psutil.wait_procs(procs, timeout=REAP_TIMEOUT_S)
        self.cleanup()

    def cleanup(self) -> None:
        _LIVE.discard(self)
        try:
            self.log_path.unlink()
        except OSError:
            pass


def kill_all() -> None:
    """Kill every launcher tree still alive (pytest exit, Ctrl-C, an error that skipped close)."""
    for tree in list(_LIVE):
        tree.kill()


atexit.register(kill_all)
