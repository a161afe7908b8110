"""Multi-node runs with two real hosts on this machine: two network namespaces joined by a veth pair,
each with its own sshd (tests/netns_hosts.py). ``pytest bench/`` runs inside the first namespace,
as it would on a cluster's first node, and reaches both hosts over ssh.

Every test checks afterwards that nothing of the case is left running on either host.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_hosts import INTERFACE, TwoHosts, unavailable_reason

from reports.projection import render_projection_html

REPO = Path(__file__).resolve().parent.parent
RUN_DEADLINE_S = 420
QUICK = ("--quick", "--steps-per-round", "2", "--rounds", "2", "--warmup-rounds", "1")

_REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"multi-node tests: {_REASON}")


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    hosts = TwoHosts(tmp_path_factory.mktemp("multinode-hosts"))
    try:
        yield hosts.start()
    finally:
        hosts.close()


def bench_on_first_host(hosts: TwoHosts, results_dir: Path, *args: str,
                        env: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment of ``pytest bench/`` in the first namespace, with the test's ssh key."""
    command = hosts.netns_command(
        hosts.hosts[0], sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q",
        "--results-dir", str(results_dir), "--ssh-identity-file", str(hosts.identity_file), *args)
    run_env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    run_env.update({"GPUSIZER_SSH_KNOWN_HOSTS": str(hosts.known_hosts), **(env or {})})
    return command, run_env


