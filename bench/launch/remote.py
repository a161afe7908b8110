"""A case's ranks as real worker processes, started by a launcher command and driven over the channel.

The launcher modules (torchrun, horovodrun) only say how to start the workers and how to read
their launcher's account of a dead rank; everything else lives here: deadlines, the round protocol,
reaping, and handing what it saw of a crash or a hang to diagnosis.py, which words the one line.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import select
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.config.cases import BenchCase
from bench.config.hosts import resolve
from bench.hardware.allocator import allocator_env
from bench.hardware.devices import threads_per_rank
from bench.launch.channel import ChannelClosed, ChannelTimeout, Connection, Listener
from bench.launch.diagnosis import (
    STACK_SIGNAL,  # noqa: F401 - worker_main imports it from here with the other env names
    hung_ranks,
    launcher_exit,
    rank_failure,
    rank_list,
)
from bench.launch.processes import LaunchedProcessTree
from bench.strategies import REGISTRY

WORKER_MODULE = "bench.launch.worker_main"
CASE_ENV = "GPUSIZER_CASE"  # the BenchCase as JSON
RANK_ENV = "GPUSIZER_RANK_ENV"  # "<rank variable>,<local rank variable>" the launcher sets
DUMP_DIR_ENV = "GPUSIZER_DUMP_DIR"  # where a rank writes its stack when asked (SIGUSR1)

POLL_S = 0.2  # how often a wait also checks that the launcher is still alive
CLOSE_TIMEOUT_S = 30.0  # clean exit of every rank after "close"
LOG_TAIL_LINES = 40


class WorkerError(RuntimeError):
    """A rank crashed, hung or failed: the message is one line naming the rank and the cause."""


@dataclass(frozen=True)
class LaunchSpec:
    """How one launcher starts a case's workers."""

    name: str
    command: list[str]
    rank_env: tuple[str, str]  # the variables the launcher sets: global rank, local rank
    # (launcher log, rank) -> why that rank ended; None: the launched process is the one rank (plain
    # launcher), so its own exit status says why.
    exit_cause: Callable[[str, int], str | None] | None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    # Multi-node: (launcher log) -> a host that was lost or never reached, which then explains the ranks' end.
    host_failure: Callable[[str], str | None] | None = None
    # Where the channel listens: loopback, or for a multi-node case the address the hosts reach.
    channel_host: str = "127.0.0.1"


def _address_of(host: str) -> str | None:
    try:
        return resolve(host)
    except OSError:
        return None


def _is_local_peer(conn: Connection) -> bool:
    peer = conn.sock.getpeername()[0]
    return peer.startswith("127.") or peer in {addr.address for addrs in psutil.net_if_addrs().values()
                                               for addr in addrs}


