"""The hosts of a multi-node run: ``--hosts``/``--hostfile`` parsed, and where a case's ranks go.

``--hosts host1:8,host2:8`` is horovodrun's ``-H`` syntax; ``--hostfile`` is horovodrun's file
format: one ``<host> slots=<N>`` per line (``#`` starts a comment; a bare host has 1 slot).
A case's ranks fill the hosts in the order given, so world size W uses the fewest first hosts.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

_HOST_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Host:
    """One machine of the run: the name ssh reaches it by, and how many ranks it takes."""

    name: str
    slots: int

    def __post_init__(self) -> None:
        if not _HOST_NAME.fullmatch(self.name or ""):
            raise ValueError(f"host {self.name!r}: not a host name or IPv4 address; allowed: letters, digits, '.', '-', '_'")
        if not isinstance(self.slots, int) or self.slots < 1:
            raise ValueError(f"host {self.name}: slots {self.slots!r} is not a positive integer; allowed: an integer >= 1")

    def spec(self) -> str:
        return f"{self.name}:{self.slots}"


# Slots of one host: as many as --world-sizes allows devices in a run (bench/config/options.MAX_WORLD_SIZE).
MAX_SLOTS = 4096


def _slots(option: str, name: str, raw: str) -> int:
    try:
        slots = int(raw)
    except ValueError:
        slots = 0
    if not 1 <= slots <= MAX_SLOTS:
        raise ValueError(f"{option}: host {name!r} has slots {raw!r}, not a positive integer up to {MAX_SLOTS}; "
                         f"allowed: an integer from 1 to {MAX_SLOTS}")
    return slots


def parse_hosts(text: str, option: str = "--hosts") -> tuple[Host, ...]:
    """``host1:8,host2:8`` (a host without ``:N`` has 1 slot, as in horovodrun)."""
    hosts = []
    for entry in (part.strip() for part in text.split(",")):
        name, sep, raw_slots = entry.partition(":")
        if not entry or not _HOST_NAME.fullmatch(name) or (sep and not raw_slots):
            raise ValueError(f"{option}: malformed entry {entry!r}; allowed: host:slots[,host:slots...], e.g. host1:8,host2:8")
        hosts.append(Host(name, _slots(option, name, raw_slots) if sep else 1))
    return _unique(option, hosts)


def parse_hostfile(path: str) -> tuple[Host, ...]:
    """horovodrun's hostfile: ``<host> slots=<N>`` per line, ``#`` comments, blank lines ignored."""
    option = "--hostfile"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{option}: cannot read {path!r} ({error.strerror or error}); allowed: a readable file "
                         f"with one '<host> slots=<N>' per line") from None
    hosts = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        name, rest = words[0], words[1:]
        if not _HOST_NAME.fullmatch(name) or len(rest) > 1 or (rest and not rest[0].startswith("slots=")):
            raise ValueError(f"{option}: {path}:{number}: malformed line {line.strip()!r}; allowed: '<host> slots=<N>'")
        hosts.append(Host(name, _slots(f"{option}: {path}:{number}", name, rest[0][6:]) if rest else 1))
    if not hosts:
        raise ValueError(f"{option}: {path!r} names no host; allowed: one '<host> slots=<N>' per line")
    return _unique(option, hosts)


def _unique(option: str, hosts: list[Host]) -> tuple[Host, ...]:
    seen = set()
    for host in hosts:
        if host.name in seen:
            raise ValueError(f"{option}: host {host.name!r} is listed twice; allowed: each host once, with all its slots")
        seen.add(host.name)
    return tuple(hosts)


def total_slots(hosts: tuple[Host, ...]) -> int:
    return sum(host.slots for host in hosts)


def place(hosts: tuple[Host, ...], world_size: int) -> tuple[Host, ...]:
    """The hosts (with the slots used on each) for ``world_size`` ranks; () when they do not fit."""
    placed, left = [], world_size
    for host in hosts:
        if left <= 0:
            break
        used = min(host.slots, left)
        placed.append(Host(host.name, used))
        left -= used
    return tuple(placed) if left <= 0 else ()


def powers_of_two_upto(limit: int) -> tuple[int, ...]:
    """1, 2, 4 ... up to ``limit``, and ``limit`` itself (all slots) when it is not a power of two."""
    sizes, size = [], 1
    while size <= limit:
        sizes.append(size)
        size *= 2
    return tuple(sizes) if sizes[-1] == limit else (*sizes, limit)


def resolve(name: str) -> str:
    """The IPv4 address of a host name (an address is returned as it is). Raises OSError."""
    return socket.gethostbyname(name)


def route_source(destination: str) -> str:
    """This machine's address on its route to ``destination``. A UDP connect sends nothing; it only
    asks the kernel which source address it would use."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 9))
        return sock.getsockname()[0]


def local_addresses() -> dict[str, str]:
    """Every IPv4 address of this machine, mapped to its interface name."""
    import psutil

    return {addr.address: name for name, addrs in psutil.net_if_addrs().items()
            for addr in addrs if addr.family == socket.AF_INET}


def interface_of(address: str) -> str | None:
    return local_addresses().get(address)


def default_controller_address(hosts: tuple[Host, ...]) -> str:
    """The address the hosts reach the controller on: its route to the second host (the first host's
    route to the others when pytest runs there), or the first host's own address for one host."""
    others = [resolve(host.name) for host in hosts[1:]]
    return route_source(others[0]) if others else resolve(hosts[0].name)


@dataclass(frozen=True)
class Cluster:
    """``--hosts``/``--hostfile`` and how to reach them; None in BenchOptions for a one-machine run."""

    hosts: tuple[Host, ...]
    controller_address: str | None = None  # None: default_controller_address(hosts used by the case)
    ssh_port: int | None = None
    ssh_identity_file: str | None = None

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("--hosts: no host given; allowed: host:slots[,host:slots...]")
        if self.controller_address is not None:
            try:
                socket.inet_aton(self.controller_address)
            except OSError:
                raise ValueError(f"--controller-address: {self.controller_address!r} is not an IPv4 address; "
                                 f"allowed: an address of this machine the hosts can reach") from None
        if self.ssh_port is not None and not 1 <= self.ssh_port <= 65535:
            raise ValueError(f"--ssh-port: {self.ssh_port!r}; allowed: an integer 1..65535")

    @property
    def total_slots(self) -> int:
        return total_slots(self.hosts)


# The run's cluster, set once when pytest bench/ is configured. Launchers read it here because
# their call signature is shared with the one-machine launchers (which have no use for it).
_ACTIVE: list[Cluster | None] = [None]


def set_active_cluster(cluster: Cluster | None) -> None:
    _ACTIVE[0] = cluster


def active_cluster() -> Cluster | None:
    return _ACTIVE[0]
