"""Multi-node launch specs: torchrun on every host through bench.launch.fanout, horovodrun -H.

The rendezvous (torchrun's c10d store) lives on the first host; the controller channel listens on
the address the hosts reach (``--controller-address`` or this machine's route to them), still
authenticated with the per-case token. Host names are resolved here, so a misspelled host fails
its cases with one line naming it, and the rest of the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys

from bench.config.cases import BenchCase
from bench.config.hosts import Cluster, Host, default_controller_address, interface_of, local_addresses, resolve
from bench.launch.fanout import FANOUT_ENV
from bench.launch.remote import WORKER_MODULE, WorkerError

# torchrun's customary ports: a random one when the first host is another machine (a free one is
# picked when it is this one), so back-to-back cases do not collide.
RDZV_PORT_RANGE = (29500, 29999)
SSH_CONNECT_TIMEOUT_S = 10
REACH_FRACTION = 0.6  # of --launch-timeout-s: how long a host tries the rendezvous port before it gives up


def case_hosts(case: BenchCase) -> tuple[Host, ...]:
    return tuple(Host(name, int(slots)) for name, slots in (spec.rsplit(":", 1) for spec in case.hosts))


def resolved_addresses(case: BenchCase, hosts: tuple[Host, ...]) -> list[str]:
    addresses = []
    for host in hosts:
        try:
            addresses.append(resolve(host.name))
        except OSError as error:
            raise WorkerError(f"{case.case_id}: host {host.name} does not resolve ({error}); "
                              f"check --hosts/--hostfile") from None
    return addresses


def controller_address(case: BenchCase, cluster: Cluster, hosts: tuple[Host, ...]) -> str:
    if cluster.controller_address:
        return cluster.controller_address
    try:
        return default_controller_address(hosts)
    except OSError as error:
        raise WorkerError(f"{case.case_id}: no route from this machine to host {hosts[-1].name} ({error}); "
                          f"give --controller-address") from None


def network_info(address: str, hosts: tuple[Host, ...]) -> dict:
    """The record's multi-node keys besides the placement (which BenchCase.identity gives)."""
    return {"network_interface": interface_of(address) or "unknown", "controller_address": address}


def _free_port(address: str) -> int:
    """A port free right now on this machine (the first host), for the rendezvous store."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def ssh_settings(cluster: Cluster, launch_timeout_s: float) -> dict:
    return {"port": cluster.ssh_port, "identity_file": cluster.ssh_identity_file,
            "connect_timeout_s": max(1, min(SSH_CONNECT_TIMEOUT_S, math.ceil(launch_timeout_s))),
            "known_hosts_file": os.environ.get("GPUSIZER_SSH_KNOWN_HOSTS")}


def torchrun_fanout_env(case: BenchCase, cluster: Cluster, launch_timeout_s: float) -> tuple[dict, str]:
    """The fan-out plan (as its environment) for torchrun --nnodes N on ``case.hosts``, and the
    controller address the channel must listen on."""
    hosts = case_hosts(case)
    addresses = resolved_addresses(case, hosts)
    address = controller_address(case, cluster, hosts)
    here = set(local_addresses())
    port = _free_port(addresses[0]) if addresses[0] in here else (
        secrets.randbelow(RDZV_PORT_RANGE[1] - RDZV_PORT_RANGE[0]) + RDZV_PORT_RANGE[0])
    rdzv_id = f"gpusizer-{secrets.token_hex(8)}"
    join_timeout_s = max(1, math.ceil(launch_timeout_s))
    nodes = []
    for index, (host, host_address) in enumerate(zip(hosts, addresses)):
        argv = [
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(hosts)}",
            f"--nproc-per-node={host.slots}", "--rdzv-backend=c10d", f"--rdzv-endpoint={addresses[0]}:{port}",
            f"--rdzv-id={rdzv_id}",
            # is_host: the first host serves the store, whatever its hostname resolves to.
            f"--rdzv-conf=is_host={int(index == 0)},join_timeout={join_timeout_s}",
            # --local-addr: the address the other hosts reach this one on (not its FQDN's, which may be loopback).
            f"--local-addr={host_address}", "--max-restarts=0", "-m", WORKER_MODULE,
        ]
        node = {"host": host.name, "address": host_address, "local": host_address in here, "argv": argv}
        if index:  # it must reach the first host's rendezvous port: checked there before torchrun starts,
            # within part of the launch deadline, so the host that cannot is named before the deadline passes
            node["reach"] = {"address": addresses[0], "port": port,
                             "timeout_s": max(1.0, REACH_FRACTION * launch_timeout_s)}
        nodes.append(node)
    plan = {"python": sys.executable, "cwd": os.getcwd(), "ssh": ssh_settings(cluster, launch_timeout_s),
            "nodes": nodes}
    return {FANOUT_ENV: json.dumps(plan), "GLOO_SOCKET_IFNAME": interface_of(address) or "lo"}, address


def horovodrun_multinode_args(case: BenchCase, cluster: Cluster) -> tuple[list[str], str]:
    """horovodrun's host arguments for ``case.hosts`` and the controller address."""
    hosts = case_hosts(case)
    addresses = resolved_addresses(case, hosts)
    address = controller_address(case, cluster, hosts)
    args = ["-H", ",".join(f"{a}:{h.slots}" for a, h in zip(addresses, hosts)),
            "--network-interface", interface_of(address) or "lo"]
    if cluster.ssh_port:
        args += ["-p", str(cluster.ssh_port)]
    if cluster.ssh_identity_file:
        args += ["-i", cluster.ssh_identity_file]
    return args, address
