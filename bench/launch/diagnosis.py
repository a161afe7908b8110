"""Why a launched case failed, in one line that names the rank and the cause.

RemoteGroup (remote.py) notices that a rank erred, vanished or is late; this module turns what it
saw into the reason: the rank that failed first rather than the peers that followed it, where a hung
rank is stuck (from its faulthandler stack dump), and a launcher's exit status in words.
"""

from __future__ import annotations

import re
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.launch.channel import ChannelClosed, ChannelTimeout, Connection
from bench.launch.processes import LaunchedProcessTree

STACK_SIGNAL = signal.SIGUSR1  # a rank dumps its stack (faulthandler) on this signal
STACK_DUMP_WAIT_S = 1.0  # the dump is written by a signal handler in C: quick, but not instant
CAUSE_WAIT_S = 5.0  # after a rank vanished: time the launcher gets to log its exit status
SETTLE_S = 2.0  # after a first failure: time the other ranks get to report theirs
# Where a rank waits for its peers: a rank whose innermost frame is here is waiting, not the one stuck.
# (DDP's all-reduce runs inside autograd's backward, hence torch/autograd.)
COLLECTIVE_CODE = ("/torch/distributed/", "/torch/autograd/", "/torch/nn/parallel/", "/horovod/")
NO_WORD_CAUSE = "its process ended without reporting an error (killed by a signal, e.g. the OOM killer?)"
# How launchers stop the survivors of a failed rank: a rank dying of these followed another one.
FOLLOWER_SIGNALS = ("SIGTERM", "SIGINT")
# Errors a rank raises because a peer went away (gloo, NCCL, Horovod): consequences, not causes.
PEER_FAILURE_HINTS = ("peer", "Connection reset", "Connection closed", "Broken pipe", "has been shut down",
                      "aborted", "ncclRemoteError")


