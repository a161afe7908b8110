"""Hostile but realistic use (issue 11): options that pass a type check yet fail every case, result
files that must never be emptied or lost, a results folder that cannot be written, a second local
client on the channel, and `gpusizer report` outputs beside the one named. Real processes and files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import make_bench_options
from test_faults import (
    BENCH_DIR,
    RUN_TIMEOUT_S,
    cases_by_id,
    finish,
    leftovers,
    marked_processes,
    measured_ids,
    result_file,
    skip_unless_available,
    start_bench,
)

from bench.config.options import BenchOptions
from bench.launch.channel import Listener, connect

REPO = Path(__file__).resolve().parent.parent


def bench(tmp_path: Path, *args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider", "-q", "--device", "cpu",
               *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s, check=False)


def usage_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 4, done.stdout + done.stderr
    # pytest's own usage errors (argparse: "<prog>: error: argument ...") follow a usage line; ours are one line.
    lines = ([line for line in done.stderr.splitlines() if "error: argument" in line]
             or [line for line in done.stderr.splitlines() if line.startswith("ERROR:")])
    assert lines, done.stderr
    return lines[0]


# -- item 9: every numeric option bounded at parse time -----------------------------------------------


def _options(**changes) -> BenchOptions:
    return make_bench_options(**{"per_device_batch_at_smallest_world": 64, "steps_per_round": 5, "rounds": 3,
                                 "warmup_rounds": 1, "quick": True, "launch_timeout_s": 120.0, "round_timeout_s": 600.0,
                                 **changes})


@pytest.mark.parametrize("field, value, option", [
    ("launch_timeout_s", float("inf"), "--launch-timeout-s"),
    ("round_timeout_s", float("inf"), "--round-timeout-s"),
    ("round_timeout_s", 1e12, "--round-timeout-s"),
    ("launch_timeout_s", 1e-9, "--launch-timeout-s"),
    ("seed", 10**29, "--seed"),
    ("seed", -1, "--seed"),
    ("per_device_batch_at_smallest_world", 10**7, "--batch-size"),
    ("rounds", 10**400, "--rounds"),
    ("warmup_rounds", 10**7, "--warmup-rounds"),
    ("world_sizes", (1, 10**6), "--world-sizes"),
])
def test_numeric_option_outside_its_range_is_refused_naming_the_range(field, value, option):
    with pytest.raises(ValueError, match=rf"^{option}: .* is out of range; allowed: "):
        _options(**{field: value})
    _options()  # the defaults are inside every range


@pytest.mark.parametrize("args, option", [
    (("--find-max-batch", "--max-memory", "1e300"), "--max-memory"),
    (("--hosts", "a:" + "9" * 30), "--hosts"),
    (("--hosts", "a:1", "--internode-gbps", "1e308"), "--internode-gbps"),
    (("--plan", "--price-per-hour", "1e300"), "--price-per-hour"),
])
def test_sizes_slots_rates_and_prices_past_their_range_are_usage_errors(tmp_path, args, option):
    # Each passed validation before (a 30-digit slot count, a 1e300-byte memory) and failed every case.
    line = usage_error_line(bench(tmp_path, "--quick", "--strategies", "single", *args))
    assert line.removeprefix("ERROR: ").startswith(option) and "allowed:" in line, line
    assert not (tmp_path / "results").exists()


def test_slots_are_bounded_like_world_sizes_and_repeated_rates_count_once():
    from bench.config.hosts import MAX_SLOTS
    from bench.config.multinode_options import internode_gbps_from_config
    from bench.config.options import MAX_WORLD_SIZE

    assert MAX_SLOTS == MAX_WORLD_SIZE  # hosts.py cannot import options.py (options imports it)
    assert internode_gbps_from_config({"gs_internode_gbps": "100,400,100"}.get) == (100.0, 400.0)


def test_infinite_timeout_and_30_digit_seed_are_usage_errors_before_any_case(tmp_path):
    for args, option in ((("--launch-timeout-s", "inf"), "--launch-timeout-s"),
                         (("--seed", "1" * 30), "--seed")):
        line = usage_error_line(bench(tmp_path, "--quick", "--strategies", "single", *args))
        assert option in line and "allowed:" in line, line
        assert not (tmp_path / "results").exists()


# -- item 11: a value given twice is one case --------------------------------------------------------


def test_repeated_list_values_make_one_case_each(tmp_path):
    done = bench(tmp_path, "--collect-only", "--quick", "--strategies", "single,single", "--presets", "tiny,tiny",
                 "--world-sizes", "1,1", "--precisions", "fp32,fp32")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "test_train[" in line]
    assert len(ids) == 1 and "single-1-tiny-fp32" in ids[0], done.stdout


# -- item 1: --benchmark-json ------------------------------------------------------------------------


def test_existing_benchmark_json_is_refused_and_left_as_it_was(tmp_path):
    precious = tmp_path / "x.json"
    precious.write_text('{"precious": true}\n')
    for extra in (("--batch-size", "0"), ("--quick", "--strategies", "single")):  # refused run, and a valid one
        line = usage_error_line(bench(tmp_path, *extra, "--benchmark-json", str(precious)))
        assert "--benchmark-json" in line and "x.json exists" in line, line
        assert precious.read_text() == '{"precious": true}\n'
    assert not (tmp_path / "results").exists()


def test_benchmark_disable_is_a_usage_error_not_a_failure_per_case(tmp_path):
    # pytest-benchmark's --benchmark-disable runs each round function once with no statistics: every
    # case used to fail on the missing stats.
    line = usage_error_line(bench(tmp_path, "--quick", "--strategies", "single", "--benchmark-disable"))
    assert line.removeprefix("ERROR: ").startswith("--benchmark-disable:") and "allowed:" in line, line
    assert not (tmp_path / "results").exists()


def test_benchmark_json_holds_every_finished_case_during_the_run(tmp_path):
    """A kill (SIGKILL: nothing runs after it) once the first case is done leaves it in the file."""
    out = tmp_path / "run.json"
    proc, mark = start_bench(tmp_path, "", "--strategies", "single", "--presets", "tiny,small",
                             "--rounds", "40", "--benchmark-json", str(out))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    data = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            data = json.loads(out.read_text())
        except (OSError, ValueError):  # not there yet (it is replaced whole, never half-written)
            data = None
        if data and "single-1-tiny-fp32" in measured_ids(data):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert data is not None and "single-1-tiny-fp32" in measured_ids(data), "the first case never reached the file"
    kept = json.loads(out.read_text())
    assert "single-1-tiny-fp32" in measured_ids(kept)
    assert cases_by_id(kept)["single-1-tiny-fp32"]["status"] == "passed"
    assert out.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "results").exists()  # with --benchmark-json nothing goes to results/
    assert leftovers(mark) == []


def test_result_file_is_readable_by_others_as_documented(tmp_path):
    done = bench(tmp_path, "--quick", "--strategies", "single", "--results-dir", str(tmp_path / "results"))
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (tmp_path / "results").glob("*.json")
    assert path.stat().st_mode & 0o777 == 0o644


# -- item 4: an unwritable results folder --------------------------------------------------------------


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root ignores permission bits; /sys/kernel is a folder in which no one may create a file.
    folder = Path("/sys/kernel")
    if not folder.is_dir():
        pytest.skip("running as root and /sys/kernel is missing: no folder that root cannot write to")
    return folder


def test_results_dir_at_a_file_or_an_unwritable_folder_is_a_usage_error_before_any_case(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("mine\n")
    for target, message in ((a_file, "is a file, not a folder"), (_unwritable_folder(tmp_path), "cannot create")):
        done = bench(tmp_path, "--quick", "--strategies", "single", "--results-dir", str(target))
        line = usage_error_line(done)
        assert f"--results-dir {target}" in line and message in line, line
        assert "INTERNALERROR" not in done.stdout + done.stderr
        assert "test_train" not in done.stdout  # no case ran
    assert a_file.read_text() == "mine\n"


def test_results_folder_that_goes_away_mid_run_fails_the_write_in_one_line_and_keeps_the_file(tmp_path):
    results = tmp_path / "results"
    proc, mark = start_bench(tmp_path, "", "--strategies", "single", "--presets", "tiny,small", "--rounds", "20")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        data = result_file(tmp_path)
        if data and "single-1-tiny-fp32" in measured_ids(data):
            break
        time.sleep(0.2)
    # The folder is moved away (as an unmounted disk would be) and a plain file takes its name.
    results.rename(tmp_path / "moved")
    results.write_text("not a folder\n")
    output = finish(proc)
    assert proc.returncode == 2, output  # stopped: nothing more could be saved
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "gpusizer: cannot write the result file" in line]
    assert lines and "keeps the cases finished before" in lines[0], output
    (kept,) = (tmp_path / "moved").glob("*.json")
    assert "single-1-tiny-fp32" in measured_ids(json.loads(kept.read_text()))
    assert leftovers(mark) == []


# -- item 5: a second local client on the channel -------------------------------------------------------


def _frame(header: bytes, payload_len: int = 0) -> bytes:
    return struct.pack("!II", len(header), payload_len) + header


HOSTILE_HELLOS = {
    "rank 1e999": _frame(b'{"rank": 1e999, "proof": "00"}'),
    "deeply nested": _frame(b'{"rank": ' + b"[" * 3000 + b"]" * 3000 + b', "proof": "00"}'),
    "oversized header": struct.pack("!II", 1 << 30, 0) + b"{" * 1024,
    "oversized payload": _frame(b'{"rank": 0, "proof": "00"}', payload_len=(1 << 32) - 1),
    "huge rank": _frame(b'{"rank": ' + b"9" * 400 + b', "proof": "00"}'),
    "not an object": _frame(b"[1, 2, 3]"),
}


def _hostile_client(address: str, message: bytes) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(message)  # without waiting for the nonce: the controller reads it as the hello
    return sock


def _dropped(sock: socket.socket, timeout_s: float = 30.0) -> bool:
    """The controller sent its nonce, then closed the connection."""
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except OSError:
        return False
    finally:
        sock.close()
    return b"nonce" in received


def test_listener_drops_hostile_hellos_and_still_accepts_its_worker():
    listener = Listener()
    try:
        clients = {name: _hostile_client(listener.address, message) for name, message in HOSTILE_HELLOS.items()}
        worker: list = []
        # The real worker connects last; the listener must get through every hostile peer first.
        thread = threading.Thread(target=lambda: worker.append(
            connect(listener.address, listener.token, 0, {"pid": os.getpid()}, timeout_s=60)), daemon=True)
        thread.start()
        accepted = []
        deadline = time.monotonic() + 60
        while len([a for a in accepted if a is not None]) < 1 and time.monotonic() < deadline:
            accepted.append(listener.accept(deadline))
        thread.join(30)
        assert [a for a in accepted if a is None] and accepted[-1] is not None
        assert accepted[-1][1]["rank"] == 0
        for name, sock in clients.items():
            assert _dropped(sock), f"{name}: not dropped"
    finally:
        listener.close()


def test_silent_clients_do_not_hold_up_the_worker_behind_them():
    # A dozen local clients connect and say nothing. Handled one at a time, each held the listener for
    # its whole hello timeout (10 s each: 120 s, a launch's whole deadline); side by side, the real
    # worker behind them is accepted at once and the silent ones are dropped at their own deadline.
    listener = Listener()
    silent = [socket.create_connection(tuple_address(listener.address)) for _ in range(12)]
    try:
        worker: list = []
        thread = threading.Thread(target=lambda: worker.append(
            connect(listener.address, listener.token, 0, {"pid": os.getpid()}, timeout_s=60)), daemon=True)
        began = time.monotonic()
        thread.start()
        accepted = listener.accept(began + 60, hello_timeout_s=8.0)
        waited_s = time.monotonic() - began
        thread.join(30)
        assert accepted is not None and accepted[1]["rank"] == 0
        assert waited_s < 8.0, f"the worker waited {waited_s:.1f} s behind silent clients"
        # The silent ones are still pending, then dropped once their own 8 s are up.
        dropped = [listener.accept(time.monotonic() + 30, hello_timeout_s=8.0) for _ in range(12)]
        assert dropped == [None] * 12 and all("ChannelTimeout" in why for why in listener.dropped[-12:])
        assert all(_dropped(sock) for sock in silent)
    finally:
        for sock in silent:
            sock.close()
        listener.close()


def tuple_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_hostile_local_clients_during_a_ddp_launch_do_not_fail_the_case(tmp_path):
    skip_unless_available("ddp")
    proc, mark = start_bench(tmp_path, "", "--strategies", "ddp", "--world-sizes", "2")
    address = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while address is None and time.monotonic() < deadline and proc.poll() is None:
        for candidate in marked_processes(mark):
            with contextlib.suppress(psutil.Error):  # the process may be gone; look at the next
                address = candidate.environ().get("GPUSIZER_CHANNEL") or address
        time.sleep(0.05)
    assert address, "never saw the channel address"
    # The launcher is starting: connect now, before its ranks import torch and connect back.
    clients = {}
    for name, message in HOSTILE_HELLOS.items():
        try:
            clients[name] = _hostile_client(address, message)
        except OSError as error:
            pytest.fail(f"{name}: could not connect to the channel: {error}")
    output = finish(proc)
    assert proc.returncode == 0, output
    assert cases_by_id(result_file(tmp_path))["ddp-2-tiny-fp32"]["status"] == "passed"
    dropped = {name: _dropped(sock, timeout_s=5) for name, sock in clients.items()}
    assert all(dropped.values()), dropped
    assert leftovers(mark) == []


# -- item 7: `gpusizer report -o` and the files beside it -------------------------------------------


def test_report_refuses_existing_outputs_beside_the_html_unless_forced(real_result_files, tmp_path):
    pytest.importorskip("plotly", reason="the report needs the report extra: pip install 'gpusizer[report]'")
    notes = tmp_path / "notes.md"
    notes.write_text("my own notes\n")

    def report(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reports", "report", real_result_files[1], "-o",
                               str(tmp_path / "notes.html"), *extra], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False)

    refused = report()
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "--force" in refused.stderr, refused.stderr
    assert notes.read_text() == "my own notes\n"
    assert not (tmp_path / "notes.html").exists() and not (tmp_path / "notes.csv").exists()
    forced = report("--force")
    assert forced.returncode == 0, forced.stderr
    assert notes.read_text() != "my own notes\n" and (tmp_path / "notes.csv").exists()


# -- item 12: a report over thousands of setups -------------------------------------------------------


def test_charts_over_many_setups_keep_the_fastest_and_say_so():
    pd = pytest.importorskip("pandas", reason="the report needs the report extra: pip install 'gpusizer[report]'")
    from reports import figures

    count = 5000
    plot = pd.DataFrame({"machine": [f"m{i}" for i in range(count)], "series": [f"s{i}" for i in range(count)],
                         "samples_per_s": [float(i) for i in range(count)],
                         "time_h": [float(count - i) for i in range(count)]})
    lines, note = figures._cap_series(plot)
    assert len(lines) == figures.MAX_SERIES and set(lines["series"]) == {f"s{i}" for i in range(4940, 5000)}
    assert f"showing the {figures.MAX_SERIES} setup series with the fastest setups of {count}" in note
    points, note, grey = figures._grey_other_machines(plot)
    assert len(points) == count  # every setup is still a point
    assert points["machine"].nunique() == figures.MAX_COLOURED_MACHINES + 1
    others = f"other machines ({count - figures.MAX_COLOURED_MACHINES})"
    assert grey == {others: "#bbbbbb"} and others in note
    assert set(points.loc[points["machine"] != others, "machine"]) == {f"m{i}" for i in range(4976, 5000)}
    small = plot.head(10)
    kept, note = figures._cap_series(small)
    assert kept is small and note is None and figures._grey_other_machines(small)[1] is None
