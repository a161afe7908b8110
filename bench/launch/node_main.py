"""One host's end of a multi-node case: ``python -m bench.launch.node_main`` (over ssh, or directly
on the controller's own host), started by bench.launch.fanout.

Its first stdin line is JSON ``{"argv", "cwd", "env", "address", "host"}`` (and ``reach`` on every
host but the first: the rendezvous port it must be able to connect to): the launcher to run here
(torchrun), and the environment (the channel token among it, kept off every command line). It
then runs the launcher in a session of its own and watches stdin: when it closes (the controller
killed the fan-out, or ssh lost the connection) the whole tree here is killed, so a case never
leaves processes behind on a host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil

from bench.launch.worker_main import HOST_ENV

KILL_WAIT_S = 10.0
PROBE_TRY_S = 3.0  # one connect attempt to the rendezvous port (a dropped SYN waits this long)
PROBE_PAUSE_S = 0.5
# The node's first line of output: the fan-out reads it as "ssh got through and this host started",
# so a connection lost later is told apart from a host that was never reached.
STARTED_LINE = "gpusizer-node: started"


def _kill_tree(popen: subprocess.Popen) -> None:
    try:
        procs = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=KILL_WAIT_S)
    try:
        popen.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        pass


def _interface_of(address: str) -> str | None:
    import socket

    for name, addrs in psutil.net_if_addrs().items():
        if any(addr.family == socket.AF_INET and addr.address == address for addr in addrs):
            return name
    return None


def unreachable_reason(address: str, port: int, timeout_s: float, stop: threading.Event) -> str | None:
    """None once a TCP connection to address:port succeeds (or ``stop`` is set: the case is being
    stopped); else, when ``timeout_s`` of tries are over, why not.

    The rendezvous store starts with the first host's torchrun, so "refused" is normal for a moment;
    a port a firewall blocks never answers, and torchrun itself would wait out its whole join timeout
    without saying which host could not reach which port."""
    deadline = time.monotonic() + timeout_s
    error: OSError | None = None
    while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
        try:
            socket.create_connection((address, port), timeout=min(PROBE_TRY_S, left)).close()
            return None
        except OSError as caught:
            error = caught
            stop.wait(min(PROBE_PAUSE_S, max(deadline - time.monotonic(), 0.0)))
    if stop.is_set():
        return None
    return f"cannot reach the rendezvous at {address}:{port} from this host within {timeout_s:g} s ({error})"


def main() -> None:
    plan = json.loads(sys.stdin.readline())
    env = {**os.environ, **plan["env"], HOST_ENV: plan["host"]}
    # gloo binds to the interface carrying this host's address as the controller named it.
    interface = _interface_of(plan["address"])
    if interface is not None:
        env["GLOO_SOCKET_IFNAME"] = interface
    dump_dir = env.get("GPUSIZER_DUMP_DIR")
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)  # a separate host has no copy of the controller's temp folder
    stop = threading.Event()

    def watch_stdin() -> None:
        while sys.stdin.buffer.read1(4096):
            pass
        stop.set()  # EOF: the controller's side is gone

    # Watching from the start, the probe included: a case stopped while this host probes ends here at once.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"{STARTED_LINE} on {plan['host']}", flush=True)
    reach = plan.get("reach")  # the other hosts check the rendezvous port first (a firewall's blocked port)
    if reach:
        reason = unreachable_reason(reach["address"], int(reach["port"]), float(reach["timeout_s"]), stop)
        if reason:
            print(f"gpusizer: {reason}", flush=True)
            os._exit(1)
    if stop.is_set():
        os._exit(1)  # stopped before anything started: nothing to kill
    popen = subprocess.Popen(plan["argv"], cwd=plan["cwd"], env=env, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    while popen.poll() is None and not stop.wait(0.2):
        pass
    code = popen.poll()
    if code is None:
        _kill_tree(popen)
        code = 1
    else:
        _kill_tree(popen)  # anything the launcher left behind
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