def run_bench_on_first_host(hosts: TwoHosts, results_dir: Path, *args: str,
                            env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``pytest bench/`` in the first namespace, run to its end; returns it and its seconds."""
    command, run_env = bench_on_first_host(hosts, results_dir, *args, env=env)
    began = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True,
                            timeout=RUN_DEADLINE_S, check=False)
    return result, time.monotonic() - began


def both_hosts(hosts: TwoHosts, slots: int = 1) -> str:
    return ",".join(f"{host.address}:{slots}" for host in hosts.hosts)


def result_of(results_dir: Path) -> dict:
    files = sorted(results_dir.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def records(data: dict) -> dict[str, dict]:
    return {bench["extra_info"]["case_id"]: bench["extra_info"] for bench in data["benchmarks"]}


def assert_nothing_left(hosts: TwoHosts) -> None:
    left = hosts.wait_until_clean()
    assert not left, f"processes left running on the hosts after the run: {left}"


@pytest.fixture(scope="module")
def torchrun_run(two_hosts, tmp_path_factory):
    results = tmp_path_factory.mktemp("multinode-torchrun")
    result, _ = run_bench_on_first_host(two_hosts, results, *QUICK, "--strategies", "ddp,fsdp",
                                        "--world-sizes", "2", "--hosts", both_hosts(two_hosts))
    left = two_hosts.wait_until_clean()
    return result, results, left


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_multinode_torchrun_two_hosts(torchrun_run, two_hosts, strategy):
    result, results, left = torchrun_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    record = records(result_of(results))[f"{strategy}-2-tiny-fp32-2nodes"]
    assert record["nodes"] == 2
    assert record["slots_per_node"] == [1, 1]
    assert record["hosts"] == [f"{host.address}:1" for host in two_hosts.hosts]
    assert record["network_interface"] == INTERFACE
    assert record["controller_address"] == two_hosts.hosts[0].address
    assert record["samples_per_s"] > 0
    inventories = result_of(results)["machine_info"]["gpusizer"]["hosts"]
    assert inventories[two_hosts.hosts[0].address] == {"local": True}
    assert inventories[two_hosts.hosts[1].address]["cpu_cores"] >= 1, inventories
    [across] = result_of(results)["machine_info"]["gpusizer"]["ceilings"]["allreduce_across_hosts"]
    assert across["nodes"] == 2 and across["busbw_bytes_per_s"] > 0, across
    assert not left, f"processes left running on the hosts after the run: {left}"


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="Horovod is not installed: run `make horovod`")
def test_multinode_horovod_two_hosts(two_hosts, tmp_path):
    result, _ = run_bench_on_first_host(two_hosts, tmp_path, *QUICK, "--strategies", "horovod",
                                        "--world-sizes", "2", "--hosts", both_hosts(two_hosts))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    record = records(result_of(tmp_path))["horovod-2-tiny-fp32-2nodes"]
    assert record["nodes"] == 2 and record["network_interface"] == INTERFACE
    assert_nothing_left(two_hosts)


def test_multinode_unreachable_host_fails_its_cases_only(two_hosts, tmp_path):
    # .9 is in the namespaces' own subnet and nobody has it: ssh cannot connect.
    missing = "10.213.0.9"
    launch_timeout_s = 60
    result, seconds = run_bench_on_first_host(
        two_hosts, tmp_path, *QUICK, "--strategies", "single,ddp", "--world-sizes", "1,2",
        "--hosts", f"{two_hosts.hosts[0].address}:1,{missing}:1", "--launch-timeout-s", str(launch_timeout_s))
    assert result.returncode == 1, result.stdout[-4000:]
    cases = {case["case_id"]: case for case in result_of(tmp_path)["gpusizer"]["cases"]}
    assert cases["single-1-tiny-fp32"]["status"] == "passed"  # the rest of the run goes on
    failed = cases["ddp-2-tiny-fp32-2nodes"]
    assert failed["status"] == "failed"
    assert f"host {missing} unreachable" in failed["reason"], failed["reason"]
    assert seconds < launch_timeout_s + 120  # within its deadline (plus the passing cases' time)
    assert_nothing_left(two_hosts)


def test_multinode_misspelled_host_fails_its_cases_only(two_hosts, tmp_path):
    # .invalid never resolves (RFC 2606): the name a typo in --hosts would give.
    misspelled = "gpusizer-no-such-host.invalid"
    result, _ = run_bench_on_first_host(
        two_hosts, tmp_path, *QUICK, "--strategies", "single,ddp", "--world-sizes", "1,2",
        "--hosts", f"{two_hosts.hosts[0].address}:1,{misspelled}:1")
    assert result.returncode == 1, result.stdout[-4000:]
    cases = {case["case_id"]: case for case in result_of(tmp_path)["gpusizer"]["cases"]}
    assert cases["single-1-tiny-fp32"]["status"] == "passed"  # the rest of the run goes on
    failed = cases["ddp-2-tiny-fp32-2nodes"]
    assert failed["status"] == "failed" and "\n" not in failed["reason"]
    assert f"host {misspelled} does not resolve" in failed["reason"], failed["reason"]
    assert_nothing_left(two_hosts)


def test_multinode_blocked_port_between_hosts_names_the_host(two_hosts, tmp_path):
    """The second host's firewall passes ssh and nothing else: the launch reaches it, its torchrun
    cannot reach the rendezvous on the first host, and the case fails within its launch deadline
    naming that host."""
    blocked = two_hosts.hosts[1]
    launch_timeout_s = 40
    try:
        two_hosts.block_all_but_ssh(blocked)
        result, seconds = run_bench_on_first_host(
            two_hosts, tmp_path, *QUICK, "--strategies", "ddp", "--world-sizes", "2",
            "--hosts", both_hosts(two_hosts), "--launch-timeout-s", str(launch_timeout_s))
    finally:
        two_hosts.unblock(blocked)
    assert result.returncode == 1, result.stdout[-4000:]
    [case] = result_of(tmp_path)["gpusizer"]["cases"]
    assert case["status"] == "failed" and "\n" not in case["reason"]
    assert f"host {blocked.address}" in case["reason"], case["reason"]
    assert seconds < launch_timeout_s + 90, seconds  # the launch deadline, plus the run's own start and end
    assert_nothing_left(two_hosts)


def test_multinode_host_dying_mid_case_is_named_and_reaped(two_hosts, tmp_path):
    """The second host dies while its rank trains: its link goes down, then everything on it is
    killed (power_off). The case fails within its round deadline with one line naming that host,
    and nothing is left on the first host (the second has nothing left by construction)."""
    dying = two_hosts.hosts[1]
    round_timeout_s = 60
    command, env = bench_on_first_host(
        two_hosts, tmp_path, "--strategies", "ddp", "--world-sizes", "2", "--presets", "tiny",
        "--precisions", "fp32", "--rounds", "60", "--min-round-s", "0.5", "--warmup-rounds", "1",
        "--round-timeout-s", str(round_timeout_s), "--hosts", both_hosts(two_hosts))
    bench = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_worker(two_hosts, dying, bench), "the second host's rank never started"
        time.sleep(5)  # past start-up and warm-up: in the measured rounds (60 of at least 0.5 s)
        assert bench.poll() is None, "the case ended before the host could die mid-case"
        died = time.monotonic()
        two_hosts.power_off(dying)
        output, _ = bench.communicate(timeout=RUN_DEADLINE_S)
        seconds_after = time.monotonic() - died
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
        two_hosts.power_on(dying)
    assert bench.returncode == 1, output[-4000:]
    [case] = result_of(tmp_path)["gpusizer"]["cases"]
    assert case["status"] == "failed" and "\n" not in case["reason"]
    assert f"host {dying.address}" in case["reason"], case["reason"]
    assert seconds_after < round_timeout_s + 60, seconds_after  # its deadline, plus writing the result
    print(f"host died: case failed {seconds_after:.1f} s later: {case['reason']}")
    assert_nothing_left(two_hosts)


def wait_for_worker(hosts: TwoHosts, host, bench: subprocess.Popen, timeout_s: float = 180) -> bool:
    """Wait until a rank (bench.launch.worker_main) runs on ``host``; False if the run ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and bench.poll() is None:
        pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True,
                              check=False).stdout.split()
        for pid in pids:
            try:
                if b"bench.launch.worker_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        time.sleep(0.5)
    return False


