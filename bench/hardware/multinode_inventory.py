"""The inventory of every host of a multi-node run, collected over ssh (bench.hardware.inventory run there).

Stored in ``machine_info.gpusizer.hosts``: per host name, that host's inventory, ``{"local": true}``
for this machine (its inventory is machine_info's own), or ``{"reason": ...}`` when it could not be read.
"""

from __future__ import annotations

import json
import subprocess
import sys

PREFIX = "GPUSIZER_INVENTORY "
TIMEOUT_S = 60.0
_SCRIPT = f"import json; from bench.hardware.inventory import machine_inventory; print({PREFIX!r} + json.dumps(machine_inventory()))"


def hosts_inventory(cluster, timeout_s: float = TIMEOUT_S) -> dict[str, dict]:
    from bench.config.hosts import local_addresses, resolve
    from bench.launch.fanout import ssh_command
    from bench.launch.multinode import ssh_settings

    here = set(local_addresses())
    found: dict[str, dict] = {}
    for host in cluster.hosts:
        try:
            if resolve(host.name) in here:
                found[host.name] = {"local": True}
                continue
        except OSError as error:
            found[host.name] = {"reason": f"does not resolve ({error})"}
            continue
        command = ssh_command(host.name, ssh_settings(cluster, timeout_s), [sys.executable, "-c", _SCRIPT])
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            found[host.name] = {"reason": f"no inventory within {timeout_s:g} s"}
            continue
        lines = [line for line in result.stdout.splitlines() if line.startswith(PREFIX)]
        if lines:
            found[host.name] = json.loads(lines[-1][len(PREFIX):])
        else:
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            found[host.name] = {"reason": f"ssh: {last}"}
    return found