def describe_exit_code(code: int) -> str:
    """Popen style (-N: signal N) or shell style (128+N) exit status in words."""
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number is None:
        return f"exited with code {code}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    why = " (the kernel's OOM killer sends this when memory runs out)" if number == signal.SIGKILL else ""
    return f"killed by {name}{why}"


def innermost_frame(dump: str) -> tuple[str, bool] | None:
    """From a faulthandler dump, the current thread's innermost frame as ('function (file:line)',
    whether that is communication code, i.e. the rank is most likely waiting for a peer)."""
    match = re.search(r'File "([^"]+)", line (\d+) in (\S+)', dump)
    if match is None:
        return None
    path, line, function = match.groups()
    waiting = any(part in path.replace("\\", "/") for part in COLLECTIVE_CODE)
    return f"{function} ({Path(path).name}:{line})", waiting


def rank_name(rank: int, hosts: dict[int, str] | None = None) -> str:
    """'rank 1', or in a multi-node case 'rank 1 on host node2' (the host as --hosts named it)."""
    host = (hosts or {}).get(rank)
    return f"rank {rank} on host {host}" if host else f"rank {rank}"


def rank_list(ranks: list[int]) -> str:
    """'rank 3' or 'ranks 0, 2'."""
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def launcher_exit(launcher_name: str, code: int, phase: str, log: str, dropped: list[str]) -> str:
    """The launcher process itself ended: its exit status, its last line of output, and any hello the
    channel dropped (a rank whose hello was dropped, e.g. too slow to answer the challenge, exits
    without a word)."""
    last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
    why = f" ({len(dropped)} connection(s) dropped on the channel, last: {dropped[-1]})" if dropped else ""
    return f"{launcher_name} {describe_exit_code(code)} during {phase}: {last[0].strip()}{why}"


def rank_failure(problems: dict[int, str | None], phase: str, *, conns: dict[int, Connection],
                 launcher: LaunchedProcessTree, exit_cause: Callable[[str, int], str | None] | None,
                 hosts: dict[int, str] | None = None,
                 host_failure: Callable[[str], str | None] | None = None) -> str:
    """The reason a case failed, naming the rank that failed first, not the ones that followed it.

    ``problems`` maps a rank to its error message, or to None when its process ended without a
    word. When one rank dies its peers fail right after (a collective loses its partner, the
    launcher SIGTERMs the survivors), and the controller may hear of those first; so the other
    ranks (``conns``) get a moment to report, and a rank killed by something other than its
    launcher, or one that raised on its own, is named as the cause. ``exit_cause`` reads the
    launcher's log for why a silent rank ended; None where the launched process is the one rank
    (bench/launch/plain.py), whose own exit status says it. ``hosts``: each rank's host in a multi-node case.

    Multi-node (``host_failure`` given): a host lost mid-case takes its ranks with it, and the
    fan-out then stops the ranks on the other hosts, which the controller may see end first; so
    the launcher gets its moment to say which host it lost, and that host is the reason.
    """
    problems = settle_reports(dict(problems), conns)
    if None in problems.values() or host_failure is not None:
        launcher.wait(CAUSE_WAIT_S)  # torchrun and horovodrun log each rank's exit status, then exit
    log = launcher.log_text()
    if exit_cause is None:
        exit_cause = own_exit_cause(launcher)
    lost = host_failure(log) if host_failure is not None else None
    if lost:
        return f"{lost}; the ranks stopped in {phase} ({rank_list(sorted(problems))} first seen ending)"
    return first_failure(problems, phase, log, exit_cause, hosts)


def own_exit_cause(process: LaunchedProcessTree) -> Callable[[str, int], str | None]:
    """For a rank that is the launched process itself: its exit status in words (None while it runs)."""

    def cause(_log: str, _rank: int) -> str | None:
        code = process.returncode()
        return None if code is None else describe_exit_code(code)

    return cause


def settle_reports(problems: dict[int, str | None], conns: dict[int, Connection]) -> dict[int, str | None]:
    """``problems`` plus what the other ranks report within SETTLE_S: an error message, or None for a
    rank whose channel closed. A rank that answers anything else is healthy and left out."""
    settle_by = time.monotonic() + SETTLE_S
    healthy: set[int] = set()
    while time.monotonic() < settle_by:
        pending = {conn: rank for rank, conn in conns.items() if rank not in problems and rank not in healthy}
        if not pending:
            break
        for conn in select.select(list(pending), [], [], max(settle_by - time.monotonic(), 0.0))[0]:
            try:
                message, _ = conn.recv(settle_by)
            except ChannelClosed:
                problems[pending[conn]] = None
                continue
            except ChannelTimeout:
                continue
            if message.get("event") == "error":
                problems[pending[conn]] = str(message.get("message", "no message"))
            else:
                healthy.add(pending[conn])
    return problems


def first_failure(problems: dict[int, str | None], phase: str, log: str,
                  exit_cause: Callable[[str, int], str | None], hosts: dict[int, str] | None = None) -> str:
    """One line for the rank that failed first: a cause before a follower (a rank that raised because
    a peer went away, then one its launcher stopped), the lowest rank among equals."""
    verdicts = []
    for rank, message in sorted(problems.items()):
        if message is None:
            cause = exit_cause(log, rank) or NO_WORD_CAUSE
            follower = any(signal_name in cause for signal_name in FOLLOWER_SIGNALS)
            verdicts.append((2 if follower else 0, rank, f"{rank_name(rank, hosts)} died in {phase}: {cause}"))
        else:
            follower = any(hint in message for hint in PEER_FAILURE_HINTS)
            verdicts.append((1 if follower else 0, rank, f"{rank_name(rank, hosts)} failed in {phase}: {message}"))
    verdicts.sort()
    others = f" ({len(verdicts) - 1} more rank(s) failed after it)" if len(verdicts) > 1 else ""
    return verdicts[0][2] + others


def hung_ranks(ranks: list[int], phase: str, *, procs: dict[int, psutil.Process], dump_dir: Path,
               hosts: dict[int, str] | None = None) -> str:
    """Ask each late rank where it is (faulthandler dumps its stack to ``dump_dir`` on STACK_SIGNAL),
    then the reason: the stuck rank(s), and the peers waiting for them in a collective."""
    for rank in ranks:
        proc = procs.get(rank)
        try:
            if proc is not None:
                proc.send_signal(STACK_SIGNAL)
        except psutil.NoSuchProcess:
            pass
    time.sleep(STACK_DUMP_WAIT_S)
    stuck: dict[int, str] = {}
    waiting: dict[int, str] = {}
    for rank in ranks:
        dump_path = dump_dir / f"rank{rank}.txt"
        frame = innermost_frame(dump_path.read_text(errors="replace")) if dump_path.exists() else None
        place, in_collective = frame or ("unknown code", False)
        (waiting if in_collective else stuck)[rank] = f"{rank_name(rank, hosts)} in {place}"
    if stuck and waiting:  # the usual picture: one rank stuck, its peers waiting for it in a collective
        them = "it" if len(stuck) == 1 else "them"
        return (f"{rank_list(sorted(stuck))} hung: no answer in {phase}; {', '.join(stuck.values())}; "
                f"waiting for {them} in a collective: {', '.join(waiting.values())}")
    places = ", ".join({**stuck, **waiting}[rank] for rank in ranks)
    return f"{rank_list(ranks)} hung: no answer in {phase}; {places}"