MEASURE_ACROSS_HOSTS = """
import json, sys
from bench.config.hosts import Cluster, Host
from bench.hardware.multinode_bandwidth import internode_allreduce_ceiling
from bench.config.cases import BenchCase
hosts = tuple(Host(name, 1) for name in sys.argv[1].split(","))
cluster = Cluster(hosts, ssh_identity_file=sys.argv[2])
case = BenchCase(strategy="ddp", world_size=len(hosts), preset="tiny", precision="fp32", device_type="cpu",
                 per_device_batch_size=1, scaling="weak", steps_per_round=1, rounds=1, warmup_rounds=0,
                 hosts=tuple(h.spec() for h in hosts))
print("RESULT " + json.dumps(internode_allreduce_ceiling(case, cluster, timeout_s=150)))
"""


def measure_across_hosts(hosts: TwoHosts) -> dict:
    command = hosts.netns_command(hosts.hosts[0], sys.executable, "-c", MEASURE_ACROSS_HOSTS,
                                  ",".join(host.address for host in hosts.hosts), str(hosts.identity_file))
    env = {**os.environ, "GPUSIZER_SSH_KNOWN_HOSTS": str(hosts.known_hosts)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_multinode_bandwidth_across_hosts_follows_the_shaped_link(two_hosts):
    measured = {}
    try:
        for rate_mbit in (100, 400):
            qdisc = two_hosts.shape(rate_mbit)
            entry = measure_across_hosts(two_hosts)
            assert entry["reason"] is None, entry["reason"]
            assert entry["scope"] == "across hosts" and entry["nodes"] == 2
            measured[rate_mbit] = entry["busbw_bytes_per_s"]
    finally:
        two_hosts.unshape()
    # Bus bandwidth of a 2-rank ring is the per-link rate: it cannot beat the shaped link (10% for
    # the shaper's burst), and a 4x faster link must show clearly more of it.
    for rate_mbit, busbw in measured.items():
        link_bytes_per_s = rate_mbit * 1e6 / 8
        assert 0.3 * link_bytes_per_s < busbw <= 1.1 * link_bytes_per_s, (qdisc, measured)
    assert measured[400] > 1.5 * measured[100], (qdisc, measured)
    assert_nothing_left(two_hosts)


def test_multinode_projection_checked_against_shaped_rates(two_hosts, tmp_path):
    """Fit the model (compute and overlap) on 2-node runs over the bare link and over a 10 Mbit/s one,
    project the step time at the bus bandwidth a 25 Mbit/s link measured, and compare with the 2-node
    run over that link: a point the model never saw. Slow links, so that communication, not the
    compute time (which the shared machine's load moves from run to run), decides the step."""
    from reports.projection import MAX_MODEL_ERROR, project, projections_from_payloads

    runs = {}
    try:
        for rate_mbit in (None, 10, 25):
            if rate_mbit:
                two_hosts.shape(rate_mbit)
            results = tmp_path / f"{rate_mbit or 'bare'}"
            result, _ = run_bench_on_first_host(
                two_hosts, results, "--quick", "--steps-per-round", "5", "--rounds", "3", "--warmup-rounds", "1",
                "--strategies", "ddp", "--world-sizes", "2", "--hosts", both_hosts(two_hosts),
                "--internode-gbps", "0.1,1")
            assert result.returncode == 0, result.stdout[-4000:]
            runs[rate_mbit] = result_of(results)
    finally:
        two_hosts.unshape()
    assert_nothing_left(two_hosts)
    [fitted] = projections_from_payloads([runs[None], runs[10]])
    assert "compute fitted" in fitted.label and len(fitted.points) == 2
    assert "PROJECTION" in render_projection_html([fitted])
    if fitted.withheld_reason and "--internode-gbps" not in fitted.withheld_reason:
        # The model refused itself: then it must really be off at a measured point.
        assert max(p.error for p in fitted.points) > MAX_MODEL_ERROR
    check = records(runs[25])["ddp-2-tiny-fp32-2nodes"]
    [check_ceiling] = runs[25]["machine_info"]["gpusizer"]["ceilings"]["allreduce_across_hosts"]
    gbps = check_ceiling["busbw_bytes_per_s"] * 8 / 1e9
    compute_s, overlap = fitted.compute_s, fitted.overlap
    from reports.projection import model_step_s, ring_comm_s

    projected_s = model_step_s(compute_s, ring_comm_s(2, fitted.gradient_bytes, gbps * 1e9 / 8), overlap)
    measured_s = statistics.median(check["round_times_s"]) / check["steps_per_round"]
    error = abs(projected_s - measured_s) / measured_s
    print(f"projection at {gbps:.3g} Gbit/s: {projected_s * 1e3:.3g} ms/step, measured {measured_s * 1e3:.3g} "
          f"ms/step (error {error:.0%}); fit: compute {compute_s * 1e3:.3g} ms, overlap {overlap:.0%}, errors "
          f"{[round(p.error, 3) for p in fitted.points]}; load {os.getloadavg()[0]:.1f}")
    assert project([], None, (gbps,)) == []
    if fitted.withheld_reason is None:
        assert error <= 2 * MAX_MODEL_ERROR, (projected_s, measured_s)
