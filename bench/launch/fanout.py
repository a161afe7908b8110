"""The launcher process of a multi-node case: ``python -m bench.launch.fanout``.

It starts bench.launch.node_main on every host (ssh, or directly on the controller's own host),
hands each its plan over stdin, merges their output into its own with a ``[host]`` prefix, and
exits when they are done. When a host's part ends with an error (ssh could not connect, the
launcher there failed) it stops the others and its last line names that host, which becomes the
case's one-line failure. Killing it (RemoteGroup does, on any failure) closes every host's stdin,
and node_main then kills what runs there.

The plan comes in the environment (``GPUSIZER_FANOUT``, JSON) so the token never reaches a command line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

from bench.launch.node_main import STARTED_LINE

FANOUT_ENV = "GPUSIZER_FANOUT"
NODE_MODULE = "bench.launch.node_main"
# What each host's launcher needs from the controller's environment; the rest is that host's own.
FORWARD_PREFIXES = ("GPUSIZER_", "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "GLOO_", "NCCL_", "TORCH_", "CUDA_VISIBLE_DEVICES",
                    "MALLOC_", "GLIBC_TUNABLES")  # the allocator's settings (bench/hardware/allocator.py)
SSH_EXIT_CONNECT_FAILED = 255
STOP_WAIT_S = 10.0
_HOST_DOWN = re.compile(r"^gpusizer: (host \S+ (?:lost mid-case|unreachable over ssh).*)$", re.MULTILINE)


def ssh_command(host: str, ssh: dict, remote: list[str]) -> list[str]:
    command = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", f"ConnectTimeout={int(ssh['connect_timeout_s'])}", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if ssh.get("known_hosts_file"):
        command += ["-o", f"UserKnownHostsFile={ssh['known_hosts_file']}"]
    if ssh.get("port"):
        command += ["-p", str(ssh["port"])]
    if ssh.get("identity_file"):
        command += ["-i", ssh["identity_file"], "-o", "IdentitiesOnly=yes"]
    return command + [host, shlex.join(remote)]


class Node:
    def __init__(self, node: dict, plan: dict, env: dict[str, str]) -> None:
        self.host = node["host"]
        remote = [plan["python"], "-m", NODE_MODULE]
        command = remote if node["local"] else ssh_command(self.host, plan["ssh"], remote)
        self.last_line = ""
        self.started = False  # node_main's first line came back: ssh got through, the host runs its part
        self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        line = json.dumps({"argv": node["argv"], "cwd": plan["cwd"], "env": env, "address": node["address"],
                           "host": self.host, "reach": node.get("reach")})
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()  # stdin stays open: its closing is the signal to stop
        self.reader = threading.Thread(target=self._copy_output, daemon=True)
        self.reader.start()

    def _copy_output(self) -> None:
        for raw in self.popen.stdout:
            text = raw.decode(errors="replace").rstrip()
            if text.startswith(STARTED_LINE):
                self.started = True
            elif text:
                self.last_line = text
            sys.stdout.write(f"[{self.host}] {text}\n")
            sys.stdout.flush()

    def close_stdin(self) -> None:
        """Ask this host to stop: node_main kills its tree on EOF."""
        if self.popen.poll() is None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for this host's part to end until ``deadline`` (monotonic), then kill its ssh client."""
        try:
            self.popen.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    @property
    def lost(self) -> bool:
        """ssh ended with its own error after the host had started: the host or its network went down."""
        return self.popen.poll() == SSH_EXIT_CONNECT_FAILED and self.started


def host_failure(log: str) -> str | None:
    """From the fan-out's output, the host it lost mid-case or never reached (its failure_line), or
    None. A host whose launcher merely exited non-zero is left out: its ranks tell why, better."""
    lines = [match.group(1) for match in _HOST_DOWN.finditer(log)]
    return lines[-1] if lines else None


def failure_line(node: Node, code: int) -> str:
    if code == SSH_EXIT_CONNECT_FAILED and node.started:
        # ssh itself ended after the host had started its part: the host went down, or the network to it.
        # Its last line is the ranks' output, not ssh's: it would mislead as the cause.
        return f"gpusizer: host {node.host} lost mid-case: its ssh connection dropped (the host or the network to it went down)"
    if code == SSH_EXIT_CONNECT_FAILED:
        return f"gpusizer: host {node.host} unreachable over ssh: {node.last_line or 'ssh exited with 255'}"
    return f"gpusizer: host {node.host}: its launcher exited with code {code}: {node.last_line or 'no output'}"


def main() -> int:
    plan = json.loads(os.environ[FANOUT_ENV])
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARD_PREFIXES) and key != FANOUT_ENV}
    nodes: list[Node] = []
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    for node in plan["nodes"]:
        nodes.append(Node(node, plan, env))
    failed: tuple[Node, int] | None = None
    while not stopping.is_set():
        codes = [(node, node.popen.poll()) for node in nodes]
        ended = [(node, code) for node, code in codes if code not in (None, 0)]
        # A lost host first: the others' ranks fail because of it, and may be seen ending sooner.
        failed = min(ended, key=lambda pair: not pair[0].lost, default=None)
        if failed is not None or all(code == 0 for _, code in codes):
            break
        time.sleep(0.2)
    line = failure_line(*failed) if failed is not None else None
    if line:
        print(line, flush=True)  # at once: the controller reads the cause while the hosts are stopped
    for node in nodes:  # every host told at once, then one deadline for all: a stuck host delays no other
        node.close_stdin()
    deadline = time.monotonic() + STOP_WAIT_S
    for node in nodes:
        node.wait_or_kill(deadline)
    for node in nodes:
        node.reader.join(2.0)
    if line:
        print(line, flush=True)  # again, as the last line (what a launcher's exit status is told with)
        return failed[1]
    return 1 if stopping.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
