"""Multi-node options: --hosts/--hostfile parsing, placement, and their one-line usage errors (exit 4).

Named *multinode* so that `pytest tests/ -k multinode` selects them with the two-host tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_bench_options

from bench.config.cases import build_cases
from bench.config.hosts import Cluster, Host, parse_hostfile, parse_hosts, place, powers_of_two_upto
from bench.config.options import BenchOptions

REPO = Path(__file__).resolve().parent.parent


def test_multinode_hosts_parse_like_horovodrun():
    assert parse_hosts("host1:8,host2:8") == (Host("host1", 8), Host("host2", 8))
    assert parse_hosts("10.0.0.1") == (Host("10.0.0.1", 1),)  # horovodrun: a bare host has one slot


def test_multinode_hostfile_in_horovodrun_format(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# the cluster\nnode-a slots=4\n\nnode-b slots=2  # the small one\nnode-c\n")
    assert parse_hostfile(str(path)) == (Host("node-a", 4), Host("node-b", 2), Host("node-c", 1))


def test_multinode_placement_fills_hosts_in_order():
    hosts = (Host("a", 2), Host("b", 2))
    assert place(hosts, 1) == (Host("a", 1),)
    assert place(hosts, 3) == (Host("a", 2), Host("b", 1))
    assert place(hosts, 5) == ()
    assert powers_of_two_upto(6) == (1, 2, 4, 6)


def _options(**overrides) -> BenchOptions:
    return make_bench_options(**{"strategies": ("single", "dp", "ddp"), "presets": ("tiny",), "precisions": ("fp32",),
                                 "steps_per_round": 1, "rounds": 1, "launch_timeout_s": 10.0, "round_timeout_s": 10.0,
                                 **overrides})


def test_multinode_world_sizes_range_up_to_total_slots():
    cases = build_cases(_options(cluster=Cluster((Host("a", 2), Host("b", 2)))), "cpu", 2)
    by_id = {case.case_id: case for case in cases}
    assert {case.world_size for case in cases if case.strategy == "ddp"} == {1, 2, 4}
    assert by_id["ddp-4-tiny-fp32-2nodes"].hosts == ("a:2", "b:2")
    assert by_id["ddp-4-tiny-fp32-2nodes"].identity()["slots_per_node"] == [2, 2]
    assert by_id["ddp-2-tiny-fp32"].hosts == ("a:2",)  # fits the first host
    assert by_id["dp-4-tiny-fp32"].hosts == ()  # one process cannot span hosts: this machine, skipped there


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hosts", "host1:8,host2"], None),  # valid (bare host = 1 slot): the control case
        (["--hosts", "host1:8,:2"], "--hosts: malformed entry ':2'; allowed: host:slots"),
        (["--hosts", "host1:0"], "--hosts: host 'host1' has slots '0', not a positive integer"),
        (["--hosts", "host1:two"], "--hosts: host 'host1' has slots 'two', not a positive integer"),
        (["--hosts", "host1:-1"], "--hosts: host 'host1' has slots '-1', not a positive integer"),
        (["--hostfile", "/nonexistent/hosts"], "--hostfile: cannot read '/nonexistent/hosts'"),
        (["--hosts", "a:1", "--internode-gbps", "0"], "--internode-gbps: '0' is not a positive number"),
        (["--internode-gbps", "100,-5"], "--internode-gbps: '-5' is not a positive number"),
        (["--hosts", "a:1", "--controller-address", "nowhere"], "--controller-address: 'nowhere' is not an IPv4"),
        (["--controller-address", "10.0.0.1"], "--controller-address without --hosts or --hostfile"),
    ],
)
def test_multinode_bad_options_are_one_line_usage_errors(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "bench"), "-p", "no:cacheprovider", "--collect-only", "-q",
         "--results-dir", str(tmp_path / "results"), *args],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if message is None:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert result.returncode == 4, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "results").exists()


def test_multinode_bad_hostfile_line_names_the_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("node-a slots=2\nnode-b cpus=4\n")
    with pytest.raises(ValueError, match=r"--hostfile: .*hosts:2: malformed line 'node-b cpus=4'"):
        parse_hostfile(str(path))


def test_multinode_failure_lines_name_the_host():
    """The words of a multi-node failure, from what the launcher and the ranks said (the real faults
    are in tests/test_multinode.py): a rank's host, and a host lost mid-case told from one never reached."""
    from types import SimpleNamespace

    from bench.launch.diagnosis import first_failure
    from bench.launch.fanout import failure_line, host_failure

    line = first_failure({1: "boom"}, "round 3", "", lambda log, rank: None, {0: "node-a", 1: "node-b"})
    assert line == "rank 1 on host node-b failed in round 3: boom"
    assert first_failure({1: "boom"}, "round 3", "", lambda log, rank: None) == "rank 1 failed in round 3: boom"
    lost = failure_line(SimpleNamespace(host="node-b", started=True, last_line="a rank's warning"), 255)
    never = failure_line(SimpleNamespace(host="node-b", started=False, last_line="Connection timed out"), 255)
    exited = failure_line(SimpleNamespace(host="node-b", started=True, last_line="Traceback..."), 1)
    assert "host node-b lost mid-case" in lost and "a rank's warning" not in lost
    assert never == "gpusizer: host node-b unreachable over ssh: Connection timed out"
    log = f"[node-a] training\n{lost}\n"
    assert host_failure(log) == lost.removeprefix("gpusizer: ")
    assert host_failure(f"[node-a] x\n{never}\n") == never.removeprefix("gpusizer: ")
    assert host_failure(f"[node-b] x\n{exited}\n") is None  # its ranks tell why, better