class RemoteGroup:
    """The WorkerGroup of a launched case. Any failure kills the whole tree before it is raised."""

    def __init__(self, case: BenchCase, spec: LaunchSpec, *, launch_timeout_s: float, round_timeout_s: float):
        self.case = case
        self.spec = spec
        self.round_timeout_s = round_timeout_s
        self.launch_timeout_s = launch_timeout_s
        self.threads_per_rank = threads_per_rank(case.device_type, self._processes(case))
        self.rounds_started = 0
        self._conns: dict[int, Connection] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._hosts: dict[int, str] = {}  # multi-node: each rank's host, from its hello, for the failure line
        self._in_flight = False
        self._closed = False
        self._dump_dir = Path(tempfile.mkdtemp(prefix="gpusizer-stacks-"))
        self._listener = Listener(spec.channel_host)
        env = {
            **os.environ,
            **allocator_env(os.environ),  # every process in the same malloc state (bench/hardware/allocator.py)
            **self._listener.env(),
            **spec.env,
            CASE_ENV: json.dumps(dataclasses.asdict(case)),
            RANK_ENV: ",".join(spec.rank_env),
            DUMP_DIR_ENV: str(self._dump_dir),
            # The launcher's and the ranks' own temporary files (torchrun's torchelastic_* folders) go
            # in this case's folder, removed with it: a tree killed by SIGKILL cannot clean up after itself.
            "TMPDIR": str(self._dump_dir),
            # Each rank's share of the cores; torch would otherwise start one thread per core in every rank.
            "OMP_NUM_THREADS": str(self.threads_per_rank),
            "PYTHONUNBUFFERED": "1",
        }
        began = time.perf_counter()
        try:
            self._tree = LaunchedProcessTree(spec.command, env, f"{spec.name}-{case.case_id}")
        except OSError as error:
            # The launcher itself could not start (missing executable, no memory): one line, nothing left open.
            self._closed = True
            self._listener.close()
            shutil.rmtree(self._dump_dir, ignore_errors=True)
            raise WorkerError(f"{spec.name} could not start: {error}") from None
        try:
            self._connect_all(time.monotonic() + launch_timeout_s, launch_timeout_s)
            self._note_threads(self._gather(
                "ready", time.monotonic() + max(launch_timeout_s - (time.perf_counter() - began), 0.0),
                "start-up", f"--launch-timeout-s {launch_timeout_s:g}"))
        except BaseException:
            self._kill()
            raise
        # Popen to every rank having built its model and data, i.e. about to take its first step.
        self.launch_s = time.perf_counter() - began

    # -- the WorkerGroup protocol ------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The ranks' own processes, in rank order (for telemetry)."""
        return [self._procs[rank].pid for rank in sorted(self._procs)]

    def run_round(self, steps: int) -> list[float]:
        self.rounds_started += 1
        replies = self._command({"cmd": "run_round", "steps": steps}, f"round {self.rounds_started}")
        return [float(replies[rank][0]["seconds"]) for rank in sorted(replies)]

    def peak_memory_bytes(self) -> int:
        replies = self._command({"cmd": "peak_memory"}, "the peak-memory query")
        return max(int(message["peak_memory_bytes"]) for message, _ in replies.values())

    def profiled_rounds(self, steps: int) -> list[dict]:
        """One more round of ``steps`` steps on every rank under torch.profiler, after the timed rounds: each
        rank's step parts (bench/run/step_profile.py), in rank order; a rank that could not reduce its
        trace answers ``{"reason": ...}`` instead."""
        replies = self._command({"cmd": "profiled_round", "steps": steps}, "the profiled round")
        return [dict(replies[rank][0]["step_breakdown"]) for rank in sorted(replies)]

    def accounted_step_peak_bytes(self) -> int:
        """One more real train_step in every rank together (DDP's and FSDP's steps are collectives), each
        under its own Ledger (bench/run/worker.py); the busiest rank's peak bytes."""
        replies = self._command({"cmd": "accounted_step_peak"}, "the accounted step")
        return max(int(message["peak_bytes"]) for message, _ in replies.values())

    def try_batch(self, batch: int, limit_bytes: int | None) -> tuple[bool, int | None]:
        """--find-max-batch: every rank drops its model and tries one step at ``batch`` per device
        (bench/run/batch_try.py). Fits when every rank's step did, with the busiest rank's peak. A rank out
        of memory answers so and stays up; the ranks then hold no model until start_case."""
        message = {"cmd": "try_batch", "per_device_batch_size": batch, "limit_bytes": limit_bytes}
        replies = self._command(message, f"the try at per-device batch {batch}")
        answers = [replies[rank][0] for rank in sorted(replies)]
        if not all(answer["fits"] for answer in answers):
            return False, None
        return True, max(int(answer["peak_bytes"]) for answer in answers)

    def facts(self) -> dict:
        """Record keys measured in the ranks (docs/record.md): every device's peak, in rank order (dp's one
        rank lists all its GPUs), and what the strategy measured in rank 0 (dp: its replicas' dtypes)."""
        replies = self._command({"cmd": "facts"}, "the facts query")
        facts = dict(replies[0][0]["rank_facts"])
        facts["peak_memory_bytes_per_device"] = [int(peak) for rank in sorted(replies)
                                                 for peak in replies[rank][0]["peak_memory_bytes_per_device"]]
        return facts

    def reset_peak_memory(self) -> None:
        self._command({"cmd": "reset_peak_memory"}, "the peak-memory reset")

    def full_parameters(self) -> list:
        import torch  # late: only the correctness check needs tensors here

        # Every rank takes part (for FSDP gathering the full tensors is a collective); rank 0 sends them.
        replies = self._command({"cmd": "parameters"}, "the parameter query")
        return torch.load(io.BytesIO(replies[0][1]), weights_only=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def alive(self) -> bool:
        """Not closed, the launcher still running, and every rank on this machine too (cheap: no message)."""
        if self._closed or self._tree.returncode() is not None:
            return False
        try:
            return all(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in self._procs.values())
        except psutil.NoSuchProcess:
            return False

    def release_case(self) -> None:
        """The case ended cleanly and the group is kept: every rank frees its model, optimizer and data."""
        self._command({"cmd": "release_case"}, "the release of the case's model")

    def start_case(self, next_case: BenchCase) -> float:
        """Make this live group serve ``next_case`` (same strategy, world size and hosts): every rank drops
        the last case's model and data and builds the new one's. Returns the seconds until every rank
        was ready again; a rank that fails or is late kills the group (WorkerError), like a launch."""
        if self._closed:
            raise WorkerError(f"{next_case.case_id}: the workers are already stopped")
        began = time.perf_counter()
        self.case = next_case  # failures from here on name the new case
        self.rounds_started = 0
        self._in_flight = True
        message = {"cmd": "new_case", "case": dataclasses.asdict(next_case)}
        for rank, conn in self._conns.items():
            try:
                conn.send(message)
            except OSError:
                self._fail_ranks({rank: None}, "start-up")
        self._note_threads(self._gather("ready", time.monotonic() + self.launch_timeout_s, "start-up",
                                        f"--launch-timeout-s {self.launch_timeout_s:g}"))
        self._in_flight = False
        return time.perf_counter() - began

    def _note_threads(self, replies: dict[int, tuple[dict, bytes]]) -> None:
        """The record's threads_per_rank is what the ranks' torch reports using (the most of any rank),
        not the share this process asked for in OMP_NUM_THREADS: a launcher or image that overrides it shows."""
        self.threads_per_rank = max(int(message.get("threads", self.threads_per_rank)) for message, _ in replies.values())

    def close(self) -> None:
        """Ask every rank for a clean exit; kill whatever has not exited by the deadline. Idempotent."""
        if self._closed:
            return
        if not self._in_flight:  # a rank busy with a round (e.g. after Ctrl-C) would not listen
            for conn in self._conns.values():
                try:
                    conn.send({"cmd": "close"})
                except OSError:
                    pass
            self._tree.wait(CLOSE_TIMEOUT_S)
        self._kill()

    def abort(self) -> None:
        """Kill and reap every rank now, without asking for a clean exit (Ctrl-C, SIGTERM, SIGHUP)."""
        self._kill()

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _processes(case: BenchCase) -> int:
        """The rank processes a case runs (dp: one process for all its GPUs)."""
        return REGISTRY[case.strategy].processes(case.world_size)

    def _connect_all(self, deadline: float, launch_timeout_s: float) -> None:
        ranks = self._processes(self.case)
        while len(self._conns) < ranks:
            self._check_launcher_alive("start-up")
            if time.monotonic() >= deadline:
                missing = sorted(set(range(ranks)) - set(self._conns))
                self._fail(f"{rank_list(missing)} did not connect within --launch-timeout-s {launch_timeout_s:g}"
                           f"{self._silent_hosts()}")
            try:
                accepted = self._listener.accept(min(deadline, time.monotonic() + POLL_S))
            except ChannelTimeout:
                continue
            if accepted is None:
                continue  # failed authentication: not one of ours
            conn, hello = accepted
            rank = int(hello["rank"])
            self._conns[rank] = conn
            if self.case.hosts and isinstance(hello.get("host"), str):
                self._hosts[rank] = hello["host"]
            if not _is_local_peer(conn):
                continue  # a rank on another host: its pid means nothing here (node_main reaps it there)
            try:
                self._procs[rank] = psutil.Process(int(hello["pid"]))
                self._tree.extra_procs.append(self._procs[rank])
            except (psutil.NoSuchProcess, KeyError, ValueError):
                pass

    def _silent_hosts(self) -> str:
        """Multi-node: ' (no rank connected from host X)' for the hosts none of whose ranks said hello
        (ranks are numbered by the rendezvous, so a missing rank number alone does not say where)."""
        heard = set(self._hosts.values())
        silent = [spec.rsplit(":", 1)[0] for spec in self.case.hosts or ()]
        # torchrun's ranks say the name as given, horovodrun's the address it was given (-H) for it.
        silent = [host for host in silent if host not in heard and _address_of(host) not in heard]
        if not silent:
            return ""
        return f" (no rank connected from host{'s' if len(silent) > 1 else ''} {', '.join(silent)})"

    def _command(self, message: dict, phase: str) -> dict[int, tuple[dict, bytes]]:
        if self._closed:
            raise WorkerError(f"{self.case.case_id}: the workers are already stopped")
        self._in_flight = True
        for rank, conn in self._conns.items():
            try:
                conn.send(message)
            except OSError:
                self._fail_ranks({rank: None}, phase)
        replies = self._gather("done", time.monotonic() + self.round_timeout_s, phase,
                               f"--round-timeout-s {self.round_timeout_s:g}")
        self._in_flight = False
        return replies

    def _gather(self, event: str, deadline: float, phase: str, limit: str) -> dict[int, tuple[dict, bytes]]:
        """One reply per rank, each checked; a rank that errs, vanishes or is late fails the case."""
        replies: dict[int, tuple[dict, bytes]] = {}
        while len(replies) < len(self._conns):
            waiting = {conn: rank for rank, conn in self._conns.items() if rank not in replies}
            ready = [conn for conn in waiting if conn.has_buffered()]
            if not ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail_hung(sorted(waiting.values()), f"{phase} ({limit})")
                ready = select.select(list(waiting), [], [], min(left, POLL_S))[0]
                if not ready:
                    self._check_launcher_alive(phase)
                    continue
            for conn in ready:
                rank = waiting[conn]
                try:
                    message, payload = conn.recv(deadline)
                except ChannelClosed:
                    self._fail_ranks({rank: None}, phase)
                except ChannelTimeout:
                    continue
                if message.get("event") == "error":
                    self._fail_ranks({rank: str(message.get("message", "no message"))}, phase)
                if message.get("event") != event:
                    self._fail(f"rank {rank} answered {message.get('event')!r} in {phase}, expected {event!r}")
                replies[rank] = (message, payload)
        return replies

    def _check_launcher_alive(self, phase: str) -> None:
        code = self._tree.returncode()
        if code is not None:
            self._fail(launcher_exit(self.spec.name, code, phase, self._tree.log_text(), self._listener.dropped))

    def _fail_ranks(self, problems: dict[int, str | None], phase: str) -> None:
        """Fail the case naming the rank that failed first (diagnosis.rank_failure)."""
        self._fail(rank_failure(problems, phase, conns=self._conns, launcher=self._tree,
                                exit_cause=self.spec.exit_cause, hosts=self._hosts,
                                host_failure=self.spec.host_failure))

    def _fail_hung(self, ranks: list[int], phase: str) -> None:
        """Fail the case naming where each late rank is (diagnosis.hung_ranks), or the host the
        launcher lost (a dead host's ranks never answer: that host, not a hang, is the reason)."""
        lost = self.spec.host_failure(self._tree.log_text()) if self.spec.host_failure else None
        if lost:
            self._fail(f"{lost}; no answer from {rank_list(ranks)} in {phase}")
        self._fail(hung_ranks(ranks, phase, procs=self._procs, dump_dir=self._dump_dir, hosts=self._hosts))

    def _fail(self, what: str) -> None:
        """Kill everything, show the launcher's output for the details, raise the one-line reason."""
        log_tail = self._tree.log_text().splitlines()[-LOG_TAIL_LINES:]
        self._kill()
        if log_tail:
            print(f"--- last {len(log_tail)} lines of {self.spec.name}'s output ---", file=sys.stderr)
            print("\n".join(log_tail), file=sys.stderr)
        raise WorkerError(f"{self.case.case_id}: {what}")

    def _kill(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._in_flight = False
        for conn in self._conns.values():
            conn.close()
        self._listener.close()
        self._tree.kill()
        shutil.rmtree(self._dump_dir, ignore_errors=True)  # stack dumps and the ranks' temporary files
