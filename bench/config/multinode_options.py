"""The multi-node options of ``pytest bench/``: declared and parsed here, kept out of the one-machine
options so either side can change without the other."""

from __future__ import annotations

from bench.config.hosts import Cluster, parse_hostfile, parse_hosts
from gpusizer_common.link_rates import parse_internode_gbps

# (option, dest, default, help); "" means not given.
MULTINODE_OPTION_TABLE = (
    ("--hosts", "gs_hosts", "",
     ("multi-node run: comma-separated host:slots (horovodrun's -H syntax), e.g. host1:8,host2:8; "
     "ddp, fsdp and horovod then use up to the total slots; default: this machine only")),
    ("--hostfile", "gs_hostfile", "",
     "multi-node run: a file in horovodrun's hostfile format, one '<host> slots=<N>' per line (instead of --hosts)"),
    ("--controller-address", "gs_controller_address", "",
     "IPv4 address of this machine the hosts connect back to; default: this machine's route to the second host"),
    ("--internode-gbps", "gs_internode_gbps", "",
     "comma-separated inter-node link rates in Gbit/s (> 0, up to 100000; repeats dropped) the report's scaling projection assumes, e.g. 100,400"),
    ("--ssh-port", "gs_ssh_port", "", "ssh port of the hosts (as horovodrun -p); default: ssh's own"),
    ("--ssh-identity-file", "gs_ssh_identity_file", "",
     "ssh private key for the hosts (as horovodrun -i); default: ssh's own"),
)


def add_multinode_options(group) -> None:
    for option, dest, default, help_text in MULTINODE_OPTION_TABLE:
        group.addoption(option, dest=dest, default=default, metavar="VALUE", help=help_text)


def cluster_from_config(get) -> Cluster | None:
    """``get``: config.getoption. Raises ValueError (one line naming the option) on bad input."""
    hosts_text, hostfile = (get("gs_hosts") or "").strip(), (get("gs_hostfile") or "").strip()
    if hosts_text and hostfile:
        raise ValueError("--hosts and --hostfile both given; allowed: one of them")
    controller, port, identity = ((get(dest) or "").strip() for dest in
                                  ("gs_controller_address", "gs_ssh_port", "gs_ssh_identity_file"))
    if not (hosts_text or hostfile):
        for option, value in (("--controller-address", controller), ("--ssh-port", port),
                              ("--ssh-identity-file", identity)):
            if value:
                raise ValueError(f"{option} without --hosts or --hostfile; allowed: together with one of them")
        return None
    hosts = parse_hosts(hosts_text) if hosts_text else parse_hostfile(hostfile)
    try:
        ssh_port = int(port) if port else None
    except ValueError:
        raise ValueError(f"--ssh-port: {port!r} is not an integer; allowed: an integer 1..65535") from None
    return Cluster(hosts=hosts, controller_address=controller or None, ssh_port=ssh_port,
                   ssh_identity_file=identity or None)


def internode_gbps_from_config(get) -> tuple[float, ...]:
    """The rates in the order given, repeats dropped (one projection per rate)."""
    return parse_internode_gbps(get("gs_internode_gbps"))
