"""Two "hosts" on this machine for the multi-node tests: network namespaces joined by a veth pair,
each with its own address and its own sshd (on a key made for the test).

Everything made here is undone by ``close``, which the fixture always calls: the sshds and any
process left inside a namespace are killed, the namespaces (and with them the veth ends) deleted.
Both namespaces share this filesystem, so the same interpreter and checkout work on either host.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SUBNET = "10.213.0"  # private, and only ever inside the namespaces made here
INTERFACE = "gs0"  # the same name on both hosts, as horovodrun wants a common interface
COMMAND_TIMEOUT_S = 20
SSHD_START_S = 20
HOST_KEY_DIR = Path.home() / ".cache" / "gpusizer" / "multinode-test-host-keys"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=check)


def unavailable_reason() -> str | None:
    """Why two namespaced hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the tests as root)"
    for tool in (IP, SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if not tool or not os.access(tool, os.X_OK):
            return f"{tool or 'ssh/ssh-keygen'} is missing; install iproute2 and openssh-server (.ci/run does)"
    probe = f"gs-probe-{os.getpid()}"
    result = _run(IP, "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot make a network namespace here: {result.stderr.strip() or result.returncode}"
    _run(IP, "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    netns: str
    address: str
    sshd: subprocess.Popen | None = None


@dataclass
class TwoHosts:
    root: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    hosts: list[Host] = field(default_factory=list)
    identity_file: Path | None = None
    known_hosts: Path | None = None

    def start(self) -> TwoHosts:
        self.root.mkdir(parents=True, exist_ok=True)
        names = [f"gsA{self.tag}", f"gsB{self.tag}"]
        self.hosts = [Host(names[0], f"{SUBNET}.1"), Host(names[1], f"{SUBNET}.2")]
        for host in self.hosts:
            _run(IP, "netns", "add", host.netns)
            # `ip netns exec` mounts /etc/netns/<name>/hosts over /etc/hosts: there this machine's
            # name resolves to the host's own address, as on a real node (Gloo looks the name up
            # where it is given no interface, e.g. in Horovod's process-set contexts).
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {socket.gethostname()}\n")
            _run(IP, "-n", host.netns, "link", "set", "lo", "up")
        ends = [f"gva{self.tag}", f"gvb{self.tag}"]
        _run(IP, "link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for host, end in zip(self.hosts, ends):
            _run(IP, "link", "set", end, "netns", host.netns)
            _run(IP, "-n", host.netns, "link", "set", end, "name", INTERFACE)
            _run(IP, "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", INTERFACE)
            _run(IP, "-n", host.netns, "link", "set", INTERFACE, "up")
        self.identity_file = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.identity_file))
        (self.root / "authorized_keys").write_text(Path(f"{self.identity_file}.pub").read_text())
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        for index, host in enumerate(self.hosts):
            host.sshd = self._start_sshd(index, host)
        for host in self.hosts:
            self._wait_for_ssh(host)
        return self

    def _start_sshd(self, index: int, host: Host) -> subprocess.Popen:
        # Kept across runs: horovodrun's own ssh records host keys in the user's known_hosts, where a
        # new key per run would warn about a changed host identity every time.
        host_key = HOST_KEY_DIR / f"host_key_{index}"
        if not host_key.exists():
            HOST_KEY_DIR.mkdir(parents=True, exist_ok=True)
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        config = self.root / f"sshd_config_{index}"
        config.write_text("\n".join([
            "Port 22", f"ListenAddress {host.address}", f"HostKey {host_key}",
            f"PidFile {self.root}/sshd_{index}.pid", f"AuthorizedKeysFile {self.root}/authorized_keys",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "MaxStartups 50", "MaxSessions 50", "",
        ]))
        log = open(self.root / f"sshd_{index}.log", "wb")  # noqa: SIM115 - the Popen keeps it
        return subprocess.Popen([IP, "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(config)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def ssh_command(self, host: Host, *remote: str) -> list[str]:
        return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                "-i", str(self.identity_file), host.address, *remote]

    def _wait_for_ssh(self, host: Host) -> None:
        deadline = time.monotonic() + SSHD_START_S
        while True:
            result = subprocess.run(self.netns_command(self.hosts[0], *self.ssh_command(host, "true")),
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline or host.sshd.poll() is not None:
                log = (self.root / f"sshd_{self.hosts.index(host)}.log").read_text(errors="replace")
                raise RuntimeError(f"sshd in {host.netns} did not answer: {result.stderr.strip()} {log[-500:]}")
            time.sleep(0.5)

    @staticmethod
    def netns_command(host: Host, *command: str) -> list[str]:
        return [IP, "netns", "exec", host.netns, *command]

    def shape(self, rate_mbit: float) -> str:
        """Limit the link both ways (an egress qdisc on each veth end): netem's rate, or where this
        kernel has no netem (sch_netem not built), a token bucket (tbf) at the same rate.
        Returns the qdisc used."""
        used = ""
        for host in self.hosts:
            base = [TC, "-n", host.netns, "qdisc", "replace", "dev", INTERFACE, "root"]
            netem = _run(*base, "netem", "rate", f"{rate_mbit}mbit", "limit", "10000", check=False)
            if netem.returncode == 0:
                used = "netem"
                continue
            # burst: a few packets' worth at this rate; latency: the queue a TCP window may fill.
            _run(*base, "tbf", "rate", f"{rate_mbit}mbit", "burst", "64kb", "latency", "500ms")
            used = "tbf"
        return used

    def unshape(self) -> None:
        for host in self.hosts:
            _run(TC, "-n", host.netns, "qdisc", "del", "dev", INTERFACE, "root", check=False)

    def power_off(self, host: Host) -> None:
        """The host dies: its link goes down first (no FIN or RST leaves it, as when a machine loses
        power), then every process in it is killed, its sshd among them."""
        _run(IP, "-n", host.netns, "link", "set", INTERFACE, "down")
        self._kill_all_in(host)
        if host.sshd is not None:
            host.sshd.wait(COMMAND_TIMEOUT_S)

    def power_on(self, host: Host) -> None:
        """Bring a host that power_off took down back: link up, sshd started again and answering."""
        _run(IP, "-n", host.netns, "link", "set", INTERFACE, "up")
        host.sshd = self._start_sshd(self.hosts.index(host), host)
        self._wait_for_ssh(host)

    def block_all_but_ssh(self, host: Host) -> None:
        """A firewall on ``host`` that lets ssh through and nothing else it sends over TCP: the
        rendezvous, the ranks' collectives and the controller channel are blocked, sshd's answers
        (source port 22) are not. Policy routing (``ip rule``), as this kernel has no netfilter
        tools or classful qdiscs: a connect to a blocked port fails at once on ``host``."""
        _run(IP, "-n", host.netns, "rule", "add", "priority", "100", "ipproto", "tcp", "sport", "22", "lookup", "main")
        _run(IP, "-n", host.netns, "rule", "add", "priority", "101", "to", f"{SUBNET}.0/24", "ipproto", "tcp",
             "blackhole")

    def unblock(self, host: Host) -> None:
        for priority in ("101", "100"):
            _run(IP, "-n", host.netns, "rule", "del", "priority", priority, check=False)

    @staticmethod
    def _kill_all_in(host: Host) -> None:
        for pid in _run(IP, "netns", "pids", host.netns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def processes_left(self) -> dict[str, list[str]]:
        """Per namespace, the processes in it other than its sshd listener."""
        left = {}
        for host in self.hosts:
            pids = _run(IP, "netns", "pids", host.netns, check=False).stdout.split()
            keep = {str(host.sshd.pid)} if host.sshd else set()  # the listener; its sessions count as left over
            others = []
            for pid in pids:
                if pid in keep:
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                except OSError:
                    continue
                if cmdline.startswith(f"{SSHD} -D"):
                    continue  # the listener itself (ip netns exec became it)
                others.append(f"{pid}: {cmdline[:120]}")
            if others:
                left[host.netns] = others
        return left

    def wait_until_clean(self, timeout_s: float = 15.0) -> dict[str, list[str]]:
        deadline = time.monotonic() + timeout_s
        left = self.processes_left()
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.processes_left()
        return left

    def close(self) -> None:
        """Undo everything; safe after a partial start."""
        for host in self.hosts:
            if host.sshd is not None and host.sshd.poll() is None:
                host.sshd.kill()
                host.sshd.wait(COMMAND_TIMEOUT_S)
        for host in self.hosts:
            self._kill_all_in(host)  # whatever a failed test left inside our namespace is ours
            _run(IP, "netns", "del", host.netns, check=False)
            shutil.rmtree(Path("/etc/netns") / host.netns, ignore_errors=True)
        _run(IP, "link", "del", f"gva{self.tag}", check=False)  # only exists if moving it failed
