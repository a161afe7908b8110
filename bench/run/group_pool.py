"""Launched worker groups kept up across the cases that share their strategy, world size and hosts.

A launch (a plain rank process, torchrun or horovodrun; the process group, on a GPU the CUDA contexts and NCCL) costs
seconds; the cases of one strategy and world size differ only in model, precision and batch, which
the ranks can rebuild in place (the worker's ``new_case`` command). So a sweep pays one launch per
group: bench/config/cases.py orders the matrix so those cases run back to back.

Rules (docs/record.md, ``group_reused``):
- A group is handed back only after a case that finished cleanly; any failure (a rank crash, hang,
  out of memory, a --verify difference, Ctrl-C/SIGTERM) closes or kills it, and the next case
  launches afresh. A failed group is never reused.
- At most one group is held. A case of another key (another strategy, world size or hosts) closes it
  first, so idle ranks never hold devices another case needs.
- The session closes the held group at its end (pytest_sessionfinish; kill_all as the backstop).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bench.config.cases import BenchCase
from bench.launch import LAUNCHERS
from bench.launch.remote import WorkerError
from bench.strategies import REGISTRY


def group_key(case: BenchCase) -> tuple:
    """Cases with equal keys can share one launched group (same processes, same process group)."""
    return (case.strategy, case.world_size, case.device_type, tuple(case.hosts))


@dataclass
class Acquired:
    """The group serving a case, and how it came to."""

    group: object
    reused: bool
    case_setup_s: float | None = None  # reused: seconds the ranks took to build this case

    def record_keys(self) -> dict:
        """Record keys of the group (docs/record.md)."""
        return {"group_reused": self.reused, "case_setup_s": self.case_setup_s,
                "worker_pids": list(self.group.pids)}  # this machine's ranks, rank order (WorkerGroup.pids)


class GroupPool:
    def __init__(self) -> None:
        self._held: tuple[tuple, object] | None = None

    def acquire(self, case: BenchCase, *, launch_timeout_s: float, round_timeout_s: float) -> Acquired:
        """A group ready for ``case``: the held one rebuilt for it when the key matches, else a new launch."""
        key = group_key(case)
        # A held group whose ranks died while it waited (killed from outside) is not this case's failure:
        # it is closed and a fresh one launched.
        if self._held is not None and self._held[0] == key and getattr(self._held[1], "alive", lambda: True)():
            group, self._held = self._held[1], None
            try:
                setup_s = group.start_case(case)  # a failing rank kills the group before WorkerError
            except BaseException:
                group.abort()  # Ctrl-C while the ranks rebuild: kill, no waiting
                raise
            return Acquired(group, reused=True, case_setup_s=setup_s)
        self.close_held()
        launcher = LAUNCHERS[REGISTRY[case.strategy].launcher]
        return Acquired(launcher(case, launch_timeout_s=launch_timeout_s, round_timeout_s=round_timeout_s),
                        reused=False)

    def release(self, case: BenchCase, group, *, clean: bool) -> None:
        """After the case: keep a healthy launched group for the next case of its key, else close it."""
        if not clean or group.closed:
            group.close()
            return
        try:
            group.release_case()  # idle ranks hold no model: the next case's reference, peaks start clean
        except WorkerError as error:  # the case itself was measured; the group is dead (killed), not kept
            print(f"gpusizer: the worker group of {case.case_id} could not be kept: {error}", file=sys.stderr)
            return
        except BaseException:  # Ctrl-C, SIGTERM while the ranks free their model: kill, no waiting
            group.abort()
            raise
        self._held = (group_key(case), group)

    def close_held(self, *, abort: bool = False) -> None:
        """Close the held group (``abort``: kill it without asking for a clean exit)."""
        if self._held is None:
            return
        group, self._held = self._held[1], None
        (group.abort if abort else group.close)()

    @property
    def held_key(self) -> tuple | None:
        return None if self._held is None else self._held[0]


# The pytest session's pool (bench/test_training.py passes it, bench/conftest.py closes it).
SESSION_POOL = GroupPool()
